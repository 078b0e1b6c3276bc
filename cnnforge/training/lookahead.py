"""``train.lookahead``: airbench's lookahead, which pulls the *training* weights back to a slow average.

``train.ema`` keeps an average for evaluation and leaves training alone; lookahead (Zhang et al. 2019,
as airbench94's ``LookaheadState``) writes the average back: every ``every`` optimizer steps the
slow copy moves towards the weights by ``1 - rho`` and the weights are set to it, and every epoch
ends on the slow weights. ``rho = decay ** every * (step / total) ** power`` ramps the pull in, so
the start of training moves fast and the end averages strongly.

Only the trainable parameters take part, not airbench's BatchNorm running statistics: under DDP each
rank's statistics differ until the next forward broadcasts rank 0's, so averaging them would give
every rank another slow copy. Parameters are identical on every rank after the all-reduced step, so
the same arithmetic gives the same weights everywhere without a collective. Whether the slow copy
exists, the step and ``rho`` are known on the host: no update reads the device. The slow copy goes
into checkpoints (``lookahead.pt``), so a resumed run continues exactly.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnforge.compat import torch_internals
from cnnforge.recipe.tricks import LookaheadConfig


class Lookahead:
    """The slow copy of ``model``'s trainable parameters, by name (None until the first update)."""

    def __init__(self, config: LookaheadConfig, total_steps: int) -> None:
        self.config, self.total_steps = config, max(1, total_steps)
        self.slow: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _fast(model: nn.Module) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}

    def after_step(self, model: nn.Module, step: int, epoch: int) -> None:
        """After optimizer step ``step`` (1-based, counted over the run) of epoch ``epoch`` (0-based)."""
        c = self.config
        if epoch < c.start_epoch or step % c.every:
            return
        fast = self._fast(model)
        with torch.no_grad():
            if self.slow is None:
                self.slow = {name: p.clone() for name, p in fast.items()}
                return
            rho = c.decay ** c.every * min(1.0, step / self.total_steps) ** c.power
            slow, weights = list(self.slow.values()), [fast[name] for name in self.slow]
            torch_internals.foreach_lerp_(slow, weights, 1.0 - rho)
            torch_internals.foreach_copy_(weights, slow)

    def end_epoch(self, model: nn.Module) -> None:
        """Every epoch ends on the slow weights (what airbench evaluates)."""
        if self.slow is not None:
            fast = self._fast(model)
            with torch.no_grad():
                torch_internals.foreach_copy_([fast[name] for name in self.slow], list(self.slow.values()))

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return self.slow

    def load_state_dict(self, state: dict[str, torch.Tensor] | None, device: torch.device) -> None:
        """The slow copy of a checkpoint (None: not started yet at that point)."""
        self.slow = None if state is None else {name: t.to(device) for name, t in state.items()}


def make_lookahead(config: LookaheadConfig | None, total_steps: int) -> Lookahead | None:
    """The lookahead ``train.lookahead`` asks for over a run of ``total_steps`` optimizer steps (None without it)."""
    return None if config is None else Lookahead(config, total_steps)
