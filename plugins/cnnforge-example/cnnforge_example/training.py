"""The example plugin's loss and callback, registered from its ``__init__`` (see there for the rules).

A loss builder returns ``loss(logits, target)`` and must take class indices and class probabilities as
targets; a callback subclasses ``cnnforge.training.callbacks.Callback`` and overrides the hooks it needs.
"""
from __future__ import annotations

from typing import Any

from cnnforge.training.callbacks import Callback, FitContext


def poly1_loss(logits: Any, target: Any, *, epsilon: float, weight: Any, label_smoothing: float) -> Any:
    """Cross-entropy plus ``epsilon * (1 - p_t)``, ``p_t`` the probability given to the target (soft or hard)."""
    import torch
    import torch.nn.functional as F

    ce = F.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing)
    probs = logits.float().softmax(dim=1)
    if target.ndim == 1:  # one-hot by scatter: F.one_hot reads the labels' range from the device every step
        target = torch.zeros_like(probs).scatter_(1, target[:, None], 1.0)
    return ce + epsilon * (1.0 - torch.sum(target * probs, dim=1)).mean()


class StopAtAccuracy(Callback):
    """Ends training once validation accuracy reaches ``target``, and logs how far it still is."""

    def __init__(self, target: float) -> None:
        self.target = target

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, Any]) -> None:
        metrics["example/gap"] = max(0.0, self.target - metrics["val/acc"])
        if metrics["val/acc"] >= self.target:
            ctx.request_stop(f"val/acc {metrics['val/acc']:.3f} reached {self.target}")
