"""``train.on_nan`` without a host sync per step: non-finite steps are skipped on the device, judged later.

Reading a flag (``.item()``) every step would make the CPU wait for the GPU every step. Instead the
gradients are checked on the device after backward (``_amp_foreach_non_finite_check_and_unscale_``
with a scale of 1, GradScaler's own kernel) and the verdict goes to the fused optimizer as
``found_inf``, which then leaves weights and optimizer state untouched, on the device, the way it
does for GradScaler. Under DDP the gradients are already all-reduced, so every rank reaches the same
verdict without a collective of its own. Each verdict goes into the batch's slot of the epoch's
:class:`~cnnforge.training.step_log.StepLog`; the trainer counts them at its sync points (epoch
end, checkpoint), where ``stop`` and ``rollback`` act. With fp16, GradScaler already skips
non-finite steps (it also skips loss-scale overflows, which are not failures), so the verdict is the loss's.
"""
from __future__ import annotations

import torch


class NonFiniteGuard:
    """Detects non-finite steps on the device and keeps their updates out of the weights."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, *, scaled: bool) -> None:
        self.optimizer, self.scaled = optimizer, scaled
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        self._one = torch.ones((), device=device)
        # only fused optimizers read found_inf (others assert it is None): with one, a bad step is still counted
        self._skips = bool(optimizer.defaults.get("fused"))

    def check(self, loss: torch.Tensor, found: torch.Tensor) -> None:
        """After the backward of a batch that ends an accumulation, before ``optimizer.step()``: set ``found``
        (a float32 scalar on the device, zero) to 1 when the step is not finite, and have the optimizer skip it."""
        if self.scaled:
            found.copy_(~torch.isfinite(loss.detach()))
            return
        grads = [p.grad for p in self._params if p.grad is not None]
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, self._one)  # x * 1.0 leaves grads as they are
        if self._skips:
            self.optimizer.found_inf = found  # read by the fused step: skip when > 0
