"""What the training batches of an epoch did, kept on the device, summed only at sync points.

A step only keeps references to its loss, logits and labels (no kernel of its own), and the guard
writes its verdict (1 when the gradients were not finite) into the batch's slot of one preallocated
device tensor. The held logits are scored (``argmax``, compared with the labels) for many batches
at once: when they reach :data:`HELD_LOGITS` elements, or when someone reads the sums. Per step
that saves the kernels a light model notices: on a CPU an ``argmax`` after LeNet's backward costs
~20 us, ten times its cost in a tight loop, and on a GPU each launch sits in the step's queue.
The sums (``loss × n``, correct, ``n``, leaving out non-finite losses) and the non-finite counts
are computed over the pending batches at a progress refresh (which leaves them pending) or at a
sync point (a checkpoint, the epoch's end), which folds them. Nothing here reads the device.
"""
from __future__ import annotations

import torch

#: logits elements held before they are scored: 16 MB in float32, some 6,500 CIFAR-10 batches of 64, or a
#: single batch of 1,024 over 21,841 classes (which is then scored at every step)
HELD_LOGITS = 1 << 22


class StepLog:
    """One epoch's per-batch losses, correct predictions and non-finite verdicts, on the device, since the last fold."""

    def __init__(self, batches: int, device: torch.device) -> None:
        self.device = device
        self.bad = torch.zeros(batches, device=device)
        self._verdicts = [self.bad[i] for i in range(batches)]  # views made once, not per step
        self.start(0)

    def start(self, first: int) -> None:
        """An epoch starts (or restarts, after a rollback) at batch ``first``: forget every batch and verdict."""
        self.bad.zero_()
        self._pending_from(first)

    def _pending_from(self, first: int) -> None:
        self.first = first  # the epoch's index of the first pending batch
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []  # samples per batch, known on the host without a read
        self.correct: list[torch.Tensor] = []  # per-batch counts of the scored batches, in groups
        self._logits: list[torch.Tensor] = []  # the batches not scored yet
        self._labels: list[torch.Tensor] = []
        self._held = 0

    def verdict(self, batch: int) -> torch.Tensor:
        """Where the guard writes batch ``batch``'s verdict (a float32 scalar, zero until then)."""
        return self._verdicts[batch]

    def record(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        """The next batch's logits, loss and labels."""
        self.losses.append(loss.detach())
        self.sizes.append(y.shape[0])
        self._logits.append(logits.detach())
        self._labels.append(y)
        self._held += logits.numel()
        if self._held >= HELD_LOGITS:
            self._score()

    def _score(self) -> None:
        """Count the held batches' correct predictions (one argmax for all of them) and let their logits go."""
        if not self._logits:
            return
        sizes = torch.tensor(self.sizes[-len(self._logits):]).to(self.device, non_blocking=True)
        hits = (torch.cat(self._logits).argmax(1) == torch.cat(self._labels)).double()
        # output_size: the sizes are not read back from the device
        batch_of = torch.arange(len(sizes), device=self.device).repeat_interleave(sizes, output_size=hits.shape[0])
        counts = torch.zeros(len(sizes), dtype=torch.float64, device=self.device)
        self.correct.append(counts.index_add_(0, batch_of, hits))
        self._logits, self._labels, self._held = [], [], 0

    def sums(self) -> torch.Tensor:
        """``[loss × n, correct, n]`` over the pending batches in float64; a non-finite loss adds nothing."""
        if not self.sizes:
            return torch.zeros(3, dtype=torch.float64, device=self.device)
        self._score()
        n = torch.tensor(self.sizes, dtype=torch.float64).to(self.device, non_blocking=True)
        loss = torch.stack(self.losses).double()
        step = torch.stack((loss * n, torch.cat(self.correct), n))
        return torch.where(torch.isfinite(loss), step, 0.0).sum(1)

    def counters(self) -> torch.Tensor:
        """``[bad, clean]`` over the pending batches: non-finite steps, and the batches before the first of them."""
        bad = self.bad[self.first:self.first + len(self.sizes)]
        return torch.stack((bad.sum(), (bad.cumsum(0) == 0).sum().to(bad.dtype)))

    def fold(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """At a sync point: (the first pending batch, :meth:`sums`, :meth:`counters`); the batches are no longer
        pending."""
        first, sums, counters = self.first, self.sums(), self.counters()
        self._pending_from(first + len(self.sizes))
        return first, sums, counters
