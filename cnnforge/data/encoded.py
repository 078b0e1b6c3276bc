"""Datasets of encoded image files (a folder, tar shards, parquet), decoded under one of four cache modes.

A format only has to give random access to its encoded bytes (:class:`EncodedImages`);
:func:`cnnforge.data.cache_modes.image_dataset` decides where the decoded pixels live:

* ``memory``: decoded once into one array in RAM (small data: epochs never decode again);
* ``disk``: decoded once into a file under ``$CNNFORGE_CACHE`` that every rank, sweep trial and
  later run memory-maps, so a node holds one copy in its page cache (:mod:`cnnforge.data.disk_cache`);
* ``none``: decoded per sample in the loader workers at full resolution, so memory does not grow
  with the dataset and a random crop sees the original photo;
* ``auto``: ``memory`` when the decoded size is under a quarter of the available RAM per local
  process, else ``disk`` when the cache folder has room, else ``none``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from pydantic import Field

from cnnforge.data import MAX_IMAGE_SIDE
from cnnforge.data.builtin_datasets import ArrayDataset
from cnnforge.data.decode import BadImage, decode_image, resize_image
from cnnforge.data.work_progress import WorkProgress, is_main_process
from cnnforge.errors import DataError

log = logging.getLogger("cnnforge")

CacheMode = Literal["auto", "memory", "disk", "none"]
#: what keys the decoded-image cache: each file's path, size and mtime, or the bytes of every file
CacheKey = Literal["mtime", "content"]
BadImagePolicy = Literal["error", "skip"]
Side = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]
#: ``data.image_size`` of every dataset that decodes files: one side or (height, width), each at most 8192
ImageSize = Side | tuple[Side, Side] | None


class EncodedImages(Protocol):
    """Random access to one split's encoded images; nothing is decoded. Must pickle cheaply (open files lazily)."""

    classes: list[str]
    labels: np.ndarray  # int64, one per sample, known without decoding

    def __len__(self) -> int: ...

    def read(self, index: int) -> bytes:
        """The encoded file bytes (jpg/png/webp/...)."""

    def name(self, index: int) -> str:
        """What an error names: a file path, or ``shard.tar: member``."""

    def fingerprint(self, content: bool = False) -> str:
        """Changes whenever any sample's bytes may have changed (the disk cache's key): judged by each file's
        size and mtime, or with ``content`` by a digest of every file's bytes."""

    def sample_ids(self) -> tuple[np.ndarray, ...]:
        """Arrays aligned with the samples that say which file each is (path and size, shard member, row): a
        run's record of its splits (:mod:`cnnforge.data.fingerprints`)."""


class UnreadableImage(DataError):
    """A bad image, still one line when raised in a DataLoader worker.

    torch re-creates a worker's exception from its formatted traceback; the last line of that text
    is this error's own one-line message, which is all the user needs.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        if where is None and "Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message, where=where, hint=hint)


def decode(source: EncodedImages, index: int, grayscale: bool, size: tuple[int, int] | None) -> np.ndarray | str:
    """Sample ``index`` decoded (and resized to ``size``), or why it could not be read."""
    try:
        image = decode_image(source.read(index), grayscale)
    except BadImage as exc:
        return str(exc)
    except OSError as exc:  # the file vanished or became unreadable since it was listed
        return f"cannot read it: {exc.strerror or exc}"
    return image if size is None or image.shape[:2] == size else resize_image(image, size)


def decode_all(source: EncodedImages, indices: range, grayscale: bool, size: tuple[int, int] | None,
               progress: WorkProgress | None = None) -> list[np.ndarray | str]:
    """``decode`` of every index, on threads (the decoders release the GIL), in order."""
    out: list[np.ndarray | str] = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for image in pool.map(lambda i: decode(source, i, grayscale, size), indices):
            out.append(image)
            if progress is not None:
                progress.advance()
    return out


def integer_labels(values: Any, where: str) -> np.ndarray:
    """``values`` as int64 labels, refused (naming ``where``) unless each is a whole number: never rounded or cast.

    Booleans, strings, fractions and missing values are refused; whole floats (2.0, as parquet stores a
    nullable integer column) are taken.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise DataError("does not hold one label per sample", where=where)
    if array.dtype.kind not in "iuf":
        kind = {"b": "booleans", "U": "strings", "S": "strings", "O": "strings or objects"}.get(array.dtype.kind,
                                                                                               str(array.dtype))
        raise DataError(f"labels are {kind}, not integers", where=where, hint="class labels are integers 0..K-1")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            first = int(np.argmax(bad))
            raise DataError(f"label {array[first].item()!r} (sample {first}) is not a whole number", where=where,
                            hint="class labels are integers 0..K-1")
    return array.astype(np.int64)


