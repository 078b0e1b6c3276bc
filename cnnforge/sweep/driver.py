"""``cnnforge.tune``: a recipe's ``tune:`` section as a Ray Tune experiment, on this machine or a Ray cluster.

Every trial is the trainer ``cnnforge run`` uses (:mod:`cnnforge.sweep.trial`). An experiment lives in
``<train.out_dir>/<name>/tune-<time>/`` next to the recipe's runs, and it is identified by the resolved
recipe it sweeps (``sweep.yaml``): running the same command again restores the newest experiment of
that recipe with ``Tuner.restore`` instead of starting over, so finished trials are never trained
twice and interrupted ones continue from their last Ray checkpoint (from the copy of Ray's state that
:mod:`cnnforge.sweep.snapshot` keeps, since Ray's own can be cut by a kill). ``fresh=True`` starts a new one.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnforge import rundir
from cnnforge.compat import ray_internals
from cnnforge.errors import CnnforgeError, ConfigError
from cnnforge.optional_deps import require
from cnnforge.recipe import Recipe, open_recipe
from cnnforge.recipe.tune import TuneConfig
from cnnforge.sweep.experiment import check_trusted, discard_unstarted, find_or_create, with_absolute_data_root
from cnnforge.sweep.results import TrialRow, collect_trials, report_results, trial_restarts

if TYPE_CHECKING:
    from cnnforge.sweep.console import SweepConsole

#: what Ray logs when it cannot restore an experiment, before it starts the experiment over
RESTORE_FAILED = "Failed to restore the run state"


@dataclass
class TuneResult:
    """What a sweep left behind: its directory, every trial (best first) and the best trial's recipe."""

    experiment_dir: Path
    trials: list[TrialRow] = field(default_factory=list)
    best_recipe: Path | None = None
    metric: str = "val/acc"

    @property
    def best(self) -> TrialRow | None:
        """The first trial that did not fail and reported the metric (failed trials sort last)."""
        return next((t for t in self.trials if t.value is not None and not t.failed), None)

    @property
    def exit_code(self) -> int:
        """0 when at least one trial trained without failing; 1 when every trial failed."""
        return 0 if self.best is not None else 1


def tune(recipe_or_path: str | os.PathLike[str] | Recipe | dict[str, Any], overrides: Iterable[str] = (), *,
         address: str | None = None, max_concurrent: int | None = None, fresh: bool = False,
         quiet: bool = False, verbose: bool = False) -> TuneResult:
    """Run the recipe's ``tune:`` sweep with Ray Tune and write results.csv, best.yaml and results.png.

    ``address`` is a Ray cluster (``auto`` or ``HOST:PORT``; default: a Ray started for this call on
    this machine). ``max_concurrent`` caps trials running at once (default ``tune.max_concurrent``).
    Rerunning after an interruption continues the same experiment unless ``fresh``. Progress is
    cnnforge's compact console (:mod:`cnnforge.sweep.console`); ``verbose`` adds Ray's trial tables,
    ``quiet`` hides progress and Ray's per-trial tracebacks. The results table and paths always print.
    """
    overrides = list(overrides)
    recipe = with_absolute_data_root(open_recipe(recipe_or_path, overrides))
    spec = check_sweep(recipe)
    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError(f"must be at least 1, got {max_concurrent}", where="--max-concurrent")
    require("ray", where="cnnforge tune")
    if spec.search == "optuna":
        require("optuna", where=f"{recipe.source}: tune.search")
    from cnnforge.data.probe import check_data
    from cnnforge.recipe.checks import check_family_names

    check_family_names(recipe)  # what `check` asks a name family (timm/, tv/): the driver imports torch anyway
    check_data(recipe)  # once, here: missing data fails every trial, each with a traceback and retries
    experiment, restoring = find_or_create(recipe, fresh)
    try:
        with rundir.exclusive(experiment, what="experiment"):  # one driver per experiment
            grid, interrupted = _fit(recipe, spec, experiment, restoring, address=address,
                                     max_concurrent=max_concurrent, quiet=quiet, verbose=verbose)
            if interrupted:
                if not _every_trial_ended(experiment, spec):
                    print(f"interrupted: run the same command again to continue {experiment}", flush=True)
                    raise KeyboardInterrupt
                print("interrupted after every trial had ended: the sweep is complete", flush=True)
            trials = collect_trials(grid, recipe, _replay_prefix(recipe_or_path, overrides, experiment),
                                    trial_restarts(experiment))
            result = TuneResult(experiment, trials, metric=spec.metric)
            result.best_recipe = report_results(experiment, recipe, trials)
    except CnnforgeError:
        if not restoring:
            discard_unstarted(experiment)
        raise
    return result


