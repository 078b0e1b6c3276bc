"""``cnnforge.train`` and ``cnnforge.resume``: one run, from recipe to run directory."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnforge import rundir
from cnnforge.atomic_write import atomic_write_text
from cnnforge.errors import CnnforgeError, ConfigError, recipe_source
from cnnforge.recipe import Recipe, check_recipe, load_recipe
from cnnforge.run_files import RunIdentity


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

    ``reporter(row, checkpoint_dir)`` is called after every epoch on the main process (Ray Tune uses it).
    ``warm_start`` is another run's checkpoint folder to continue from with this recipe's hyperparameters
    (:meth:`Trainer.warm_start`: population-based training); ``manifest.json`` records it as ``started_from``.
    """
    resolved = check_recipe(load_recipe(recipe, overrides))
    start = Path(warm_start) if warm_start is not None else None
    return _execute(resolved, quiet=quiet, reporter=reporter, start=start)


def resume(run_dir: str | os.PathLike[str], *, force: bool = False, quiet: bool = False, reporter: Any = None,
           checkpoint: str | os.PathLike[str] | None = None) -> RunResult:
    """Continue an interrupted run from its newest valid checkpoint, in the same directory.

    ``checkpoint`` names another checkpoint folder to start from (Ray Tune restores a trial from the
    checkpoint Ray recorded, which may be older than the newest one in the run directory).
    """
    from cnnforge import checkpoint as ckpt
    from cnnforge._version import __version__

    path = rundir.require_run_dir(run_dir)
    manifest = rundir.read_manifest(path)
    recipe_file = path / rundir.RECIPE
    recipe = check_recipe(load_recipe(recipe_file))  # a damaged recipe.yaml is named before anything else
    if not force:
        if rundir.recipe_hash(recipe_file.read_text()) != manifest.recipe_sha256:
            raise ConfigError("recipe.yaml changed since the run started; the resumed run would not match",
                              where=str(recipe_file), hint="use --force to resume anyway")
        import torch

        versions = (("cnnforge", manifest.cnnforge, __version__), ("torch", manifest.torch, torch.__version__))
        for package, then, now in versions:
            if then != now:  # other kernels or code: the result would no longer be bit-exact
                raise ConfigError(f"run was made with {package} {then}, this is {now}",
                                  where=str(path / rundir.MANIFEST), hint="use --force to resume anyway")
    with rundir.exclusive(path) if _rank_zero() else contextlib.nullcontext():
        if _rank_zero():  # the other ranks must not delete what a process holding the run is writing
            ckpt.remove_partial(path / rundir.CHECKPOINTS)
            (path / rundir.FAILED).unlink(missing_ok=True)  # a resumed run is no longer a failed one
        start = Path(checkpoint) if checkpoint is not None else ckpt.latest_valid(path / rundir.CHECKPOINTS)
        if start is None:
            raise CnnforgeError("no complete checkpoint to resume from", where=str(path / rundir.CHECKPOINTS))
        own = rundir.identity(manifest)
        if not force:
            _check_identity(start, own)
        best = path / rundir.CHECKPOINTS / rundir.BEST
        if best.exists():
            ckpt.load_weights(best)  # damaged best weights are named now, not after the rest of training
        records = {k: v.model_dump() for k, v in manifest.data_splits.items()} if manifest.data_splits else None
        data_check = DataCheck(records, str(path / rundir.MANIFEST), force)
        return _execute(recipe, quiet=quiet, reporter=reporter, run_dir=path, start=start, identity=own,
                        data_check=data_check)


def _rank_zero() -> bool:
    """Whether this is the process that owns the run directory (rank 0 of a launch, or the only one)."""
    return os.environ.get("RANK", "0") == "0"


def _check_identity(start: Path, own: RunIdentity | None) -> None:
    """A checkpoint copied in from another run (other seed, other learning rate) is refused."""
    from cnnforge import checkpoint as ckpt

    theirs = ckpt.read_manifest(start).run
    if theirs is None or own is None:
        raise ConfigError("the checkpoint or the run records no run identity; it may be from another run",
                          where=str(start), hint="use --force to resume from it anyway")
    if theirs != own:
        what = "recipe" if theirs.run_id == own.run_id else "run"
        raise ConfigError(f"the checkpoint belongs to another {what} (run {theirs.run_id[:8]}, recipe "
                          f"{theirs.recipe_sha256}; this is run {own.run_id[:8]}, recipe {own.recipe_sha256})",
                          where=str(start), hint="use --force to resume from it anyway")


