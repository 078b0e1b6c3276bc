"""``data.cache: disk``: one decoded, memory-mapped copy of a dataset per node, shared by every run.

The cache of a dataset is a folder ``$CNNFORGE_CACHE/decoded/<key>/`` (``images.npy``,
``keep.npy``, ``labels.npy``, ``meta.json``) whose key hashes the source's fingerprint (for a
folder: every file's path, size and mtime), the image size and grayscale, so a changed file gives
a new key. One process builds it, under a file lock, into a temporary folder that is fsynced and
renamed into place only when complete: a build killed half-way leaves a temporary folder that
no run trusts (the next builder removes it), and a second run that wanted the same cache waits
for the lock and then maps the finished one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cnnforge.data.builtin_datasets import ChannelStats
from cnnforge.data.encoded import (
    EncodedImages,
    check_same_size,
    decode_all,
    nothing_readable,
    report_skipped,
    unreadable,
)
from cnnforge.data.work_progress import WorkProgress
from cnnforge.errors import DataError

FORMAT = 1  # bump when the folder's layout changes: old caches are then rebuilt, never misread
CHUNK = 512  # images decoded per block while building


def cache_root() -> Path:
    """``$CNNFORGE_CACHE``, or ``~/.cache/cnnforge``."""
    return Path(os.environ.get("CNNFORGE_CACHE") or "~/.cache/cnnforge").expanduser()


def cache_key(source: EncodedImages, grayscale: bool, size: tuple[int, int] | None) -> str:
    text = json.dumps({"format": FORMAT, "source": source.fingerprint(), "size": size, "grayscale": grayscale})
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class DiskImages:
    """A finished cache folder; each process memory-maps ``images.npy`` on first access (cheap to pickle)."""

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        self.folder, self.classes, self.mean, self.std = folder, meta["classes"], meta["mean"], meta["std"]
        self.skipped: list[list[Any]] = meta["skipped"]
        self.keep = np.load(folder / "keep.npy")
        self.labels = np.load(folder / "labels.npy")
        self._images: np.ndarray | None = None

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.folder / "images.npy", mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[self.keep[index]], int(self.labels[index])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save(path: Path, array: np.ndarray) -> None:
    np.save(path, array)
    _fsync(path)


def _build(source: EncodedImages, tmp: Path, *, grayscale: bool, size: tuple[int, int] | None, on_bad_image: str,
           where: str) -> None:
    """Decode every image of ``source`` into ``tmp/images.npy`` block by block, then write the small files."""
    images: np.ndarray | None = None
    stats: ChannelStats | None = None
    bad: list[tuple[int, str]] = []
    first = -1
    with WorkProgress(f"caching {where}", len(source)) as progress:
        for start in range(0, len(source), CHUNK):
            block = decode_all(source, range(start, min(start + CHUNK, len(source))), grayscale, size, progress)
            for i, image in enumerate(block, start):
                if isinstance(image, str):
                    if on_bad_image == "error":
                        raise unreadable(source, i, image)
                    bad.append((i, image))
                    continue
                image = image.reshape(*image.shape[:2], -1)
                if images is None:
                    first = i
                    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                                       shape=(len(source), *image.shape))
                    stats = ChannelStats(image.shape[-1])
                check_same_size([(i, image.shape)], source, first, images.shape[1:])
                images[i] = image
                stats.add(image)
    if images is None or stats is None:
        raise nothing_readable(source, bad[0], where)
    images.flush()
    del images
    _fsync(tmp / "images.npy")
    keep = np.setdiff1d(np.arange(len(source)), [i for i, _ in bad]).astype(np.int64)
    _save(tmp / "keep.npy", keep)
    _save(tmp / "labels.npy", np.asarray(source.labels, dtype=np.int64)[keep])
    mean, std = stats.result()
    meta = {"format": FORMAT, "source": where, "classes": list(source.classes), "mean": mean.tolist(), "std": std.tolist(),
            "count": len(source), "skipped": [[source.name(i), why] for i, why in bad]}
    (tmp / "meta.json").write_text(json.dumps(meta))
    _fsync(tmp / "meta.json")


def _build_once(source: EncodedImages, folder: Path, **kwargs: Any) -> None:
    """Build ``folder`` unless another process already did, holding the key's file lock meanwhile."""
    from filelock import FileLock

    with FileLock(str(folder.with_name(folder.name + ".lock"))):
        if folder.is_dir():
            return  # built by the process we waited for
        for stale in folder.parent.glob(folder.name + ".tmp-*"):  # left by a killed builder
            shutil.rmtree(stale, ignore_errors=True)
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        tmp.mkdir()
        try:
            _build(source, tmp, **kwargs)
            os.rename(tmp, folder)
            _fsync(folder.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def cached_on_disk(source: EncodedImages, *, grayscale: bool, size: tuple[int, int] | None, on_bad_image: str,
                   where: str) -> DiskImages:
    """``source`` decoded once into the node's cache (built now if missing) and memory-mapped."""
    root = cache_root() / "decoded"
    folder = root / cache_key(source, grayscale, size)
    try:
        if not folder.is_dir():
            root.mkdir(parents=True, exist_ok=True)
            _build_once(source, folder, grayscale=grayscale, size=size, on_bad_image=on_bad_image, where=where)
        dataset = DiskImages(folder)
    except OSError as exc:
        raise DataError(f"cannot use the decoded-image cache: {exc.strerror or exc}", where=str(folder),
                        hint="set CNNFORGE_CACHE to a writable folder with room, or data.cache: none") from None
    if dataset.skipped and on_bad_image == "error":
        name, why = dataset.skipped[0]
        raise DataError(f"unreadable image: {why}", where=name, hint="fix or remove it, or set data.on_bad_image: skip")
    report_skipped([(name, why) for name, why in dataset.skipped], len(dataset) + len(dataset.skipped), where)
    return dataset
