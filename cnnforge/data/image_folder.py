"""``imagefolder``: one folder per class, in any format Pillow or OpenCV reads (seed 004's MNIST JPEGs).

``root/train``, ``root/val`` and ``root/test`` are used when ``train/`` exists (a missing one is
carved from ``train/``); otherwise ``root`` itself holds the class folders and cnnforge carves val
and test from it with a stratified split (``data.split``), in memory, without copying a file.
``cnnforge data split`` writes the same split out as folders.

Images are decoded once, when the dataset opens, into one uint8 array at ``image_size``: a bad file
is found before training starts rather than in a loader worker mid-epoch, and epochs do not decode
again. The price is memory: the folder must fit in RAM at ``image_size``.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from cnnforge.data.builtin_datasets import ArrayDataset
from cnnforge.errors import ConfigError, DataError
from cnnforge.registry import register_dataset

log = logging.getLogger("cnnforge")

SPLITS = ("train", "val", "test")
#: file name endings read as images (case-insensitive); anything else in a class folder is ignored
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
                            ".pbm", ".pgm", ".ppm", ".pnm", ".jp2", ".ras", ".sr"})
Side = Annotated[int, Field(ge=1)]


@dataclass(frozen=True)
class FolderListing:
    """The image files under a class-per-folder root, in a stable order, with their labels."""

    root: Path
    files: list[Path]
    labels: np.ndarray
    classes: list[str]


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def list_image_folder(root: Path, classes: Sequence[str] | None = None) -> FolderListing:
    """Every image under ``root/<class>/`` (sub-folders included), sorted by path.

    ``classes`` fixes the label order (val/ and test/ use train/'s); a class folder outside it is an error.
    """
    if not root.is_dir():
        raise DataError("no such folder" if not root.exists() else "is not a folder", where=str(root))
    dirs = _class_dirs(root)
    if not dirs:
        raise DataError("has no class folders (expected one sub-folder of images per class)", where=str(root))
    names = list(classes) if classes is not None else [d.name for d in dirs]
    files: list[Path] = []
    labels: list[int] = []
    for d in dirs:
        if d.name not in names:
            raise DataError(f"class folder {d.name!r} is not one of the training classes", where=str(d))
        found = sorted((f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                        and not f.name.startswith(".")), key=lambda f: f.relative_to(d).as_posix())
        if not found:
            raise DataError("class folder holds no images", where=str(d),
                            hint=f"image files end in {', '.join(sorted(IMAGE_SUFFIXES)[:6])}, ...")
        files += found
        labels += [names.index(d.name)] * len(found)
    return FolderListing(root, files, np.asarray(labels, dtype=np.int64), names)


def split_layout(root: Path) -> bool:
    """Whether ``root`` is already split into ``train/`` (and optionally ``val/``, ``test/``) folders."""
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present and "train" not in present:
        raise DataError(f"has {'/ and '.join(present)}/ but no train/ folder", where=str(root))
    return bool(present)


class _BadImage(Exception):
    pass


def decode_image(path: Path, grayscale: bool) -> np.ndarray:
    """HxW (grayscale) or HxWx3 RGB uint8; Pillow first (it notices truncated files), OpenCV for what it cannot
    identify."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L" if grayscale else "RGB"))
    except UnidentifiedImageError:
        pass
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _BadImage(" ".join(str(exc).split()) or type(exc).__name__) from None
    import cv2

    array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR)
    if array is None:
        raise _BadImage("neither Pillow nor OpenCV can decode it")
    return array if grayscale else cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (HxW or HxWxC) at (height, width): area averaging to shrink, linear to grow; the channel axis is
    kept."""
    import cv2

    shrink = image.shape[0] * image.shape[1] > size[0] * size[1]
    out = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out.reshape(*size, *image.shape[2:])  # cv2 drops a trailing channel axis of 1


def _load(path: Path, grayscale: bool, size: tuple[int, int] | None) -> np.ndarray | str:
    """The decoded (and resized) image, or why it could not be read."""
    try:
        image = decode_image(path, grayscale)
    except _BadImage as exc:
        return str(exc)
    return image if size is None or image.shape[:2] == size else resize_image(image, size)


def read_images(listing: FolderListing, *, grayscale: bool, size: tuple[int, int] | None,
                on_bad_image: str) -> ArrayDataset:
    """Decode every file of ``listing`` (threads: the decoders release the GIL) into an ArrayDataset."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(lambda f: _load(f, grayscale, size), listing.files))
    bad = [(f, why) for f, why in zip(listing.files, decoded, strict=False) if isinstance(why, str)]
    if bad and on_bad_image == "error":
        raise DataError(f"unreadable image: {bad[0][1]}", where=str(bad[0][0]),
                        hint="fix or remove it, or set data.on_bad_image: skip")
    keep = [i for i, image in enumerate(decoded) if not isinstance(image, str)]
    if not keep:
        raise DataError(f"none of the {len(listing.files)} images could be read (first: {bad[0][0]}: {bad[0][1]})",
                        where=str(listing.root))
    if bad:
        log.warning("cnnforge: skipped %d unreadable image(s) of %d under %s (first: %s: %s)",
                    len(bad), len(listing.files), listing.root, bad[0][0], bad[0][1])
    first = decoded[keep[0]]
    for i in keep:
        if decoded[i].shape[:2] != first.shape[:2]:
            raise DataError(f"is {decoded[i].shape[0]}x{decoded[i].shape[1]} but {listing.files[keep[0]].name} is "
                            f"{first.shape[0]}x{first.shape[1]}", where=str(listing.files[i]),
                            hint="set data.image_size to resize every image")
    return ArrayDataset(np.stack([decoded[i] for i in keep]), listing.labels[keep], listing.classes)


@register_dataset
def imagefolder(*, root: str, split: str, grayscale: bool = False,
                image_size: Side | tuple[Side, Side] | None = None,
                on_bad_image: Literal["error", "skip"] = "error") -> ArrayDataset | None:
    """One folder per class (``train/ val/ test/`` when present); ``grayscale`` reads 1 channel, ``image_size``
    resizes."""
    base = Path(root).expanduser()
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    if split_layout(base):
        folder = base / split
        if not folder.is_dir():
            return None  # carved from train/ by data.val_fraction
        classes = None if split == "train" else [d.name for d in _class_dirs(base / "train")]
        listing = list_image_folder(folder, classes)
    elif split == "train":
        listing = list_image_folder(base)
    else:
        return None  # one pool: val and test are carved from it by data.split
    return read_images(listing, grayscale=grayscale, size=size, on_bad_image=on_bad_image)


def materialise_split(src: Path, dst: Path, ratios: Sequence[float], seed: int, *, link: bool = False) -> dict[str,
                                                                                                               int]:
    """Copy (or hard-link) ``src``'s class folders into ``dst/train``, ``dst/val``, ``dst/test``.

    The partition is the one ``imagefolder`` makes in memory for the same seed and ``data.split``
    (when no image is skipped), so a run on ``src`` and a run on ``dst`` see the same test images.
    Nothing is overwritten: ``dst`` must not exist or be empty.
    """
    from cnnforge.data.stratify import stratified_split

    if abs(sum(ratios) - 1.0) > 1e-6 or len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0:
        raise ConfigError(f"must be three fractions train val test adding up to 1 (train > 0), got {list(ratios)}",
                          where="--ratios")
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
