"""DDP trials: ``tune.workers_per_trial: N`` makes every sweep trial an N-process DDP job run by Ray Train.

A trial's Ray Tune function starts a ``TorchTrainer`` (Ray Train V2, the default in Ray 2.60; its
``TuneReportCallback`` passes the rank-0 reports on to Tune, so ASHA and the results table see every
epoch). Ray places the N workers (``cpus_per_worker``, ``gpus_per_worker``; on one or several nodes),
sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` and creates the process group (gloo on
CPUs, NCCL on GPUs); cnnforge's Accelerator adopts it as it adopts ``accelerate launch``'s. Each worker
runs :func:`cnnforge.sweep.trial.continue_trial`: rank 0 writes the run directory and its checkpoints,
every rank calls ``ray.train.report`` (a barrier in Ray Train) with rank 0's checkpoint. A worker that
dies restarts the whole worker group from the last checkpoint (``ray.train.FailureConfig``, up to
``tune.max_failures`` times); rerunning a stopped sweep restores each Train run from its storage
folder (``<trial>/ddp/``), so the trial continues from its checkpoint there too. Tune does not see those
restarts: rank 0 records each start of the worker group (:data:`GROUP_STARTS`), and the results table counts
the starts after the first of each Tune call of the trial (:func:`train_restarts`).

The Tune trial itself reserves nothing (the Train controller and workers are its own actors), so the
driver caps the trials running at once at what the cluster holds (:func:`trial_slots`).
"""
from __future__ import annotations

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
    """Ray Tune's trainable for DDP trials: one ``TorchTrainer`` run of ``workers_per_trial`` processes."""
    from ray import train, tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    assert recipe.tune is not None
    spec = recipe.tune
    trial_dir = Path(experiment_dir) / tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        _worker, train_loop_config={"config": config, "recipe": recipe, "overrides": overrides,
                                    "trial_dir": str(trial_dir), "call": uuid.uuid4().hex},
        scaling_config=train.ScalingConfig(num_workers=spec.workers_per_trial, use_gpu=per_worker["GPU"] > 0,
                                           resources_per_worker=per_worker),
        run_config=train.RunConfig(name=TRAIN_RUN, storage_path=str(trial_dir),
                                   failure_config=train.FailureConfig(max_failures=spec.max_failures),
                                   callbacks=[TuneReportCallback()]))
    trainer.fit()


def _worker(loop_config: dict[str, Any]) -> None:
    """One DDP process of a trial: the trial's run (rank 0 writes it), reporting to Ray Train on every rank."""
    from ray import train

    from cnnforge.sweep.trial import continue_trial

    if train.get_context().get_world_rank() == 0:
        starts = Path(loop_config["trial_dir"]) / TRAIN_RUN / GROUP_STARTS
        starts.parent.mkdir(parents=True, exist_ok=True)
        with starts.open("a") as f:
            f.write(loop_config["call"] + "\n")
    continue_trial(loop_config["config"], recipe=loop_config["recipe"], overrides=loop_config["overrides"],
                   trial_dir=Path(loop_config["trial_dir"]), report=train.report, restored=train.get_checkpoint())


def train_restarts(trial_dir: Path) -> int:
    """Times Ray Train restarted the trial's worker group after a worker died: the group's starts after the first
    within each Tune call of the trial (a rerun of the sweep is a new call, not a restart); 0 for other trials."""
    try:
        text = read_bounded_text(trial_dir / TRAIN_RUN / GROUP_STARTS, 1 << 20, what="record of worker starts")
    except FileNotFoundError:
        return 0
    return sum(n - 1 for n in Counter(text.split()).values())
