"""One optimizer step, as Accelerate's examples write it, and the objective it minimises."""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from cnnforge.training.nonfinite import NonFiniteGuard
from cnnforge.training.state import TrainParts


class TrainStep:
    """Forward, loss, backward, step: Accelerate's ``cv_example`` step; returns the logits and the loss.

    ``guard`` makes the optimizer skip a non-finite step on the device (no host sync) and writes its
    verdict into ``found``. What the run needs is decided once, here, not per step: Accelerate's
    ``accumulate``, ``autocast`` and ``backward`` are used where they have work to do (gradient
    accumulation, mixed precision, fp16 loss scaling; otherwise they are context managers and a
    division by 1), and a constant learning rate has no schedule to step. On a light model each of
    these costs as much per step as a GPU takes for the step itself. Everything else a run does per
    step (metrics, EMA, checkpoints, progress) happens around this call.
    """

    def __init__(self, parts: TrainParts, objective: Any, guard: NonFiniteGuard, *,
                 clip_grad_norm: float | None, constant_lr: bool) -> None:
        acc = parts.acc
        self.acc, self.model, self.optimizer = acc, parts.model, parts.optimizer
        self.objective, self.guard, self.clip_grad_norm = objective, guard, clip_grad_norm  # objective(x, logits, y)
        self.schedule = None if constant_lr else parts.schedule
        self.accumulating = acc.gradient_accumulation_steps > 1
        self.autocast = acc.autocast if acc.native_amp else contextlib.nullcontext
        self.accelerated_backward = self.accumulating or acc.scaler is not None  # divides by the steps, scales fp16

    def __call__(self, x: torch.Tensor, y: torch.Tensor, found: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        acc, model, optimizer = self.acc, self.model, self.optimizer
        with acc.accumulate(model) if self.accumulating else contextlib.nullcontext():
            with self.autocast():
                logits = model(x)
                loss = self.objective(x, logits, y)
            if self.accelerated_backward:
                acc.backward(loss)
            else:
                loss.backward()
            if not self.accumulating or acc.sync_gradients:  # the last batch of an accumulation
                self.guard.check(loss, found)
                if self.clip_grad_norm:
                    acc.clip_grad_norm_(model.parameters(), self.clip_grad_norm)
                self.guard.step(optimizer)
                if self.schedule is not None:
                    self.schedule.step()
                optimizer.zero_grad(set_to_none=True)
        return logits, loss


def default_objective(criterion: Any) -> Any:
    """The step's default objective: the recipe's loss of the logits (callbacks such as ``distill`` replace it)."""
    def objective(x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return criterion(logits, y)

    return objective
