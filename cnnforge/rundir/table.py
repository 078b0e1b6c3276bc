"""``cnnforge runs``: every run directory under a folder, with its status and headline numbers.

Status comes from the files a run leaves: ``summary.json`` when it finished, ``failed.json`` when it
stopped on an error, otherwise it was interrupted (Ctrl-C, ``kill -9``, a lost node) and the newest
complete checkpoint is where ``cnnforge resume`` continues. Only small JSON/YAML files are read, so
listing hundreds of runs takes no torch import.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from cnnforge import rundir
from cnnforge.bounded_read import read_bounded, read_bounded_text
from cnnforge.errors import CnnforgeError
from cnnforge.recipe import load_recipe
from cnnforge.recipe.bounds import MAX_BYTES, load_yaml
from cnnforge.rundir.files import MAX_FILE_BYTES, list_checkpoints


@dataclass
class RunRow:
    """One run directory at a glance (``--json`` prints these fields)."""

    name: str
    id: str
    path: str
    status: str  # finished | failed | interrupted
    epochs: int
    max_epochs: int | None
    best_metric: str
    best_value: float | None
    test_acc: float | None
    test_balanced_acc: float | None
    test_macro_f1: float | None
    stopped: str | None  # epochs | early_stop | max_time, once finished
    duration_s: float | None
    created: str | None
    resume: str | None  # the command that continues an interrupted run
    error: str | None
    trial: str | None = None  # a sweep trial's id (``<experiment>/<trial>/runs/<name>/<run id>``)
    swept: dict[str, Any] | None = None  # the trial's values of the sweep's swept keys, as this run trained them


def _load(path: Path) -> Any:
    try:
        return json.loads(read_bounded(path, MAX_FILE_BYTES))
    except (OSError, ValueError, CnnforgeError):
        return None


def _best(rows: list[dict[str, Any]], metric: str, mode: str) -> float | None:
    values = [r[metric] for r in rows if isinstance(r.get(metric), (int, float))]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def read_run(path: Path) -> RunRow:
    """What ``path``'s files say about the run (a file cut short by a crash counts as missing)."""
    manifest = _load(path / rundir.MANIFEST) or {}
    try:
        train = (load_yaml(read_bounded_text(path / rundir.RECIPE, MAX_BYTES)) or {}).get("train") or {}
    except (OSError, yaml.YAMLError, AttributeError, CnnforgeError):
        train = {}
    metric, mode = train.get("best_metric", "val/acc"), train.get("best_mode", "max")
    try:
        history = rundir.read_metrics(path)
    except CnnforgeError:  # not a file, or larger than any run writes: the table reads around it
        history = []
    summary, failed = _load(path / rundir.SUMMARY), _load(path / rundir.FAILED)
    status = "finished" if summary else "failed" if failed else "interrupted"
    resumable = status == "interrupted" and bool(list_checkpoints(path / rundir.CHECKPOINTS))
    last = max((p.stat().st_mtime for p in (path / rundir.SUMMARY, path / rundir.METRICS, path / rundir.FAILED)
                if p.exists()), default=None)
    started = (path / rundir.MANIFEST).stat().st_mtime
    return RunRow(
        name=path.parent.name, id=path.name, path=str(path), status=status,
        epochs=len(history), max_epochs=train.get("epochs"), best_metric=metric,
        best_value=(summary or {}).get(f"best/{metric}", _best(history, metric, mode)),
        test_acc=(summary or {}).get("test/acc"), test_balanced_acc=(summary or {}).get("test/balanced_acc"),
        test_macro_f1=(summary or {}).get("test/macro_f1"), stopped=(summary or {}).get("stopped"),
        duration_s=round(max(0.0, last - started), 1) if last else None,
        created=manifest.get("created"), resume=f"cnnforge resume {path}" if resumable else None,
        error=(failed or {}).get("error"), **_trial_of(path))


def _trial_of(path: Path) -> dict[str, Any]:
    """``trial`` and ``swept`` of a sweep trial's run: the keys ``sweep.yaml`` sweeps, valued from the run's recipe
    (after a PBT exploit, the values it continued with); nothing for a run outside a sweep."""
    if len(path.parents) < 4 or path.parents[1].name != rundir.TRIAL_RUNS:
        return {}
    trial_dir = path.parents[2]
    sweep_file = trial_dir.parent / rundir.SWEEP_RECIPE
    if not sweep_file.is_file():
        return {}
    try:
        keys = _swept_keys(sweep_file)
        values = load_recipe(path / rundir.RECIPE).to_dict()
    except CnnforgeError:
        return {"trial": trial_dir.name}
    return {"trial": trial_dir.name, "swept": {key: _at(values, key) for key in keys}}


@functools.lru_cache(maxsize=64)
def _swept_keys(sweep_file: Path) -> tuple[str, ...]:
    """The keys an experiment sweeps (read once for all its trials)."""
    sweep = load_recipe(sweep_file)
    return tuple(sweep.tune.swept_keys()) if sweep.tune else ()


def _at(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def list_runs(root: str | os.PathLike[str]) -> list[RunRow]:
    """Every run directory under ``root`` (sweep trials included), newest first."""
    base = Path(root)
    found = [p.parent for p in base.rglob(rundir.MANIFEST) if rundir.is_run_dir(p.parent)]
    return sorted((read_run(p) for p in found), key=lambda r: (r.created or "", r.id), reverse=True)


def as_json(rows: list[RunRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)


def format_duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on: one format for the runs table and the progress lines."""
    seconds = int(max(0, seconds))
    h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)
