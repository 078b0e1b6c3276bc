"""The evaluation step: a model's outputs over a split, gathered from every process, and their metrics.

Under DDP every rank runs its shard of the split; ``gather_for_metrics`` joins the shards in
dataset order and drops the samples Accelerate repeated to give every rank equal batches, so the
metrics count each sample exactly once. The trainer validates with it, ``cnnforge eval`` and
``cnnforge embed`` use it on a finished run; :func:`tta_logits` is the forward of all of them but embed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class EvalResult:
    """Predictions of one split, gathered from every rank without the padding duplicates."""

    loss: float
    acc: float
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray = field(repr=False)
    balanced_acc: float = float("nan")  # the mean recall of the classes in the split
    macro_f1: float = float("nan")


def gather_outputs(forward: Callable[[torch.Tensor], torch.Tensor], loader: Any,
                   acc: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``forward(x)`` over every batch of ``loader``; (outputs, labels) of the whole split on the CPU, in order.

    Each batch's rows are copied into one buffer per result (:class:`Rows`), not kept as the batch's own
    small tensors: allocated between batch-sized buffers and alive to the end, those pin glibc's heap
    (see :mod:`cnnforge.training.step_log`).
    """
    outputs, labels = Rows(), Rows()
    for x, y in loader:
        with acc.autocast():
            out = forward(x)
        out, y = acc.gather_for_metrics((out.float(), y.to(acc.device)))
        outputs.add(out.cpu())
        labels.add(y.cpu())
    if outputs.data is None:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return outputs.result(), labels.result()


class Rows:
    """Batches of rows appended into one CPU tensor that doubles when full: a few allocations, not one a batch."""

    def __init__(self) -> None:
        self.data: torch.Tensor | None = None
        self.count = 0

    def add(self, rows: torch.Tensor) -> None:
        end = self.count + rows.shape[0]
        if self.data is None or end > self.data.shape[0]:
            grown = torch.empty((max(end, 2 * (0 if self.data is None else self.data.shape[0])), *rows.shape[1:]),
                                dtype=rows.dtype)
            if self.data is not None:
                grown[:self.count] = self.data[:self.count]
            self.data = grown
        self.data[self.count:end] = rows
        self.count = end

    def result(self) -> torch.Tensor:
        """The rows added, in order."""
        return self.data[:self.count] if self.data is not None else torch.zeros(0)


def tta_logits(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: str) -> torch.Tensor:
    """``model``'s logits of the normalised batch ``x`` under ``eval.tta``.

    ``flip`` averages the logits of each image and of its mirror image (airbench's ``infer_mirror``):
    a model trained with horizontal flips sees both views, for one more forward pass per batch.
    """
    logits = model(x)
    if tta == "flip":
        logits = (logits.float() + model(x.flip(-1)).float()) / 2
    return logits


def class_scores(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[float, float]:
    """(balanced accuracy, macro F1) from the confusion counts, on the tensors' device.

    They are scikit-learn's ``balanced_accuracy_score`` (the mean recall over the classes present in
    ``y``) and ``f1_score(average="macro")`` (the mean F1 over the classes present in ``y`` or predicted),
    from one ``bincount`` instead of a pass over the predictions per class: a class missing from the
    split neither scores 0 nor divides by 0.
    """
    counts = torch.bincount(y * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes)
    hits, support, predicted = counts.diag().double(), counts.sum(1).double(), counts.sum(0).double()
    seen = support > 0
    scored = seen | (predicted > 0)
    recall = hits[seen] / support[seen]
    f1 = 2 * hits[scored] / (support[scored] + predicted[scored])
    return float(recall.mean()), float(f1.mean())


def eval_result(logits: torch.Tensor, y: torch.Tensor) -> EvalResult:
    """Loss, accuracy, balanced accuracy, macro F1, predictions and probabilities from gathered logits."""
    if not len(y):
        return EvalResult(float("nan"), float("nan"), y.numpy(), y.numpy(), logits.numpy())
    loss = float(torch.nn.functional.cross_entropy(logits, y))
    pred = logits.argmax(1)
    probs = torch.softmax(logits, 1).numpy()
    balanced, macro_f1 = class_scores(pred, y, logits.shape[1])
    return EvalResult(loss, float((pred == y).float().mean()), y.numpy(), pred.numpy(), probs, balanced, macro_f1)
