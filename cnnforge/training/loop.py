"""The training loop: plain PyTorch steps inside Accelerate, with checkpoints and metrics around them.

The step itself, :class:`TrainStep`, is the one from Accelerate's examples (``accumulate``,
``autocast``, ``backward``, ``step``), leaving out the wrappers that would do nothing for the run; the
bookkeeping around it (per-batch metrics, EMA, lookahead, checkpoints, progress) stays on the device
between sync points, so a step never waits for the GPU. What makes runs exact and resumable (the
epoch/batch position, RNG states, running metric sums) lives in :class:`TrainState` and in checkpoints.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict
from torch import nn

from cnnforge import checkpoint as ckpt
from cnnforge import rundir
from cnnforge.data.batch_augment import make_batch_augment
from cnnforge.data.loading import DataInfo
from cnnforge.data.normalize import Normalize
from cnnforge.errors import NonFiniteLossError
from cnnforge.recipe import Recipe
from cnnforge.run_files import RunIdentity
from cnnforge.training.batches import DeviceBatches, DeviceSplit, LoaderBatches
from cnnforge.training.ema import make_ema
from cnnforge.training.eval_step import EvalResult
from cnnforge.training.lookahead import make_lookahead
from cnnforge.training.nonfinite import NonFiniteGuard
from cnnforge.training.parts import adopt_hyperparameters, constant_lr, scale_lr, steps_per_epoch, use_channels_last
from cnnforge.training.progress import Progress
from cnnforge.training.step_log import StepLog


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint's ``state.json``, read back strictly."""

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)

    epoch: int = 0  # the epoch in progress, 0-based
    batch: int = 0  # batches of that epoch already trained
    global_step: int = 0  # optimizer steps so far
    best_value: float | None = None
    best_epoch: int | None = None
    best_tiebreak: float | None = None  # the tie-breaking metric at the best epoch
    skipped_steps: int = 0
    rollbacks: int = 0
    lr_scale: float = 1.0
    train_time: float = 0.0


def tie_breaker(metric: str) -> tuple[str, str]:
    """(metric, mode) deciding between epochs equal in ``metric``: accuracy ties on small validation sets are
    common, and the first epoch to reach a value is rarely the best one, so the lower ``val/loss`` wins."""
    return ("val/acc", "max") if metric == "val/loss" else ("val/loss", "min")


def is_better(new: tuple[float, float | None], best: tuple[float | None, float | None], modes: tuple[str, str]) -> bool:
    """Whether ``new`` (metric, tie-breaker) beats ``best``; a tie on both keeps the earlier epoch."""
    for value, old, mode in zip(new, best, modes, strict=True):
        if value is None or not math.isfinite(value):
            return False
        if old is None:
            return True
        if value != old:
            return value > old if mode == "max" else value < old
    return False


#: rollbacks (each halving the LR) before ``on_nan: rollback`` gives up like ``stop``
MAX_ROLLBACKS = 3


class _Rollback(Exception):
    def __init__(self, checkpoint: Path) -> None:
        super().__init__(str(checkpoint))
        self.checkpoint = checkpoint


@dataclass
class TrainParts:
    """What a :class:`Trainer` works with, built from the recipe by ``training/run.py``."""

    acc: Any  # the Accelerator
    model: nn.Module  # as prepared by Accelerate (DDP-wrapped under several processes)
    optimizer: Any  # parts.stepped_optimizer: the torch optimizer (Accelerate's wrapper under fp16)
    schedule: Any
    batches: DeviceBatches | LoaderBatches  # the training split
    evals: dict[str, DeviceSplit | Any]  # "val", "test": held on the device, or their loaders
    loaders: dict[str, Any]  # "train", "val", "test" DataLoaders, prepared by Accelerate
    info: DataInfo
    run_dir: Path
    progress: Progress
    tracking: bool = False
    reporter: Any = None  # reporter(row, checkpoint_dir) after every epoch (Ray Tune)
    identity: RunIdentity | None = None  # recorded in every checkpoint; resume refuses another run's


