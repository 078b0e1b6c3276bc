"""A run's input normalisation, ``(x - 255 mean) / (255 std)`` on uint8 pixels, built from its data info.

The trainer normalises uint8 batches on the device (a quarter of the bytes to move), and a
prediction or an exported model must see exactly the same numbers, so the arithmetic lives here
once: a module, so it moves with ``.to(device)`` and traces into TorchScript.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class Normalize(nn.Module):
    """uint8 (or float 0..255) NCHW pixels -> the model's float input."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean).view(shape) * 255.0)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(std).view(shape) * 255.0))

    @classmethod
    def from_info(cls, info: Any) -> Normalize:
        """The normalisation of a run's ``DataInfo`` (its ``mean`` and ``std`` per channel, in 0..1)."""
        return cls(info.mean, info.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) * self.inv_std
