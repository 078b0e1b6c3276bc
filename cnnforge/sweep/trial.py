"""What one Ray Tune trial runs: the ``cnnforge run`` trainer, reporting every epoch to Ray.

A trial's cnnforge run directory lives in the trial's folder of the experiment
(``<experiment>/<trial id>/runs/<name>/<run id>/``), not in Ray's per-session working directory:
a restarted driver starts a new Ray session, and the trial must find its run there again.
Every epoch checkpoint cnnforge writes is also handed to Ray (``tune.report(..., checkpoint=...)``),
so ASHA sees each epoch and a retried or restored trial continues from the checkpoint Ray recorded
in the run directory that wrote it. When PBT restarts a trial from another trial's checkpoint with a
perturbed config, the trial starts a new run directory in its own folder from that checkpoint with the
new values (:func:`~cnnforge.training.checkpointing.warm_start`); its earlier run stays as it was.
The last epoch is reported only once the run has finished (test metrics, ``summary.json``), because
Ray may stop a trial at any report and ASHA always stops one that reaches its last epoch; a run that
stops early (``train.early_stop``, ``train.max_time``: its row says ``stopped``) reports its last epoch
the same way, and Ray records the trial as finished with that result.

This module is imported inside Ray workers; it must stay importable without the driver's state.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cnnforge import rundir
from cnnforge.errors import CnnforgeError
from cnnforge.recipe import Recipe, load_recipe
from cnnforge.recipe.loading import yaml_value


def trial_overrides(config: Mapping[str, Any]) -> list[str]:
    """A trial's Ray config ``{"optim.lr": 0.01}`` as cnnforge overrides ``["optim.lr=0.01"]``."""
    return [f"{key}={yaml_value(value)}" for key, value in config.items()]


def _trial_runs(trial_dir: Path) -> list[Path]:
    manifests = (trial_dir / rundir.TRIAL_RUNS).glob(f"*/*/{rundir.MANIFEST}")
    return [p.parent for p in manifests if rundir.is_run_dir(p.parent)]


def trial_run_dir(trial_dir: Path) -> Path | None:
    """The trial's newest cnnforge run directory (a retry that had no checkpoint, or a PBT exploit, starts a new
    one)."""
    return max(_trial_runs(trial_dir), key=lambda p: (p / rundir.MANIFEST).stat().st_mtime_ns, default=None)


def run_trial(config: dict[str, Any], *, recipe: Recipe, overrides: Sequence[str], experiment_dir: str) -> None:
    """Ray Tune's trainable: train ``recipe`` with the trial's ``config``, or continue the trial."""
    from ray import tune

    trial_dir = Path(experiment_dir) / tune.get_context().get_trial_id()
    continue_trial(config, recipe=recipe, overrides=overrides, trial_dir=trial_dir, report=tune.report,
                   restored=tune.get_checkpoint())


def continue_trial(config: dict[str, Any], *, recipe: Recipe, overrides: Sequence[str], trial_dir: Path,
                   report: Callable[..., None], restored: Any) -> None:
    """Train the trial, or continue it from ``restored`` (a Ray checkpoint), reporting each epoch with ``report``
    (``ray.tune.report``, or in a DDP trial's processes ``ray.train.report``, which every rank calls)."""
    from ray.train import Checkpoint

    from cnnforge.training.run import resume, train

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    trial_recipe = load_recipe(recipe, [*overrides, *trial_overrides(config)])
    trial_recipe.train.out_dir = str(trial_dir / rundir.TRIAL_RUNS)  # a value, never YAML: `#` starts no comment
    epochs, recipe_sha256 = trial_recipe.train.epochs, rundir.recipe_hash(trial_recipe.to_yaml())
    previous = trial_run_dir(trial_dir)
    done_epochs = _epochs_in(restored)
    if previous is not None and (previous / rundir.SUMMARY).exists() and _trained_with(previous, recipe_sha256):
        # the run finished but the driver stopped before recording it: tell Ray what it missed, train nothing
        # (a finished run of other values does not count: PBT changed this trial's config after it ended)
        for row in rundir.read_metrics(previous):
            if row.get("epoch", 0) > done_epochs:
                report(row)
        return

    last: list[tuple[dict[str, Any], Any]] = []

    def reporter(row: dict[str, Any], ckpt_dir: Path | None) -> None:
        checkpoint = Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
        if row["epoch"] < epochs and "stopped" not in row:
            report(dict(row), checkpoint=checkpoint)
        else:  # Ray may stop a trial at any report (ASHA does at its last epoch): let the run finish first
            last.append((dict(row), checkpoint))

    if restored is None:
        if _resumable(previous, recipe_sha256):  # Ray lost the report of its newest checkpoint: continue from it
            resume(previous, quiet=True, reporter=reporter)
        else:
            train(trial_recipe, quiet=True, reporter=reporter)
    else:
        with restored.as_directory() as ckpt_dir:
            owner = _run_of(Path(ckpt_dir), trial_dir)
            if owner is not None and _trained_with(owner, recipe_sha256):
                resume(owner, checkpoint=ckpt_dir, quiet=True, reporter=reporter)
            elif owner is not None or Path(ckpt_dir).resolve().parent != trial_dir.resolve():
                # PBT: another trial's checkpoint, or this trial's own from before PBT changed its config
                train(trial_recipe, quiet=True, reporter=reporter, warm_start=ckpt_dir)
            else:
                raise CnnforgeError("Ray restored this trial but its run directory is gone",
                                    where=str(trial_dir / rundir.TRIAL_RUNS),
                                    hint="on a multi-node cluster train.out_dir must be on storage every node sees")
    for row, checkpoint in last:
        report(row, checkpoint=checkpoint)


def _run_of(checkpoint: Path, trial_dir: Path) -> Path | None:
    """The trial's run directory that wrote ``checkpoint`` (None: another trial's, or a run that is gone); the
    newest one for a checkpoint that records no run (older cnnforge)."""
    from cnnforge.rundir.checkpoint import read_manifest

    run = read_manifest(checkpoint).run
    if run is None:
        return trial_run_dir(trial_dir)
    return next((r for r in _trial_runs(trial_dir) if rundir.read_manifest(r).run_id == run.run_id), None)


def _resumable(run_dir: Path | None, recipe_sha256: str) -> bool:
    """Whether the trial's newest run trains these values and holds a complete checkpoint. Ray can restart a trial
    without one it had reported: Ray Train registers its workers' reports every 2 s, and a worker that dies sooner
    after one takes it along (the folder is written, Ray does not know it)."""
    from cnnforge.rundir.checkpoint import latest_valid

    return run_dir is not None and _trained_with(run_dir, recipe_sha256) and \
        latest_valid(run_dir / rundir.CHECKPOINTS) is not None


def _trained_with(run_dir: Path, recipe_sha256: str) -> bool:
    """Whether ``run_dir`` trains the recipe with this hash (the trial's values now), not values PBT replaced."""
    return rundir.read_manifest(run_dir).recipe_sha256 == recipe_sha256


def _epochs_in(checkpoint: Any) -> int:
    """Epochs completed at a Ray checkpoint (0 without one); it holds cnnforge's ``state.json``."""
    if checkpoint is None:
        return 0
    from cnnforge.rundir.checkpoint import STATE  # torch: trials import it anyway, the driver never does

    with checkpoint.as_directory() as path:
        return int(json.loads((Path(path) / STATE).read_text())["epoch"])
