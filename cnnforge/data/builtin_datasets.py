"""The built-in array datasets: bundled ``digits``, and ``cifar10`` / ``cifar100`` in torchvision's layout.

A dataset factory returns a Dataset of ``(uint8 HxWxC image, int label)`` with ``classes``,
``mean`` and ``std``, or ``None`` for a split it does not have (cnnforge then carves that split
from the training pool, stratified, see :mod:`cnnforge.data.loading`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from cnnforge.data.safe_pickle import load_pickle
from cnnforge.errors import DataError
from cnnforge.registry import register_dataset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class ArrayDataset:
    """Images held in memory as one uint8 NHWC array; the layout every small dataset fits."""

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray, classes: list[str],
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        if images.ndim == 3:
            images = images[..., None]
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        if mean is None or std is None:
            mean, std = channel_stats(self.images)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])


class ChannelStats:
    """Per-channel mean and std in [0, 1] of uint8 NHWC images, summed ``chunk`` images at a time.

    A float64 copy of a whole image folder would need eight times its size in memory; running
    sums of a few hundred images at a time need almost none. Images added one by one are summed
    in the same blocks as a whole array, so both give bit-identical statistics.
    """

    def __init__(self, channels: int, chunk: int = 256) -> None:
        self.total, self.squares, self.count, self.chunk = np.zeros(channels), np.zeros(channels), 0, chunk
        self.pending: list[np.ndarray] = []  # pixel rows of images not summed yet
        self.pending_images = 0

    def add(self, images: np.ndarray) -> None:
        """A block of NHWC images (at most ``chunk``), or one image (HxW or HxWxC)."""
        self.pending.append(images.reshape(-1, len(self.total)))
        self.pending_images += len(images) if images.ndim == 4 else 1
        if self.pending_images >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        block = np.concatenate(self.pending).astype(np.float64) / 255.0
        self.pending, self.pending_images = [], 0
        self.total += block.sum(0)
        self.squares += np.square(block).sum(0)
        self.count += len(block)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._flush()
        mean = self.total / max(self.count, 1)
        std = np.sqrt(np.maximum(self.squares / max(self.count, 1) - np.square(mean), 0.0))
        return mean, np.maximum(std, 1e-6)


def channel_stats(images: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 NHWC ``images`` in [0, 1], summed in chunks."""
    stats = ChannelStats(images.shape[-1], chunk)
    for start in range(0, len(images), chunk):
        stats.add(images[start:start + chunk])
    return stats.result()


@register_dataset(shape=(8, 8, 1), num_classes=10)
def digits(*, split: str) -> ArrayDataset | None:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images): no files, no download."""
    if split != "train":
        return None  # one pool; val and test are carved from it by data.split
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return ArrayDataset(images, bunch.target, [str(d) for d in range(10)])


def dataset_folder(root: str, folder: str, download: bool, downloader: str, layout: str) -> Path:
    """``root/folder``, fetched first by ``torchvision.datasets.<downloader>`` when ``download`` is set.

    Offline, the download fails as one DataError line naming the folder (no traceback, no retries).
    A missing folder names its absolute path, the ``layout`` expected in it and where the files come from.
    """
    path = Path(root).expanduser().resolve() / folder
    if path.is_dir():
        return path
    if download:
        import torchvision.datasets as tvd

        try:
            getattr(tvd, downloader)(root=str(Path(root).expanduser()), download=True)
        except Exception as exc:  # offline, or a partial download
            raise DataError(f"download failed ({type(exc).__name__}: {exc})".splitlines()[0], where=str(path),
                            hint="copy the extracted folder there by hand") from None
        return path
    raise DataError(f"no such folder (expected {layout})", where=str(path),
                    hint=f"set data.download: true to fetch it with torchvision.datasets.{downloader}, "
                         f"or set data.root to the folder that holds {folder.split('/')[0]}/")


def read_cifar_batches(files: list[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR python batches -> (N,32,32,3) uint8 images and labels, each bad file named."""
    images, labels = [], []
    for file in files:
        batch = load_pickle(file)
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch[label_key], dtype=np.int64)
        except (KeyError, TypeError, ValueError, OverflowError, MemoryError) as exc:
            raise DataError(f"not a CIFAR batch ({type(exc).__name__}: {exc})", where=str(file)) from None
        if len(y) != len(data):
            raise DataError(f"{len(data)} images but {len(y)} labels", where=str(file))
        images.append(data.transpose(0, 2, 3, 1))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


@register_dataset(shape=(32, 32, 3), num_classes=10)
def cifar10(*, root: str, split: str, download: bool = False) -> ArrayDataset | None:
    """CIFAR-10 from torchvision's ``cifar-10-batches-py/`` layout under ``data.root``."""
    if split == "val":
        return None
    folder = dataset_folder(root, "cifar-10-batches-py", download, "CIFAR10",
                            "the python pickles data_batch_1 ... data_batch_5 and test_batch")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = read_cifar_batches([folder / n for n in names], b"labels")
    return ArrayDataset(images, labels, CIFAR10_CLASSES, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


@register_dataset(shape=(32, 32, 3), num_classes=lambda labels="fine", **_: 100 if labels == "fine" else 20)
def cifar100(*, root: str, split: str, download: bool = False,
             labels: Literal["fine", "coarse"] = "fine") -> ArrayDataset | None:
    """CIFAR-100 from torchvision's ``cifar-100-python/`` layout: 100 fine classes, or the 20 coarse superclasses."""
    if split == "val":
        return None
    folder = dataset_folder(root, "cifar-100-python", download, "CIFAR100", "the python pickles train, test and meta")
    meta_file = folder / "meta"
    meta = load_pickle(meta_file)
    try:
        classes = [name.decode() if isinstance(name,
                                               bytes) else str(name) for name in meta[f"{labels}_label_names".encode()]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"not a CIFAR-100 meta file (no {labels}_label_names: {exc})", where=str(meta_file)) from None
    images, targets = read_cifar_batches([folder / ("train" if split == "train" else "test")],
                                         f"{labels}_labels".encode())
    return ArrayDataset(images, targets, classes, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
