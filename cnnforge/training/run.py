"""``cnnforge.train`` and ``cnnforge.resume``: one run, from recipe to run directory."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cnnforge import rundir
from cnnforge.atomic_write import atomic_write_text
from cnnforge.errors import EXIT_PREEMPTED, recipe_source
from cnnforge.recipe import Recipe, open_recipe
from cnnforge.rundir.files import RunIdentity
from cnnforge.training import requeue
from cnnforge.training.requeue import check_unchanged, prepare_resume


@dataclass
class RunResult:
    """What a finished run left behind: its directory and final metrics (``summary.json``)."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int = 0
    main_process: bool = True

    def describe(self) -> str:
        """The two lines a finished run prints: test metrics and where everything is."""
        m = self.metrics
        return (f"test/acc {m.get('test/acc', float('nan')):.4f}  test/loss {m.get('test/loss', float('nan')):.4f}\n"
                f"run directory: {self.run_dir}")

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    @property
    def weights(self) -> Path:
        return self.run_dir / rundir.WEIGHTS


def train(recipe: str | os.PathLike[str] | Recipe | dict[str, Any], overrides: Iterable[str] = (), *,
          quiet: bool = False, reporter: Any = None, warm_start: str | os.PathLike[str] | None = None) -> RunResult:
    """Train ``recipe`` (a path, a dict or a :class:`Recipe`) with dotted ``overrides``.

    ``reporter(row, checkpoint_dir)`` is called after every epoch on every process (the checkpoint folder on the main
    one, None on the others); Ray Tune and Ray Train use it.
    ``warm_start`` is another run's checkpoint folder to continue from with this recipe's hyperparameters
    (:func:`~cnnforge.training.checkpointing.warm_start`: population-based training); ``manifest.json`` records
    it as ``started_from``.
    A run stopped by one of ``train.signals`` returns no metrics and ``exit_code`` ``EXIT_PREEMPTED`` (75).
    """
    resolved = open_recipe(recipe, overrides)
    start = Path(warm_start) if warm_start is not None else None
    return _execute(resolved, quiet=quiet, reporter=reporter, start=start)


def resume(run_dir: str | os.PathLike[str], *, force: bool = False, quiet: bool = False, reporter: Any = None,
           checkpoint: str | os.PathLike[str] | None = None) -> RunResult:
    """Continue an interrupted run from its newest valid checkpoint, in the same directory.

    ``checkpoint`` names another checkpoint folder to start from (Ray Tune restores a trial from the
    checkpoint Ray recorded, which may be older than the newest one in the run directory).
    """
    path = rundir.require_run_dir(run_dir)
    manifest = rundir.read_manifest(path)
    recipe = open_recipe(path / rundir.RECIPE)  # a damaged recipe.yaml is named before anything else
    if not force:
        check_unchanged(path, manifest)
    with rundir.exclusive(path) if _rank_zero() else contextlib.nullcontext():
        start, own = prepare_resume(path, manifest, main=_rank_zero(), force=force,
                                    checkpoint=Path(checkpoint) if checkpoint is not None else None)
        return _execute(recipe, quiet=quiet, reporter=reporter, run_dir=path, start=start, identity=own,
                        data_check=_data_check(path, manifest, force))


def _rank_zero() -> bool:
    """Whether this is the process that owns the run directory (rank 0 of a launch, or the only one)."""
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class DataCheck:
    """What a resumed run's data is checked against: the manifest's split records (None in older runs)."""

    records: dict[str, Any] | None
    where: str
    force: bool


#: the splits a run records and a resume checks
DATA_SPLITS = ("train", "val", "test")


def _data_check(path: Path, manifest: Any, force: bool) -> DataCheck:
    records = {k: v.model_dump() for k, v in manifest.data_splits.items()} if manifest.data_splits else None
    return DataCheck(records, str(path / rundir.MANIFEST), force)


def _execute(recipe: Recipe, *, quiet: bool, reporter: Any, run_dir: Path | None = None,
             start: Path | None = None, identity: RunIdentity | None = None,
             data_check: DataCheck | None = None) -> RunResult:
    with contextlib.ExitStack() as held:
        return _train(recipe, held, quiet=quiet, reporter=reporter, run_dir=run_dir, start=start, identity=identity,
                      data_check=data_check)


