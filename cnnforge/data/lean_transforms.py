"""Lean albumentations transforms for the ``rotate`` and ``cutout`` ops.

On the 32x32 images most course recipes use, albumentations' own ``Rotate`` and ``CoarseDropout``
spend almost all of their time on bookkeeping, not pixels: ``Rotate`` builds its affine matrix
twice in numpy and checks it with ``np.isclose`` for boxes and keypoints a classifier never has
(77 us per image, of which ``cv2.warpAffine`` is 8), ``CoarseDropout`` 30 us to zero one square.
These two do the same pixel work for images only, 12 us and 3 us. They are ordinary
``ImageOnlyTransform`` subclasses, so they sit in the same ``Compose``, draw from the stream
``set_random_state`` gives them and honour ``p`` like every other op.
(``benchmarks/augment_throughput.py`` measures the whole pipeline.)
"""
from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

CV2_MAX_CHANNELS = 4  # cv2.warpAffine takes at most 4 channels at a time


class Rotate(A.ImageOnlyTransform):
    """Rotate about the image centre by a uniform angle in [-limit, limit] degrees; corners filled with 0.

    The same pixels as ``albumentations.Rotate(border_mode=BORDER_CONSTANT, fill=0)`` at the same angle
    (bilinear, centre ``((w-1)/2, (h-1)/2)``, a positive angle turns counter-clockwise).
    """

    def __init__(self, limit: float = 20.0, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.limit = limit

    def get_params(self) -> dict[str, float]:
        return {"angle": self.py_random.uniform(-self.limit, self.limit)}

    def apply(self, img: np.ndarray, angle: float, **params: Any) -> np.ndarray:
        h, w = img.shape[:2]
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)

        def warp(pixels: np.ndarray) -> np.ndarray:
            return cv2.warpAffine(pixels, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)

        if img.ndim == 2 or img.shape[2] <= CV2_MAX_CHANNELS:
            return warp(img).reshape(img.shape)  # cv2 drops a trailing channel axis of 1
        return np.dstack([warp(img[..., c:c + CV2_MAX_CHANNELS]).reshape(h, w, -1)
                          for c in range(0, img.shape[2], CV2_MAX_CHANNELS)])

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("limit",)


class Cutout(A.ImageOnlyTransform):
    """Zero ``holes`` squares of ``size`` pixels, each placed uniformly inside the image (as ``CoarseDropout``)."""

    def __init__(self, size: int = 8, holes: int = 1, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.size, self.holes = size, holes

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        return {"corners": [(self.py_random.randint(0, max(0, h - self.size)),
                             self.py_random.randint(0, max(0, w - self.size))) for _ in range(self.holes)]}

    def apply(self, img: np.ndarray, corners: list[tuple[int, int]], **params: Any) -> np.ndarray:
        img = img.copy()
        for top, left in corners:
            img[top:top + self.size, left:left + self.size] = 0
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "holes")
