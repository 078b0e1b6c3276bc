"""The example dataset: grey circles, squares and triangles of random size and place, drawn with numpy.

A cnnforge dataset is any object with ``__len__``, ``__getitem__`` returning ``(uint8 HxWxC image,
int label)`` and a ``classes`` list; ``mean`` and ``std`` (per channel, in [0, 1]) are optional
and measured by cnnforge when missing. ``labels`` lets cnnforge split without reading images.
"""
from __future__ import annotations

import numpy as np

CLASSES = ["circle", "square", "triangle"]


def draw(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size`` x ``size`` x 1 image of shape ``label`` on a noisy dark background."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(0.2, 0.35) * size
    cy, cx = rng.uniform(r, size - r, 2)
    if label == 0:
        mask = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    elif label == 1:
        mask = (np.abs(x - cx) <= r * 0.8) & (np.abs(y - cy) <= r * 0.8)
    else:  # apex at the top, base at the bottom
        mask = (y >= cy - r) & (y <= cy + r) & (np.abs(x - cx) <= (y - (cy - r)) / 2)
    image = rng.integers(0, 50, (size, size)).astype(np.int32)
    image[mask] += int(rng.integers(120, 200))
    return np.clip(image, 0, 255).astype(np.uint8)[..., None]


class ShapesDataset:
    """``n`` images, balanced over :data:`CLASSES`, the same for the same ``seed``."""

    classes = CLASSES

    def __init__(self, n: int, *, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.labels = np.arange(n) % len(CLASSES)
        rng.shuffle(self.labels)
        self.images = np.stack([draw(int(label), size, rng) for label in self.labels])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])
