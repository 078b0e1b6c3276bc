"""The built-in optimizers of ``optim.name``: torch's SGD, Adam and AdamW, registered like a plugin's.

Each takes cnnforge's parameter groups (``training/parts.py``: ``optim.head_lr``, ``optim.bias_lr_mult``)
as they are, and the fused implementation: one kernel per step, and the only one that skips a
non-finite step on the device (``train.on_nan``, training/nonfinite.py) without a host sync.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from cnnforge.recipe.section import Bool
from cnnforge.registry import register_optimizer

Momentum = Annotated[float, Field(ge=0, lt=1)]
Betas = tuple[Momentum, Annotated[float, Field(ge=0, lt=1)]]


@register_optimizer
def sgd(params: Any, *, lr: float, weight_decay: float = 0.0, momentum: Momentum = 0.9,
        nesterov: Bool = False) -> Any:
    """torch's SGD with momentum (nesterov: true applies only with momentum > 0)."""
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                           weight_decay=weight_decay, fused=True)


@register_optimizer
def adam(params: Any, *, lr: float, weight_decay: float = 0.0, betas: Betas = (0.9, 0.999)) -> Any:
    """torch's Adam (weight decay added to the gradient)."""
    import torch

    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)


@register_optimizer
def adamw(params: Any, *, lr: float, weight_decay: float = 0.0, betas: Betas = (0.9, 0.999)) -> Any:
    """torch's AdamW (decoupled weight decay)."""
    import torch

    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
