"""Registered builders of the seed models. Light: torch is imported only when a model is built."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from cnnforge.registry import register_model

Activation = Literal["relu", "leaky_relu", "elu", "selu", "gelu", "silu"]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
Size = tuple[int, int]


def _size(image_size: Any, default: Size) -> Size:
    if image_size is None:
        return default
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


@register_model
def convnet(*, num_classes: int, in_channels: int = 1, image_size: Size | None = None,
            activation: Activation = "relu", dropout: Dropout = 0.0) -> Any:
    """Seed 000's ConvNet: convs 1->4->8->16 with pools, 144->32->10 head (6,474 params on 28x28)."""
    from cnnforge.models.nets import ConvNet

    return ConvNet(num_classes, in_channels, _size(image_size, (28, 28)), activation, dropout)


@register_model
def vgg_bn(*, num_classes: int, in_channels: int = 3, image_size: Size | None = None,
           activation: Activation = "relu", dropout: Dropout = 0.5, batch_norm: bool = True,
           spatial_dropout: list[Dropout] | None = None, widths: tuple[int, ...] = (16, 32, 64)) -> Any:
    """Seed 002's 3-block VGG 16/32/64 with BatchNorm and a Dropout(0.5) head (205,274 params on CIFAR-10)."""
    from cnnforge.models.nets import VGG

    return VGG(num_classes, in_channels, _size(image_size, (32, 32)), tuple(widths), activation, batch_norm,
               dropout, list(spatial_dropout or []))
