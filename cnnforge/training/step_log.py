"""What the training batches of an epoch did, kept on the device, summed only at sync points.

A step copies its loss, logits and labels into buffers made once (three small copies, no other
kernel), and the guard writes its verdict (1 when the gradients were not finite) into the batch's slot
of one preallocated device tensor. The held logits are scored (``argmax``, compared with the labels) for many batches
at once: when they reach :data:`HELD_LOGITS` elements, or when someone reads the sums. Per step
that saves the kernels a light model notices: on a CPU an ``argmax`` after LeNet's backward costs
~20 us, ten times its cost in a tight loop, and on a GPU each launch sits in the step's queue.
The sums (``loss × n``, correct, ``n``, leaving out non-finite losses) and the non-finite counts
are computed over the pending batches at a progress refresh (which leaves them pending) or at a
sync point (a checkpoint, the epoch's end), which folds them. Nothing here reads the device.
"""
from __future__ import annotations

import numpy as np
import torch

#: logits elements held before they are scored: 16 MB in float32, some 6,500 CIFAR-10 batches of 64, or a
#: single batch of 1,024 over 21,841 classes (which is then scored at every step)
HELD_LOGITS = 1 << 22


class StepLog:
    """One epoch's per-batch losses, correct predictions and non-finite verdicts, on the device, since the last fold.

    Everything a batch leaves here is copied into buffers made once (losses, counts, and the held
    logits and labels), never kept as the step's own small tensors: those, allocated between the
    batch-sized buffers of every step and alive until the epoch's end, pinned glibc's heap so the
    freed batch buffers could not be reused, and a run's memory grew by a batch per step
    (``benchmarks/data_scale.py``, "model at image size"). The copies are three small kernels a step.
    """

    def __init__(self, batches: int, device: torch.device) -> None:
        self.device = device
        self.bad = torch.zeros(batches, device=device)
        self._verdicts = [self.bad[i] for i in range(batches)]  # views made once, not per step
        self._loss = torch.zeros(batches, device=device)
        self._loss_slots = [self._loss[i] for i in range(batches)]
        self._correct = torch.zeros(batches, dtype=torch.float64, device=device)
        self._sizes = np.zeros(batches, dtype=np.int64)  # samples per batch, known on the host without a read
        self._logits: torch.Tensor | None = None  # rows of the batches not scored yet, made at the first record
        self._labels: torch.Tensor | None = None
        self.start(0)

    def start(self, first: int) -> None:
        """An epoch starts (or restarts, after a rollback) at batch ``first``: forget every batch and verdict."""
        self.bad.zero_()
        self._pending_from(first)

    def _pending_from(self, first: int) -> None:
        self.first = first  # the epoch's index of the first pending batch
        self.count = 0  # pending batches
        self._scored = first  # batches before this one have their correct counts
        self._rows = 0  # rows held in the logits and labels buffers

    def verdict(self, batch: int) -> torch.Tensor:
        """Where the guard writes batch ``batch``'s verdict (a float32 scalar, zero until then)."""
        return self._verdicts[batch]

    def _hold(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Copy a batch's logits and labels into the held rows; scored first when they would not fit."""
        n, buffer = y.shape[0], self._logits
        fits = buffer is not None and buffer.shape[1:] == logits.shape[1:] and buffer.dtype == logits.dtype
        if not fits or self._rows + n > buffer.shape[0]:
            self._score()
        if not fits or n > buffer.shape[0]:
            rows = max(n, min(HELD_LOGITS // max(1, logits.shape[1:].numel()), n * len(self._sizes)))
            self._logits = torch.empty((rows, *logits.shape[1:]), dtype=logits.dtype, device=self.device)
            self._labels = torch.empty(rows, dtype=y.dtype, device=self.device)
        self._logits[self._rows:self._rows + n].copy_(logits.detach())
        self._labels[self._rows:self._rows + n].copy_(y)
        self._rows += n

    def record(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        """The next batch's logits, loss and labels."""
        batch = self.first + self.count
        self._hold(logits, y)
        self._loss_slots[batch].copy_(loss.detach())
        self._sizes[batch] = y.shape[0]
        self.count += 1

    def _score(self) -> None:
        """Count the held batches' correct predictions (one argmax for all of them) and free their rows."""
        if not self._rows:
            return
        lo, hi = self._scored, self.first + self.count
        sizes = torch.tensor(self._sizes[lo:hi]).to(self.device, non_blocking=True)
        hits = (self._logits[:self._rows].argmax(1) == self._labels[:self._rows]).double()
        # output_size: the sizes are not read back from the device
        batch_of = torch.arange(hi - lo, device=self.device).repeat_interleave(sizes, output_size=self._rows)
        self._correct[lo:hi].zero_().index_add_(0, batch_of, hits)
        self._scored, self._rows = hi, 0

    def sums(self) -> torch.Tensor:
        """``[loss × n, correct, n]`` over the pending batches in float64; a non-finite loss adds nothing."""
        if not self.count:
            return torch.zeros(3, dtype=torch.float64, device=self.device)
        self._score()
        lo, hi = self.first, self.first + self.count
        n = torch.tensor(self._sizes[lo:hi], dtype=torch.float64).to(self.device, non_blocking=True)
        loss = self._loss[lo:hi].double()
        step = torch.stack((loss * n, self._correct[lo:hi], n))
        return torch.where(torch.isfinite(loss), step, 0.0).sum(1)

    def counters(self) -> torch.Tensor:
        """``[bad, clean]`` over the pending batches: non-finite steps, and the batches before the first of them."""
        bad = self.bad[self.first:self.first + self.count]
        return torch.stack((bad.sum(), (bad.cumsum(0) == 0).sum().to(bad.dtype)))

    def fold(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """At a sync point: (the first pending batch, :meth:`sums`, :meth:`counters`); the batches are no longer
        pending."""
        first, sums, counters = self.first, self.sums(), self.counters()
        self._pending_from(first + self.count)
        return first, sums, counters
