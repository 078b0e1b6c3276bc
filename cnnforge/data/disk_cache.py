"""``data.cache: disk``: one decoded, memory-mapped copy of a dataset per node, shared by every run.

The cache of a dataset is a folder ``$CNNFORGE_CACHE/decoded/<key>/`` (``images.npy``,
``keep.npy``, ``labels.npy``, ``meta.json``) whose key hashes everything the folder holds or was
made from: the source's fingerprint (for a folder: every file's path, size and mtime; with
``data.cache_key: content`` a digest of every file's bytes instead), every label, the class names,
the image size, grayscale and the decoder's :data:`FORMAT`, so a changed file, label or class name
gives a new key. A folder that fails its checks when opened (a cut array, garbled metadata) is
removed and built again. One process builds it, under a file lock, into a temporary folder that is fsynced and
renamed into place only when complete: a build killed half-way leaves a temporary folder that
no run trusts (the next builder removes it), and a second run that wanted the same cache waits
for the lock and then maps the finished one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cnnforge.atomic_write import fsync_path
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

log = logging.getLogger("cnnforge")

FORMAT = 2  # bump when the folder's layout or the decoding changes: old caches are then rebuilt, never misread
CHUNK = 512  # images decoded per block while building
FAULT_AROUND = 64 * 1024  # Linux maps this aligned window of cached pages around a faulting page


def cache_root() -> Path:
    """``$CNNFORGE_CACHE``, or ``~/.cache/cnnforge``."""
    return Path(os.environ.get("CNNFORGE_CACHE") or "~/.cache/cnnforge").expanduser()


def cache_key(source: EncodedImages, grayscale: bool, size: tuple[int, int] | None, content: bool = False) -> str:
    """The cache folder's name: a hash of all the cache stores and how (see the module's docstring)."""
    labels = hashlib.sha256(np.ascontiguousarray(source.labels, dtype=np.int64).tobytes()).hexdigest()
    text = json.dumps({"format": FORMAT, "source": source.fingerprint(content), "labels": labels,
                       "classes": list(source.classes), "size": size, "grayscale": grayscale})
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:40]


class DamagedCache(Exception):
    """A finished cache folder whose files do not add up; the message says what is wrong."""


class DiskImages:
    """A finished cache folder; each process memory-maps ``images.npy`` on first access (cheap to pickle).

    A sample is copied out of the map and its pages are then dropped from the process
    (``MADV_DONTNEED``): they stay in the node's page cache for every rank, but a loader worker's
    resident memory does not grow to the share of the dataset it has read.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            meta = json.loads((folder / "meta.json").read_text())
            self.classes, self.mean, self.std = list(meta["classes"]), meta["mean"], meta["std"]
            self.skipped: list[list[Any]] = list(meta["skipped"])
            count = int(meta["count"])
            self.keep = np.load(folder / "keep.npy", allow_pickle=False)
            self.labels = np.load(folder / "labels.npy", allow_pickle=False)
            with open(folder / "images.npy", "rb") as f:
                shape = self._header(f)
                size = os.fstat(f.fileno()).st_size
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, EOFError) as exc:  # garbled or cut files
            raise DamagedCache(f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}") from None
        self._check(count, shape, size)
        self._map: mmap.mmap | None = None

    def _header(self, f: Any) -> tuple[int, ...]:
        """Read ``images.npy``'s header from ``f``: the array's shape; where the rows start is kept."""
        version = np.lib.format.read_magic(f)
        fmt = np.lib.format
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, _ = read_header(f)
        self.shape, self.offset, self.row_bytes = shape[1:], f.tell(), int(np.prod(shape[1:]))
        return shape

    def _check(self, count: int, shape: tuple[int, ...], size: int) -> None:
        """The files agree with each other and ``images.npy`` holds every row it declares."""
        keep = self.keep
        if shape[0] != count or len(self.skipped) + len(keep) != count or len(self.labels) != len(keep):
            raise DamagedCache(f"{count} images in meta.json, {shape[0]} rows in images.npy, {len(keep)} kept, "
                               f"{len(self.labels)} labels")
        if keep.ndim != 1 or (len(keep) and (keep.min() < 0 or keep.max() >= count)):
            raise DamagedCache("keep.npy points outside images.npy")
        if size < self.offset + count * self.row_bytes:
            raise DamagedCache(f"images.npy is cut short ({size} of {self.offset + count * self.row_bytes} bytes)")

    def _open(self) -> mmap.mmap:
        with open(self.folder / "images.npy", "rb") as f:
            self._header(f)
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_map": None}

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        pages = self._map or self._open()
        start = self.offset + int(self.keep[index]) * self.row_bytes
        image = np.frombuffer(pages, np.uint8, self.row_bytes, start).reshape(self.shape).copy()
        if hasattr(pages, "madvise"):  # whole fault-around windows: a fault maps its window's neighbours too
            first, end = start - start % FAULT_AROUND, -(-(start + self.row_bytes) // FAULT_AROUND) * FAULT_AROUND
            pages.madvise(mmap.MADV_DONTNEED, first, min(end, len(pages)) - first)
        return image, int(self.labels[index])


def _save(path: Path, array: np.ndarray) -> None:
    np.save(path, array)
    fsync_path(path)


class _ArrayFile:
    """``images.npy`` written image by image with plain writes: pages go to the page cache, not the builder's RSS."""

    def __init__(self, path: Path, count: int, shape: tuple[int, ...]) -> None:
        # the header, and a sparse file until written
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, *shape))
        self.path, self.shape, self.offset, self.row_bytes = path, shape, header.offset, int(np.prod(shape))
        del header
        self.file = open(path, "r+b")  # noqa: SIM115 (closed by close())

    def write(self, index: int, image: np.ndarray) -> None:
        self.file.seek(self.offset + index * self.row_bytes)
        self.file.write(np.ascontiguousarray(image).data)

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def _decode_into(source: EncodedImages, tmp: Path, *, grayscale: bool, size: tuple[int, int] | None,
                 on_bad_image: str, where: str) -> tuple[ChannelStats, list[tuple[int, str]]]:
    """Every image of ``source`` decoded, block by block, into ``tmp/images.npy``: its statistics and the bad ones."""
    out: _ArrayFile | None = None
    stats = ChannelStats(1 if grayscale else 3)
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
                if out is None:
                    first, out = i, _ArrayFile(tmp / "images.npy", len(source), image.shape)
                check_same_size([(i, image.shape)], source, first, out.shape)
                out.write(i, image)
                stats.add(image)
    if out is None:
        raise nothing_readable(source, bad[0], where)
    out.close()
    return stats, bad


