"""``cnnforge data pack``: any dataset cnnforge reads, written out as WebDataset tar shards or a HF dataset.

The libraries' own writers do the writing (``webdataset.ShardWriter``, ``datasets``' ``save_to_disk``),
so the result is what those ecosystems expect. Encoded images keep their original bytes (a folder's
JPEGs stay the same JPEGs); arrays, and formats the shard readers do not take, are PNG-encoded.
Everything is written into a hidden sibling folder first and renamed into place at the end, so
an interrupted pack leaves no half dataset under DST and nothing that exists is overwritten.
"""
from __future__ import annotations

import io
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cnnforge.errors import DataError

log = logging.getLogger("cnnforge")

FORMATS = ("webdataset", "hf")
#: what PIL calls a format -> the member extension both shard readers accept
KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
HF_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    array = np.asarray(image, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


class ArrayImages:
    """An array dataset (``ds[i] -> (uint8 image, label)``) seen as encoded images: each item PNG-encoded on read."""

    def __init__(self, dataset: Any, labels: np.ndarray, classes: list[str], where: str) -> None:
        self.dataset, self.labels, self.classes, self.where = dataset, labels, classes, where

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> bytes:
        return png_bytes(self.dataset[int(index)][0])

    def name(self, index: int) -> str:
        return f"{self.where}: item {index}"


def encoded(data: bytes, where: str) -> tuple[str, bytes]:
    """(member extension, bytes): JPEG, PNG and WebP as they are, any other image re-encoded as PNG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            kept = KEPT_FORMATS.get(im.format or "")
            if kept:
                return kept, data
            return "png", png_bytes(np.asarray(im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode)))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"unreadable image: {' '.join(str(exc).split())}", where=where) from None


def _samples(source: Any, split: str) -> Iterator[tuple[str, bytes, int]]:
    from cnnforge.data.work_progress import WorkProgress

    with WorkProgress(f"packing {split}", len(source)) as progress:
        for i in range(len(source)):
            ext, data = encoded(source.read(i), source.name(i))
            yield ext, data, int(source.labels[i])
            progress.advance()


def _check_lines(classes: list[str], where: str) -> None:
    """``classes.txt`` holds a name per line, read back stripped: a name it cannot give back is refused."""
    for name in classes:
        if not name.strip() or name != name.strip() or any(c in name for c in "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"):
            raise DataError(f"class name {name!r} cannot be written as a line of classes.txt (a line break, or "
                            "space at an end)", where=where, hint="rename the class folder, or use --format hf")


def _write_webdataset(splits: dict[str, Any], classes: list[str], out: Path, shard_size: int) -> None:
    import webdataset

    for split, source in splits.items():
        with webdataset.ShardWriter(str(out / f"{split}-%06d.tar"), maxsize=shard_size, maxcount=10**12,
                                    verbose=0) as sink:
            for i, (ext, data, label) in enumerate(_samples(source, split)):
                sink.write({"__key__": f"{i:09d}", ext: data, "cls": label})
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))


def _hf_rows(source: Any, split: str) -> Iterator[dict[str, Any]]:
    for _, data, label in _samples(source, split):
        yield {"image": {"bytes": data, "path": None}, "label": label}


def _write_hf(splits: dict[str, Any], classes: list[str], out: Path, shard_size: int) -> None:
    from cnnforge.data.hf_datasets import _datasets

    datasets = _datasets()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
    scratch = out / ".generator-cache"  # from_generator's arrow files; save_to_disk copies them, then they go
    built = datasets.DatasetDict({
        HF_SPLIT_NAMES[split]: datasets.Dataset.from_generator(
            _hf_rows, features=features, gen_kwargs={"source": source, "split": split}, cache_dir=str(scratch),
            fingerprint=uuid.uuid4().hex)
        for split, source in splits.items()})
    built.save_to_disk(str(out), max_shard_size=shard_size)
    shutil.rmtree(scratch)


def folder_sources(root: Path) -> tuple[dict[str, Any], list[str]]:
    """An image folder's splits (``train/ val/ test/``, or the root as the training pool) and its classes."""
    from cnnforge.data.image_folder import SPLITS, split_layout
    from cnnforge.data.listing import list_folder

    if not split_layout(root):
        train = list_folder(root)
        return {"train": train}, train.classes
    train = list_folder(root / "train")
    splits = {split: list_folder(root / split, train.classes) for split in SPLITS[1:] if (root / split).is_dir()}
    return {"train": train, **splits}, train.classes


def recipe_sources(recipe: Any) -> tuple[dict[str, Any], list[str]]:
    """The splits ``recipe``'s dataset has (as its factory returns them) and the training classes."""
    from cnnforge.data.loading import _labels, _open

    splits: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        dataset = _open(recipe, split)
        if dataset is not None:
            source = getattr(dataset, "source", None)  # a dataset of encoded files keeps their bytes
            splits[split] = source if source is not None else ArrayImages(
                dataset, _labels(dataset), list(dataset.classes), f"{recipe.data.root} ({recipe.data.name}, {split})")
    if "train" not in splits:
        raise DataError(f"dataset {recipe.data.name!r} has no train split", where=str(recipe.data.root))
    return splits, list(splits["train"].classes)


WRITERS: dict[str, Callable[[dict[str, Any], list[str], Path, int], None]] = {
    "webdataset": _write_webdataset, "hf": _write_hf}


def pack(splits: dict[str, Any], classes: list[str], dst: Path, fmt: str, shard_size: int) -> dict[str, int]:
    """Write ``splits`` (split name -> encoded images) to the new folder ``dst`` in format ``fmt``; sample counts."""
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DataError("already exists and is not an empty folder; nothing is overwritten", where=str(dst),
                        hint="choose a new destination")
    if fmt == "webdataset":
        _check_lines(classes, str(dst))
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    partial.mkdir()
    try:
        WRITERS[fmt](splits, classes, partial, shard_size)
        if dst.exists():
            dst.rmdir()  # empty, checked above
        partial.rename(dst)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {split: len(source) for split, source in splits.items()}
