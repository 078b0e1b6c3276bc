"""Augmentation ops as registered albumentations transforms (seed 002's CIFAR augmentations).

Each op is a plain function whose annotated keyword arguments are its recipe params, so the
recipe validator checks names, types and ranges before any image is touched.
"""
from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import Field

from cnnforge.registry import register_augmentation

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

Prob = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]


def _albumentations() -> Any:
    import albumentations as A

    return A


@register_augmentation
def hflip(*, p: Prob = 0.5) -> Any:
    """Mirror left-right with probability ``p``."""
    return _albumentations().HorizontalFlip(p=p)


@register_augmentation
def color_jitter(*, brightness: NonNegative = 0.0, contrast: NonNegative = 0.0, saturation: NonNegative = 0.0,
                 hue: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0, p: Prob = 1.0) -> Any:
    """Random brightness, contrast, saturation and hue (torchvision's ColorJitter semantics)."""
    return _albumentations().ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, p=p)


@register_augmentation
def rotate(*, limit: Annotated[float, Field(ge=0.0, le=180.0)] = 20.0, p: Prob = 1.0) -> Any:
    """Rotate by a uniform angle in [-limit, limit] degrees, filling the corners with black."""
    import cv2

    return _albumentations().Rotate(limit=limit, border_mode=cv2.BORDER_CONSTANT, fill=0, p=p)


@register_augmentation
def cutout(*, size: Annotated[int, Field(ge=1)] = 8, holes: Annotated[int, Field(ge=1)] = 1, p: Prob = 0.5) -> Any:
    """Zero ``holes`` square patches of ``size`` pixels (coarse dropout, DeVries & Taylor 2017)."""
    return _albumentations().CoarseDropout(num_holes_range=(holes, holes), hole_height_range=(size, size),
                                           hole_width_range=(size, size), fill=0, p=p)
