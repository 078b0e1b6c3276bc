"""Building blocks the seed models share: activations by name, seed 002's SpatialDropout, conv stages.

A seed model is a stack of *stages* (convolutions, an activation, a 2x2 max-pool) followed by a
fully connected head. Describing a stage as data (:class:`Stage`) lets one function build every
seed's feature extractor and lets :func:`stage_output` apply seed 003's output-size formula, so a
model's flatten size follows the input size instead of being hard-coded for 28x28 or 32x32.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (a key of :data:`ACTIVATIONS`)."""
    return ACTIVATIONS[name]()


class SpatialDropout(nn.Module):
    """Zero whole channels with probability ``p`` and rescale the rest by 1/(1-p) (seed 002).

    Neighbouring pixels of a feature map are strongly correlated, so dropping single pixels barely
    regularises a conv layer; dropping whole maps does. Same maths as ``nn.Dropout2d``, written out
    because the seed teaches it this way and because it also accepts (N, C) inputs.
    """

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"SpatialDropout p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = x.shape[:2] + (1,) * (x.dim() - 2)
        keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclass(frozen=True)
class Stage:
    """``convs`` convolutions to ``channels`` (kernel, padding, stride 1), each + activation, then a 2x2 max-pool."""

    channels: int
    kernel: int = 3
    padding: int = 1
    convs: int = 1


def stage_output(size: int, stage: Stage) -> int:
    """Spatial size after ``stage``: (size - kernel + 2*padding) / stride + 1 per conv, then halved by the pool."""
    for _ in range(stage.convs):
        size = size - stage.kernel + 2 * stage.padding + 1
        if size < 1:
            return 0
    return size // 2


def features_output(size: int, stages: Sequence[Stage]) -> int:
    """Spatial size after all ``stages`` (0 when the input is too small for them)."""
    for stage in stages:
        size = stage_output(size, stage)
        if size < 1:
            return 0
    return size


def conv_stages(in_channels: int, stages: Sequence[Stage], *, activation_name: str, batch_norm: bool = False,
                spatial_dropout: Sequence[float] = ()) -> list[nn.Module]:
    """Layers of ``stages`` in the seeds' order: conv, [BatchNorm], activation (x convs), max-pool, [SpatialDropout]."""
    layers: list[nn.Module] = []
    cin = in_channels
    for i, stage in enumerate(stages):
        for _ in range(stage.convs):
            layers.append(nn.Conv2d(cin, stage.channels, stage.kernel, padding=stage.padding))
            if batch_norm:
                layers.append(nn.BatchNorm2d(stage.channels))
            layers.append(activation(activation_name))
            cin = stage.channels
        layers.append(nn.MaxPool2d(2, 2))
        if spatial_dropout and spatial_dropout[i] > 0:
            layers.append(SpatialDropout(spatial_dropout[i]))
    return layers


def mlp_layers(in_features: int, hidden: Sequence[int], *, activation_name: str,
               batch_norm: bool = False) -> list[nn.Module]:
    """Hidden fully connected layers: Linear, [BatchNorm1d], activation for each width in ``hidden``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers.append(nn.Linear(in_features, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(activation(activation_name))
        in_features = width
    return layers
