"""DDP trials: ``tune.workers_per_trial: N`` makes every sweep trial an N-process DDP job run by Ray Train.

A trial's Ray Tune function starts a ``TorchTrainer`` (Ray Train V2, the default in Ray 2.60) and passes rank
0's report of every epoch, with the Train run's copy of its checkpoint, on to Tune (:func:`_to_tune`): ASHA
and the results table see every epoch, and Tune holds the trial's checkpoints as it does a one-process
trial's, so PBT hands them to other trials and a rerun of a stopped sweep continues each trial from its own.
Ray places the N workers (``cpus_per_worker``, ``gpus_per_worker``; on one or several nodes), sets ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` and creates the process group (gloo on CPUs, NCCL on
GPUs); cnnforge's Accelerator adopts it as it adopts ``accelerate launch``'s. Each worker runs
:func:`cnnforge.sweep.trial.continue_trial`: rank 0 writes the run directory and its checkpoints, every rank
calls ``ray.train.report`` (a barrier in Ray Train) with rank 0's checkpoint. Each Tune call of a trial is a
Train run of its own (``<trial>/ddp/<call id>/``): a worker that dies restarts the whole worker group from
that run's last checkpoint (``ray.train.FailureConfig``, up to ``tune.max_failures`` times), and a new call
starts from the checkpoint Tune gives it. Tune does not see Train's restarts: rank 0 records each start of
the worker group (:data:`GROUP_STARTS`), and the results table counts the starts after the first of each
Tune call of the trial (:func:`train_restarts`).

The Tune trial itself reserves nothing (the Train controller and workers are its own actors), so the
driver caps the trials running at once at what the cluster holds (:func:`trial_slots`).
"""
from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from cnnforge.bounded_read import read_bounded_text
from cnnforge.errors import ConfigError
from cnnforge.recipe import Recipe
from cnnforge.recipe.tune import TuneConfig

#: the Ray Train run of a trial is ``<trial dir>/TRAIN_RUN``
TRAIN_RUN = "ddp"
#: what the Tune trial itself reserves: it only waits on its Train run, and Ray places no bundle without a resource
DRIVER_RESOURCES = {"memory": 1}
#: ``<trial dir>/TRAIN_RUN/GROUP_STARTS``: one line per start of the worker group, the id of the Tune call it served
GROUP_STARTS = "group_starts.txt"


def cluster_plan(recipe: Recipe, spec: TuneConfig) -> dict[str, Any]:
    """One worker's resources (``per_worker``) and how many trials run at once (``slots``) on the Ray cluster
    this process is connected to; checked before any trial starts."""
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    per_worker = worker_resources(recipe, spec, nodes)
    return {"per_worker": per_worker, "slots": trial_slots(spec, per_worker, nodes)}


