"""``distill``: knowledge distillation (Hinton et al. 2015) from a finished run, the teacher.

The teacher is loaded as ``cnnforge predict`` loads a run (its recipe, its tested weights) and runs in
eval mode beside the student on every training batch. The step minimises
``(1 - alpha) * loss + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``: the recipe's loss
on the labels plus the temperature-scaled KL divergence (the T^2 keeps its gradients' scale as T changes).
The teacher must have been trained on the same classes (checked) and sees the student's normalised
inputs, so its run's normalisation statistics must be the student data's (checked). The teacher is fixed,
so distillation adds no state to checkpoints; the cost is one teacher forward per step.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from cnnforge.errors import ConfigError
from cnnforge.registry import register_callback
from cnnforge.training.callbacks import Callback, FitContext


@register_callback("distill")
class Distill(Callback):
    """Learn from a finished run's softened outputs too (KL on temperature-scaled logits), teacher: its directory."""

    all_ranks = True  # every rank's step minimises the same objective

    def __init__(self, *, teacher: str, temperature: Annotated[float, Field(gt=0)] = 4.0,
                 alpha: Annotated[float, Field(ge=0, le=1)] = 0.5,
                 checkpoint: Literal["best", "last"] | None = None) -> None:
        self.teacher, self.temperature, self.alpha, self.checkpoint = teacher, temperature, alpha, checkpoint

    def on_fit_start(self, ctx: FitContext) -> None:
        from cnnforge.predict import load_predictor

        where = "distill.teacher"
        teacher = load_predictor(self.teacher, checkpoint=self.checkpoint, device=ctx.acc.device)
        if teacher.classes != list(ctx.info.classes):
            raise ConfigError(f"the teacher run {self.teacher} has classes {_short(teacher.classes)}, the student's "
                              f"data {_short(ctx.info.classes)}", where=where)
        if (tuple(teacher.info.mean), tuple(teacher.info.std)) != (tuple(ctx.info.mean), tuple(ctx.info.std)):
            raise ConfigError(f"the teacher run {self.teacher} normalises its inputs with other statistics than the "
                              "student's data", where=where, hint="distil from a run on the same data")
        model = teacher.model.eval().requires_grad_(False)
        ctx.objective = _distilled(ctx.objective, model, self.temperature, self.alpha)


def _distilled(objective: Any, teacher: Any, temperature: float, alpha: float) -> Any:
    """``objective`` blended with the KL divergence from ``teacher``'s temperature-softened outputs."""
    import torch
    import torch.nn.functional as F

    def loss(x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = F.log_softmax(teacher(x).float() / temperature, dim=1)
        kl = F.kl_div(F.log_softmax(logits.float() / temperature, dim=1), target, reduction="batchmean",
                      log_target=True)
        return (1.0 - alpha) * objective(x, logits, y) + alpha * temperature ** 2 * kl

    return loss


def _short(classes: Any) -> str:
    names = [str(c) for c in classes]
    return f"[{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}] ({len(names)})"
