"""``imagefolder``: one folder per class, in any format Pillow or OpenCV reads (seed 004's MNIST JPEGs).

``root/train``, ``root/val`` and ``root/test`` are used when ``train/`` exists (a missing one is
carved from ``train/``); otherwise ``root`` itself holds the class folders and cnnforge carves val
and test from it with a stratified split (``data.split``), in memory, without copying a file.
``cnnforge data split`` writes the same split out as folders.

``data.cache`` says where the decoded images live (:mod:`cnnforge.data.encoded`): ``memory``
decodes the folder once into RAM at ``image_size`` (a bad file is found before training starts),
``disk`` once into a memory-mapped file shared by every run on the node, ``none`` per sample in the
loader workers; ``auto`` picks by the decoded size.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnforge.data.cache_modes import image_dataset
from cnnforge.data.encoded import BadImagePolicy, CacheKey, CacheMode, ImageSize
from cnnforge.data.listing import IMAGE_SUFFIXES, list_folder
from cnnforge.errors import ConfigError, DataError
from cnnforge.registry import register_dataset

__all__ = ["IMAGE_SUFFIXES", "FolderListing", "check_outside", "imagefolder", "list_image_folder", "materialise_split",
           "split_layout"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FolderListing:
    """The image files under a class-per-folder root, in a stable order, with their labels."""

    root: Path
    files: list[Path]
    labels: np.ndarray
    classes: list[str]


def list_image_folder(root: Path, classes: Sequence[str] | None = None) -> FolderListing:
    """Every image under ``root/<class>/`` (sub-folders included), sorted by path, as paths."""
    images = list_folder(root, classes)
    return FolderListing(root, [root / p.decode() for p in images.paths], images.labels, images.classes)


def _class_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def split_layout(root: Path) -> bool:
    """Whether ``root`` is already split into ``train/`` (and optionally ``val/``, ``test/``) folders."""
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present and "train" not in present:
        raise DataError(f"has {'/ and '.join(present)}/ but no train/ folder", where=str(root))
    return bool(present)


def _declared_shape(grayscale: bool = False, image_size: Any = None, **_: Any) -> tuple[int, int, int] | None:
    """The images' shape when ``image_size`` fixes it (otherwise only the files know)."""
    if image_size is None:
        return None
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return int(height), int(width), 1 if grayscale else 3


@register_dataset(shape=_declared_shape)
def imagefolder(*, root: str, split: str, grayscale: bool = False, image_size: ImageSize = None,
                on_bad_image: BadImagePolicy = "error", cache: CacheMode = "auto",
                cache_key: CacheKey = "mtime") -> Any | None:
    """One folder per class (``train/ val/ test/`` when present); ``grayscale`` reads 1 channel, ``image_size``
    resizes, ``cache``: auto|memory|disk|none, ``cache_key``: mtime|content."""
    base = Path(root).expanduser()
    fresh = cache_key == "content"  # folder mtimes are not trusted either: walk the folder again
    if split_layout(base):
        folder = base / split
        if not folder.is_dir():
            return None  # carved from train/ by data.val_fraction
        source = list_folder(folder, None if split == "train" else _class_dirs(base / "train"), fresh=fresh)
    elif split == "train":
        folder = base
        source = list_folder(base, fresh=fresh)
    else:
        return None  # one pool: val and test are carved from it by data.split
    return image_dataset(source, cache=cache, image_size=image_size, grayscale=grayscale, on_bad_image=on_bad_image,
                         where=str(folder), cache_key=cache_key)


def check_outside(src: Path, dst: Path) -> None:
    """A destination inside the source folder is refused: its copies would become part of the data."""
    inner, outer = dst.resolve(), src.resolve()
    if inner == outer or inner.is_relative_to(outer):
        raise DataError(f"is inside the source folder {src}; the output would be read back as data", where=str(dst),
                        hint="choose a destination outside it")


def materialise_split(src: Path, dst: Path, ratios: Sequence[float], seed: int, *,
                      link: bool = False) -> dict[str, int]:
    """Copy (or hard-link) ``src``'s class folders into ``dst/train``, ``dst/val``, ``dst/test``.

    The partition is the one ``imagefolder`` makes in memory for the same seed and ``data.split``
    (when no image is skipped), so a run on ``src`` and a run on ``dst`` see the same test images.
    Nothing is overwritten: ``dst`` must not exist or be empty.
    """
    from cnnforge.data.stratify import stratified_split

    if abs(sum(ratios) - 1.0) > 1e-6 or len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0:
        raise ConfigError(f"must be three fractions train val test adding up to 1 (train > 0), got {list(ratios)}",
                          where="--ratios")
    check_outside(src, dst)
    if split_layout(src):
        raise DataError("is already split into train/ val/ test/ folders", where=str(src))
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DataError("already exists and is not an empty folder; nothing is overwritten", where=str(dst),
                        hint="choose a new destination")
    listing = list_image_folder(src)
    counts: dict[str, int] = {}
    for name, indices in zip(SPLITS, stratified_split(listing.labels, ratios, seed), strict=False):
        for i in indices:
            source = listing.files[i]
            target = dst / name / source.relative_to(src)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                (os.link if link else shutil.copy2)(source, target)
            except OSError as exc:
                raise DataError(f"cannot {'hard-link' if link else 'copy'} {source} here: {exc.strerror or exc}",
                                where=str(target),
                                hint="hard links need one file system; drop --link" if link else None) from None
        counts[name] = len(indices)
    return counts