def _train(recipe: Recipe, held: contextlib.ExitStack, *, quiet: bool, reporter: Any, run_dir: Path | None,
           start: Path | None, identity: RunIdentity | None, data_check: DataCheck | None = None) -> RunResult:
    """One run; a new run directory is locked (``held``) from the moment it exists."""
    from accelerate.utils import set_seed

    from cnnforge.data.balance import class_weights
    from cnnforge.data.fingerprints import check_splits, split_record
    from cnnforge.training.assemble import build_parts, make_accelerator
    from cnnforge.training.loop import Trainer
    from cnnforge.training.lr_finder import auto_lr
    from cnnforge.training.preemption import StopSignals
    from cnnforge.training.progress import Progress

    claimed = run_dir is None and recipe.train.run_dir is not None  # `run --run-dir`: training/requeue.py
    if run_dir is None and not claimed:
        rundir.check_writable(recipe)
    with recipe_source(recipe.source):
        acc = make_accelerator(recipe.train)
    # handled from here, before the run directory exists: a signal that comes while the run starts is held until
    # the first optimizer step (then a checkpoint, exit 75) instead of killing the process
    stop = held.enter_context(StopSignals(recipe.train.signals, acc).installed())
    warm = run_dir is None and start is not None  # a new run from another run's checkpoint
    if claimed:
        plan = requeue.agree(recipe, acc, held)
        if plan.action == "finished":
            return _already_finished(plan.run_dir, acc, quiet)
        if plan.action == "resume":
            run_dir, start, identity = plan.run_dir, plan.start, plan.identity
            data_check = _data_check(run_dir, rundir.read_manifest(run_dir), False)
    recipe, lr_found = auto_lr(recipe, acc, quiet=quiet)  # optim.lr: auto; a resumed run's recipe has the number
    set_seed(recipe.seed)  # after the finder: the run is the one a recipe with its value as optim.lr gives
    parts = build_parts(recipe, acc)
    splits = parts.splits
    with recipe_source(recipe.source):  # before the run directory: a wrong train.class_weights creates none
        weights = class_weights(recipe, splits.train, len(splits.info.classes))
    if run_dir is None:
        records = {name: split_record(getattr(splits, name)) for name in DATA_SPLITS}
        run_dir, identity = _open_run_dir(recipe, acc, held, data_cache=splits.cache, data_splits=records,
                                          started_from=start, lr_found=lr_found,
                                          claimed=Path(str(recipe.train.run_dir)) if claimed else None)
    elif data_check is not None:  # a resume: the data must be the run's (unless --force)
        check_splits(data_check.records, splits, DATA_SPLITS, where=data_check.where, force=data_check.force,
                     action="resume")
    progress = Progress(enabled=acc.is_main_process, epochs=recipe.train.epochs,
                        steps_per_epoch=len(parts.loaders["train"]), quiet=quiet)
    if acc.is_main_process:
        _print_balance(recipe, splits, progress)
    trainer = Trainer(recipe, replace(parts, run_dir=run_dir, progress=progress, reporter=reporter,
                                      identity=identity, class_weights=weights, stop_signals=stop))
    return _fit(trainer, recipe, start, quiet=quiet, warm=warm)


def _print_balance(recipe: Recipe, splits: Any, progress: Any) -> None:
    """A warning per class without training images, and the one line on class imbalance when there is one."""
    import logging

    from cnnforge.data.balance import balance_notes

    missing, imbalance = balance_notes(recipe.data.balance, splits.train.labels, splits.info.classes)
    for line in missing:
        logging.getLogger("cnnforge").warning("warning: %s", line)
    if imbalance is not None:
        progress.print(imbalance)


def _fit(trainer: Any, recipe: Recipe, start: Path | None, *, quiet: bool, warm: bool = False) -> RunResult:
    """Train from ``start`` (or from scratch; ``warm``: another run's checkpoint) and test; a run that stops on an
    error leaves ``failed.json``, one stopped by ``train.signals`` a checkpoint (exit code ``EXIT_PREEMPTED``)."""
    from cnnforge.training import checkpointing
    from cnnforge.training.preemption import Preempted
    from cnnforge.training.state import TrainState

    acc, run_dir, progress = trainer.acc, trainer.run_dir, trainer.progress
    state = TrainState()
    trainer.start()  # the callbacks' on_fit_start, before they restore their state
    if start is not None:
        state = checkpointing.warm_start(trainer, start) if warm else checkpointing.restore(trainer, start)
    if acc.is_main_process and (start is not None or (run_dir / rundir.METRICS).exists()):
        rundir.truncate_metrics(run_dir, state.epoch)  # a run dir started again from scratch has rows too
        progress.print(_resuming_line(run_dir, start, state, recipe.train.epochs, warm))
    try:
        summary = trainer.run(state)
        acc.wait_for_everyone()  # tear down together: a gloo rank whose peer is still busy can abort at exit
    except Preempted as stop:
        progress.close()
        if acc.is_main_process:  # printed under --quiet too: it is the run's result
            print(_preempted_line(run_dir, stop), flush=True)
        return RunResult(run_dir, {}, exit_code=EXIT_PREEMPTED, main_process=acc.is_main_process)
    except KeyboardInterrupt:
        progress.close()
        if acc.is_main_process:
            progress.enabled = True
            progress.print(_interrupted_line(run_dir))
        raise
    except Exception as exc:  # `cnnforge runs` tells a failed run from an interrupted one by this file
        if acc.is_main_process:
            rundir.write_json(run_dir / rundir.FAILED, {"error": " ".join(str(exc).split()) or type(exc).__name__,
                                                       "type": type(exc).__name__})
        raise
    finally:
        acc.end_training()  # finishes trackers and destroys the process group, or ranks abort at exit
    result = RunResult(run_dir, summary, rundir.read_metrics(run_dir) if acc.is_main_process else [],
                       main_process=acc.is_main_process)
    if acc.is_main_process and not quiet:
        print(result.describe())
    return result