class TrainStep:
    """Forward, loss, backward, step: Accelerate's ``cv_example`` step; returns the logits and the loss.

    ``guard`` makes the optimizer skip a non-finite step on the device (no host sync) and writes its
    verdict into ``found``. What the run needs is decided once, here, not per step: Accelerate's
    ``accumulate``, ``autocast`` and ``backward`` are used where they have work to do (gradient
    accumulation, mixed precision, fp16 loss scaling; otherwise they are context managers and a
    division by 1), and a constant learning rate has no schedule to step. On a light model each of
    these costs as much per step as a GPU takes for the step itself. Everything else a run does per
    step (metrics, EMA, checkpoints, progress) happens around this call.
    """

    def __init__(self, parts: TrainParts, criterion: nn.Module, guard: NonFiniteGuard, *,
                 clip_grad_norm: float | None, constant_lr: bool) -> None:
        acc = parts.acc
        self.acc, self.model, self.optimizer = acc, parts.model, parts.optimizer
        self.criterion, self.guard, self.clip_grad_norm = criterion, guard, clip_grad_norm
        self.schedule = None if constant_lr else parts.schedule
        self.accumulating = acc.gradient_accumulation_steps > 1
        self.autocast = acc.autocast if acc.native_amp else contextlib.nullcontext
        self.accelerated_backward = self.accumulating or acc.scaler is not None  # divides by the steps, scales fp16

    def __call__(self, x: torch.Tensor, y: torch.Tensor, found: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        acc, model, optimizer = self.acc, self.model, self.optimizer
        with acc.accumulate(model) if self.accumulating else contextlib.nullcontext():
            with self.autocast():
                logits = model(x)
                loss = self.criterion(logits, y)
            if self.accelerated_backward:
                acc.backward(loss)
            else:
                loss.backward()
            if not self.accumulating or acc.sync_gradients:  # the last batch of an accumulation
                self.guard.check(loss, found)
                if self.clip_grad_norm:
                    acc.clip_grad_norm_(model.parameters(), self.clip_grad_norm)
                self.guard.step(optimizer)
                if self.schedule is not None:
                    self.schedule.step()
                optimizer.zero_grad(set_to_none=True)
        return logits, loss


class Trainer:
    """Runs ``recipe.train.epochs`` epochs from a :class:`TrainState` and evaluates the result."""

    def __init__(self, recipe: Recipe, parts: TrainParts) -> None:
        self.recipe, self.parts = recipe, parts
        self.acc, self.model, self.optimizer, self.schedule = parts.acc, parts.model, parts.optimizer, parts.schedule
        self.loaders, self.info, self.run_dir, self.progress = parts.loaders, parts.info, parts.run_dir, parts.progress
        device = self.acc.device
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.train.label_smoothing)
        self.normalize = Normalize.from_info(self.info).to(device)  # the same arithmetic as predict and export
        channels_last = use_channels_last(recipe, self.model, device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.batch_augment = make_batch_augment(recipe)  # augment.mode: batch -> train ops run here, on the device
        self.ema = make_ema(self.bare_model(), recipe)
        steps = steps_per_epoch(len(parts.batches), recipe.train.grad_accum)
        self.lookahead = make_lookahead(recipe.train.lookahead, steps * recipe.train.epochs)
        torch_optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # under Accelerate's wrapper (fp16)
        self.guard = NonFiniteGuard(torch_optimizer, device, scaled=self.acc.scaler is not None)
        self.step = TrainStep(parts, self.criterion, self.guard, clip_grad_norm=recipe.train.clip_grad_norm,
                              constant_lr=constant_lr(recipe.schedule))
        self.ckpt_dir = self.run_dir / rundir.CHECKPOINTS
        self.log = StepLog(len(parts.batches), device)
        self._sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*n, correct, n of the folded batches
        self._data_wait = 0.0

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
        """The weights that are evaluated and saved as best and final: the moving average's with ``train.ema``."""
        return self.bare_model() if self.ema is None else self.ema.module

    # ------------------------------------------------------------------------------------ training
    def fit(self, state: TrainState) -> TrainState:
        while state.epoch < self.recipe.train.epochs:
            try:
                row = self._epoch(state)
            except _Rollback as rollback:
                state = self._rollback(state, rollback.checkpoint)
                continue
            self._after_epoch(state, row)
        self.progress.close()
        return state

    def _epoch(self, state: TrainState) -> dict[str, Any]:
        self.model.train()
        self.progress.start_epoch(state.epoch, state.batch)
        self.log.start(state.batch)
        self._data_wait = 0.0
        start = self._epoch_start = time.perf_counter()
        for x, y in self._timed(self.parts.batches.epoch(state.epoch, state.batch)):
            x, y = self._inputs(x, y, state)
            logits, loss = self.step(x, y, self.log.verdict(state.batch))
            self.log.record(logits, loss, y)
            self._after_step(state)
        if self.lookahead is not None:
            self.lookahead.end_epoch(self.bare_model())
        self._sync(state)
        state.train_time += time.perf_counter() - self._epoch_start
        sums = self.acc.reduce(self._sums.clone(), reduction="sum").tolist()
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

    def _inputs(self, x: torch.Tensor, y: torch.Tensor, state: TrainState) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_augment is not None:
            key = (state.epoch, state.batch, self.acc.process_index)
            x = self.batch_augment(x, key)
        return self.prepare_input(x), y

    def _after_step(self, state: TrainState) -> None:
        """Bookkeeping after a batch: step counts, lookahead, EMA, step checkpoints and a time-based progress read."""
        state.batch += 1
        if not self.step.accumulating or self.acc.sync_gradients:
            if self.lookahead is not None:
                self.lookahead.after_step(self.bare_model(), state.global_step + 1, state.epoch)
            if self.ema is not None:
                self.ema.update(self.bare_model(), state.global_step)
            state.global_step += 1
            every = self.recipe.train.checkpoint_every_steps
            if every and state.global_step % every == 0:
                self._sync(state)
                now = time.perf_counter()
                state.train_time += now - self._epoch_start
                self._epoch_start = now
                self.save_checkpoint(state)
        if self.progress.due(state.batch):  # the one device read of this refresh (the log is not folded: see _sync)
            self.progress.update(state.batch, (self._sums + self.log.sums()).tolist())

    def _sync(self, state: TrainState) -> None:
        """At a sync point (a checkpoint, the epoch's end): add the batches since the last one to the epoch's
        sums, count their skipped steps, or act on a non-finite one (stop or roll back).

        Only here are batches folded into the sums, so a resumed run adds the same groups of numbers
        in the same order as an uninterrupted one, and its metrics match to the last bit.
        """
        start, sums, counters = self.log.fold()
        self._sums += sums
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
        restored = self.load_checkpoint(path)
        restored.rollbacks = state.rollbacks + 1
        restored.lr_scale = state.lr_scale * 0.5
        restored.skipped_steps = state.skipped_steps
        scale_lr(self.schedule, restored.lr_scale)
        self.progress.print(f"non-finite loss: rolled back to {path.name}, LR scaled by {restored.lr_scale:g}")
        return restored

    def _after_epoch(self, state: TrainState, row: dict[str, Any]) -> None:
        val = self.evaluate("val")
        row.update({"val/loss": val.loss, "val/acc": val.acc})
        if self.recipe.train.on_nan == "skip":
            row["train/skipped_steps"] = state.skipped_steps
        epoch = state.epoch
        state.epoch, state.batch = epoch + 1, 0
        self._sums.zero_()
        self._track_best(state, row, epoch)
        if self.acc.is_main_process:
            rundir.append_metrics(self.run_dir, row)
            if self.parts.tracking:
                self.acc.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
        self.progress.end_epoch(epoch, row)
        every = self.recipe.train.checkpoint_every
        saved = None
        if (every and (epoch + 1) % every == 0) or state.epoch == self.recipe.train.epochs:
            saved = self.save_checkpoint(state)
        if self.parts.reporter is not None and self.acc.is_main_process:
            self.parts.reporter(row, saved)

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
                ckpt.save_weights(self.weights_module().state_dict(), self.ckpt_dir / "best.safetensors")

    # ------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str) -> EvalResult:
        from cnnforge.training.eval_step import eval_result, gather_outputs, tta_logits

        model, tta = (self.model if self.ema is None else self.ema.module), self.recipe.eval.tta
        model.eval()
        logits, y = gather_outputs(lambda x: tta_logits(model, self.prepare_input(x), tta), self.parts.evals[split],
                                   self.acc)
        self.model.train()
        return eval_result(logits, y)

    # ------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, state: TrainState) -> Path | None:
        """Every rank contributes its RNG and metric sums; the main process writes the folder (and returns it)."""
        from accelerate.utils import gather_object

        mine = {"torch": torch.get_rng_state(), "sums": self._sums.cpu().clone()}
        if torch.cuda.is_available():
            mine["cuda"] = torch.cuda.get_rng_state(self.acc.device)
        ranks = gather_object([mine]) if self.acc.num_processes > 1 else [mine]
        if self.acc.is_main_process:
            tensors: dict[str, Any] = {"optimizer": self.optimizer.state_dict(),
                                       "scheduler": self.schedule.state_dict(), "ranks": ranks}
            if self.acc.scaler is not None:
                tensors["scaler"] = self.acc.scaler.state_dict()
            if self.ema is not None:
                tensors["ema"] = self.ema.state_dict()
            if self.lookahead is not None and self.lookahead.state_dict() is not None:
                tensors["lookahead"] = self.lookahead.state_dict()
            tag = f"e{state.epoch:04d}-b{state.batch:06d}"
            path = ckpt.save_checkpoint(self.ckpt_dir, tag, model=self.bare_model().state_dict(), tensors=tensors,
                                        state=asdict(state), keep=self.recipe.train.keep_checkpoints,
                                        identity=self.parts.identity)
        self.acc.wait_for_everyone()
        return path if self.acc.is_main_process else None

    def warm_start(self, path: Path) -> TrainState:
        """Continue from another run's checkpoint with this recipe's hyperparameters (population-based training).

        The weights, the optimizer's state (momentum, Adam's moments), the schedule's position and the epoch
        are the checkpoint's; the learning rate, weight decay and the like are this recipe's, or the perturbed
        values would be overwritten by the ones the checkpoint was trained with. The best epoch is this run's
        own: the other run's best weights are not in its checkpoint.
        """
        own = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        state = self.load_checkpoint(path)
        adopt_hyperparameters(self.schedule, own, state.lr_scale)
        return replace(state, best_value=None, best_epoch=None, best_tiebreak=None)

    def load_checkpoint(self, path: Path) -> TrainState:
        weights, tensors, state = ckpt.load_checkpoint(path, TrainState)
        ckpt.check_compatible(self.bare_model(), weights, str(path))
        self.bare_model().load_state_dict(weights)
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.schedule.load_state_dict(tensors["scheduler"])
        if "scaler" in tensors and self.acc.scaler is not None:
            self.acc.scaler.load_state_dict(tensors["scaler"])
        if "ema" in tensors and self.ema is not None:  # without one (resume --force) the average restarts here
            self.ema.load_state_dict(tensors["ema"])
        if self.lookahead is not None:  # absent from the checkpoint: it had not started there
            self.lookahead.load_state_dict(tensors.get("lookahead"), self.acc.device)
        ranks = tensors["ranks"]
        if len(ranks) != self.acc.num_processes:
            from cnnforge.errors import CnnforgeError

            raise CnnforgeError(f"checkpoint was written by {len(ranks)} process(es), this run has "
                                f"{self.acc.num_processes}", where=str(path),
                                hint="launch with the same --num_processes")
        mine = ranks[self.acc.process_index]
        torch.set_rng_state(mine["torch"])
        if "cuda" in mine and torch.cuda.is_available():
            torch.cuda.set_rng_state(mine["cuda"], self.acc.device)
        self._sums = mine["sums"].to(self.acc.device)
        return state
