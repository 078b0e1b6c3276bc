"""Tiny datasets in the on-disk formats cnnforge reads, written by the tests themselves (no downloads)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Class-dependent colour bands plus noise: learnable a little, like the contract check's data."""
    labels = rng.integers(0, 10, n)
    x = rng.integers(0, 80, (n, 3, 32, 32)).astype(np.int32)
    for i, y in enumerate(labels):
        x[i, y % 3, (y // 3) * 8:(y // 3) * 8 + 10, 4:28] += 150
    return np.clip(x, 0, 255).astype(np.uint8).reshape(n, 3072), labels.tolist()


def write_cifar10(root: Path, n_train: int = 200, n_test: int = 60, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` in torchvision's python-pickle layout."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    per = max(1, n_train // 5)
    for b in range(1, 6):
        data, labels = cifar_images(per, rng)
        with (d / f"data_batch_{b}").open("wb") as f:
            pickle.dump({b"batch_label": b"train", b"labels": labels, b"data": data}, f)
    data, labels = cifar_images(n_test, rng)
    with (d / "test_batch").open("wb") as f:
        pickle.dump({b"batch_label": b"test", b"labels": labels, b"data": data}, f)
    with (d / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES]}, f)
    return Path(root)
