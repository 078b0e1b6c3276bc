"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates for Training Neural Networks", §3.3).

The recipe's own model, data, augmentation, loss and optimizer train for up to ``steps`` optimizer
steps while the learning rate grows exponentially from ``start`` to ``end``; each step's loss is
smoothed (an exponential moving average with bias correction, ``beta`` 0.98) and the test stops once
the smoothed loss passes ``diverge`` times the best seen. This is the finder of fastai (``lr_find``)
and Lightning (``Tuner.lr_find``), with their constants. The suggestion is fastai's ``valley`` rule (its
default since fastai 2.5): two thirds of the way down the longest stretch over which the smoothed loss keeps
falling. The steepest-descent rule (Lightning's ``suggestion()``, fastai's ``steep``) picks the edge of
divergence when the loss only moves there, as it does for Adam with few steps a decade: on digits_convnet it
suggested 0.138, which trains to 18 % where valley's 0.007 trains to 94 % (docs/benchmarks.md).

The steps go through :meth:`Trainer.train_batch`, as training's do. Under DDP every rank trains its
shard on a model DDP keeps identical, the per-step loss is the mean over ranks, and every rank uses
rank 0's copy of it (broadcast), so every decision (stop, suggestion) is the same on every rank.
The model and optimizer are thrown away afterwards; ``optim.lr: auto`` (:func:`auto_lr`) then trains
a fresh model with the suggestion.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnforge.errors import ConfigError
from cnnforge.recipe import Recipe

#: the name of the files the finder writes (``.json`` and ``.png``)
STEM = "lr_find"
#: how the suggestion is chosen, as ``lr_find.json``, the manifest and the printed line say it
RULE = "valley of the smoothed loss"


@dataclass(frozen=True)
class RangeTest:
    """The range test's settings: ``cnnforge lr-find``'s ``--steps/--start/--end``."""

    steps: int = 100
    start: float = 1e-7
    end: float = 10.0
    diverge: float = 4.0  # stop when the smoothed loss exceeds this multiple of the best (fastai, Lightning)
    beta: float = 0.98  # smoothing of the loss

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise ConfigError(f"must be at least 2, got {self.steps}", where="--steps")
        if not 0 < self.start < self.end:
            raise ConfigError(f"the range must satisfy 0 < start < end, got {self.start:g} .. {self.end:g}",
                              where="--start/--end")

    def lr(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based): exponential from ``start`` to ``end``."""
        return self.start * (self.end / self.start) ** (step / (self.steps - 1))


@dataclass
class LRFindResult:
    """What the range test saw (per optimizer step) and what it suggests."""

    test: RangeTest
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float | None = None
    stopped: str = "steps"  # steps | diverged | non-finite
    _average: float = field(default=0.0, repr=False)  # the moving average, before its bias correction
    _best: float = field(default=math.inf, repr=False)  # the lowest smoothed loss so far

    def record(self, lr: float, loss: float) -> None:
        """Add a step's loss; the smoothed loss passing ``diverge`` x its best, or not finite, ends the test."""
        beta = self.test.beta
        self._average = beta * self._average + (1 - beta) * loss
        smooth = self._average / (1 - beta ** (len(self.losses) + 1))
        self.lrs.append(lr)
        self.losses.append(loss)
        self.smoothed.append(smooth)
        self._best = min(self._best, smooth)
        if not math.isfinite(smooth):
            self.stopped = "non-finite"
        elif smooth > self.test.diverge * self._best:
            self.stopped = "diverged"

    @property
    def running(self) -> bool:
        return self.stopped == "steps" and len(self.lrs) < self.test.steps

    def summary(self) -> dict[str, Any]:
        """The value and how it was found (the ``lr_find`` entry of a run's ``manifest.json``)."""
        return {"lr": self.suggestion, "rule": RULE, "steps": len(self.lrs),
                "stopped": self.stopped, "test": asdict(self.test)}

    def describe(self) -> str:
        """The line ``lr-find`` and ``optim.lr: auto`` print."""
        end = {"diverged": "the loss diverged", "non-finite": "the loss became non-finite"}.get(
            self.stopped, "all steps done")
        return (f"lr-find: suggested optim.lr {self.suggestion:.3g} ({RULE}; "
                f"{len(self.lrs)} steps up to lr {self.lrs[-1]:.3g}, {end})")


def valley(lrs: list[float], smoothed: list[float]) -> float | None:
    """fastai's ``valley``: the longest run of steps over which ``smoothed`` keeps falling (a longest decreasing
    subsequence, so a noisy step does not cut it), and the learning rate two thirds of the way down it; None with
    fewer than 3 finite points. Rounded to 3 significant digits: the curve does not tell more.
    """
    finite = [i for i, value in enumerate(smoothed) if math.isfinite(value)]
    if len(finite) < 3:
        return None
    y = np.asarray([smoothed[i] for i in finite])
    run = np.ones(len(y), dtype=int)  # the longest decreasing subsequence ending at each point
    start = end = 0
    for i in range(1, len(y)):
        earlier = run[:i][y[:i] > y[i]]
        run[i] = earlier.max() + 1 if earlier.size else 1
        if run[i] > run[end]:
            end, start = i, i - int(run[i])
    third = (end - start) / 3
    pick = finite[start + int(third) + int(third / 2)]
    return float(f"{lrs[pick]:.3g}")


def with_lr(recipe: Recipe, lr: float) -> Recipe:
    """``recipe`` with ``optim.lr`` set to ``lr`` (the other keys untouched)."""
    return recipe.model_copy(update={"optim": recipe.optim.model_copy(update={"lr": lr})})


