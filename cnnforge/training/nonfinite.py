"""``train.on_nan`` without a host sync per step: non-finite steps are skipped on the device, judged later.

Reading a flag (``.item()``) every step would make the CPU wait for the GPU every step. Instead the
gradients are checked on the device after backward (GradScaler's own kernel with a scale of 1) and
the verdict goes to the fused optimizer, which then leaves weights and optimizer state untouched, on
the device, the way it does for GradScaler (:mod:`cnnforge.compat.torch_internals`; with a torch it
does not know, the step is skipped after a host read instead). Under DDP the gradients are already
all-reduced, so every rank reaches the same verdict without a collective of its own. Each verdict
goes into the batch's slot of the epoch's :class:`~cnnforge.training.step_log.StepLog`; the trainer
counts them at its sync points (epoch end, checkpoint), where ``stop`` and ``rollback`` act. With
fp16, GradScaler already skips non-finite steps (it also skips loss-scale overflows, which are not
failures), so the verdict is the loss's.
"""
from __future__ import annotations

import torch

from cnnforge.compat import torch_internals


class NonFiniteGuard:
    """Detects non-finite steps on the device and keeps their updates out of the weights."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, *, scaled: bool) -> None:
        self.optimizer, self.scaled = optimizer, scaled
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        self._one = torch.ones((), device=device)  # GradScaler's inverse scale, here 1: grads stay as they are
        # only fused optimizers read found_inf (others assert it is None): with one, a bad step is skipped on the
        # device; with another (a plugin's) it is still counted, and train.on_nan: skip is refused for it
        self._fused = bool(optimizer.defaults.get("fused"))
        self._found: torch.Tensor | None = None
        self._host_check = False  # a fused step skipped after a host read: torch outside the range compat knows

    def check(self, loss: torch.Tensor, found: torch.Tensor) -> None:
        """After the backward of a batch that ends an accumulation, before ``optimizer.step()``: set ``found``
        (a float32 scalar on the device, zero) to 1 when the step is not finite, and have the optimizer skip it."""
        if self.scaled:
            found.copy_(~torch.isfinite(loss.detach()))
            return
        torch_internals.non_finite_to(found, [p.grad for p in self._params if p.grad is not None], self._one)
        self._host_check = self._fused and not torch_internals.skips_on_device(self.optimizer, found)
        self._found = found

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, unless the step just checked is not finite and nothing skips it on the device."""
        if not self._host_check or not bool(self._found):
            optimizer.step()