def _fit(recipe: Recipe, spec: TuneConfig, experiment: Path, restoring: bool, *, address: str | None,
         max_concurrent: int | None, quiet: bool, verbose: bool) -> tuple[Any, bool]:
    """Ray Tune's fit of the experiment, restored when it continues one: (the ResultGrid, whether Ctrl-C stopped it)."""
    import ray
    from ray import tune as ray_tune

    from cnnforge.sweep.console import showing
    from cnnforge.sweep.ddp_trial import cluster_plan
    from cnnforge.sweep.snapshot import put_back

    started = _connect(address or os.environ.get("RAY_ADDRESS"), verbose)
    try:
        resources = trial_resources(recipe, spec) if spec.workers_per_trial == 1 else cluster_plan(recipe, spec)
        restoring = restoring and ray_tune.Tuner.can_restore(str(experiment))  # not if Ray never saved its state
        if restoring:
            check_trusted(experiment)
            put_back(experiment)
        tuner = _tuner(recipe, spec, experiment, restoring, max_concurrent, verbose, resources)
        print(f"{'continuing' if restoring else 'starting'} experiment {experiment}", flush=True)
        console = _console(recipe, spec, quiet, verbose)
        with (_graceful_interrupt() as interrupted, _ray_tables(verbose), showing(console),
              _controller_log(experiment, quiet)):
            grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    return grid, interrupted.is_set()


def _console(recipe: Recipe, spec: TuneConfig, quiet: bool, verbose: bool) -> SweepConsole:
    """The sweep's progress on stdout."""
    from cnnforge.sweep.console import SweepConsole, console_mode

    total = spec.trial_count()  # Ray's own count replaces it at setup
    return SweepConsole(metric=spec.metric, mode=spec.mode, keys=spec.swept_keys(), total=total,
                        epochs=recipe.train.epochs, console=console_mode(quiet, verbose, sys.stdout))


class _ControllerLog(logging.Filter):
    """Ray's controller log during a fit: a failed restore becomes an error; ``quiet`` drops the rest (the logged
    traceback of each failed trial)."""

    def __init__(self, experiment: Path, quiet: bool) -> None:
        super().__init__()
        self.experiment, self.quiet = experiment, quiet

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(RESTORE_FAILED):
            # Ray logs this, then starts the sweep over and trains every finished trial again; raised inside its
            # handler, the error ends the fit instead, with the experiment as it was
            from cnnforge.sweep.snapshot import FRESH_HINT

            cause = record.exc_info[1] if record.exc_info else None
            detail = " ".join(f"{type(cause).__name__}: {cause}".split())[:200]
            raise CnnforgeError(f"Ray cannot restore this experiment ({detail})", where=str(self.experiment),
                                hint=FRESH_HINT)
        return not self.quiet


@contextlib.contextmanager
def _controller_log(experiment: Path, quiet: bool) -> Iterator[None]:
    logger = logging.getLogger("ray.tune.execution.tune_controller")
    log_filter = _ControllerLog(experiment, quiet)
    logger.setLevel(logging.WARNING)
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)


@contextlib.contextmanager
def _ray_tables(verbose: bool) -> Iterator[None]:
    """Ray's trial tables only with ``verbose``: its new console prints an experiment box and the results
    folder even at ``verbose=0``, its old one (``RAY_AIR_NEW_OUTPUT=0``) nothing."""
    own = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if own is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = own


def _every_trial_ended(experiment: Path, spec: TuneConfig) -> bool:
    """Whether a Ctrl-C came too late to stop anything. Judged by the state Ray saved as the sweep stopped: the
    ResultGrid calls every trial it stopped terminated. Ray creates grid trials as slots free up, so an
    interrupted sweep can also have fewer trials than planned."""
    from ray.tune import ExperimentAnalysis
    from ray.tune.experiment import Trial

    trials = ExperimentAnalysis(str(experiment)).trials
    planned = spec.trial_count()
    return len(trials) == planned and all(t.status in (Trial.TERMINATED, Trial.ERROR) for t in trials)


