"""Small layers the seed models share: activations by name and seed 002's SpatialDropout."""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class SpatialDropout(nn.Module):
    """Zero whole channels with probability ``p`` and rescale the rest by 1/(1-p) (seed 002).

    Equivalent to ``nn.Dropout2d``; written out because the seed teaches it this way and because
    it also accepts (N, C) inputs by treating each feature as a channel.
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


def pooled_size(size: int, pools: int) -> int:
    """Spatial size after ``pools`` 2x2 max-pools with floor division."""
    for _ in range(pools):
        size //= 2
    return size
