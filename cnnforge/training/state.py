"""Where a run stands and what its trainer works with: :class:`TrainState`, saved in every checkpoint's
``state.json`` (the epoch/batch position, the best epoch, the stop criteria's counts), and :class:`TrainParts`,
the prepared model, optimizer, schedule and data that ``training/run.py`` builds from the recipe.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict
from torch import nn

from cnnforge.data.loading import DataInfo, Splits
from cnnforge.rundir.files import RunIdentity
from cnnforge.training.batches import DeviceBatches, DeviceSplit, LoaderBatches
from cnnforge.training.progress import Progress


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
    eval_time: float = 0.0  # validation; with train_time, what train.max_time counts
    stop_best: float | None = None  # train.early_stop: the metric's best value
    stale_evals: int = 0  # evaluations since it improved
    # why training ended before train.epochs (a resumed run then has nothing left to train), and a callback's words
    stopped: Literal["early_stop", "max_time", "callback"] | None = None
    stop_reason: str | None = None


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


@dataclass
class TrainParts:
    """What a :class:`Trainer` works with: :func:`~cnnforge.training.assemble.build_parts` builds the model, the
    optimizer, the schedule and the data from the recipe; ``training/run.py`` adds the run directory and the rest
    once the run exists."""

    acc: Any  # the Accelerator
    model: nn.Module  # as prepared by Accelerate (DDP-wrapped under several processes)
    optimizer: Any  # parts.stepped_optimizer: the torch optimizer (Accelerate's wrapper under fp16)
    schedule: Any
    batches: DeviceBatches | LoaderBatches  # the training split
    evals: dict[str, DeviceSplit | Any]  # "val", "test": held on the device, or their loaders
    loaders: dict[str, Any]  # "train", "val", "test" DataLoaders, prepared by Accelerate
    splits: Splits
    run_dir: Path | None = None
    progress: Progress | None = None
    reporter: Any = None  # reporter(row, checkpoint_dir or None off the main process) after every epoch (Ray)
    identity: RunIdentity | None = None  # recorded in every checkpoint; resume refuses another run's
    class_weights: torch.Tensor | None = None  # the loss's weight per class (data/balance.py)
    stop_signals: Any = None  # training/preemption.StopSignals installed by training/run.py before the run exists

    @property
    def info(self) -> DataInfo:
        return self.splits.info
