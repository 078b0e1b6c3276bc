"""Run directories ``<out_dir>/<name>/<run id>/``: every file name in them, and their readers and writers.

A run directory holds the resolved recipe, the manifest, metrics, the summary, the final weights,
``checkpoints/`` (the best weights beside the checkpoint folders) and ``reports/``, plus the data
description that lets a predictor run without the dataset. Everything that asks "is this a run,
which weights does it mean" asks here.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnforge.atomic_write import atomic_write_text
from cnnforge.bounded_read import read_bounded
from cnnforge.errors import CnnforgeError, ConfigError
from cnnforge.recipe import Recipe
from cnnforge.rundir.files import MAX_FILE_BYTES, DataInfoFile, RunIdentity, RunManifest, read_model

if TYPE_CHECKING:
    from cnnforge.data.loading import DataInfo

RECIPE = "recipe.yaml"
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
WEIGHTS = "model.safetensors"
CHECKPOINTS = "checkpoints"
REPORTS = "reports"
FAILED = "failed.json"  # written when training stops on an error (cnnforge runs: status failed)
LOCK = ".lock"
#: one JSON row per epoch (and per checkpointed step): a million rows is more than any run writes
MAX_METRICS_BYTES = 256 << 20
#: the input description of a run (classes, channels, sizes, normalisation), written when it ends
DATA_INFO = "data_info.json"
#: the best validation weights, inside CHECKPOINTS
BEST = "best.safetensors"
#: a sweep's experiment folder holds the resolved recipe it sweeps, and each trial folder its runs under TRIAL_RUNS
#: (``<experiment>/<trial id>/runs/<name>/<run id>/``)
SWEEP_RECIPE = "sweep.yaml"
TRIAL_RUNS = "runs"
#: the weights a finished run offers: ``best`` (validation) or ``last`` (final)
WEIGHT_CHOICES = ("best", "last")

#: (height, width, channels) of the images a dataset stores
Shape = tuple[int, int, int]

#: environment variables whose values must never reach a file (tokens, keys, passwords)
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")


def create(recipe: Recipe) -> Path:
    """A new, empty run directory; an unwritable ``out_dir`` is one clear error."""
    return timestamped_dir(Path(recipe.train.out_dir).expanduser() / recipe.name, "", what="run", recipe=recipe)


def timestamped_dir(base: Path, prefix: str, *, what: str, recipe: Recipe) -> Path:
    """A new, empty ``base/<prefix><time>`` folder (``-1``, ``-2`` ... when that second is taken): runs, sweeps."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        base.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            path = base / f"{prefix}{stamp}{'' if i == 0 else f'-{i}'}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise CnnforgeError(f"cannot create the {what} directory: {exc.strerror}",
                            where=f"{recipe.source}: train.out_dir={base}") from None
    raise CnnforgeError(f"too many {what}s started in the same second", where=str(base))


def check_writable(recipe: Recipe) -> None:
    """Fail on an unusable ``train.out_dir`` before any heavy work (data, model) starts."""
    out = Path(recipe.train.out_dir).expanduser()
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        what = "is not a folder" if existing is not None and not existing.is_dir() else "is not writable"
        raise CnnforgeError(f"cannot create run directories: {existing} {what}",
                            where=f"{recipe.source}: train.out_dir")


def recipe_hash(recipe_yaml: str) -> str:
    return hashlib.sha256(recipe_yaml.encode()).hexdigest()[:16]


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def manifest(recipe: Recipe, *, world_size: int, device: str, precision: str, recipe_yaml: str) -> dict[str, Any]:
    import accelerate
    import torch

    from cnnforge._version import __version__
    from cnnforge.plugins import plugin_distributions

    return {
        "cnnforge": __version__, "git_commit": _git_commit(), "python": platform.python_version(),
        "torch": torch.__version__, "accelerate": accelerate.__version__, "platform": platform.platform(),
        "plugins": plugin_distributions(), "seed": recipe.seed, "world_size": world_size, "device": device,
        "precision": precision, "recipe_sha256": recipe_hash(recipe_yaml),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": _redacted_argv(), "run_id": uuid.uuid4().hex,
    }


def read_manifest(run_dir: Path) -> RunManifest:
    """The run's validated ``manifest.json``."""
    return read_model(run_dir / MANIFEST, RunManifest, "run manifest")


def identity(manifest: RunManifest) -> RunIdentity | None:
    """What the run's checkpoints record about it (None for runs made before checkpoints recorded it)."""
    if manifest.run_id is None:
        return None
    return RunIdentity(run_id=manifest.run_id, recipe_sha256=manifest.recipe_sha256)


