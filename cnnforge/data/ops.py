"""Augmentation ops as registered albumentations transforms (seeds 001-003's augmentations).

Each op is a plain function whose annotated keyword arguments are its recipe params, so the
recipe validator checks names, types and ranges before any image is touched. Geometric ops fill
what they uncover with black, as torchvision does.
"""
from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import Field

from cnnforge.registry import register_augmentation

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

Prob = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Pixels = Annotated[int, Field(ge=1)]
Size = Pixels | tuple[Pixels, Pixels]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _albumentations() -> Any:
    import albumentations as A

    return A


@register_augmentation
def hflip(*, p: Prob = 0.5) -> Any:
    """Mirror left-right with probability ``p``."""
    return _albumentations().HorizontalFlip(p=p)


@register_augmentation
def vflip(*, p: Prob = 0.5) -> Any:
    """Mirror top-bottom with probability ``p``."""
    return _albumentations().VerticalFlip(p=p)


@register_augmentation
def color_jitter(*, brightness: NonNegative = 0.0, contrast: NonNegative = 0.0, saturation: NonNegative = 0.0,
                 hue: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0, p: Prob = 1.0) -> Any:
    """Random brightness, contrast, saturation and hue (torchvision's ColorJitter semantics)."""
    return _albumentations().ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, p=p)


@register_augmentation
def rotate(*, limit: Annotated[float, Field(ge=0.0, le=180.0)] = 20.0, p: Prob = 1.0) -> Any:
    """Rotate by a uniform angle in [-limit, limit] degrees, filling the corners with black."""
    from cnnforge.data.lean_transforms import Rotate

    return Rotate(limit=limit, p=p)


@register_augmentation
def cutout(*, size: Annotated[int, Field(ge=1)] = 8, holes: Annotated[int, Field(ge=1)] = 1, p: Prob = 0.5) -> Any:
    """Zero ``holes`` square patches of ``size`` pixels (coarse dropout, DeVries & Taylor 2017)."""
    from cnnforge.data.lean_transforms import Cutout

    return Cutout(size=size, holes=holes, p=p)


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@register_augmentation
def random_crop(*, size: Size, padding: Annotated[int, Field(ge=0)] = 0) -> Any:
    """Pad by ``padding`` black pixels per side, then crop ``size`` (int or [h, w]) at random
    (torchvision's RandomCrop).

    Always applied (no ``p``): every image of a batch must come out the same size.
    """
    import cv2

    A = _albumentations()
    h, w = _hw(size)
    crop = A.RandomCrop(height=h, width=w)
    if not padding:
        return crop
    return A.Compose([A.Pad(padding=padding, fill=0, border_mode=cv2.BORDER_CONSTANT), crop])


@register_augmentation
def random_resized_crop(*, size: Size, scale: tuple[Fraction, Fraction] = (0.08, 1.0),
                        ratio: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = (0.75, 4 / 3),
                        ) -> Any:
    """Crop a random ``scale`` share of the area at a random aspect ``ratio``, resized to ``size`` (seed 001); always
    applied."""
    return _albumentations().RandomResizedCrop(size=_hw(size), scale=scale, ratio=ratio)


@register_augmentation
def gaussian_noise(*, std: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05, p: Prob = 0.5) -> Any:
    """Add per-pixel Gaussian noise of standard deviation ``std`` (a fraction of the 0-255 range)."""
    return _albumentations().GaussNoise(std_range=(std, std), p=p)


@register_augmentation
def perspective(*, distortion: Annotated[float, Field(gt=0.0, le=0.5)] = 0.1, p: Prob = 0.5) -> Any:
    """Move the four corners by up to about ``distortion`` of the image size and warp (a perspective tilt)."""
    import cv2

    return _albumentations().Perspective(scale=(0.0, distortion), fit_output=False, border_mode=cv2.BORDER_CONSTANT,
                                         fill=0, p=p)


@register_augmentation
def resize(*, size: Size) -> Any:
    """Resize to ``size`` (int or [h, w]); the default evaluation step when training crops to another size."""
    h, w = _hw(size)
    return _albumentations().Resize(height=h, width=w)


@register_augmentation
def center_crop(*, size: Size) -> Any:
    """Cut the central ``size`` (int or [h, w]) out of the image (seed 001's evaluation: resize, then centre crop)."""
    h, w = _hw(size)
    return _albumentations().CenterCrop(height=h, width=w)


@register_augmentation
def normalize(*, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[Annotated[float, Field(gt=0)], ...] = IMAGENET_STD) -> Any:
    """Normalise with these per-channel statistics (in [0, 1] units; ImageNet's by default) instead of the dataset's.

    cnnforge always normalises on the device, after the uint8 batch has been moved there, with the
    dataset's own mean/std; this op only replaces those statistics, for training and evaluation alike
    (pretrained torchvision/timm weights expect ImageNet's). Without it nothing changes.
    """
    return _albumentations().Normalize(mean=mean, std=std, max_pixel_value=255.0)