def _build(source: EncodedImages, tmp: Path, **kwargs: Any) -> None:
    """The whole cache folder in ``tmp``: the images, then the small files, each fsynced."""
    stats, bad = _decode_into(source, tmp, **kwargs)
    keep = np.setdiff1d(np.arange(len(source)), [i for i, _ in bad]).astype(np.int64)
    _save(tmp / "keep.npy", keep)
    _save(tmp / "labels.npy", np.asarray(source.labels, dtype=np.int64)[keep])
    mean, std = stats.result()
    meta = {"format": FORMAT, "source": kwargs["where"], "classes": list(source.classes), "mean": mean.tolist(),
            "std": std.tolist(), "count": len(source), "skipped": [[source.name(i), why] for i, why in bad]}
    (tmp / "meta.json").write_text(json.dumps(meta))
    fsync_path(tmp / "meta.json")


def _build_once(source: EncodedImages, folder: Path, damaged: str | None = None, **kwargs: Any) -> None:
    """Build ``folder`` unless another process already did, holding the key's file lock meanwhile.

    ``damaged`` says why the folder there failed its checks: it is removed and built again (unless
    another process did that while this one waited for the lock).
    """
    from filelock import FileLock

    with FileLock(str(folder.with_name(folder.name + ".lock"))):
        if damaged is not None and _damage(folder) is not None:
            log.warning("cnnforge: %s: damaged decoded-image cache (%s); building it again", folder, damaged)
            shutil.rmtree(folder)
        if folder.is_dir():
            return  # built by the process we waited for
        for stale in folder.parent.glob(folder.name + ".tmp-*"):  # left by a killed builder
            shutil.rmtree(stale, ignore_errors=True)
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        tmp.mkdir()
        try:
            _build(source, tmp, **kwargs)
            os.rename(tmp, folder)
            fsync_path(folder.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _damage(folder: Path) -> str | None:
    """Why the finished cache ``folder`` cannot be used, or None when it can (or is not there)."""
    if not folder.is_dir():
        return None
    try:
        DiskImages(folder)
    except DamagedCache as exc:
        return str(exc)
    except FileNotFoundError as exc:
        return f"{Path(exc.filename or '').name or 'a file'} is missing"
    return None


def cached_on_disk(source: EncodedImages, *, grayscale: bool, size: tuple[int, int] | None, on_bad_image: str,
                   where: str, content: bool = False) -> DiskImages:
    """``source`` decoded once into the node's cache (built now if missing, again if damaged) and memory-mapped."""
    root = cache_root() / "decoded"
    folder = root / cache_key(source, grayscale, size, content)
    try:
        damaged = _damage(folder)
        if damaged is not None or not folder.is_dir():
            root.mkdir(parents=True, exist_ok=True)
            _build_once(source, folder, damaged, grayscale=grayscale, size=size, on_bad_image=on_bad_image,
                        where=where)
        dataset = DiskImages(folder)
    except DamagedCache as exc:  # damaged again right after it was built: something else writes there
        raise DataError(f"the decoded-image cache is damaged ({exc})", where=str(folder),
                        hint="remove the folder, or set CNNFORGE_CACHE elsewhere") from None
    except OSError as exc:
        raise DataError(f"cannot use the decoded-image cache: {exc.strerror or exc}", where=str(folder),
                        hint="set CNNFORGE_CACHE to a writable folder with room, or data.cache: none") from None
    if dataset.skipped and on_bad_image == "error":
        name, why = dataset.skipped[0]
        raise DataError(f"unreadable image: {why}", where=name, hint="fix or remove it, or set data.on_bad_image: skip")
    report_skipped([(name, why) for name, why in dataset.skipped], len(dataset) + len(dataset.skipped), where)
    return dataset
