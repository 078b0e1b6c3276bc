"""A finished run on one of its splits: ``cnnforge eval RUN_DIR`` and ``cnnforge embed RUN_DIR``.

Both load the run's predictor and shard the split across processes (under ``accelerate launch``
every process takes part; :mod:`cnnforge.training.eval_step` counts each sample once); the main
process writes into the run's reports, never over the run's own report with another split or weights.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnforge import rundir
from cnnforge.errors import CnnforgeError, ConfigError, DataError, recipe_source
from cnnforge.reports.embedding import METHODS, penultimate, project, scatter
from cnnforge.training.eval_step import eval_result, gather_outputs

SPLITS = ("test", "val", "train")


@dataclass
class RunSplit:
    """A run loaded for evaluation on one split: recipe, accelerator, predictor, dataset and its (sharded) loader."""

    recipe: Any
    acc: Any
    predictor: Any
    dataset: Any
    loader: Any
    new_data: bool = False  # the split differs from the one the run recorded (evaluated under --force)


def open_split(run_dir: Path, split: str, checkpoint: str | None, *, limit: int | None = None,
               force: bool = False) -> RunSplit:
    """Load ``run_dir``'s model on this process's device and shard ``split`` across processes.

    ``limit`` keeps a seeded random subset of that many samples (in dataset order). A split that differs
    from the run's record (``manifest.json``) is refused unless ``force``.
    """
    from cnnforge.data.fingerprints import check_splits
    from cnnforge.data.loading import AugmentedDataset, build_splits, split_loader
    from cnnforge.predict import load_predictor
    from cnnforge.recipe import open_recipe
    from cnnforge.training.assemble import make_accelerator

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}", where="--split", hint=f"use one of {', '.join(SPLITS)}")
    run_dir = rundir.require_run_dir(run_dir)
    recipe = open_recipe(run_dir / rundir.RECIPE)
    with recipe_source(recipe.source):
        acc = make_accelerator(recipe.train)
    predictor = load_predictor(run_dir, checkpoint=checkpoint, device=acc.device)
    splits = build_splits(recipe)
    records = rundir.read_manifest(run_dir).data_splits
    changed = check_splits({k: v.model_dump() for k, v in records.items()} if records else None, splits, [split],
                           where=str(run_dir / rundir.MANIFEST), force=force, action="evaluate")
    if splits.info.classes != predictor.classes:
        raise DataError(f"the dataset's classes {splits.info.classes[:5]}... differ from the run's "
                        f"{predictor.classes[:5]}...", where=f"{recipe.data.root} ({recipe.data.name})")
    dataset = getattr(splits, split)
    if limit is not None and limit < len(dataset):
        picks = np.sort(np.random.default_rng(recipe.seed).choice(len(dataset), size=limit, replace=False))
        dataset = AugmentedDataset(dataset.base, dataset.indices[picks], dataset.transform, dataset.seed, dataset.size)
    loader = split_loader(dataset, recipe.data, recipe.seed, train=False)
    return RunSplit(recipe, acc, predictor, dataset, acc.prepare(loader), bool(changed))


def report_dir(run_dir: Path, split: str, checkpoint: str, *, new_data: bool = False) -> Path:
    """``reports/`` for the run's own test evaluation; ``reports/<split>-<checkpoint>/`` for any other, and
    ``reports/<split>-<checkpoint>-new-data/`` for a split that is no longer the run's (``--force``).

    A run's report is never replaced by an evaluation of another split, other weights or other data.
    """
    base = run_dir / rundir.REPORTS
    if new_data:
        return base / f"{split}-{checkpoint}-new-data"
    own = split == "test" and checkpoint == rundir.resolve_checkpoint(run_dir, None)
    return base if own else base / f"{split}-{checkpoint}"


def evaluate_run(run_dir: str | Path, *, split: str = "test", checkpoint: str | None = None,
                 force: bool = False) -> tuple[Path, dict[str, Any]]:
    """Evaluate a run's weights on ``split`` and write its report; (report folder, summary numbers).

    Works under ``accelerate launch`` (every process calls it; the main one writes). ``force`` evaluates a
    split that differs from the run's record, into a report folder of its own.
    """
    from cnnforge.training.run_reports import write_run_reports

    path = Path(run_dir)
    loaded = open_split(path, split, checkpoint, force=force)
    acc, predictor = loaded.acc, loaded.predictor
    try:
        with torch.no_grad():
            logits, y = gather_outputs(predictor.logits, loaded.loader, acc)
        result = eval_result(logits, y)
        out = report_dir(path, split, predictor.checkpoint, new_data=loaded.new_data)
        if acc.is_main_process:
            write_run_reports(path, result, predictor.info, rundir.read_metrics(path), split=split,
                              checkpoint=predictor.checkpoint, images=loaded.dataset, out=out)
        acc.wait_for_everyone()
    finally:
        acc.end_training()
    numbers = {"split": split, "checkpoint": predictor.checkpoint, "samples": int(len(y)), "accuracy": result.acc,
               "loss": result.loss, "world_size": acc.num_processes, "main_process": acc.is_main_process}
    return out, numbers


@contextlib.contextmanager
def _working(text: str, quiet: bool) -> Iterator[None]:
    """A spinner with the elapsed time on a terminal, a start and an end line otherwise: t-SNE of a few
    thousand points takes a minute on a laptop and reports no progress of its own."""
    import sys
    import time

    start = time.perf_counter()
    if quiet:
        yield
        return
    if sys.stdout.isatty():
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
            bar.add_task(text, total=None)
            yield
    else:
        print(f"{text} ...", flush=True)
        yield
    print(f"{text}: done in {time.perf_counter() - start:.1f} s", flush=True)


def embed_run(run_dir: str | Path, *, method: str = "tsne", n: int = 2000, split: str = "test",
              checkpoint: str | None = None, quiet: bool = False, force: bool = False) -> Path | None:
    """Embed up to ``n`` samples of ``split`` and write ``embedding_<method>.png`` and ``embedding_<method>.npz``
    (features, labels, class names and the 2-D coordinates: each method keeps its own).

    Returns the PNG's path on the main process (None on the others under ``accelerate launch``); the
    projection shows its progress unless ``quiet``.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}", where="--method", hint="use tsne or pca")
    if n < 3:
        raise ConfigError(f"is {n}; a 2-D projection needs at least 3 samples", where="--n")
    path = Path(run_dir)
    loaded = open_split(path, split, checkpoint, limit=n, force=force)
    acc, predictor = loaded.acc, loaded.predictor
    try:
        with torch.no_grad(), penultimate(predictor.model) as features:
            vectors, labels = gather_outputs(lambda x: features(predictor.normalise(x)), loaded.loader, acc)
        png = None
        if acc.is_main_process:
            png = _write(path, split, loaded, vectors.numpy(), labels.numpy(), method, quiet)
        acc.wait_for_everyone()
    finally:
        acc.end_training()
    return png


def _write(run_dir: Path, split: str, loaded: RunSplit, vectors: np.ndarray, labels: np.ndarray, method: str,
           quiet: bool) -> Path:
    if len(vectors) < 3:
        raise CnnforgeError(f"the {split} split has {len(vectors)} sample(s); a 2-D projection needs 3",
                            where=str(run_dir))
    predictor = loaded.predictor
    name = "t-SNE" if method == "tsne" else "PCA"
    with _working(f"{name} of {len(vectors)} samples x {vectors.shape[1]} dimensions", quiet):
        coords, axes = project(vectors, method, loaded.recipe.seed)
    out = report_dir(run_dir, split, predictor.checkpoint, new_data=loaded.new_data)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / f"embedding_{method}.npz", features=vectors, labels=labels,
                        classes=np.asarray(predictor.classes), coords=coords)
    title = (f"{name} of penultimate-layer embeddings\n{split} split, {len(vectors)} samples, "
             f"{vectors.shape[1]} dimensions, {predictor.checkpoint} weights")
    return scatter(coords, labels, predictor.classes, axes, out / f"embedding_{method}.png", title=title)
