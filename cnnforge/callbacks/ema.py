"""``ema``: the moving average of the weights that evaluation and the saved weights use (``train.ema: decay``).

The average itself is :class:`cnnforge.training.ema.WeightEMA` (torch's ``AveragedModel`` with timm's
warm-up); as a callback it is updated after every optimizer step (the one built-in per-step hook: it
reads nothing from the device), and its state goes into checkpoints, so resumed runs average exactly.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from cnnforge.registry import register_callback
from cnnforge.training.callbacks import Callback, FitContext


@register_callback("ema")
class EMA(Callback):
    """Evaluate and save a moving average of the weights (what train.ema sets), with timm's warm-up."""

    all_ranks = True  # every rank evaluates its shard with the average

    def __init__(self, *, decay: Annotated[float, Field(gt=0, lt=1)] = 0.999) -> None:
        self.decay = decay
        self.average: Any = None

    def on_fit_start(self, ctx: FitContext) -> None:
        from cnnforge.training.ema import WeightEMA

        self.average = WeightEMA(ctx.model, self.decay)
        ctx.eval_model = self.average.module

    def on_train_batch_end(self, ctx: FitContext) -> None:
        self.average.update(ctx.model, ctx.global_step - 1)

    def on_checkpoint(self, ctx: FitContext) -> Any:
        return self.average.state_dict()

    def on_restore(self, ctx: FitContext, state: Any) -> None:
        self.average.load_state_dict(state)