@contextmanager
def exclusive(run_dir: Path, what: str = "run directory") -> Iterator[None]:
    """Hold ``run_dir`` (or a sweep's experiment, ``what``) for this process: a second ``run``/``resume`` of it
    (or ``tune``) stops, naming the holder.

    ``flock`` belongs to the open file, so the OS releases it when the process ends in any way:
    a ``kill -9`` never leaves a stale lock behind.
    """
    import fcntl

    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CnnforgeError(f"cannot create the lock file: {exc.strerror}", where=str(path)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise CnnforgeError(f"is in use by {'process ' + holder if holder else 'another process'}",
                                where=str(run_dir), hint=f"one process per {what}; wait for it to end") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _redacted_argv() -> list[str]:
    import sys

    out = []
    for arg in sys.argv:
        key = arg.split("=", 1)[0].upper()
        out.append(f"{arg.split('=', 1)[0]}=<redacted>" if "=" in arg and any(w in key for w in _SECRET_WORDS) else arg)
    return out


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_bounded(path, MAX_FILE_BYTES, what="run file"))
    except FileNotFoundError:
        raise CnnforgeError("file is missing", where=str(path)) from None
    except ValueError as exc:
        raise CnnforgeError(f"not valid JSON ({exc})", where=str(path)) from None


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    try:
        with (run_dir / METRICS).open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise CnnforgeError(f"cannot write it: {exc.strerror or exc}", where=str(run_dir / METRICS)) from None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every intact row of ``metrics.jsonl``; a damaged line never hides the rows after it.

    The last line may be cut short by a crash while it was appended (dropped quietly); a damaged
    line anywhere else is skipped with a warning naming it.
    """
    path = run_dir / METRICS
    if not path.exists():
        return []
    lines = read_bounded(path, MAX_METRICS_BYTES, what="metrics file").split(b"\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        row = _metrics_row(line)
        if row is not None:
            rows.append(row)
        elif number < len(lines):  # the last piece is empty, or a row a crash cut short
            warnings.warn(f"{path}:{number}: damaged line skipped; the rows after it are kept", stacklevel=2)
    return rows


def _metrics_row(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return row if isinstance(row, dict) and type(row.get("epoch")) is int else None


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Keep only the intact rows of epochs up to ``last_epoch`` (a resume rewrites the rest)."""
    rows = [r for r in read_metrics(run_dir) if r["epoch"] <= last_epoch]
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def is_run_dir(path: Path) -> bool:
    return (path / RECIPE).is_file() and (path / MANIFEST).is_file()


def require_run_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path; a folder that is not a run directory is one ConfigError naming it."""
    path = Path(path)
    if not is_run_dir(path):
        raise ConfigError(f"not a run directory (no {RECIPE} and {MANIFEST})", where=str(path))
    return path


def stored_shape(dataset: Any) -> Shape:
    """(height, width, channels) of the images an ``AugmentedDataset`` holds, before any pipeline.

    Images decoded at their own size (``data.cache: none``) count as ``data.image_size``, the size
    the other cache modes store.
    """
    import numpy as np

    image = np.asarray(dataset.base[int(dataset.indices[0])][0])
    own_size = getattr(dataset.base, "full_resolution", False) and dataset.base.image_size
    height, width = own_size or image.shape[:2]
    return (int(height), int(width), int(image.shape[2]) if image.ndim == 3 else 1)


def save_data_info(run_dir: Path, info: DataInfo, dataset: Any) -> None:
    """Keep the data description with the run (``dataset``: one of its splits), so predicting never needs the data."""
    write_json(run_dir / DATA_INFO, {**asdict(info), "stored_shape": list(stored_shape(dataset))})


def load_data_info(run_dir: Path, recipe: Any) -> tuple[DataInfo, Shape]:
    """The run's :class:`DataInfo` and stored image shape; a run that never finished opens its dataset again."""
    from cnnforge.data.loading import DataInfo, build_splits

    path = run_dir / DATA_INFO
    if not path.exists():
        splits = build_splits(recipe)
        return splits.info, stored_shape(splits.train)
    raw = read_model(path, DataInfoFile, "data description")
    if len(raw.mean) != raw.channels or len(raw.std) != raw.channels or raw.stored_shape[2] not in (1, 3):
        raise CnnforgeError(f"not a valid data description (channels {raw.channels}, mean {raw.mean}, std {raw.std}, "
                            f"stored_shape {list(raw.stored_shape)} do not agree)", where=str(path))
    info = DataInfo(classes=list(raw.classes), mean=tuple(raw.mean), std=tuple(raw.std), channels=raw.channels,
                    image_size=raw.image_size)
    return info, raw.stored_shape


def tested_weights(run_dir: Path) -> str:
    """The weights a run is tested with: ``best`` when it kept a best epoch's weights, else ``last``."""
    return "best" if (run_dir / CHECKPOINTS / BEST).exists() else "last"


def resolve_checkpoint(run_dir: Path, checkpoint: str | None) -> str:
    """``best`` or ``last``; ``None`` means what the run was tested with (:func:`tested_weights`)."""
    if checkpoint is None:
        return tested_weights(run_dir)
    if checkpoint not in WEIGHT_CHOICES:
        raise ConfigError(f"unknown checkpoint {checkpoint!r}", where="--checkpoint", hint="use best or last")
    return checkpoint


def weights_file(run_dir: Path, checkpoint: str) -> Path:
    """The safetensors file behind ``best`` (best validation epoch) or ``last`` (final weights).

    ``last`` of an interrupted run, which has no final weights yet, is its newest complete checkpoint.
    """
    from cnnforge.rundir import checkpoint as ckpt  # torch: only when weights are looked up

    if checkpoint == "best":
        path = run_dir / CHECKPOINTS / BEST
        if not path.exists():
            raise CnnforgeError("the run kept no best weights", where=str(path), hint="use --checkpoint last")
        return path
    final = run_dir / WEIGHTS
    if final.exists():
        return final
    newest = ckpt.latest_valid(run_dir / CHECKPOINTS)
    if newest is None:
        raise CnnforgeError("the run has no final weights and no complete checkpoint", where=str(run_dir))
    return newest / ckpt.WEIGHTS

