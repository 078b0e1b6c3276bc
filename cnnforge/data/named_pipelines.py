"""Named augmentation pipelines from the course notes, usable as ``augment.train: cifar_standard``.

A pipeline is a registered augmentation like any op, returning a ``Compose`` of the registered
ops, so it takes parameters too (``augment.train: [{name: cifar_standard, cutout: 8}]``) and a
plugin can add its own.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from cnnforge.data import ops
from cnnforge.registry import register_augmentation


def _compose(steps: list[Any]) -> Any:
    import albumentations as A  # NO_ALBUMENTATIONS_UPDATE is set by importing ops

    return A.Compose(steps)


@register_augmentation
def cifar_standard(*, cutout: Annotated[int, Field(ge=0)] = 0) -> Any:
    """Seed 002: ColorJitter(hue .05, saturation .05), horizontal flip, rotation up to 20 degrees; ``cutout`` > 0 adds
    a cutout square of that size."""
    steps = [ops.color_jitter(hue=0.05, saturation=0.05), ops.hflip(), ops.rotate(limit=20)]
    if cutout:
        steps.append(ops.cutout(size=cutout))
    return _compose(steps)


@register_augmentation
def imagenet_train(*, size: ops.Size = 224, scale: tuple[ops.Fraction, ops.Fraction] = (0.08, 1.0),
                   imagenet_stats: bool = True) -> Any:
    """Seed 001's transfer learning: RandomResizedCrop(size) + horizontal flip, normalised with ImageNet's statistics.

    ``imagenet_stats: false`` keeps the dataset's own statistics (grayscale data, or training from scratch).
    """
    steps = [ops.random_resized_crop(size=size, scale=scale), ops.hflip()]
    return _compose(steps + [ops.normalize()] if imagenet_stats else steps)


@register_augmentation("none")
def no_augmentation() -> Any:
    """No augmentation: what evaluation gets by default (plus a resize when training changes the size)."""
    return _compose([])