def find_lr(recipe: Recipe, acc: Any, test: RangeTest) -> LRFindResult:
    """Run the range test on ``recipe``'s parts with the Accelerator ``acc``; nothing is kept or written."""
    from accelerate.utils import set_seed

    from cnnforge.training.assemble import build_parts
    from cnnforge.training.loop import Trainer
    from cnnforge.training.progress import Progress

    set_seed(recipe.seed)
    trial = with_lr(recipe, test.start)
    parts = build_parts(trial, acc, evaluate=False)
    quiet = Progress(enabled=False, epochs=1, steps_per_epoch=len(parts.batches))
    trainer = Trainer(trial, replace(parts, run_dir=Path(recipe.train.out_dir), progress=quiet))
    try:
        return _sweep(trainer, test)
    finally:
        for loader in parts.loaders.values():
            loader.end()  # a loader left mid-epoch stays in Accelerate's gradient state otherwise
        acc.free_memory()  # the model, optimizer and loaders go; the Accelerator's step count restarts at 0


def _sweep(trainer: Any, test: RangeTest) -> LRFindResult:
    """The optimizer steps of the range test, one learning rate each, until ``steps`` or divergence."""
    from accelerate.utils import broadcast

    from cnnforge.training.state import TrainState

    acc, groups = trainer.acc, trainer.optimizer.param_groups
    # the groups' learning rates as built, before the schedule's first factor (onecycle starts at 1/25 of them):
    # optim.bias_lr_mult's groups keep their multiple of the swept rate
    ratios = [group["initial_lr"] / test.start for group in groups]
    found = torch.zeros((), device=acc.device)
    pending, batches = torch.zeros((), device=acc.device), 0
    result, state = LRFindResult(test), TrainState()
    while result.running:
        before = len(result.lrs)
        for x, y in trainer.parts.batches.epoch(state.epoch):
            if batches == 0:
                for group, ratio in zip(groups, ratios, strict=True):
                    group["lr"] = test.lr(len(result.lrs)) * ratio
            found.zero_()
            _, loss, _ = trainer.train_batch(x, y, state, found)
            state.batch, batches, pending = state.batch + 1, batches + 1, pending + loss.detach().float()
            if trainer.step.accumulating and not acc.sync_gradients:
                continue
            mean = broadcast(acc.reduce(pending / batches, reduction="mean"), from_process=0)
            pending, batches = torch.zeros_like(pending), 0
            result.record(test.lr(len(result.lrs)), float(mean))  # decided after every step: a host sync each
            if not result.running:
                break
        if len(result.lrs) == before:  # an epoch without an optimizer step: more epochs would not add one
            break
        state.epoch, state.batch = state.epoch + 1, 0
    result.suggestion = valley(result.lrs, result.smoothed)
    return result


def write_outputs(result: LRFindResult, out: Path) -> tuple[Path, Path]:
    """``lr_find.json`` (steps, losses, smoothed losses, suggestion) and ``lr_find.png`` in ``out``."""
    import json

    from cnnforge.atomic_write import atomic_write_text
    from cnnforge.reports.lr_plot import lr_find_plot

    out.mkdir(parents=True, exist_ok=True)
    def finite(values: list[float]) -> list[float | None]:  # JSON has no NaN: a non-finite loss is null
        return [v if math.isfinite(v) else None for v in values]

    record = {**result.summary(), "lrs": result.lrs, "losses": finite(result.losses),
              "smoothed": finite(result.smoothed)}
    data = out / f"{STEM}.json"
    atomic_write_text(data, json.dumps(record, indent=1) + "\n")
    return data, lr_find_plot(result.lrs, result.losses, result.smoothed, result.suggestion, out / f"{STEM}.png")


def check_result(result: LRFindResult, out: Path, where: str) -> float:
    """The suggestion, or a one-line error saying why there is none (the files in ``out`` show what was seen)."""
    if result.losses and not math.isfinite(result.losses[0]):
        raise ConfigError(f"the loss is non-finite from the first step (lr {result.lrs[0]:.3g}); no learning rate "
                          f"can be suggested; what was seen: {out / (STEM + '.png')}", where=where,
                          hint="check the data, the model and train.precision")
    if result.suggestion is None:
        raise ConfigError(f"the range test stopped after {len(result.lrs)} steps ({result.stopped}), too few to "
                          f"suggest a learning rate; what was seen: {out / (STEM + '.png')}", where=where,
                          hint="lower --start or raise --steps")
    return result.suggestion


def default_out(recipe: Recipe) -> Path:
    """Where ``cnnforge lr-find`` writes by default: ``<train.out_dir>/<name>/lr_find``."""
    return Path(recipe.train.out_dir) / recipe.name / STEM


def auto_lr(recipe: Recipe, acc: Any, *, quiet: bool) -> tuple[Recipe, LRFindResult | None]:
    """``optim.lr: auto``: the recipe with the range test's suggestion as ``optim.lr``, and the test's result;
    a recipe with a number is returned as it is (and None).

    A run then builds its model, optimizer and schedule from the number, so ``onecycle`` peaks at it, and
    ``recipe.yaml`` records it: a resumed run trains on with the same value without a new test.
    """
    if recipe.optim.lr != "auto":
        return recipe, None
    result = find_lr(recipe, acc, RangeTest())
    if result.suggestion is None and acc.is_main_process:
        write_outputs(result, default_out(recipe))
    check_result(result, default_out(recipe), f"{recipe.source}: optim.lr")
    if acc.is_main_process and not quiet:
        print(result.describe())
    return with_lr(recipe, result.suggestion), result