@dataclass(frozen=True)
class DataCheck:
    """What a resumed run's data is checked against: the manifest's split records (None in older runs)."""

    records: dict[str, Any] | None
    where: str
    force: bool


#: the splits a run records and a resume checks
DATA_SPLITS = ("train", "val", "test")


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

    from cnnforge.data.fingerprints import check_splits, split_record
    from cnnforge.training.batches import eval_batches, train_batches
    from cnnforge.training.loop import Trainer, TrainParts
    from cnnforge.training.parts import make_accelerator
    from cnnforge.training.progress import Progress
    from cnnforge.training.tracking import start_tracking

    if run_dir is None:
        rundir.check_writable(recipe)
    set_seed(recipe.seed)
    with recipe_source(recipe.source):
        acc = make_accelerator(recipe.train)
    model, optimizer, schedule, loaders, sampler, splits = _parts(recipe, acc)
    warm = run_dir is None and start is not None  # a new run from another run's checkpoint
    if run_dir is None:
        records = {name: split_record(getattr(splits, name)) for name in DATA_SPLITS}
        run_dir, identity = _open_run_dir(recipe, acc, held, data_cache=splits.cache, data_splits=records,
                                          started_from=start)
    elif data_check is not None:  # a resume: the data must be the run's (unless --force)
        check_splits(data_check.records, splits, DATA_SPLITS, where=data_check.where, force=data_check.force,
                     action="resume")
    tracking = start_tracking(acc, recipe, run_dir) if acc.is_main_process else False
    progress = Progress(enabled=acc.is_main_process, epochs=recipe.train.epochs, steps_per_epoch=len(loaders["train"]),
                        quiet=quiet)
    batches = train_batches(recipe, splits.train, loaders["train"], sampler, acc)
    evals = eval_batches(recipe, splits, loaders, batches, acc)
    trainer = Trainer(recipe, TrainParts(acc, model, optimizer, schedule, batches, evals, loaders, splits.info,
                                         run_dir, progress, tracking, reporter, identity))
    return _fit(trainer, recipe, start, quiet=quiet, warm=warm)


def _fit(trainer: Any, recipe: Recipe, start: Path | None, *, quiet: bool, warm: bool = False) -> RunResult:
    """Train from ``start`` (or from scratch; ``warm``: another run's checkpoint) and test; a run that stops on an
    error leaves ``failed.json``."""
    from cnnforge.training.loop import TrainState
    from cnnforge.training.tracking import finish_tracking

    acc, run_dir, progress = trainer.acc, trainer.run_dir, trainer.progress
    state = TrainState()
    if start is not None:
        state = trainer.warm_start(start) if warm else trainer.load_checkpoint(start)
        if acc.is_main_process:
            rundir.truncate_metrics(run_dir, state.epoch)
            progress.print(_resuming_line(run_dir, start, state, recipe.train.epochs, warm))
    try:
        state = trainer.fit(state)
        summary = _finish(trainer, state, recipe, acc)
        if trainer.parts.tracking:
            finish_tracking(acc, recipe, run_dir, summary)
        acc.wait_for_everyone()  # tear down together: a gloo rank whose peer is still busy can abort at exit
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


def _resuming_line(run_dir: Path, start: Path, state: Any, epochs: int, warm: bool = False) -> str:
    """Where a resumed run starts; a run whose epochs are all trained is said to be finished, not resumed."""
    if warm:
        return f"starting {run_dir} from {start} (epoch {state.epoch + 1}) with this recipe's hyperparameters"
    if state.epoch < epochs or state.batch:
        return f"resuming {run_dir} from {start.name} (epoch {state.epoch + 1}, batch {state.batch})"
    again = "again: " if (run_dir / rundir.SUMMARY).exists() else ""
    return (f"{run_dir} has trained all {epochs} epochs ({start.name}): nothing to train; "
            f"{again}test evaluation, summary.json and reports")


def _interrupted_line(run_dir: Path) -> str:
    """What to do after Ctrl-C: resume from a checkpoint, or start again when none was saved yet."""
    from cnnforge import checkpoint as ckpt

    if ckpt.list_checkpoints(run_dir / rundir.CHECKPOINTS):
        return f"interrupted; continue with: cnnforge resume {run_dir}"
    return (f"interrupted before the first checkpoint: nothing was saved; start again with: "
            f"cnnforge run {run_dir / rundir.RECIPE}")


