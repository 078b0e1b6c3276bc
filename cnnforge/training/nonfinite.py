"""``train.on_nan`` without a host sync per step: non-finite steps are skipped on the device, judged later.

Reading a flag (``.item()``) every step would make the CPU wait for the GPU every step. Instead the
gradients are checked on the device after backward (``_amp_foreach_non_finite_check_and_unscale_``
with a scale of 1, GradScaler's own kernel) and the verdict goes to the fused optimizer as
``found_inf``, which then leaves weights and optimizer state untouched, on the device, the way it
does for GradScaler. Under DDP the gradients are already all-reduced, so every rank reaches the same
verdict without a collective of its own. Two counters on the device record how many steps were bad
and how many came before the first bad one; the trainer reads them at its sync points (epoch end,
checkpoint), where ``stop`` and ``rollback`` act. With fp16, GradScaler already skips non-finite
steps (it also skips loss-scale overflows, which are not failures), so the verdict is the loss's.
"""
from __future__ import annotations

import torch


class NonFiniteGuard:
    """Detects non-finite steps on the device and keeps their updates out of the weights."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, *, scaled: bool) -> None:
        self.optimizer, self.scaled = optimizer, scaled
        self._one = torch.ones((), device=device)
        self.bad = torch.zeros((), device=device)  # non-finite optimizer steps since the last reset
        self.clean = torch.zeros((), device=device)  # batches before the first of them

    def check(self, loss: torch.Tensor, sync_step: bool) -> None:
        """Call after backward, before ``optimizer.step()``; ``sync_step``: this batch ends an accumulation."""
        if sync_step:
            found = self._found(loss)
            if not self.scaled:
                self.optimizer.found_inf = found  # read by the fused step: skip when > 0
            self.bad.add_(found)
        self.clean.add_(self.bad == 0)

    def _found(self, loss: torch.Tensor) -> torch.Tensor:
        if self.scaled:
            return (~torch.isfinite(loss.detach())).float()
        found = torch.zeros((), device=self._one.device)
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, self._one)  # x * 1.0 leaves grads as they are
        return found

    def counters(self) -> list[torch.Tensor]:
        """``[bad, clean]``, to be read together with the trainer's other device values (one read)."""
        return [self.bad, self.clean]

    def reset(self) -> None:
        self.bad.zero_()
        self.clean.zero_()