def worker_resources(recipe: Recipe, spec: TuneConfig, nodes: list[dict[str, float]]) -> dict[str, float]:
    """CPUs and GPUs of one DDP worker, checked against the cluster's alive ``nodes`` (their resources)."""
    where = f"{recipe.source}: tune"
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    cpu = float(recipe.data.num_workers + 1) if spec.cpus_per_worker == "auto" else float(spec.cpus_per_worker)
    gpu = (1.0 if gpus else 0.0) if spec.gpus_per_worker == "auto" else float(spec.gpus_per_worker)
    if gpu and not gpus:
        raise ConfigError(f"gpus_per_worker is {gpu:g} but the Ray cluster has no GPU",
                          where=f"{where}.gpus_per_worker", hint="leave it out (auto) or set 0")
    need = {"CPU": cpu, "GPU": gpu}
    fits = [min(int(n.get(k, 0.0) // v) for k, v in need.items() if v) for n in nodes]
    if not any(fits):
        raise ConfigError(f"a worker asks for {cpu:g} CPU and {gpu:g} GPU, more than any Ray node has",
                          where=f"{where}.cpus_per_worker", hint="lower it, or add larger nodes")
    if sum(fits) < spec.workers_per_trial:
        raise ConfigError(f"{spec.workers_per_trial} workers of {cpu:g} CPU and {gpu:g} GPU do not fit in the Ray "
                          f"cluster (it holds {sum(fits)})", where=f"{where}.workers_per_trial",
                          hint="lower workers_per_trial or cpus_per_worker, or add nodes")
    return need


def trial_slots(spec: TuneConfig, per_worker: dict[str, float], nodes: list[dict[str, float]]) -> int:
    """How many DDP trials the cluster runs at once: its workers of ``per_worker`` over ``workers_per_trial``."""
    fits = sum(min(int(n.get(k, 0.0) // v) for k, v in per_worker.items() if v) for n in nodes)
    return max(1, fits // spec.workers_per_trial)


def run_ddp_trial(config: dict[str, Any], *, recipe: Recipe, overrides: list[str], experiment_dir: str,
                  per_worker: dict[str, float]) -> None:
    """Ray Tune's trainable for DDP trials: one ``TorchTrainer`` run of ``workers_per_trial`` processes, whose
    rank-0 reports (and checkpoints) this function passes on to Tune."""
    import ray
    from ray import tune
    from ray.util.queue import Queue

    assert recipe.tune is not None
    ranks = recipe.tune.workers_per_trial
    trial_dir = Path(experiment_dir) / tune.get_context().get_trial_id()
    reports: Queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    acks: Queue = Queue(actor_options={"num_cpus": 0})
    loop_config = {"config": config, "recipe": recipe, "overrides": overrides, "acks": acks,
                   "trial_dir": str(trial_dir), "call": uuid.uuid4().hex, "restored": tune.get_checkpoint()}
    # detached, and out of the trial's placement group, which Tune removes (killing what runs in it) as it ends
    runner = ray.remote(num_cpus=0)(_TrainRun).options(lifetime="detached", scheduling_strategy="DEFAULT").remote()
    runner.fit.remote(loop_config, per_worker, reports)
    try:
        while (item := reports.get())[0] == _REPORT:
            _, metrics, checkpoint = item
            tune.report(metrics, checkpoint=checkpoint)  # Tune copies the checkpoint: PBT hands it to other trials
            for _ in range(ranks):  # Tune let the trial go on: so may every rank
                acks.put((_GO, metrics["epoch"]))
    except BaseException:  # Tune stopped the trial (ASHA, a PBT pause) or the sweep: so do the ranks
        for _ in range(ranks):
            acks.put((_STOP, None))
        raise
    if item[1] is not None:
        raise item[1]


_REPORT, _END, _GO, _STOP = "report", "end", "go", "stop"


class _StoppedByTune(SystemExit):
    """Raised on every rank of a DDP trial that Tune stopped: the ranks leave their training function as a
    one-process trial leaves it from ``tune.report`` (a SystemExit, so the run is not recorded as failed), and the
    Train run ends as a finished one, which frees its workers' placement group."""


class _TrainRun:
    """A detached Ray actor that runs a DDP trial's ``TorchTrainer``: Tune ends a stopped or paused trial by killing
    its actor, and a Train controller killed with it would leave its workers' placement group (their CPUs or GPUs)
    reserved until the sweep's driver exits (Ray Train's cleaner of orphaned groups asks the dashboard, which
    ``ray[tune]`` does not install), so the next trial waits for ever. Owned by no trial, the controller outlives
    it: the ranks see the trial's queues die with it, stop, and the run ends as a finished one. The actor exits
    when its run has ended."""

    def fit(self, loop_config: dict[str, Any], per_worker: dict[str, float], reports: Any) -> None:
        import ray
        from ray import train
        from ray.exceptions import RayActorError
        from ray.train.torch import TorchTrainer

        spec = loop_config["recipe"].tune
        trial_dir = Path(loop_config["trial_dir"])
        trainer = TorchTrainer(
            _worker, train_loop_config=loop_config,
            scaling_config=train.ScalingConfig(num_workers=spec.workers_per_trial, use_gpu=per_worker["GPU"] > 0,
                                               resources_per_worker=per_worker),
            run_config=train.RunConfig(name=loop_config["call"], storage_path=str(trial_dir / TRAIN_RUN),
                                       failure_config=train.FailureConfig(max_failures=spec.max_failures),
                                       callbacks=[_to_tune(reports)]))
        error: Exception | None = None
        try:
            trainer.fit()
        except Exception as exc:  # raised again in the trial's actor
            error = exc
        with contextlib.suppress(RayActorError):  # the trial's actor and its queues may be gone
            reports.put((_END, error))
        ray.actor.exit_actor()


def _to_tune(reports: Any) -> Any:
    """A Ray Train callback (it runs on the Train controller) that queues rank 0's report and the Train run's copy
    of its checkpoint for :func:`run_ddp_trial`. Ray's ``TuneReportCallback`` forwards only the checkpoint's path,
    so Tune would hold no checkpoint: PBT could not hand one to another trial, and a new Tune call of the trial
    would start it over. The queue holds one report: the controller waits while Tune takes the one before. A
    queue that died with the trial's actor is no error of the Train run (Train would restart it): its ranks stop."""
    from ray.exceptions import RayActorError
    from ray.train import UserCallback

    class ToTune(UserCallback):  # type: ignore[misc]
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            with contextlib.suppress(RayActorError):
                reports.put((_REPORT, dict(metrics[0]), checkpoint))

    return ToTune()


def _worker(loop_config: dict[str, Any]) -> None:
    """One DDP process of a trial: the trial's run (rank 0 writes it), reporting to Ray Train on every rank. It
    continues from the Train run's checkpoint after Train restarted the workers, else from the one Tune gave the
    trial (its own from before, or another trial's after a PBT exploit)."""
    from ray import train
    from ray.exceptions import RayActorError

    from cnnforge.sweep.trial import continue_trial

    if train.get_context().get_world_rank() == 0:
        starts = Path(loop_config["trial_dir"]) / TRAIN_RUN / GROUP_STARTS
        starts.parent.mkdir(parents=True, exist_ok=True)
        with starts.open("a") as f:
            f.write(loop_config["call"] + "\n")

    def report(metrics: dict[str, Any], checkpoint: Any = None) -> None:
        """``ray.train.report``, then wait until Tune has taken the report in, as a one-process trial waits in
        ``tune.report``: a trial that ran ahead would have trained on when ASHA stops it or PBT replaces it. Word
        for an earlier epoch is skipped: a rank that died before taking it left it to the restarted group."""
        train.report(metrics, checkpoint=checkpoint)
        while True:
            try:
                decision, epoch = loop_config["acks"].get()
            except RayActorError:  # the queue died with the trial's actor: Tune ended the trial
                decision, epoch = _STOP, None
            if decision == _STOP:
                raise _StoppedByTune(0)
            if epoch >= metrics["epoch"]:
                return

    restarted = train.get_checkpoint()
    try:
        continue_trial(loop_config["config"], recipe=loop_config["recipe"], overrides=loop_config["overrides"],
                       trial_dir=Path(loop_config["trial_dir"]), report=report,
                       restored=loop_config["restored"] if restarted is None else restarted)
    except _StoppedByTune:
        return  # every rank returns: Ray Train ends the run as finished and frees its workers


def train_restarts(trial_dir: Path) -> int:
    """Times Ray Train restarted the trial's worker group after a worker died: the group's starts after the first
    within each Tune call of the trial (a rerun of the sweep is a new call, not a restart); 0 for other trials."""
    try:
        text = read_bounded_text(trial_dir / TRAIN_RUN / GROUP_STARTS, 1 << 20, what="record of worker starts")
    except FileNotFoundError:
        return 0
    return sum(n - 1 for n in Counter(text.split()).values())
