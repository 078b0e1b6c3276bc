"""``train.ema``: an exponential moving average of the weights, which evaluation and the saved weights use.

The ``ema`` callback (cnnforge/callbacks/ema.py) keeps one and updates it after every optimizer step.

torch's ``AveragedModel`` keeps the copy, its count and its state dict. Added here is the warm-up
timm and YOLO use: step ``t`` averages with ``min(decay, (1 + t) / (10 + t))``. With a fixed 0.99,
the average after 30 steps would still be 74 % the random initial weights. The step is the
trainer's own optimizer-step count, so a resumed run warms up exactly as an uninterrupted one.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cnnforge.compat import torch_internals

WARMUP = 10  # timm's constant: the decay (1 + t) / (WARMUP + t) is 0.5 at step 8 and 0.9 at step 80


class WeightEMA(AveragedModel):
    """An ``AveragedModel`` (weights and buffers) whose decay warms up over the first steps.

    ``update`` does what ``AveragedModel.update_parameters`` does without its two host reads of
    ``n_averaged`` per call (``bool(n_averaged == 0)``, ``n_averaged > 0``), which would make every
    training step wait for the GPU: whether the average has started is known on the host.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, use_buffers=True)  # a deep copy, which leaves out a compile()-d model's compiled call
        self.decay = decay
        self.started = False  # n_averaged > 0, known without reading the device

    def update(self, model: nn.Module, step: int) -> None:
        """Average in ``model``'s weights after optimizer step ``step`` (0-based)."""
        ours = [t.detach() for t in itertools.chain(self.module.parameters(), self.module.buffers())]
        theirs = [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]
        with torch.no_grad():
            if not self.started:
                torch_internals.foreach_copy_(ours, theirs)
            else:
                average = get_ema_multi_avg_fn(min(self.decay, (1 + step) / (WARMUP + step)))
                for mine, other in torch_internals.group_by_device_and_dtype([ours, theirs]):
                    average(mine, other, None)
            self.n_averaged += 1
        self.started = True

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict, assign)
        self.started = bool(self.n_averaged > 0)  # one read, when a checkpoint is loaded
        return result

