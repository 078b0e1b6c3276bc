"""Augmentation policies from torchvision's ``transforms.v2`` as registered ops: RandAugment, TrivialAugment,
AutoAugment, AugMix and random erasing.

They sit in the same albumentations ``Compose`` as every other op (``augment.train: [{name: hflip},
{name: rand_augment}]``) through :class:`~cnnforge.data.torchvision_op.TorchvisionOp`, which hands the
image to torchvision as a uint8 CHW tensor, grayscale or RGB alike, and seeds torchvision's draw from
the pipeline's ``(seed, epoch, index)`` stream: ``num_workers`` and resume do not change what a sample
gets. Building one imports nothing heavy; the class is imported when a recipe uses an op.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from cnnforge.data.ops import Prob
from cnnforge.registry import register_augmentation

Magnitude = Annotated[int, Field(ge=0, le=30)]  # torchvision's 31 magnitude bins
Ratio = Annotated[float, Field(gt=0)]
Share = Annotated[float, Field(gt=0, le=1)]


def _wrap(transform: Any, p: float = 1.0) -> Any:
    """``transform`` (a torchvision v2 transform) as an albumentations op applied with probability ``p``."""
    from cnnforge.data.torchvision_op import TorchvisionOp

    return TorchvisionOp(transform, p=p)


def _v2() -> Any:
    from torchvision.transforms import v2

    return v2


@register_augmentation
def rand_augment(*, num_ops: Annotated[int, Field(ge=1, le=14)] = 2, magnitude: Magnitude = 9) -> Any:
    """RandAugment (Cubuk et al. 2020): ``num_ops`` ops drawn from 14 per image, each at ``magnitude`` (0-30)."""
    return _wrap(_v2().RandAugment(num_ops=num_ops, magnitude=magnitude))


@register_augmentation
def trivial_augment() -> Any:
    """TrivialAugment Wide (Müller & Hutter 2021): one op per image at a random magnitude; nothing to tune.

    Its translations reach 32 pixels whatever the image size, so images under ~64 pixels a side (the 8x8
    digits, MNIST) sometimes come out empty: ``rand_augment`` scales its shifts to the image.
    """
    return _wrap(_v2().TrivialAugmentWide())


@register_augmentation
def auto_augment(*, policy: Literal["imagenet", "cifar10", "svhn"] = "imagenet") -> Any:
    """AutoAugment (Cubuk et al. 2019): the sub-policies learned on ``policy``'s dataset (svhn suits digits)."""
    v2 = _v2()
    return _wrap(v2.AutoAugment(v2.AutoAugmentPolicy(policy)))


@register_augmentation
def augmix(*, severity: Annotated[int, Field(ge=1, le=10)] = 3, mixture_width: Annotated[int, Field(ge=1)] = 3,
           alpha: Ratio = 1.0, all_ops: bool = True) -> Any:
    """AugMix (Hendrycks et al. 2020): ``mixture_width`` chains of ops at ``severity`` mixed with the image.

    Slow on a CPU (a dozen ops per image); ``all_ops: false`` leaves out the colour ops that overlap a
    test-time corruption benchmark.
    """
    return _wrap(_v2().AugMix(severity=severity, mixture_width=mixture_width, alpha=alpha, all_ops=all_ops))


@register_augmentation
def random_erasing(*, p: Prob = 0.5, scale: tuple[Share, Share] = (0.02, 0.33), ratio: tuple[Ratio, Ratio] = (0.3, 3.3),
                   value: Annotated[int, Field(ge=0, le=255)] = 0) -> Any:
    """Random erasing (Zhong et al. 2020): with probability ``p``, a rectangle of ``scale`` of the area and aspect
    ``ratio`` set to ``value`` (0-255, before normalisation: 0 is black, not the mean)."""
    return _wrap(_v2().RandomErasing(p=1.0, scale=scale, ratio=ratio, value=value), p=p)
