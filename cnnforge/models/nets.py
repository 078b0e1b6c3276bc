"""The seed networks: a feature extractor and a fully connected head, sized from the input.

Every model of the course notes has the same shape — convolution stages (none for the MLPs), a
flatten, hidden fully connected layers, a classifier — so one class holds them all and two
functions build it. The seeds' attribute names differ (``encoder``/``head``, ``vgg``/``fc``,
``layer1``/``layer2``/``fc``); here they are always ``features`` and ``head``, in the seeds' order.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnforge.models.layers import Stage, conv_stages, features_output, mlp_layers


class SeedNet(nn.Module):
    """``features`` then ``head``; :meth:`embed` is the flattened output of ``features``."""

    def __init__(self, features: list[nn.Module], head: list[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(*features)
        self.head = nn.Sequential(*head)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened feature-extractor output (seed 000's ``get_embedding``), e.g. for t-SNE."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _classifier(in_features: int, num_classes: int, dropout: float) -> list[nn.Module]:
    return [*([nn.Dropout(dropout)] if dropout else []), nn.Linear(in_features, num_classes)]


def mlp_net(num_classes: int, in_features: int, hidden: Sequence[int], *, activation_name: str,
            dropout: float) -> SeedNet:
    """Flatten, hidden Linear+activation layers (the features, so :meth:`SeedNet.embed` is the last
    hidden layer), then [Dropout] and the classifier."""
    features = [nn.Flatten(), *mlp_layers(in_features, hidden, activation_name=activation_name)]
    return SeedNet(features, _classifier(hidden[-1] if hidden else in_features, num_classes, dropout))


def conv_net(name: str, num_classes: int, in_channels: int, image_size: tuple[int, int], stages: Sequence[Stage],
             hidden: Sequence[int], *, activation_name: str, head_activation: str | None = None,
             batch_norm: bool = False, dropout: float = 0.0, spatial_dropout: Sequence[float] = ()) -> SeedNet:
    """Conv ``stages``, then Flatten, ``hidden`` Linear layers and the classifier.

    The flatten size comes from the input size (seed 003's output-size formula); an input too small
    for the stages, or a ``spatial_dropout`` list of the wrong length, is a ValueError that says why.
    """
    if spatial_dropout and len(spatial_dropout) != len(stages):
        raise ValueError(f"{name}: spatial_dropout needs one p per block ({len(stages)} blocks), "
                         f"got {list(spatial_dropout)}")
    h, w = (features_output(s, stages) for s in image_size)
    if h < 1 or w < 1:
        smallest = next(s for s in range(1, 4097) if features_output(s, stages) > 0)
        raise ValueError(f"{name} needs images of at least {smallest}x{smallest} pixels for its {len(stages)} "
                         f"conv+pool blocks, got {image_size[0]}x{image_size[1]}")
    features = conv_stages(in_channels, stages, activation_name=activation_name, batch_norm=batch_norm,
                           spatial_dropout=spatial_dropout)
    flat = stages[-1].channels * h * w
    head = [nn.Flatten(), *mlp_layers(flat, hidden, activation_name=head_activation or activation_name,
                                      batch_norm=batch_norm)]
    return SeedNet(features, head + _classifier(hidden[-1] if hidden else flat, num_classes, dropout))
