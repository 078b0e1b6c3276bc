"""Experiment tracking through Accelerate's trackers: wandb, TensorBoard, or CSV files in the run directory.

Accelerate already starts, feeds and finishes wandb and TensorBoard runs (``init_trackers``, ``log``,
``end_training``); cnnforge only decides where they write (inside the run directory, so one run is one
folder), keeps wandb offline unless the user has logged in, and adds a CSV tracker in Lightning's
``CSVLogger`` layout for people who want a spreadsheet and no service. Only the main process calls
:func:`start_tracking`, so only it logs.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import yaml
from accelerate.tracking import GeneralTracker, TensorBoardTracker, WandBTracker

from cnnforge import rundir
from cnnforge.atomic_write import atomic_write_text
from cnnforge.errors import CnnforgeError
from cnnforge.recipe import Recipe
from cnnforge.training.callbacks import Callback, FitContext

#: the report image sent to the trackers at the end of a run (written by cnnforge.reports)
CONFUSION_MATRIX = Path(rundir.REPORTS) / "confusion_matrix.png"


def wandb_logged_in() -> bool:
    """Credentials in the environment, or the netrc entry ``wandb login`` writes for the configured host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    import netrc
    from urllib.parse import urlparse

    import wandb

    host = urlparse(os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url).hostname
    try:
        return host is not None and netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """``$WANDB_MODE`` when the user chose one; otherwise online only for a logged-in user.

    A first run must never stop at a login prompt or fail on a machine without network.
    """
    return os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")


class CSVTracker(GeneralTracker):
    """``metrics.csv`` (one row per step, a column per metric) and ``hparams.yaml`` in one folder.

    Logging a step again replaces that step's values and drops later rows, so a resumed run that
    repeats epochs leaves the same file as an uninterrupted one.
    """

    name = "csv"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, logging_dir: str | os.PathLike[str]) -> None:
        super().__init__()
        self.dir = Path(logging_dir)
        self._rows: list[dict[str, Any]] = []

    @property
    def tracker(self) -> Path:
        return self.dir / "metrics.csv"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.tracker.exists():
            with self.tracker.open(newline="") as f:
                self._rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        atomic_write_text(self.dir / "hparams.yaml", yaml.safe_dump(values, sort_keys=False))

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        scalars = {k: v for k, v in values.items() if isinstance(v, (bool, int, float, str))}
        if step is None:
            step = int(self._rows[-1]["step"]) + 1 if self._rows else 0
        self._rows = [r for r in self._rows if int(r["step"]) <= step]
        if self._rows and int(self._rows[-1]["step"]) == step:
            self._rows[-1].update(scalars)
        else:
            self._rows.append({"step": step, **scalars})
        columns = list(dict.fromkeys(k for row in self._rows for k in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._rows)
        atomic_write_text(self.tracker, out.getvalue())


def flat_config(recipe: Recipe) -> dict[str, bool | int | float | str | None]:
    """The resolved recipe as ``section.key -> scalar``: the keys users override, values every backend accepts.

    TensorBoard's hparams take only scalars, so lists and mappings below a section become JSON text.
    """
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[prefix] = value
        else:
            out[prefix] = json.dumps(value)

    walk("", recipe.to_dict())
    return out


def trackers_for(recipe: Recipe, run_dir: Path) -> list[GeneralTracker]:
    """The Accelerate trackers ``recipe.tracking.backend`` asks for, all writing inside ``run_dir``."""
    backend = recipe.tracking.backend
    if backend == "wandb":
        import wandb

        t = recipe.tracking
        kwargs = {"dir": str(run_dir), "name": f"{recipe.name}/{run_dir.name}", "group": t.group, "entity": t.entity,
                  "mode": wandb_mode(), "reinit": "finish_previous", "settings": wandb.Settings(silent=True)}
        return [WandBTracker(t.project, **{k: v for k, v in kwargs.items() if v is not None})]
    if backend == "tensorboard":
        return [TensorBoardTracker("tensorboard", run_dir)]  # event files in <run_dir>/tensorboard
    if backend == "csv":
        return [CSVTracker(run_dir / "csv")]
    return []


def start_tracking(acc: Any, recipe: Recipe, run_dir: Path) -> bool:
    """Attach the recipe's trackers to ``acc`` and log the flattened recipe as the run's config.

    Trackers are attached here rather than when the Accelerator is built because the run directory
    they write into exists only now. Returns whether anything is tracked.
    """
    trackers = trackers_for(recipe, run_dir)
    if not trackers:
        return False
    acc.log_with = trackers  # ready tracker objects: init_trackers starts them as they are
    try:
        acc.init_trackers(recipe.tracking.project, config=flat_config(recipe))
    except Exception as exc:  # wandb's CommError/UsageError, a TensorBoard dir that cannot be written, ...
        backend = recipe.tracking.backend
        raise CnnforgeError(f"{backend} tracking could not start: {type(exc).__name__}: {exc}",
                            where=f"{recipe.source}: tracking.backend",
                            hint="without network, run with WANDB_MODE=offline or tracking.backend=csv"
                            if backend == "wandb" else None) from exc
    return True


def finish_tracking(acc: Any, recipe: Recipe, run_dir: Path, summary: dict[str, Any]) -> None:
    """Log the final metrics and the confusion matrix, and (``tracking.log_model``) the model as a wandb artifact.

    Call after the reports are written and before ``acc.end_training()`` closes the trackers.
    """
    step = int(summary.get("epochs") or 0)
    final = {k: v for k, v in summary.items() if k.startswith(("test/", "best/")) or k == "train/time_s"}
    acc.log({k: v for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=step)
    image = run_dir / CONFUSION_MATRIX
    if image.exists():
        import numpy as np
        from PIL import Image

        with Image.open(image) as img:
            batch = np.asarray(img.convert("RGB"))[None]  # one NHWC image
        for tracker in acc.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({"test/confusion_matrix": batch}, step=step, dataformats="NHWC")
            elif hasattr(tracker, "log_images"):
                tracker.log_images({"test/confusion_matrix": batch}, step=step)
    if recipe.tracking.log_model and recipe.tracking.backend == "wandb":
        import wandb

        artifact = wandb.Artifact(f"{recipe.name}-model", type="model", metadata=summary)
        artifact.add_file(str(run_dir / rundir.WEIGHTS))
        artifact.add_file(str(run_dir / rundir.RECIPE))  # the weights alone cannot be rebuilt into a model
        acc.get_tracker("wandb", unwrap=True).log_artifact(artifact)


class TrackingCallback(Callback):
    """``tracking.backend`` as a callback (main process only): the trackers start with the fit, log every epoch's
    metrics (those other callbacks added included: it runs last) and, at the end, the final metrics and report."""

    def on_fit_start(self, ctx: FitContext) -> None:
        start_tracking(ctx.acc, ctx.recipe, ctx.run_dir)

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, Any]) -> None:
        ctx.acc.log({k: v for k, v in metrics.items() if k != "epoch"}, step=ctx.epoch)

    def on_fit_end(self, ctx: FitContext, summary: dict[str, Any]) -> None:
        finish_tracking(ctx.acc, ctx.recipe, ctx.run_dir, summary)