def _parts(recipe: Recipe, acc: Any) -> tuple[Any, Any, Any, dict[str, Any], Any, Any]:
    """(model, optimizer, schedule, loaders, the train sampler, the splits); Accelerate has prepared the first four."""
    from cnnforge.data.loading import build_splits, split_loader
    from cnnforge.training.parts import (
        make_optimizer,
        make_schedule,
        model_for,
        speed_up,
        stepped_optimizer,
        steps_per_epoch,
        wrap_parallel,
    )
    from cnnforge.training.whiten import whiten_first_conv

    splits = build_splits(recipe)
    loaders = {split: split_loader(getattr(splits, split), recipe.data, recipe.seed, train=split == "train")
               for split in ("train", "val", "test")}
    sampler = loaders["train"].sampler
    with recipe_source(recipe.source):
        model = model_for(recipe, splits.info)
        if recipe.train.whiten_init is not None:  # before the optimizer: frozen whitening weights are not its params
            whiten_first_conv(model, splits.train, splits.info, recipe.train.whiten_init)
        model = speed_up(model, recipe, acc.device)
        model = wrap_parallel(model, recipe.train, acc.num_processes)
        optimizer = make_optimizer(model, recipe.optim)
    model, optimizer, loaders["train"], loaders["val"], loaders["test"] = acc.prepare(
        model, optimizer, loaders["train"], loaders["val"], loaders["test"])
    optimizer = stepped_optimizer(optimizer, acc)
    schedule = make_schedule(optimizer, recipe.schedule, recipe.train.epochs,
                             steps_per_epoch(len(loaders["train"]), recipe.train.grad_accum))
    return model, optimizer, schedule, loaders, sampler, splits


def _open_run_dir(recipe: Recipe, acc: Any, held: contextlib.ExitStack, *, data_cache: Any,
                  data_splits: dict[str, Any], started_from: Path | None = None) -> tuple[Path, RunIdentity | None]:
    """A new run directory on every process, and the run's identity (on the main process, which locks the
    directory in ``held`` as it creates it and writes the recipe and the manifest)."""
    import torch
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    if acc.is_main_process:
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
    rundir.write_json(path / rundir.MANIFEST, manifest)
    return path, RunIdentity(run_id=manifest["run_id"], recipe_sha256=manifest["recipe_sha256"])


def _finish(trainer: Any, state: Any, recipe: Recipe, acc: Any) -> dict[str, Any]:
    """Final weights, the test evaluation (with the best weights) and summary.json."""
    from cnnforge import checkpoint as ckpt

    run_dir = trainer.run_dir
    if acc.is_main_process:
        ckpt.save_weights(trainer.weights_module().state_dict(), run_dir / rundir.WEIGHTS)
    best_file = trainer.ckpt_dir / rundir.BEST
    acc.wait_for_everyone()
    tested_with = "last"
    if best_file.exists():
        trainer.weights_module().load_state_dict(ckpt.load_weights(best_file))
        tested_with = "best"
    test = trainer.evaluate("test")
    in_sync = _ranks_in_sync(trainer.bare_model(), acc)
    history = rundir.read_metrics(run_dir) if acc.is_main_process else []
    metric = recipe.train.best_metric
    summary: dict[str, Any] = {
        "test/acc": test.acc, "test/loss": test.loss, f"best/{metric}": state.best_value,
        "best/epoch": state.best_epoch,
        "test/weights": tested_with, "epochs": state.epoch, "steps": state.global_step,
        "train/time_s": round(state.train_time, 3), "world_size": acc.num_processes,
        "test/samples": int(len(test.y_true)),
        "ranks_in_sync": in_sync,
    }
    if history:
        summary.update({f"final/{k}": v for k, v in history[-1].items() if k.startswith(("train/", "val/"))})
    if recipe.train.on_nan != "stop":
        summary["train/skipped_steps"] = state.skipped_steps
        summary["train/rollbacks"] = state.rollbacks
    if acc.is_main_process:
        from cnnforge.training.run_reports import write_run_reports

        rundir.write_json(run_dir / rundir.SUMMARY, summary)
        write_run_reports(run_dir, test, trainer.info, history, split="test", checkpoint=tested_with,
                          images=trainer.loaders["test"].dataset, plots=recipe.train.plots)
    acc.wait_for_everyone()
    return summary


def _ranks_in_sync(model: Any, acc: Any) -> bool:
    """Whether every rank ends with bit-identical weights (DDP's promise, checked rather than assumed)."""
    if acc.num_processes == 1:
        return True
    import hashlib

    import torch
    from accelerate.utils import gather_object

    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().to(torch.float64).numpy().tobytes())
    return len(set(gather_object([digest.hexdigest()]))) == 1
