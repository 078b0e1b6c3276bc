"""Evaluating a model over a split, in one process or under DDP, and ``cnnforge eval RUN_DIR``.

Under DDP every rank runs its shard of the split; ``gather_for_metrics`` joins the shards in
dataset order and drops the samples Accelerate repeated to give every rank equal batches, so the
metrics count each sample exactly once.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnforge import rundir
from cnnforge.errors import ConfigError, DataError
from cnnforge.training.loop import EvalResult

SPLITS = ("test", "val", "train")


def gather_outputs(forward: Callable[[torch.Tensor], torch.Tensor], loader: Any, acc: Any) -> tuple[torch.Tensor,
                                                                                                    torch.Tensor]:
    """``forward(x)`` over every batch of ``loader``; (outputs, labels) of the whole split on the CPU, in order."""
    outputs, labels = [], []
    for x, y in loader:
        with acc.autocast():
            out = forward(x)
        out, y = acc.gather_for_metrics((out.float(), y.to(acc.device)))
        outputs.append(out.cpu())
        labels.append(y.cpu())
    if not outputs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outputs), torch.cat(labels)


def eval_result(logits: torch.Tensor, y: torch.Tensor) -> EvalResult:
    """Loss, accuracy, predictions and probabilities from gathered logits."""
    if not len(y):
        return EvalResult(float("nan"), float("nan"), y.numpy(), y.numpy(), logits.numpy())
    loss = float(torch.nn.functional.cross_entropy(logits, y))
    pred = logits.argmax(1)
    return EvalResult(loss, float((pred == y).float().mean()), y.numpy(), pred.numpy(), torch.softmax(logits,
                                                                                                      1).numpy())


@dataclass
class RunSplit:
    """A run loaded for evaluation on one split: recipe, accelerator, predictor, dataset and its (sharded) loader."""

    recipe: Any
    acc: Any
    predictor: Any
    dataset: Any
    loader: Any


def open_split(run_dir: Path, split: str, checkpoint: str | None, *, limit: int | None = None) -> RunSplit:
    """Load ``run_dir``'s model on this process's device and shard ``split`` across processes.

    ``limit`` keeps a seeded random subset of that many samples (in dataset order).
    """
    from cnnforge.data.loading import AugmentedDataset, build_splits, make_loader
    from cnnforge.predict import load_predictor
    from cnnforge.recipe import check_recipe, load_recipe
    from cnnforge.training.parts import make_accelerator

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}", where="--split", hint=f"use one of {', '.join(SPLITS)}")
    if not rundir.is_run_dir(run_dir):
        raise ConfigError("not a run directory (no recipe.yaml and manifest.json)", where=str(run_dir))
    recipe = check_recipe(load_recipe(run_dir / rundir.RECIPE))
    acc = make_accelerator(recipe)
    predictor = load_predictor(run_dir, checkpoint=checkpoint, device=acc.device)
    splits = build_splits(recipe)
    if splits.info.classes != predictor.classes:
        raise DataError(f"the dataset's classes {splits.info.classes[:5]}... differ from the run's "
                        f"{predictor.classes[:5]}...", where=f"{recipe.data.root} ({recipe.data.name})")
    dataset = getattr(splits, split)
    if limit is not None and limit < len(dataset):
        picks = np.sort(np.random.default_rng(recipe.seed).choice(len(dataset), size=limit, replace=False))
        dataset = AugmentedDataset(dataset.base, dataset.indices[picks], dataset.transform, dataset.seed, dataset.size)
    d = recipe.data
    loader = make_loader(dataset, batch_size=d.eval_batch_size or d.batch_size, shuffle=False, seed=recipe.seed,
                         num_workers=d.num_workers, pin_memory=torch.cuda.is_available())
    return RunSplit(recipe, acc, predictor, dataset, acc.prepare(loader))


def report_dir(run_dir: Path, split: str, checkpoint: str) -> Path:
    """``reports/`` for the run's own test evaluation; ``reports/<split>-<checkpoint>/`` for any other.

    A run's report is never replaced by an evaluation of another split or other weights.
    """
    from cnnforge.predict import resolve_checkpoint

    base = run_dir / rundir.REPORTS
    return base if split == "test" and checkpoint == resolve_checkpoint(run_dir,
                                                                        None) else base / f"{split}-{checkpoint}"


def evaluate_run(run_dir: str | Path, *, split: str = "test", checkpoint: str | None = None) -> tuple[Path, dict[str,
                                                                                                                 Any]]:
    """Evaluate a run's weights on ``split`` and write its report; (report folder, summary numbers).

    Works under ``accelerate launch`` (every process calls it; the main one writes).
    """
    from cnnforge.training.run_reports import write_run_reports

    path = Path(run_dir)
    loaded = open_split(path, split, checkpoint)
    acc, predictor = loaded.acc, loaded.predictor
    try:
        with torch.no_grad():
            logits, y = gather_outputs(lambda x: predictor.model(predictor.normalise(x)), loaded.loader, acc)
        result = eval_result(logits, y)
        out = report_dir(path, split, predictor.checkpoint)
        if acc.is_main_process:
            write_run_reports(path, result, predictor.info, rundir.read_metrics(path), split=split,
                              checkpoint=predictor.checkpoint, images=loaded.dataset, out=out)
        acc.wait_for_everyone()
    finally:
        acc.end_training()
    numbers = {"split": split, "checkpoint": predictor.checkpoint, "samples": int(len(y)), "accuracy": result.acc,
               "loss": result.loss, "world_size": acc.num_processes, "main_process": acc.is_main_process}
    return out, numbers
