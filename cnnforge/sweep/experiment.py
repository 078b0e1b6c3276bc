"""A sweep's experiment folder: which one a command continues, what it sweeps, and whether its state may be loaded.

An experiment is one recipe on one dataset: ``sweep.yaml`` holds the resolved recipe with ``data.root`` made
absolute once, when the experiment starts, so a rerun from another folder whose relative ``data.root`` names
other data cannot continue it silently (it is refused, naming both folders). One driver holds an experiment
at a time (``.lock``, as runs do).

Ray restores an experiment by unpickling files in it (``tuner.pkl``, the searcher's and callbacks' states,
the trial table's embedded pickles, a failed trial's ``error.pkl``): whoever can write them runs code as the
user. Before a restore, :func:`check_trusted` refuses a folder or one of those files that is a symlink, is
not owned by this user, or is writable by other users (world-writable, or group-writable by a group other
than the user's own private group). Code that runs as the user (the trials themselves) is inside that boundary.
"""
from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from cnnforge import rundir
from cnnforge.bounded_read import read_bounded_text
from cnnforge.errors import CnnforgeError, ConfigError
from cnnforge.recipe import Recipe, load_recipe
from cnnforge.recipe.bounds import MAX_BYTES
from cnnforge.recipe.loading import yaml_value

EXPERIMENT_PREFIX = "tune-"
#: what Ray unpickles when it restores an experiment and reads its results, besides the snapshot's files
PICKLED = ("*.pkl", "*.json", "*.zip", "*/error.pkl")


def with_absolute_data_root(recipe: Recipe) -> Recipe:
    """``recipe`` with ``data.root`` resolved against this folder: Ray runs trials in other folders, and the
    experiment records the data it sweeps."""
    resolved = recipe.model_copy(deep=True)
    resolved.data.root = str(Path(recipe.data.root).expanduser().resolve())
    return resolved


def _swept_data(path: Path) -> tuple[str, str] | None:
    """(``sweep.yaml`` without ``data.root``, ``data.root``) of an experiment folder; None when it has none."""
    try:
        recipe = load_recipe(path / rundir.SWEEP_RECIPE)
    except CnnforgeError:
        return None  # not an experiment this cnnforge can continue: a fresh one starts beside it
    root, recipe.data.root = recipe.data.root, ""
    return recipe.to_yaml(), root


def find_or_create(recipe: Recipe, fresh: bool) -> tuple[Path, bool]:
    """(experiment folder, whether it continues an earlier one) for ``recipe``, whose ``data.root`` is absolute.

    The newest experiment whose ``sweep.yaml`` is this recipe continues; one that differs only in ``data.root``
    is refused (an experiment is one dataset); otherwise a new folder holds ``sweep.yaml``.
    """
    base = Path(recipe.train.out_dir).expanduser().resolve() / recipe.name
    text = recipe.to_yaml()
    if not fresh:
        folders = sorted(base.glob(f"{EXPERIMENT_PREFIX}*"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for path in folders:
            if (path / rundir.SWEEP_RECIPE).is_file() and _sweep_text(path) == text:
                return path, True
        _refuse_other_data(recipe, folders)
    path = rundir.timestamped_dir(base, EXPERIMENT_PREFIX, what="experiment", recipe=recipe)
    (path / rundir.SWEEP_RECIPE).write_text(text)
    return path, False


def discard_unstarted(path: Path) -> None:
    """Remove a new experiment folder that holds nothing but its ``sweep.yaml`` and lock: a sweep refused before
    Ray wrote anything (resources no node has) would otherwise leave one that the fixed rerun "continues"."""
    if {p.name for p in path.iterdir()} <= {rundir.SWEEP_RECIPE, rundir.LOCK}:
        for name in (rundir.SWEEP_RECIPE, rundir.LOCK):
            (path / name).unlink(missing_ok=True)
        path.rmdir()
        with contextlib.suppress(OSError):  # the recipe's folder, when this was its only experiment
            path.parent.rmdir()


def _sweep_text(path: Path) -> str | None:
    try:
        return read_bounded_text(path / rundir.SWEEP_RECIPE, MAX_BYTES, what="sweep recipe")
    except (OSError, CnnforgeError):
        return None


def _refuse_other_data(recipe: Recipe, folders: list[Path]) -> None:
    """The newest experiment of the same sweep on another ``data.root`` stops the rerun, naming both folders."""
    mine = recipe.model_copy(deep=True)
    mine.data.root = ""
    for path in folders:
        swept = _swept_data(path)
        if swept is not None and swept[0] == mine.to_yaml():
            raise ConfigError(f"experiment {path} sweeps the data in {swept[1]}, but data.root is {recipe.data.root} "
                              "here (a relative data.root is resolved against the current folder)",
                              where=f"{recipe.source}: data.root",
                              hint=f"run from the folder it started in, pass data.root={yaml_value(swept[1])}, "
                                   "or --fresh for a new experiment on this data")


def _private_group(gid: int) -> bool:
    """Whether ``gid`` is this user's own group (named like the user, no other members): umask 002 is safe there."""
    try:
        user, group = pwd.getpwuid(os.getuid()), grp.getgrgid(gid)
    except KeyError:
        return False
    return gid == user.pw_gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


def _untrusted(path: Path) -> str | None:
    """Why ``path`` may have been written by someone else, or None."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if info.st_uid != os.getuid():
        return f"is owned by user id {info.st_uid}, not by this user ({os.getuid()})"
    if info.st_mode & stat.S_IWOTH:
        return "is writable by every user"
    if info.st_mode & stat.S_IWGRP and not _private_group(info.st_gid):
        return f"is writable by group id {info.st_gid}"
    return None


def _restored_paths(experiment: Path) -> Iterator[Path]:
    yield experiment
    yield from (p for p in experiment.iterdir() if p.is_dir() and not p.name.startswith("."))
    for pattern in PICKLED:
        yield from experiment.glob(pattern)


def check_trusted(experiment: Path) -> None:
    """Refuse to restore ``experiment`` when a folder or a file Ray unpickles may have been written by another user."""
    for path in _restored_paths(experiment):
        reason = _untrusted(path)
        if reason is not None:
            raise CnnforgeError(f"{reason}; restoring would run code from it (Ray unpickles the experiment's state)",
                                where=str(path), hint="check who wrote it; --fresh starts a new experiment beside it")