@contextlib.contextmanager
def _graceful_interrupt() -> Iterator[threading.Event]:
    """Ctrl-C during ``fit``: Ray Tune's graceful stop (SIGUSR1: stop trials, save the experiment) and an event
    that says it happened, which Ray does not report. A second Ctrl-C interrupts at once."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # signals can only be handled on the main thread; Ray then skips them too
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.set()
        signal.signal(signal.SIGINT, previous)
        os.kill(os.getpid(), signal.SIGUSR1)

    ray_own = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ray would take SIGINT and hide the interruption
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
        if ray_own is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = ray_own


# ------------------------------------------------------------------------------------------- checks

def check_sweep(recipe: Recipe) -> TuneConfig:
    """Everything about ``tune:`` that can be wrong, found before Ray starts (one ConfigError)."""
    src = recipe.source
    spec = recipe.tune
    if spec is None:
        raise ConfigError("the recipe has no tune: section", where=f"{src}: tune",
                          hint="add tune: {metric: val/acc, grid: {optim.lr: [0.1, 0.01]}}")
    if not spec.grid and not spec.sample:
        raise ConfigError("nothing to sweep: tune.grid and tune.sample are both empty", where=f"{src}: tune")
    if recipe.train.run_dir is not None:
        raise ConfigError("every trial would train in this one folder", where=f"{src}: train.run_dir",
                          hint="leave it out: a sweep puts each trial's run in its experiment directory")
    return spec


# ------------------------------------------------------------------------------------------- experiment

def _replay_prefix(recipe_or_path: Any, overrides: list[str], experiment: Path) -> list[str]:
    """``cnnforge run <recipe> <overrides>``: what a trial's replay command starts with (``tune.*`` left out)."""
    if isinstance(recipe_or_path, (str, os.PathLike)):
        return ["cnnforge", "run", str(recipe_or_path),
                *(o for o in overrides if o.split("=")[0].split(".")[0] != "tune")]
    return ["cnnforge", "run", str(experiment / rundir.SWEEP_RECIPE)]


def _connect(address: str | None, verbose: bool = False) -> bool:
    """Connect to the Ray cluster at ``address`` or start one here; True when this call started Ray.

    Only ``verbose`` forwards what Ray's worker processes print: trials train quietly, their errors reach the
    results table and ``error.txt``, and the rest (a failing trial's traceback twice, Ray's own worker
    messages) would crowd the sweep's console."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # every trial checkpoint forces an experiment snapshot (what makes a rerun resume exactly); Ray warns about it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return False
    if address and _refused_without_token(address):
        raise CnnforgeError("the Ray cluster requires an authentication token and none is set here",
                            where=f"--address {address}",
                            hint="set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token "
                                 "(`ray get-auth-token` on the head prints it), or use --address auto on the head node")
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=verbose)
        else:  # Ray's own cluster for this call: its advice about token authentication is not for the user
            ray_internals.quiet_token_advice()
            ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=verbose)
    except ConnectionError as exc:
        raise CnnforgeError(f"cannot reach a Ray cluster: {str(exc).splitlines()[0]}", where=f"--address {address}",
                            hint="is `ray start --head` running there? With HOST:PORT Ray also needs "
                                 "RAY_AUTH_MODE=token "
                                 "and the cluster's RAY_AUTH_TOKEN; --address auto finds a local cluster's "
                                 "token") from None
    return True


def _has_token() -> bool:
    """Whether Ray would find a token here: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path).expanduser().is_file()


def _refused_without_token(address: str) -> bool:
    """Whether the cluster at HOST:PORT turns away a caller without a token, when this process has none.

    One unauthenticated call to the cluster's control service answers in milliseconds; ``ray.init``
    would retry for about 20 s, printing ``InvalidAuthToken`` warnings, before it fails.
    """
    if address == "auto" or "://" in address or _has_token():
        return False
    return ray_internals.refuses_without_token(address)


