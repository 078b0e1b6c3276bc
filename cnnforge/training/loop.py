"""The training loop: plain PyTorch steps (:mod:`cnnforge.training.step`) inside Accelerate, with checkpoints,
metrics and callbacks around them, kept on the device between sync points so a step never waits for the GPU.
What makes runs exact and resumable lives in :class:`~cnnforge.training.state.TrainState` and in checkpoints.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnforge import rundir
from cnnforge.data.batch_augment import make_batch_augment
from cnnforge.data.batch_mix import make_batch_mix
from cnnforge.data.normalize import Normalize
from cnnforge.errors import NonFiniteLossError, recipe_source
from cnnforge.recipe import Recipe
from cnnforge.rundir import checkpoint as ckpt
from cnnforge.training import checkpointing
from cnnforge.training.assemble import (
    constant_lr,
    make_loss,
    scale_lr,
    steps_per_epoch,
    use_channels_last,
)
from cnnforge.training.builders import attach_callbacks
from cnnforge.training.callbacks import FitContext
from cnnforge.training.eval_step import EvalResult
from cnnforge.training.finish import finish
from cnnforge.training.lookahead import make_lookahead
from cnnforge.training.nonfinite import NonFiniteGuard
from cnnforge.training.preemption import Preempted, StopSignals
from cnnforge.training.state import TrainParts, TrainState, is_better, tie_breaker
from cnnforge.training.step import TrainStep, default_objective
from cnnforge.training.step_log import StepLog
from cnnforge.training.stopping import Stopping

#: rollbacks (each halving the LR) before ``on_nan: rollback`` gives up like ``stop``
MAX_ROLLBACKS = 3


class _Rollback(Exception):
    def __init__(self, checkpoint: Path) -> None:
        super().__init__(str(checkpoint))
        self.checkpoint = checkpoint


class Trainer:
    """Runs ``recipe.train.epochs`` epochs from a :class:`TrainState` and evaluates the result."""

    def __init__(self, recipe: Recipe, parts: TrainParts) -> None:
        self.recipe, self.parts = recipe, parts
        self.acc, self.model, self.optimizer, self.schedule = parts.acc, parts.model, parts.optimizer, parts.schedule
        self.loaders, self.info, self.run_dir, self.progress = parts.loaders, parts.info, parts.run_dir, parts.progress
        device = self.acc.device
        self.batch_mix = make_batch_mix(recipe, len(self.info.classes))  # augment.batch: mixup, cutmix
        # with augment.batch the smoothing is folded into the soft targets, so the loss must not smooth again
        smoothing = 0.0 if self.batch_mix else recipe.train.label_smoothing
        weight = None if parts.class_weights is None else parts.class_weights.to(device)
        with recipe_source(recipe.source):
            self.criterion = make_loss(recipe.train, weight=weight, label_smoothing=smoothing)
            self.callbacks = attach_callbacks(recipe, self.acc)
        self.normalize = Normalize.from_info(self.info).to(device)  # the same arithmetic as predict and export
        channels_last = use_channels_last(recipe, self.model, device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.batch_augment = make_batch_augment(recipe)  # augment.mode: batch -> train ops run here, on the device
        steps = steps_per_epoch(len(parts.batches), recipe.train.grad_accum)
        self.lookahead = make_lookahead(recipe.train.lookahead, steps * recipe.train.epochs)
        torch_optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # under Accelerate's wrapper (fp16)
        self.guard = NonFiniteGuard(torch_optimizer, device, scaled=self.acc.scaler is not None)
        self.ctx = FitContext(recipe, self.run_dir, self.acc, self.bare_model(), self.optimizer, self.info,
                              default_objective(self.criterion), self.evaluate, self.train_inputs)
        self.step = TrainStep(parts, self.ctx.objective, self.guard, clip_grad_norm=recipe.train.clip_grad_norm,
                              constant_lr=constant_lr(recipe.schedule))
        self.ckpt_dir = self.run_dir / rundir.CHECKPOINTS
        self.log = StepLog(len(parts.batches), device)
        #: loss*n, correct, n of the batches folded so far this epoch; in checkpoints (training/checkpointing.py)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self._data_wait = 0.0
        self.stopping = Stopping(recipe.train.early_stop, recipe.train.max_time, recipe.train.epochs, self.acc)
        # train.signals: checkpoint and stop (preemption.py)
        self.stop = parts.stop_signals or StopSignals(recipe.train.signals, self.acc)
        self._saved: tuple[tuple[int, int], Path | None] | None = None  # (epoch, batch) of the newest checkpoint

    # ------------------------------------------------------------------------------------ inputs
    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW on the device -> normalised float, in the recipe's memory format.

        Batches are on the device already: Accelerate's prepared loaders put them there, and a split held
        on the device is indexed there. The arithmetic keeps a contiguous batch contiguous.
        """
        x = self.normalize(x)
        return x if self.memory_format is torch.contiguous_format else x.contiguous(memory_format=self.memory_format)

    def bare_model(self) -> nn.Module:
        return self.acc.unwrap_model(self.model)

    def weights_module(self) -> nn.Module:
        """The weights evaluated and saved as best and final: a callback's (``train.ema``) when it sets them."""
        return self.bare_model() if self.ctx.eval_model is None else self.ctx.eval_model

    def train_inputs(self, epoch: int) -> Iterator[torch.Tensor]:
        """Epoch ``epoch``'s training inputs as the step sees them (for callbacks such as SWA's BatchNorm update)."""
        for x, _ in self.parts.batches.epoch(epoch, 0):
            yield self.prepare_input(x)

    # ------------------------------------------------------------------------------------ training
    def start(self) -> None:
        """The callbacks' ``on_fit_start`` (before a checkpoint is loaded: they may set what it restores)."""
        self.callbacks.call("on_fit_start", self.ctx)
        self.step.objective = self.ctx.objective
        self.callbacks.settle(self.acc)

    def end(self, summary: dict[str, Any]) -> None:
        """The callbacks' ``on_fit_end``, after the test evaluation and the reports."""
        self.ctx.epoch = int(summary.get("epochs") or 0)
        self.callbacks.call("on_fit_end", self.ctx, summary)
        self.callbacks.settle(self.acc)

    def run(self, state: TrainState) -> dict[str, Any]:
        """Train from ``state`` to the end, test, write ``summary.json`` and the reports; the summary."""
        with self.stop.installed():
            state = self.fit(state)
            summary = finish(self, state)
        self.end(summary)
        return summary

    def fit(self, state: TrainState) -> TrainState:
        while state.epoch < self.recipe.train.epochs and state.stopped is None:
            first_step = state.global_step
            try:
                row = self._epoch(state)
            except _Rollback as rollback:
                state = self._rollback(state, rollback.checkpoint)
                continue
            self._after_epoch(state, row)
            step_s = row["time/epoch_s"] / max(1, state.global_step - first_step)  # the signal checks' cadence
            if state.epoch < self.recipe.train.epochs and self.stop.agreed(step_s):
                self._preempt(state)
        self.progress.close()
        return state

    def _epoch(self, state: TrainState) -> dict[str, Any]:
        self.model.train()
        self.progress.start_epoch(state.epoch, state.batch)
        self.log.start(state.batch)
        self._data_wait = 0.0
        start = self._epoch_start = time.perf_counter()
        for x, y in self._timed(self.parts.batches.epoch(state.epoch, state.batch)):
            logits, loss, y = self.train_batch(x, y, state, self.log.verdict(state.batch))
            self.log.record(logits, loss, y)
            self._after_step(state)
        if self.lookahead is not None:
            self.lookahead.end_epoch(self.bare_model())
        self._sync(state)
        state.train_time += time.perf_counter() - self._epoch_start
        sums = self.acc.reduce(self.sums.clone(), reduction="sum").tolist()
        n, elapsed = max(1.0, sums[2]), time.perf_counter() - start
        return {"epoch": state.epoch + 1, "train/loss": sums[0] / n, "train/acc": sums[1] / n,
                "lr": float(self.optimizer.param_groups[0]["lr"]), "time/epoch_s": round(elapsed, 4),
                "time/data_wait_s": round(self._data_wait, 4), "train/samples_per_s": sums[2] / max(elapsed, 1e-9)}

    def _timed(self, batches: Iterable[Any]) -> Iterator[Any]:
        """``batches``, adding the time spent waiting for each to the epoch's data wait."""
        iterator = iter(batches)
        while True:
            ready = time.perf_counter()
            batch = next(iterator, None)
            self._data_wait += time.perf_counter() - ready
            if batch is None:
                return
            yield batch

    def train_batch(self, x: torch.Tensor, y: torch.Tensor, state: TrainState,
                    found: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training step on a loader's batch: (logits, loss, the labels train accuracy is scored against).

        The LR finder (training/lr_finder.py) steps through here too, so it sees the run's batch
        augmentation, mixing, normalisation, loss and optimizer step exactly as training does.
        """
        x, target, label = self._inputs(x, y, state)
        logits, loss = self.step(x, target, found)
        return logits, loss, label

    def _inputs(self, x: torch.Tensor, y: torch.Tensor,
                state: TrainState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(model input, loss target, label train accuracy is scored against): with ``augment.batch`` the target
        is soft and the label each mixed sample's dominant one."""
        key = (state.epoch, state.batch, self.acc.process_index)
        if self.batch_augment is not None:
            x = self.batch_augment(x, key)
        x = self.prepare_input(x)
        if self.batch_mix is None:
            return x, y, y
        x, target, label = self.batch_mix(x, y, key)
        return x.contiguous(memory_format=self.memory_format), target, label

    def _after_step(self, state: TrainState) -> None:
        """Bookkeeping after a batch: step counts, lookahead, EMA, step checkpoints and a time-based progress read."""
        state.batch += 1
        if not self.step.accumulating or self.acc.sync_gradients:
            if self.lookahead is not None:
                self.lookahead.after_step(self.bare_model(), state.global_step + 1, state.epoch)
            state.global_step += 1
            if self.callbacks.per_step:
                self.ctx.global_step = state.global_step
                self.callbacks.after_step(self.ctx)
            every = self.recipe.train.checkpoint_every_steps
            if every and state.global_step % every == 0:
                self._checkpoint_mid_epoch(state)
            if self.stop.due(state.global_step) and self.stop.agreed():
                self._preempt(state)
        if self.progress.due(state.batch):  # the one device read of this refresh (the log is not folded: see _sync)
            self.progress.update(state.batch, (self.sums + self.log.sums()).tolist())

    def _checkpoint_mid_epoch(self, state: TrainState) -> Path | None:
        self._sync(state)
        now = time.perf_counter()
        state.train_time += now - self._epoch_start
        self._epoch_start = now
        return self._save(state)

    def _save(self, state: TrainState) -> Path | None:
        saved = checkpointing.save(self, state)
        self._saved = ((state.epoch, state.batch), saved)
        return saved

    def _preempt(self, state: TrainState) -> None:
        """A stop signal: checkpoint where training stands (unless that checkpoint was just written) and stop."""
        saved = self._saved[1] if self._saved and self._saved[0] == (state.epoch, state.batch) else (
            self._checkpoint_mid_epoch(state) if state.batch else self._save(state))
        raise Preempted(self.stop.received or "another rank's signal", saved)

    def _sync(self, state: TrainState) -> None:
        """At a sync point (a checkpoint, the epoch's end): add the batches since the last one to the epoch's
        sums, count their skipped steps, or act on a non-finite one (stop or roll back).

        Only here are batches folded into the sums, so a resumed run adds the same groups of numbers
        in the same order as an uninterrupted one, and its metrics match to the last bit.
        """
        start, sums, counters = self.log.fold()
        self.sums += sums
        if self.acc.num_processes > 1 and self.guard.scaled:  # fp16: per-rank verdicts (the loss's); agree on one
            import torch.distributed as dist

            counters[1].neg_()
            dist.all_reduce(counters, op=dist.ReduceOp.MAX)  # most bad steps, fewest clean batches
            counters[1].neg_()
        bad, clean = counters.tolist()
        first = start + int(clean) + 1
        if not bad:
            return
        if self.recipe.train.on_nan == "skip":
            state.skipped_steps += int(bad)
            return
        last = ckpt.latest_valid(self.ckpt_dir)
        if self.recipe.train.on_nan == "rollback" and state.rollbacks < MAX_ROLLBACKS and last is not None:
            raise _Rollback(last)
        raise NonFiniteLossError(f"non-finite loss at epoch {state.epoch + 1}, step {first}; last good checkpoint: "
                                 f"{last or 'none'}", where=str(self.run_dir),
                                 hint="lower optim.lr, set train.clip_grad_norm, or train.on_nan: skip|rollback")

    def _rollback(self, state: TrainState, path: Path) -> TrainState:
        self.optimizer.zero_grad(set_to_none=True)  # the non-finite gradients must not leak into the next step
        restored = checkpointing.restore(self, path)
        restored.rollbacks = state.rollbacks + 1
        restored.lr_scale = state.lr_scale * 0.5
        restored.skipped_steps = state.skipped_steps
        scale_lr(self.schedule, restored.lr_scale)
        self.progress.print(f"non-finite loss: rolled back to {path.name}, LR scaled by {restored.lr_scale:g}")
        return restored

    def _after_epoch(self, state: TrainState, row: dict[str, Any]) -> None:
        start = time.perf_counter()
        val = self.evaluate("val")
        state.eval_time += time.perf_counter() - start
        row.update({"val/loss": val.loss, "val/acc": val.acc, "val/balanced_acc": val.balanced_acc,
                    "val/macro_f1": val.macro_f1})
        if self.recipe.train.on_nan == "skip":
            row["train/skipped_steps"] = state.skipped_steps
        epoch = state.epoch
        state.epoch, state.batch = epoch + 1, 0
        self.sums.zero_()
        failure = self._epoch_callbacks(state, row)
        self._track_best(state, row, epoch)
        if self.acc.is_main_process:
            rundir.append_metrics(self.run_dir, row)
        self.progress.end_epoch(epoch, row)
        stop_line = self.stopping.after_epoch(state, row, time.perf_counter() - start + row["time/epoch_s"])
        if stop_line is not None:
            self.progress.print(stop_line)
        every = self.recipe.train.checkpoint_every
        saved = None
        if (every and (epoch + 1) % every == 0) or state.epoch == self.recipe.train.epochs or state.stopped \
                or failure is not None:
            saved = self._save(state)
        if failure is not None:
            raise type(failure)(f"{failure.message}; training stopped with checkpoint {saved or 'written'}")
        if self.parts.reporter is not None:  # on every rank: Ray Train's report is a barrier (sweep/ddp_trial.py)
            self.parts.reporter({**row, "stopped": state.stopped} if state.stopped else row, saved)

    def _epoch_callbacks(self, state: TrainState, row: dict[str, Any]) -> Any:
        """The callbacks' ``on_epoch_end``: a stop request becomes the run's; a failure is returned (ranks agree)."""
        if not self.callbacks.present:
            return None
        self.ctx.epoch, self.ctx.global_step = state.epoch, state.global_step
        self.callbacks.call("on_epoch_end", self.ctx, row)
        reason, failure = self.callbacks.agree(self.acc, self.ctx.stop_reason)
        if reason:
            state.stopped, state.stop_reason = "callback", reason
            if self.acc.is_main_process:
                self.progress.print(f"stopping after epoch {state.epoch}: {reason}")
        return failure

    def _track_best(self, state: TrainState, row: dict[str, Any], epoch: int) -> None:
        value = row.get(self.recipe.train.best_metric)
        if value is None or not math.isfinite(value):
            return
        tie_metric, tie_mode = tie_breaker(self.recipe.train.best_metric)
        tiebreak = row.get(tie_metric)
        modes = (self.recipe.train.best_mode, tie_mode)
        if is_better((value, tiebreak), (state.best_value, state.best_tiebreak), modes):
            state.best_value, state.best_epoch, state.best_tiebreak = float(value), epoch + 1, tiebreak
            if self.acc.is_main_process:
                self.ckpt_dir.mkdir(exist_ok=True)
                ckpt.save_weights(self.weights_module().state_dict(), self.ckpt_dir / rundir.BEST)

    # ------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str) -> EvalResult:
        from cnnforge.training.eval_step import eval_result, gather_outputs, tta_logits

        model, tta = (self.model if self.ctx.eval_model is None else self.ctx.eval_model), self.recipe.eval.tta
        model.eval()
        logits, y = gather_outputs(lambda x: tta_logits(model, self.prepare_input(x), tta), self.parts.evals[split],
                                   self.acc)
        self.model.train()
        return eval_result(logits, y)
