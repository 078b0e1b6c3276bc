"""Registered builders of the seed models. Light: torch is imported only when a model is built.

Each builder is named like the model, takes its knobs as annotated keyword arguments (so a recipe
typo or a bad value is a config error before anything heavy runs) and documents the seed it
reproduces. Parameter counts in the docstrings are at the seed's input size and are tested.
"""
from __future__ import annotations

from typing import Any, Literal

from cnnforge.models.params import Activation, Dropout, Size, Width
from cnnforge.registry import register_model


def _size(image_size: Any, default: Size) -> Size:
    if image_size is None:
        return default
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


def _flat(in_channels: int, image_size: Any, default: Size) -> int:
    h, w = _size(image_size, default)
    return in_channels * h * w


@register_model
def fcnet(*, num_classes: int, in_channels: int = 1, image_size: Size | None = None, hidden: Width = 32,
          activation: Activation = "relu", dropout: Dropout = 0.0) -> Any:
    """Seed 000's FcNet: flatten, 784->32->16->10 with ReLU (25,818 params on 1x28x28)."""
    from cnnforge.models.nets import mlp_net

    return mlp_net(num_classes, _flat(in_channels, image_size, (28, 28)), (hidden, hidden // 2),
                   activation_name=activation, dropout=dropout)


@register_model
def feedforward(*, num_classes: int, in_channels: int = 3, image_size: Size | None = None,
                hidden: tuple[Width, ...] = (128, 32), activation: Activation = "relu", dropout: Dropout = 0.0) -> Any:
    """Seed 001's FeedForwardNet: flatten, 3072->128->32->10 with ReLU (397,802 params on 3x32x32)."""
    from cnnforge.models.nets import mlp_net

    return mlp_net(num_classes, _flat(in_channels, image_size, (32, 32)), hidden, activation_name=activation,
                   dropout=dropout)


@register_model
def convnet(*, num_classes: int, in_channels: int = 1, image_size: Size | None = None,
            activation: Activation = "relu", dropout: Dropout = 0.0,
            spatial_dropout: list[Dropout] | None = None) -> Any:
    """Seed 000's ConvNet: 3x3 'same' convs 1->4->8->16 each with a pool, head 144->32->10 (6,474 params on 1x28x28)."""
    from cnnforge.models.layers import Stage
    from cnnforge.models.nets import conv_net

    return conv_net("convnet", num_classes, in_channels, _size(image_size, (28, 28)),
                    [Stage(4), Stage(8), Stage(16)], (32,), activation_name=activation, dropout=dropout,
                    spatial_dropout=spatial_dropout or ())


@register_model
def lenet(*, num_classes: int, in_channels: int = 3, image_size: Size | None = None,
          activation: Activation = "relu", dropout: Dropout = 0.0, spatial_dropout: list[Dropout] | None = None) -> Any:
    """Seed 001's LeNet-style Net: 5x5 convs 3->6->16 each with a pool, head 400->120->84->10 (62,006 params on
    3x32x32)."""
    from cnnforge.models.layers import Stage
    from cnnforge.models.nets import conv_net

    return conv_net("lenet", num_classes, in_channels, _size(image_size, (32, 32)),
                    [Stage(6, kernel=5, padding=0), Stage(16, kernel=5, padding=0)], (120, 84),
                    activation_name=activation, dropout=dropout, spatial_dropout=spatial_dropout or ())


def _vgg(name: str, num_classes: int, in_channels: int, image_size: Any, widths: tuple[int, ...], activation: str,
         batch_norm: bool, dropout: float, spatial_dropout: list[float] | None) -> Any:
    from cnnforge.models.layers import Stage
    from cnnforge.models.nets import conv_net

    return conv_net(name, num_classes, in_channels, _size(image_size, (32, 32)), [Stage(w, convs=2) for w in widths],
                    (128,), activation_name=activation, batch_norm=batch_norm, dropout=dropout,
                    spatial_dropout=spatial_dropout or ())


@register_model
def vgg_baseline(*, num_classes: int, in_channels: int = 3, image_size: Size | None = None,
                 activation: Activation = "relu", dropout: Dropout = 0.0, batch_norm: bool = False,
                 spatial_dropout: list[Dropout] | None = None, widths: tuple[Width, ...] = (16,)) -> Any:
    """Seed 002's ModelBaseline: one VGG block (two 3x3 convs of 16, pool), head 4096->128->10 (528,474 params on
    3x32x32)."""
    return _vgg("vgg_baseline", num_classes, in_channels, image_size, widths, activation, batch_norm, dropout,
                spatial_dropout)


@register_model
def vgg_bn(*, num_classes: int, in_channels: int = 3, image_size: Size | None = None,
           activation: Activation = "relu", dropout: Dropout = 0.5, batch_norm: bool = True,
           spatial_dropout: list[Dropout] | None = None, widths: tuple[Width, ...] = (16, 32, 64)) -> Any:
    """Seed 002's 3-block VGG 16/32/64 with BatchNorm and a Dropout(0.5) head (205,274 params on 3x32x32)."""
    return _vgg("vgg_bn", num_classes, in_channels, image_size, widths, activation, batch_norm, dropout,
                spatial_dropout)


@register_model
def my_first_convnet(*, num_classes: int, in_channels: int = 1, image_size: Size | None = None,
                     activation: Activation = "relu", head_activation: Literal[Activation, "sigmoid",
                                                                               "tanh"] = "sigmoid",
                     dropout: Dropout = 0.0, spatial_dropout: list[Dropout] | None = None) -> Any:
    """Seed 004's MyFirstConvNet: 3x3 convs 1->16->32 each with a pool, head 1568->500 Sigmoid->10 (794,310 params on
    1x28x28)."""
    from cnnforge.models.layers import Stage
    from cnnforge.models.nets import conv_net

    return conv_net("my_first_convnet", num_classes, in_channels, _size(image_size, (28, 28)), [Stage(16), Stage(32)],
                    (500,), activation_name=activation, head_activation=head_activation, dropout=dropout,
                    spatial_dropout=spatial_dropout or ())