def unreadable(source: EncodedImages, index: int, why: str) -> UnreadableImage:
    """The error for a bad image under ``on_bad_image: error``."""
    return UnreadableImage(f"unreadable image: {why}", where=source.name(index),
                           hint="fix or remove it, or set data.on_bad_image: skip")


def nothing_readable(source: EncodedImages, first: tuple[int, str], where: str) -> DataError:
    return DataError(f"none of the {len(source)} images could be read (first: {source.name(first[0])}: {first[1]})",
                     where=where)


def report_skipped(skipped: list[tuple[str, str]], total: int, where: str) -> None:
    """One warning line with the count of skipped images (name, why) and the first of them."""
    if skipped and is_main_process():
        log.warning("cnnforge: skipped %d unreadable image(s) of %d under %s (first: %s: %s)",
                    len(skipped), total, where, *skipped[0])


def check_same_size(shapes: Iterable[tuple[int, tuple[int, ...]]], source: EncodedImages, first: int,
                    first_shape: tuple[int, ...]) -> None:
    """Images stacked into one array must share a size; name the first that does not."""
    for i, shape in shapes:
        if shape[:2] != first_shape[:2]:
            raise DataError(f"is {shape[0]}x{shape[1]} but {os.path.basename(source.name(first))} is "
                            f"{first_shape[0]}x{first_shape[1]}", where=source.name(i),
                            hint="set data.image_size to resize every image")


def in_memory(source: EncodedImages, *, grayscale: bool, size: tuple[int, int] | None, on_bad_image: str,
              where: str) -> ArrayDataset:
    """Every image decoded into one uint8 array: a bad file is found before training starts."""
    with WorkProgress(f"decoding {where}", len(source)) as progress:
        decoded = decode_all(source, range(len(source)), grayscale, size, progress)
    bad = [(i, why) for i, why in enumerate(decoded) if isinstance(why, str)]
    if bad and on_bad_image == "error":
        raise unreadable(source, *bad[0])
    if len(bad) == len(decoded):
        raise nothing_readable(source, bad[0], where)
    report_skipped([(source.name(i), why) for i, why in bad], len(decoded), where)
    keep = [i for i, image in enumerate(decoded) if not isinstance(image, str)]
    check_same_size(((i, decoded[i].shape) for i in keep), source, keep[0], decoded[keep[0]].shape)
    dataset = ArrayDataset(np.stack([decoded[i] for i in keep]), source.labels[keep], source.classes)
    dataset.keep = np.asarray(keep, dtype=np.int64)  # which samples of the source it holds
    return dataset


class LazyImages:
    """``cache: none``: each sample decoded when it is asked for, at full resolution.

    A bad image under ``on_bad_image: skip`` is replaced by the next readable sample, so indices,
    the sampler and exact resume stay as they are; each replacement is reported with a count.
    """

    full_resolution = True

    def __init__(self, source: EncodedImages, *, grayscale: bool, image_size: tuple[int, int] | None,
                 on_bad_image: str) -> None:
        self.source, self.grayscale, self.image_size, self.on_bad_image = source, grayscale, image_size, on_bad_image
        self.classes, self.labels = source.classes, np.asarray(source.labels, dtype=np.int64)
        self.skipped = 0  # in this process (each loader worker counts its own)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        for step in range(len(self)):
            i = (index + step) % len(self)
            image = decode(self.source, i, self.grayscale, None)
            if not isinstance(image, str):
                return image, int(self.labels[i])
            if self.on_bad_image == "error":
                raise unreadable(self.source, i, image)
            self.skipped += 1
            log.warning("cnnforge: skipped unreadable image %s (%s); %d skipped in this loader process",
                        self.source.name(i), image, self.skipped)
        raise nothing_readable(self.source, (index, "unreadable"), self.source.name(index))
