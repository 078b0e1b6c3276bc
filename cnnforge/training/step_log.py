"""What each training batch of an epoch did, written on the device, summed only at sync points.

A step writes three numbers into its column of one preallocated device tensor: its loss, its
correct predictions and the guard's verdict (1 when its gradients were not finite). That is a copy
and a reduction, with no host read and no per-step arithmetic on running sums (which cost ~60 us a
step on a light model). The sums (``loss × n``, correct, ``n``, leaving out non-finite losses) and
the non-finite counts are computed over a range of batches when someone reads them: a progress
refresh, a checkpoint, the epoch's end.
"""
from __future__ import annotations

import torch


class StepLog:
    """One epoch's per-batch loss, correct predictions and non-finite verdict, on the device."""

    def __init__(self, batches: int, device: torch.device) -> None:
        self.rows = torch.zeros(3, batches, device=device)
        self.loss, self.correct, self.bad = self.rows.unbind(0)
        self.sizes = [0] * batches  # samples per batch, known on the host without a read

    def clear(self) -> None:
        """Forget every batch (an epoch starts or restarts): the guard only ever sets verdicts to 1."""
        self.rows.zero_()

    def record(self, batch: int, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        """Batch ``batch``'s loss and correct predictions (``batch`` counts from the epoch's start)."""
        self.loss[batch].copy_(loss.detach())
        torch.sum(logits.argmax(1) == y, 0, dtype=self.rows.dtype, out=self.correct[batch])
        self.sizes[batch] = y.shape[0]

    def verdict(self, batch: int) -> torch.Tensor:
        """Where the guard writes batch ``batch``'s verdict (a float32 scalar, zero until then)."""
        return self.bad[batch]

    def sums(self, start: int, stop: int) -> torch.Tensor:
        """``[loss × n, correct, n]`` over batches ``start:stop`` in float64; a non-finite loss adds nothing."""
        n = torch.tensor(self.sizes[start:stop], dtype=torch.float64).to(self.rows.device, non_blocking=True)
        loss = self.loss[start:stop].double()
        ok = torch.isfinite(loss)
        step = torch.stack((loss * n, self.correct[start:stop].double(), n))
        return torch.where(ok, step, 0.0).sum(1)

    def counters(self, start: int, stop: int) -> torch.Tensor:
        """``[bad, clean]`` over batches ``start:stop``: non-finite steps, and the batches before the first of them."""
        bad = self.bad[start:stop]
        return torch.stack((bad.sum(), (bad.cumsum(0) == 0).sum().to(bad.dtype)))