def _preempted_line(run_dir: Path, stop: Any) -> str:
    """What a run stopped by a signal says: where it stands, and the commands that continue it."""
    where = f"checkpoint {stop.checkpoint.name}" if stop.checkpoint is not None else "a checkpoint"
    return (f"{stop.signal_name}: stopped with {where} (exit code {EXIT_PREEMPTED}); continue with the same "
            f"command (--run-dir) or: cnnforge resume {run_dir}")


def _already_finished(run_dir: Path, acc: Any, quiet: bool) -> RunResult:
    """``--run-dir`` of a finished run: its results, nothing trained or written."""
    acc.end_training()
    summary = rundir.read_json(run_dir / rundir.SUMMARY)
    result = RunResult(run_dir, summary, [], main_process=acc.is_main_process)
    if acc.is_main_process:
        print(requeue.finished_line(run_dir), flush=True)
        if not quiet:
            print(result.describe())
    return result


def _resuming_line(run_dir: Path, start: Path | None, state: Any, epochs: int, warm: bool = False) -> str:
    """Where a resumed run starts; a run whose epochs are all trained is said to be finished, not resumed."""
    if start is None:
        return f"starting {run_dir} again from the beginning: it was stopped before its first checkpoint"
    if warm:
        return f"starting {run_dir} from {start} (epoch {state.epoch + 1}) with this recipe's hyperparameters"
    if (state.epoch < epochs and state.stopped is None) or state.batch:
        return f"resuming {run_dir} from {start.name} (epoch {state.epoch + 1}, batch {state.batch})"
    again = "again: " if (run_dir / rundir.SUMMARY).exists() else ""
    trained = f"stopped ({state.stopped}) at epoch {state.epoch}" if state.stopped else f"trained all {epochs} epochs"
    return f"{run_dir} has {trained} ({start.name}): nothing to train; {again}test evaluation, summary.json and reports"


def _interrupted_line(run_dir: Path) -> str:
    """What to do after Ctrl-C: resume from a checkpoint, or start again when none was saved yet."""
    from cnnforge.rundir import checkpoint as ckpt

    if ckpt.list_checkpoints(run_dir / rundir.CHECKPOINTS):
        return f"interrupted; continue with: cnnforge resume {run_dir}"
    return (f"interrupted before the first checkpoint: nothing was saved; start again with: "
            f"cnnforge run {run_dir / rundir.RECIPE}")


def _open_run_dir(recipe: Recipe, acc: Any, held: contextlib.ExitStack, *, data_cache: Any,
                  data_splits: dict[str, Any], started_from: Path | None = None, lr_found: Any = None,
                  claimed: Path | None = None) -> tuple[Path, RunIdentity | None]:
    """A new run directory on every process, and the run's identity (on the main process, which locks the
    directory in ``held`` as it creates it and writes the recipe, the manifest and ``optim.lr: auto``'s range
    test, ``lr_found``, in ``reports/``). ``claimed``: the empty ``--run-dir`` the main process holds already."""
    import torch
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    if acc.is_main_process and claimed is not None:
        box[0] = str(claimed)
    elif acc.is_main_process:
        box[0] = str(rundir.create(recipe))
        held.enter_context(rundir.exclusive(Path(box[0])))
    if acc.num_processes > 1:
        broadcast_object_list(box)
    path = Path(box[0])
    if not acc.is_main_process:
        return path, None
    recipe_yaml = recipe.to_yaml()
    atomic_write_text(path / rundir.RECIPE, recipe_yaml)
    cuda = acc.device.type == "cuda"
    device = f"cuda ({torch.cuda.get_device_name(acc.device)})" if cuda else str(acc.device)
    manifest = {**rundir.manifest(recipe, world_size=acc.num_processes, device=device,
                                  precision=str(acc.mixed_precision), recipe_yaml=recipe_yaml),
                "data_cache": data_cache, "data_splits": data_splits}
    if started_from is not None:
        manifest["started_from"] = str(started_from)
    if lr_found is not None:
        from cnnforge.training.lr_finder import write_outputs

        data, _ = write_outputs(lr_found, path / rundir.REPORTS)
        manifest["lr_find"] = {**lr_found.summary(), "file": str(data.relative_to(path))}
    rundir.write_json(path / rundir.MANIFEST, manifest)
    return path, RunIdentity(run_id=manifest["run_id"], recipe_sha256=manifest["recipe_sha256"])
