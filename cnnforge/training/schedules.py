"""The built-in LR schedules of ``schedule.name``, registered like a plugin's.

Every schedule is a torch ``LRScheduler`` stepped after each optimizer step (its position is a step
count, so a mid-epoch resume restores it exactly). ``none``, ``step``, ``cosine`` and ``onecycle`` are
multipliers of the recipe's LR (``LambdaLR``: rollbacks and population-based training rescale them in
place, training/parts.py); ``cosine_restarts`` is torch's ``CosineAnnealingWarmRestarts``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from cnnforge.recipe.section import Positive
from cnnforge.registry import register_schedule

Epochs = Annotated[float, Field(ge=0)]


def _lambda(optimizer: Any, factor: Callable[[int], float]) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _warmed_up(factor: Callable[[int], float], warmup_epochs: float, steps_per_epoch: int) -> Callable[[int], float]:
    """``factor`` after a linear warm-up from ``1 / warmup`` to 1 over the first ``warmup_epochs`` epochs."""
    warmup = warmup_epochs * steps_per_epoch
    return lambda step: (step + 1) / warmup if step < warmup else factor(step)


@register_schedule("none")
def constant(optimizer: Any, *, epochs: int, steps_per_epoch: int, warmup_epochs: Epochs = 0.0) -> Any:
    """A constant LR (after an optional linear warm-up); without warm-up the trainer does not step it."""
    return _lambda(optimizer, _warmed_up(lambda step: 1.0, warmup_epochs, steps_per_epoch))


@register_schedule
def step(optimizer: Any, *, epochs: int, steps_per_epoch: int, step_size: Positive = 2,
         gamma: Annotated[float, Field(gt=0, le=1)] = 0.1, warmup_epochs: Epochs = 0.0) -> Any:
    """The LR times gamma every step_size epochs (StepLR, as the seeds count it)."""
    def factor(s: int) -> float:
        return gamma ** ((s // steps_per_epoch) // step_size)

    return _lambda(optimizer, _warmed_up(factor, warmup_epochs, steps_per_epoch))


@register_schedule
def cosine(optimizer: Any, *, epochs: int, steps_per_epoch: int, warmup_epochs: Epochs = 0.0) -> Any:
    """Cosine annealing from the LR to zero over the run (after an optional linear warm-up)."""
    total, warmup = max(1, epochs * steps_per_epoch), warmup_epochs * steps_per_epoch

    def factor(s: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warmup) / max(1.0, total - warmup))))

    return _lambda(optimizer, _warmed_up(factor, warmup_epochs, steps_per_epoch))


@register_schedule
def onecycle(optimizer: Any, *, epochs: int, steps_per_epoch: int,
             pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3) -> Any:
    """Linear warm-up from lr/25 over pct_start of the run, then cosine to zero (peak: optim.lr)."""
    total = max(1, epochs * steps_per_epoch)
    peak = pct_start * total

    def factor(s: int) -> float:
        if s < peak:
            return 1 / 25 + (1 - 1 / 25) * s / peak
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - peak) / max(1.0, total - peak))))

    return _lambda(optimizer, factor)


@register_schedule
def cosine_restarts(optimizer: Any, *, epochs: int, steps_per_epoch: int,
                    period_epochs: Annotated[float, Field(gt=0)] = 1.0, period_mult: Positive = 1,
                    min_lr: Annotated[float, Field(ge=0)] = 0.0) -> Any:
    """torch's CosineAnnealingWarmRestarts: cosine to min_lr, restarting every period_epochs (x period_mult)."""
    import torch

    period = max(1, round(period_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=period, T_mult=period_mult,
                                                                eta_min=min_lr)
