"""The seed networks as ``nn.Module`` classes, with flatten sizes derived from the input size."""
from __future__ import annotations

import torch
from torch import nn

from cnnforge.models.layers import SpatialDropout, activation, pooled_size


class ConvNet(nn.Module):
    """Seed 000's ConvNet: three conv(3x3, same)+act+maxpool blocks 1->4->8->16, then 144->32->10."""

    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int], activation_name: str,
                 dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((in_channels, 4), (4, 8), (8, 16)):
            layers += [nn.Conv2d(cin, cout, 3, padding="same"), activation(activation_name), nn.MaxPool2d(2)]
        self.encoder = nn.Sequential(*layers)
        h, w = (pooled_size(s, 3) for s in image_size)
        if h < 1 or w < 1:
            raise ValueError(f"convnet needs images of at least 8x8 pixels (three 2x2 pools), got {image_size}")
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * h * w, 32), activation(activation_name),
                                  *([nn.Dropout(dropout)] if dropout else []), nn.Linear(32, num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened encoder output (seed 000's get_embedding)."""
        return self.encoder(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class VGG(nn.Module):
    """Seed 002's VGG: blocks of two 3x3 convs (+BatchNorm) and a 2x2 max-pool, then fc->128->classes."""

    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int], widths: tuple[int, ...],
                 activation_name: str, batch_norm: bool, dropout: float, spatial_dropout: list[float],
                 hidden: int = 128) -> None:
        super().__init__()
        if spatial_dropout and len(spatial_dropout) != len(widths):
            raise ValueError(f"spatial_dropout needs one p per block ({len(widths)}), got {spatial_dropout}")
        blocks: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(widths):
            for c_in in (cin, cout):
                blocks.append(nn.Conv2d(c_in, cout, 3, padding=1))
                if batch_norm:
                    blocks.append(nn.BatchNorm2d(cout))
                blocks.append(activation(activation_name))
            blocks.append(nn.MaxPool2d(2, 2))
            if spatial_dropout and spatial_dropout[i] > 0:
                blocks.append(SpatialDropout(spatial_dropout[i]))
            cin = cout
        self.features = nn.Sequential(*blocks)
        h, w = (pooled_size(s, len(widths)) for s in image_size)
        if h < 1 or w < 1:
            raise ValueError(f"{len(widths)} VGG blocks need images of at least {2 ** len(widths)} pixels, got {image_size}")
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(cin * h * w, hidden)]
        if batch_norm:
            head.append(nn.BatchNorm1d(hidden))
        head.append(activation(activation_name))
        if dropout:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden, num_classes))
        self.head = nn.Sequential(*head)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
