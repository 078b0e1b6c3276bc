"""Ending training before ``train.epochs``: ``train.early_stop`` and ``train.max_time``.

Both decide at an epoch's end, after validation, from numbers the trainer keeps in its
``TrainState`` (the early-stop metric's best value, the evaluations since it improved, the time
spent training and validating). Those are in every checkpoint, so a run resumed after a kill counts
on from where the checkpoint was and stops at the epoch the uninterrupted run stops at. The LR
schedule keeps the length ``train.epochs`` gives it: a stopped run ends wherever the schedule was
(with ``onecycle`` or ``cosine``, before the LR has annealed to zero).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from cnnforge.recipe.stopping import EarlyStopConfig

EARLY_STOP, MAX_TIME = "early_stop", "max_time"


def improved(config: EarlyStopConfig, value: float | None, best: float | None) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (any finite value beats none)."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value - config.min_delta > best if config.maximize else value + config.min_delta < best


def next_epoch_exceeds(max_time: float, spent: float, epochs_done: int, last_epoch: float) -> bool:
    """Whether one more epoch would end past ``max_time`` seconds, ``spent`` of them used.

    The next epoch is estimated as the longer of the last one and the mean one: the mean carries the
    epochs of an earlier process after a resume, the last one an epoch that got slower.
    """
    mean = spent / max(1, epochs_done)
    return spent + max(mean, last_epoch) > max_time


@dataclass
class Stopping:
    """The recipe's stopping rules, applied to the state after each epoch (the same decision on every rank)."""

    early_stop: EarlyStopConfig | None
    max_time: float | None
    epochs: int  # train.epochs: a run that has trained them all ends for that reason
    acc: Any  # the Accelerator: under DDP rank 0's clock decides for every rank

    def after_epoch(self, state: Any, row: dict[str, Any], epoch_s: float) -> str | None:
        """Update ``state``'s counters with the epoch's ``row``; the line to print when training stops here.

        ``state.stopped`` becomes ``early_stop`` or ``max_time`` then. ``epoch_s`` is the epoch's
        training and validation time.
        """
        config = self.early_stop
        if state.epoch >= self.epochs:
            return None
        if config is not None:
            if improved(config, row.get(config.metric), state.stop_best):
                state.stop_best, state.stale_evals = float(row[config.metric]), 0
            else:
                state.stale_evals += 1
            if state.stale_evals >= config.patience:
                state.stopped = EARLY_STOP
                best = "none" if state.stop_best is None else f"{state.stop_best:.4g}"
                return (f"early stop: {config.metric} has not improved for {state.stale_evals} evaluation(s) "
                        f"(best {best}); training ends after epoch {state.epoch}")
        if self.max_time is not None and self._out_of_time(state, epoch_s):
            state.stopped = MAX_TIME
            return (f"max_time: {state.train_time + state.eval_time:.0f}s of {self.max_time:g}s spent and an epoch "
                    f"takes ~{epoch_s:.0f}s; training ends after epoch {state.epoch}")
        return None

    def _out_of_time(self, state: Any, epoch_s: float) -> bool:
        spent = state.train_time + state.eval_time
        stop = next_epoch_exceeds(self.max_time, spent, state.epoch, epoch_s)
        if self.acc.num_processes == 1:
            return stop
        from accelerate.utils import broadcast  # the ranks' clocks differ; they must agree to stop together

        return bool(broadcast(torch.tensor([int(stop)], device=self.acc.device), from_process=0).item())
