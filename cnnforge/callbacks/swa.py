"""``swa``: stochastic weight averaging (Izmailov et al. 2018) with torch's ``swa_utils``.

From epoch ``start_epoch`` on, the weights at the end of every epoch go into an ``AveragedModel``. At the
end of the last epoch the model takes the average, its BatchNorm statistics are recomputed over that
epoch's training inputs (``update_bn``; under DDP each rank's, then their mean) and validation runs again:
the last row of ``metrics.jsonl`` holds the averaged weights' ``val/loss`` and ``val/acc``, so best-epoch
selection and the test see them like any epoch's. The average is in every checkpoint (exact resume).
The LR schedule is the recipe's; a constant or cyclic one (``none``, ``cosine_restarts``) suits SWA best.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, Strict

from cnnforge.registry import register_callback
from cnnforge.training.callbacks import Callback, FitContext


@register_callback("swa")
class SWA(Callback):
    """Average the weights of the last epochs (torch swa_utils) and recompute BatchNorm for the final model."""

    all_ranks = True  # it changes the weights every rank trains and evaluates

    def __init__(self, *, start_epoch: Annotated[int, Strict(), Field(ge=1)] | None = None) -> None:
        self.start_epoch = start_epoch  # 1-based; None: the last quarter of the run
        self.average: Any = None

    def on_fit_start(self, ctx: FitContext) -> None:
        from torch.optim.swa_utils import AveragedModel

        epochs = ctx.recipe.train.epochs
        if self.start_epoch is None:
            self.start_epoch = epochs - max(1, epochs // 4) + 1
        if self.start_epoch > epochs:
            raise ValueError(f"start_epoch {self.start_epoch} is after the last epoch ({epochs})")
        self.average = AveragedModel(ctx.model)

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, Any]) -> None:
        if ctx.epoch < self.start_epoch:
            return
        self.average.update_parameters(ctx.model)
        metrics["swa/averaged"] = ctx.epoch - self.start_epoch + 1
        if ctx.epoch == ctx.recipe.train.epochs:
            self._finish(ctx, metrics)

    def _finish(self, ctx: FitContext, metrics: dict[str, Any]) -> None:
        """The model takes the average; BatchNorm statistics follow; validation measures the result."""
        import torch
        from torch.optim.swa_utils import update_bn

        from cnnforge.compat import torch_internals

        with torch.no_grad():
            torch_internals.foreach_copy_([p.detach() for p in ctx.model.parameters()],
                                          [p.detach() for p in self.average.module.parameters()])
        update_bn(ctx.train_inputs(ctx.epoch - 1), ctx.model)
        if ctx.acc.num_processes > 1:  # each rank saw its shard: all use the mean of their statistics
            kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)
            norms = [m for m in ctx.model.modules() if isinstance(m, kinds)]
            for buffer in (b for m in norms for b in (m.running_mean, m.running_var) if b is not None):
                buffer.copy_(ctx.acc.reduce(buffer.clone(), reduction="mean"))
        val = ctx.evaluate("val")
        metrics.update({"val/loss": val.loss, "val/acc": val.acc, "val/balanced_acc": val.balanced_acc,
                        "val/macro_f1": val.macro_f1})

    def on_checkpoint(self, ctx: FitContext) -> Any:
        return self.average.state_dict()

    def on_restore(self, ctx: FitContext, state: Any) -> None:
        self.average.load_state_dict(state)
