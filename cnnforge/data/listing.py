"""The image files of a class-per-folder tree as a :class:`~cnnforge.data.encoded.EncodedImages` source.

Listing is one ``os.scandir`` walk (no ``stat`` of folders it does not need, no ``Path`` object
per file). Its result is kept beside the decoded cache, keyed by the folder, and reused while no
folder's mtime changed (adding, removing or renaming a file changes its folder's mtime). Each
file's size and mtime are read again on every run, on threads, because they key the decoded cache:
a file rewritten in place does not touch its folder. Paths are held in one numpy byte array, not a
list of Python strings, so forked loader workers do not copy them by touching reference counts.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cnnforge.data.fingerprints import files_digest
from cnnforge.data.work_progress import WorkProgress
from cnnforge.errors import DataError

#: what an image folder holds, named in the error for a missing one
FOLDER_LAYOUT = "<class>/<image> folders, or train/ and val/ (and test/) folders of them"
#: file name endings read as images (case-insensitive); anything else in a class folder is ignored
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
                            ".pbm", ".pgm", ".ppm", ".pnm", ".jp2", ".ras", ".sr"})
STAT_BLOCK = 1024  # files stat'ed per thread task


class FolderImages:
    """One split's image files: ``read`` reads a file's bytes, ``fingerprint`` hashes paths, sizes and mtimes."""

    def __init__(self, root: Path, paths: np.ndarray, labels: np.ndarray, classes: list[str],
                 stats: np.ndarray) -> None:
        self.root, self.paths, self.labels, self.classes, self.stats = root, paths, labels, classes, stats

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return os.path.join(self.root, os.fsdecode(self.paths[index]))

    def read(self, index: int) -> bytes:
        with open(self.name(index), "rb") as f:
            return f.read()

    def fingerprint(self, content: bool = False) -> str:
        digest = hashlib.sha256("\0".join(self.classes).encode("utf-8", "surrogateescape"))
        for array in (self.paths, self.labels, self.stats):
            digest.update(np.ascontiguousarray(array).tobytes())
        if content:
            digest.update(files_digest([self.name(i) for i in range(len(self))]).encode())
        return digest.hexdigest()

    def sample_ids(self) -> tuple[np.ndarray, ...]:
        return self.paths, self.stats[:, 0]  # path and size: a copy elsewhere is the same data


def _class_dirs(root: Path) -> list[str]:
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _walk(root: Path, class_name: str, progress: WorkProgress) -> tuple[list[str], dict[str, int]]:
    """Image files under ``root/class_name`` (relative to ``root``, posix, sorted) and each walked folder's mtime."""
    files: list[str] = []
    folders: dict[str, int] = {}
    pending = [class_name + "/"]
    while pending:
        rel = pending.pop()
        here = os.path.join(root, rel)
        folders[rel] = os.stat(here).st_mtime_ns
        found = len(files)
        with os.scandir(here) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    pending.append(f"{rel}{e.name}/")
                elif (not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
                      and e.is_file()):
                    files.append(rel + e.name)
        progress.advance(len(files) - found)
    files.sort()
    return files, folders


def _listing_file(root: Path, classes: list[str]) -> Path:
    from cnnforge.data.disk_cache import cache_root

    key = hashlib.sha256("\0".join([str(root.resolve()), *classes]).encode("utf-8", "surrogateescape")).hexdigest()[:40]
    return cache_root() / "listings" / f"{key}.npz"


def _cached(file: Path, root: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(paths, labels) of a saved listing while none of its folders changed, else None."""
    try:
        with np.load(file, allow_pickle=False) as saved:
            folders, mtimes = saved["folders"], saved["mtimes"]
            pairs = zip(folders, mtimes, strict=True)
            if any(os.stat(os.path.join(root, os.fsdecode(f))).st_mtime_ns != m for f, m in pairs):
                return None
            return saved["paths"], saved["labels"]
    except (OSError, ValueError, KeyError):  # no listing yet, a folder gone, or an unreadable file: list again
        return None


def _save(file: Path, **arrays: np.ndarray) -> None:
    """Best effort (a read-only cache folder only costs the next run a walk); atomic so no one reads half a file."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, file)
    except OSError:
        pass


def _scan(root: Path, classes: list[str], present: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Walk every class folder of ``root``: (paths, labels), saved as the listing for the next run."""
    paths: list[str] = []
    labels: list[int] = []
    folders: dict[str, int] = {}
    with WorkProgress(f"listing {root}") as progress:
        for name in present:
            found, walked = _walk(root, name, progress)
            if not found:
                raise DataError("class folder holds no images", where=str(root / name),
                                hint=f"image files end in {', '.join(sorted(IMAGE_SUFFIXES)[:6])}, ...")
            paths += found
            labels += [classes.index(name)] * len(found)
            folders.update(walked)
    # bytes as the file system has them (os.fsencode): names need be neither ASCII nor valid UTF-8
    files = np.asarray([os.fsencode(p) for p in paths], dtype=np.bytes_) if paths else np.zeros(0, "S1")
    out = files, np.asarray(labels, dtype=np.int64)
    _save(_listing_file(root, classes), paths=out[0], labels=out[1],
          folders=np.asarray([os.fsencode(f) for f in folders], dtype=np.bytes_),
          mtimes=np.asarray(list(folders.values()), dtype=np.int64))
    return out


def _stat_all(root: Path, paths: np.ndarray) -> np.ndarray:
    """(size, mtime_ns) of every file, on threads: on network file systems the round trips overlap."""
    def one(path: bytes) -> tuple[int, int]:
        full = os.path.join(root, os.fsdecode(path))
        try:
            st = os.stat(full)
        except OSError as exc:
            raise DataError(f"cannot read it: {exc.strerror or exc}", where=full) from None
        return st.st_size, st.st_mtime_ns

    def block(start: int) -> list[tuple[int, int]]:  # a task per block: a task per file costs more than its stat
        return [one(path) for path in paths[start:start + STAT_BLOCK]]

    with ThreadPoolExecutor(max_workers=16) as pool:
        stats = [st for part in pool.map(block, range(0, len(paths), STAT_BLOCK)) for st in part]
    return np.asarray(stats, dtype=np.int64).reshape(-1, 2)


def list_folder(root: Path, classes: Sequence[str] | None = None, *, fresh: bool = False) -> FolderImages:
    """Every image under ``root/<class>/`` (sub-folders included), sorted by path.

    ``classes`` fixes the label order (val/ and test/ use train/'s); a class folder outside it is an error.
    ``fresh`` walks the folder even when a saved listing's folder mtimes still match.
    """
    if not root.is_dir():
        raise DataError("no such folder" if not root.exists() else "is not a folder", where=str(root.resolve()),
                        hint=f"expected {FOLDER_LAYOUT}; your own images, or for resnet18_transfer.yaml "
                             "seed 001's ants and bees: https://download.pytorch.org/tutorial/hymenoptera_data.zip")
    present = _class_dirs(root)
    if not present:
        raise DataError("has no class folders (expected one sub-folder of images per class)", where=str(root))
    names = list(classes) if classes is not None else present
    for name in present:
        if name not in names:
            raise DataError(f"class folder {name!r} is not one of the training classes", where=str(root / name))
    listing = (None if fresh else _cached(_listing_file(root, names), root)) or _scan(root, names, present)
    return FolderImages(root, listing[0], listing[1], names, _stat_all(root, listing[0]))
