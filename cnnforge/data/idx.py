"""MNIST and Fashion-MNIST read from IDX files in torchvision's ``<Name>/raw/`` layout, gzipped or not.

torchvision's own reader wants the files unpacked and names no file when one is cut short; users
often have only the ``.gz`` files from the original site, so cnnforge reads both and checks each
header against the bytes that follow it.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cnnforge.data.builtin_datasets import ArrayDataset, dataset_folder
from cnnforge.errors import DataError
from cnnforge.registry import register_dataset

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST-style files use
MAX_DIMS = 4  # labels have 1, images 3
MAX_BYTES = 1 << 34  # 16 GiB: far beyond any MNIST-style file, far below what a forged header can declare


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array in an IDX file (``.gz`` or plain); a short, malformed or oversized file is a DataError naming it.

    The header is checked before the data is read, and no more bytes than it declares are ever
    decompressed: a gzip bomb or a header of absurd dimensions cannot exhaust memory.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return _read_idx(f, path)
    except FileNotFoundError:
        raise DataError("file is missing", where=str(path)) from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a cut .gz ends in EOFError
        raise DataError(f"not a readable gzip file ({exc})", where=str(path)) from None


def _read_idx(f: BinaryIO, path: Path) -> np.ndarray:
    magic = f.read(4)
    if not magic:
        raise DataError("is empty (0 bytes)", where=str(path), hint="copy or download the file again")
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != _UBYTE or magic[3] == 0:
        raise DataError("not an IDX file of unsigned bytes (bad magic number)", where=str(path))
    ndim = magic[3]
    if ndim > MAX_DIMS:
        raise DataError(f"declares {ndim} dimensions; image and label files have at most {MAX_DIMS}", where=str(path))
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"truncated: the header of {ndim} dimensions is cut short", where=str(path))
    shape = struct.unpack(f">{ndim}I", dims)
    expected = math.prod(shape)
    if expected > MAX_BYTES:
        raise DataError(f"declares {list(shape)}: {expected} bytes, more than cnnforge reads ({MAX_BYTES})",
                        where=str(path))
    data = f.read(expected + 1)  # one byte more shows padding without reading all of it
    if len(data) != expected:
        raise DataError(f"truncated or padded: {'more than ' if len(data) > expected else ''}{len(data)} data bytes, "
                        f"the header {list(shape)} says {expected}", where=str(path))
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _idx_file(raw: Path, stem: str) -> Path:
    """``raw/stem``, or ``raw/stem.gz`` when only the compressed file is there."""
    plain = raw / stem
    packed = raw / f"{stem}.gz"
    if plain.is_file() or not packed.is_file():
        return plain
    return packed


def _idx_dataset(root: str, split: str, download: bool, name: str, classes: list[str],
                 mean: float, std: float) -> ArrayDataset | None:
    if split == "val":
        return None  # carved from train by data.val_fraction
    raw = dataset_folder(root, f"{name}/raw", download, name,
                         "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                         "t10k-labels-idx1-ubyte, each plain or .gz")
    prefix = "train" if split == "train" else "t10k"
    image_file, label_file = _idx_file(raw, f"{prefix}-images-idx3-ubyte"), _idx_file(raw,
                                                                                      f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3:
        raise DataError(f"holds a {images.ndim}-d array, expected images (N, H, W)", where=str(image_file))
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"holds {labels.shape} labels for {len(images)} images in {image_file.name}",
                        where=str(label_file))
    return ArrayDataset(images, labels, classes, mean=(mean,), std=(std,))


@register_dataset(shape=(28, 28, 1), num_classes=10)
def mnist(*, root: str, split: str, download: bool = False) -> ArrayDataset | None:
    """MNIST handwritten digits (28x28 grayscale) from ``MNIST/raw/`` under ``data.root``."""
    return _idx_dataset(root, split, download, "MNIST", [str(d) for d in range(10)], 0.1307, 0.3081)


@register_dataset(shape=(28, 28, 1), num_classes=10)
def fashion_mnist(*, root: str, split: str, download: bool = False) -> ArrayDataset | None:
    """Fashion-MNIST clothing images (28x28 grayscale) from ``FashionMNIST/raw/`` under ``data.root``."""
    return _idx_dataset(root, split, download, "FashionMNIST", FASHION_CLASSES, 0.2860, 0.3530)
