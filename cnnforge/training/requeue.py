"""``cnnforge run RECIPE --run-dir DIR`` (``train.run_dir``): one command line that a requeued job simply runs again.

Slurm requeues a preempted or timed-out job by running its batch script again, so the same command
must start the run, continue it, or see that it is done:

* DIR absent or empty: a new run there;
* DIR holding an unfinished run of the same recipe: resume it from its newest complete checkpoint
  (from the start when it was stopped before its first one);
* DIR holding a finished run (``summary.json``): say so and touch nothing;
* DIR holding another recipe's run, something that is not a run, or a file: one line, exit 2.

The main process decides, holding the run directory's lock, and every rank of a launch gets its
decision (an error too), so the ranks never see the folder half-created by each other.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cnnforge import rundir
from cnnforge.errors import CnnforgeError, ConfigError
from cnnforge.recipe import Recipe, load_recipe
from cnnforge.rundir.files import RunIdentity, RunManifest

Action = Literal["fresh", "resume", "finished"]


@dataclass
class Plan:
    """What to do with the run directory: a new run, a resumed one (from ``start``; None: from scratch) or nothing."""

    action: Action
    run_dir: Path
    start: Path | None = None
    identity: RunIdentity | None = None


def agree(recipe: Recipe, acc: Any, held: contextlib.ExitStack) -> Plan:
    """The main process's :func:`decide` (under the run directory's lock, kept in ``held``), on every rank."""
    box: list[Any] = [None]
    if acc.is_main_process:
        try:
            box[0] = decide(recipe, held)
        except CnnforgeError as exc:
            box[0] = exc
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(box)
    if isinstance(box[0], CnnforgeError):
        raise box[0]
    return box[0]


def decide(recipe: Recipe, held: contextlib.ExitStack) -> Plan:
    """Claim ``train.run_dir`` for this process and say what the run does there."""
    path = Path(str(recipe.train.run_dir)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError("is a file, not a run directory", where=f"{recipe.source}: train.run_dir={path}")
    _refuse_foreign(recipe, path)  # before the lock file is made: nothing is written into someone else's folder
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnforgeError(f"cannot create the run directory: {exc.strerror}", where=str(path)) from None
    held.enter_context(rundir.exclusive(path))  # a second job on the same folder stops here, naming the holder
    if _unstarted(path):
        return Plan("fresh", path)
    _refuse_foreign(recipe, path)
    manifest = rundir.read_manifest(path)
    _check_same_recipe(recipe, path, manifest)
    if (path / rundir.SUMMARY).exists():
        return Plan("finished", path)  # whatever made it: nothing is trained again
    check_unchanged(path, manifest)
    start, identity = prepare_resume(path, manifest, main=True, from_scratch=True)
    return Plan("resume", path, start, identity)


def _refuse_foreign(recipe: Recipe, path: Path) -> None:
    if path.is_dir() and not _unstarted(path) and not rundir.is_run_dir(path):
        raise ConfigError(f"holds something else than a cnnforge run (no {rundir.RECIPE} and {rundir.MANIFEST}); "
                          "nothing is written there", where=f"{recipe.source}: train.run_dir={path}",
                          hint="give a new or empty folder")


def _unstarted(path: Path) -> bool:
    """Empty, or holding only what a run writes before its manifest (its lock, its recipe, temporary files)."""
    names = {p.name for p in path.iterdir() if p.name != rundir.LOCK and ".tmp-" not in p.name}
    return not names or (names == {rundir.RECIPE} and (path / rundir.LOCK).exists())


def check_unchanged(path: Path, manifest: RunManifest) -> None:
    """The run's recipe.yaml and the code that trains it are those it started with, or resuming is not bit-exact."""
    import torch

    from cnnforge._version import __version__
    from cnnforge.bounded_read import read_bounded_text
    from cnnforge.recipe.bounds import MAX_BYTES

    recipe_file = path / rundir.RECIPE
    if rundir.recipe_hash(read_bounded_text(recipe_file, MAX_BYTES, what="recipe")) != manifest.recipe_sha256:
        raise ConfigError("recipe.yaml changed since the run started; the resumed run would not match",
                          where=str(recipe_file), hint="use --force to resume anyway")
    versions = (("cnnforge", manifest.cnnforge, __version__), ("torch", manifest.torch, torch.__version__))
    for package, then, now in versions:
        if then != now:  # other kernels or code: the result would no longer be bit-exact
            raise ConfigError(f"run was made with {package} {then}, this is {now}",
                              where=str(path / rundir.MANIFEST), hint="use --force to resume anyway")


def prepare_resume(path: Path, manifest: RunManifest, *, main: bool, force: bool = False,
                   checkpoint: Path | None = None,
                   from_scratch: bool = False) -> tuple[Path | None, RunIdentity | None]:
    """(the checkpoint to continue from, the run's identity) of an interrupted run; the ``main`` process, which
    holds the run's lock, clears what the interruption left (half-written checkpoints, ``failed.json``).

    Without a complete checkpoint the run starts over in its folder when ``from_scratch`` (its metrics of
    epochs never checkpointed are dropped), else that is an error.
    """
    from cnnforge.rundir import checkpoint as ckpt

    if main:  # the other ranks must not delete what a process holding the run is writing
        ckpt.remove_partial(path / rundir.CHECKPOINTS)
        (path / rundir.FAILED).unlink(missing_ok=True)  # a resumed run is no longer a failed one
    start = checkpoint if checkpoint is not None else ckpt.latest_valid(path / rundir.CHECKPOINTS)
    own = rundir.identity(manifest)
    if start is None:
        if not from_scratch:
            raise CnnforgeError("no complete checkpoint to resume from", where=str(path / rundir.CHECKPOINTS))
        if main:
            rundir.truncate_metrics(path, 0)
        return None, own
    if not force:
        _check_identity(start, own)
    best = path / rundir.CHECKPOINTS / rundir.BEST
    if best.exists():
        ckpt.load_weights(best)  # damaged best weights are named now, not after the rest of training
    return start, own


def _check_identity(start: Path, own: RunIdentity | None) -> None:
    """A checkpoint copied in from another run (other seed, other learning rate) is refused."""
    from cnnforge.rundir import checkpoint as ckpt

    theirs = ckpt.read_manifest(start).run
    if theirs is None or own is None:
        raise ConfigError("the checkpoint or the run records no run identity; it may be from another run",
                          where=str(start), hint="use --force to resume from it anyway")
    if theirs != own:
        what = "recipe" if theirs.run_id == own.run_id else "run"
        raise ConfigError(f"the checkpoint belongs to another {what} (run {theirs.run_id[:8]}, recipe "
                          f"{theirs.recipe_sha256}; this is run {own.run_id[:8]}, recipe {own.recipe_sha256})",
                          where=str(start), hint="use --force to resume from it anyway")


def _check_same_recipe(recipe: Recipe, path: Path, manifest: RunManifest) -> None:
    """The run in ``path`` trains this recipe (where the folder is may differ: it can have been moved)."""
    stored = load_recipe(path / rundir.RECIPE)
    stored.train.run_dir = recipe.train.run_dir
    ours = rundir.recipe_hash(recipe.to_yaml())
    if rundir.recipe_hash(stored.to_yaml()) != ours:
        raise ConfigError(f"holds a run of another recipe (recipe {manifest.recipe_sha256}, this one is {ours}); "
                          "nothing is written there", where=f"{recipe.source}: train.run_dir={path}",
                          hint="give another --run-dir, or the same recipe and overrides as that run")


def finished_line(run_dir: Path) -> str:
    return f"{run_dir} has finished already: nothing to train (its summary.json holds the results)"