def trial_resources(recipe: Recipe, spec: TuneConfig) -> dict[str, float]:
    """CPUs and GPUs of one trial, checked against the cluster before any trial starts.

    ``auto`` CPUs are the trial's process and its data loader workers (``data.num_workers + 1``), at most
    what the largest node has; ``auto`` GPUs are one when the cluster has any, else none. A trial runs on
    one node, so a request larger than every node would wait forever: all such requests are one error.
    """
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    largest = {name: max((float(r.get(name, 0.0)) for r in nodes), default=0.0) for name in ("CPU", "GPU")}
    asked = spec.resources_per_trial
    auto_cpu = min(float(recipe.data.num_workers + 1), max(largest["CPU"], 1.0))
    wanted = {"CPU": auto_cpu if asked.cpu == "auto" else asked.cpu,
              "GPU": min(1.0, largest["GPU"]) if asked.gpu == "auto" else asked.gpu}
    problems = [f"{name.lower()}: {value:g} but the largest Ray node has {largest[name]:g} {name}"
                for name, value in wanted.items() if value > largest[name]]
    if problems:
        raise ConfigError(f"a trial asks for more than any node has ({'; '.join(problems)})",
                          where=f"{recipe.source}: tune.resources_per_trial",
                          hint="leave it out (auto: what fits) or add nodes to the Ray cluster")
    return {"cpu": wanted["CPU"], "gpu": wanted["GPU"]}


def trial_dirname(trial: Any) -> str:
    """A trial's folder is its id (the default name repeats the whole config)."""
    return str(trial.trial_id)


def _trainable(recipe: Recipe, experiment: Path, extra: list[str], resources: dict[str, Any]) -> Any:
    """The trial function with its parameters and resources: one process, or a DDP job (``cluster_plan``)."""
    from ray import tune as ray_tune

    from cnnforge.sweep.ddp_trial import DRIVER_RESOURCES, run_ddp_trial
    from cnnforge.sweep.trial import run_trial

    common = {"recipe": recipe, "overrides": extra, "experiment_dir": str(experiment)}
    if "per_worker" not in resources:
        return ray_tune.with_resources(ray_tune.with_parameters(run_trial, **common), resources)
    return ray_tune.with_resources(
        ray_tune.with_parameters(run_ddp_trial, **common, per_worker=resources["per_worker"]), DRIVER_RESOURCES)


def _tuner(recipe: Recipe, spec: TuneConfig, experiment: Path, restoring: bool, max_concurrent: int | None,
           verbose: bool, resources: dict[str, Any]) -> Any:
    from ray import tune as ray_tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from cnnforge.recipe.loading import yaml_value
    from cnnforge.sweep.console import ConsoleCallback
    from cnnforge.sweep.scheduler import checkpoints_to_keep, scheduler
    from cnnforge.sweep.search import search_space, searcher
    from cnnforge.sweep.snapshot import StateSnapshot

    # Ray's default TensorBoard logger imports torch in the driver (1-3 s) to copy what each trial's run directory
    # already holds: only the CSV and JSON loggers (RunConfig below; a restored Tuner keeps its RunConfig)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    extra = [] if spec.trial_plots else ["train.plots=false"]
    if recipe.tracking.backend == "wandb" and recipe.tracking.group is None:
        extra.append(f"tracking.group={yaml_value(f'{recipe.name}-{experiment.name}')}")
    trainable = _trainable(recipe, experiment, extra, resources)
    # trials that have not started yet have no results; Ray warns about each of them on restore and on Ctrl-C
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if restoring:
        return ray_tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=False)
    limit = max_concurrent or spec.max_concurrent or resources.get("slots")  # DDP trials reserve no Tune resources
    ddp = "per_worker" in resources
    # a DDP trial's worker deaths are Ray Train's to retry (ddp_trial.py), not Tune's as well
    failures = ray_tune.FailureConfig(max_failures=0 if ddp else spec.max_failures)
    return ray_tune.Tuner(
        trainable, param_space=search_space(spec),
        tune_config=ray_tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                                        search_alg=searcher(spec, recipe.seed, limit),
                                        scheduler=scheduler(recipe, spec),
                                        max_concurrent_trials=limit if spec.search == "optuna" else None,
                                        trial_dirname_creator=trial_dirname,
                                        # Tune reuses a trial's actor only if its function ends within 2 s of the
                                        # last report; a DDP trial's Train teardown takes longer, and Ray then
                                        # fails the next trial and waits 600 s before it starts another
                                        reuse_actors=not ddp),
        run_config=ray_tune.RunConfig(name=experiment.name, storage_path=str(experiment.parent),
                                      verbose=1 if verbose else 0,
                                      failure_config=failures,
                                      checkpoint_config=ray_tune.CheckpointConfig(
                                          num_to_keep=checkpoints_to_keep(recipe, spec)),
                                      callbacks=[CSVLoggerCallback(), JsonLoggerCallback(), ConsoleCallback(),
                                                 StateSnapshot()]))
