"""The example model: conv stages that halve the image, global average pooling, one linear layer."""
from __future__ import annotations

import torch
from torch import nn

from cnnforge.models.layers import activation as make_activation


class GapNet(nn.Module):
    """``depth`` x (3x3 conv, BatchNorm, activation, 2x2 max-pool), widths doubling, then GAP and a classifier.

    Global average pooling (seed 003) makes the head independent of the input size, so the same
    weights run on 16x16 and 64x64 images.
    """

    def __init__(self, num_classes: int, in_channels: int, *, width: int, depth: int, activation: str,
                 dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(depth):
            cout = width * 2**i
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       make_activation(activation), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), *([nn.Dropout(dropout)] if dropout else []),
                                  nn.Linear(cin, num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """One vector per image: the pooled features (what ``cnnforge embed`` plots)."""
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))
