"""DDP trials (``tune.workers_per_trial``): every trial a 2-process gloo job run by Ray Train (issue 28)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import cnnforge
from tests.conftest import DDP_LAUNCH, ROOT, cli_here, one_error_line
from tests.fake_dist import write_distribution
from tests.test_train import assert_same_weights
from tests.test_tune import PLUGIN, _epochs, _experiments, _kill_9_driver_when, _results, _run_dirs, _write_recipe

DDP = {"workers_per_trial": 2, "cpus_per_worker": 1}


#: ``cnnforge.tune(argv[1])`` on a local Ray of 4 logical CPUs
SWEEP_ON_4_CPUS = """
import sys

import ray

import cnnforge

ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
cnnforge.tune(sys.argv[1], quiet=True)
"""


@contextlib.contextmanager
def _local_ray() -> Iterator[None]:
    """A local Ray of 4 logical CPUs (whatever the machine has): two trials of two 1-CPU workers at once. Its
    workers inherit this process's environment as it is now."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def ray_4_cpus() -> Iterator[None]:
    with _local_ray():
        yield


def _rows(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("tune", "key", "expected"), [
    ({"workers_per_trial": 0}, "tune.workers_per_trial", "greater than or equal to 1"),
    ({**DDP, "gpus_per_worker": 2}, "tune.gpus_per_worker", "a DDP process drives one GPU"),
    ({**DDP, "max_failures": -1}, "tune.max_failures", "greater than or equal to 0"),
])
def test_bad_ddp_settings_are_one_line_before_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  tune: dict[str, object], key: str, expected: str) -> None:
    recipe = _write_recipe(tmp_path / "bad.yaml", tune={"grid": {"optim.lr": [0.1, 0.01]}, **tune})
    proc = cli_here(capsys, "tune", str(recipe))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert key in line and expected in line, line


@pytest.mark.slow
def test_workers_larger_than_the_cluster_or_gpus_without_any_are_refused_before_trials(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], ray_4_cpus: None) -> None:
    cases = {"tune.cpus_per_worker=64": "more than any Ray node has", "tune.workers_per_trial=5": "do not fit",
             "tune.gpus_per_worker=1": "the Ray cluster has no GPU"}
    recipe = _write_recipe(tmp_path / "big.yaml", tune={"grid": {"optim.lr": [0.1, 0.01]}, **DDP})
    for override, expected in cases.items():
        proc = cli_here(capsys, "tune", str(recipe), override)
        assert proc.returncode == 2, proc.stdout
        assert expected in one_error_line(proc), override
    assert not list((tmp_path / "runs").glob("*/tune-*/*/runs"))  # no trial started


@pytest.mark.slow
def test_ddp_trials_match_an_accelerate_launch_and_asha_stops_the_weak_one(tmp_path: Path, ray_4_cpus: None) -> None:
    """One trial at a time (``max_concurrent: 1``), so ASHA sees the strong trial's first epoch before the weak one's
    and the second trial gets an actor of its own: reusing the first one's fails while its Train run is torn down
    (the trial would end in an error, and Ray would wait 600 s before the next)."""
    recipe = _write_recipe(tmp_path / "ddp.yaml", train={"epochs": 2, "checkpoint_every": 1, "plots": False,
                                                          "out_dir": str(tmp_path / "runs")},
                           tune={"metric": "val/acc", "mode": "max", "grid": {"optim.lr": [0.01, 0.00001]},
                                 "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
                                 "max_concurrent": 1, **DDP})
    result = cnnforge.tune(recipe, quiet=True)
    [experiment] = _experiments(tmp_path / "runs", "ddp")
    rows = {float(r["optim.lr"]): r for r in _results(experiment)}
    for row in rows.values():
        assert json.loads((Path(row["run_dir"]) / "manifest.json").read_text())["world_size"] == 2
    assert rows[0.01]["epochs"] == "2" and rows[0.00001]["epochs"] == "1", rows  # ASHA stopped the weak one
    assert result.best is not None and result.best_recipe is not None
    launch = subprocess.run([*DDP_LAUNCH, "-m", "cnnforge", "run", str(result.best_recipe),
                             f"train.out_dir={tmp_path / 'launch'}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert launch.returncode == 0, launch.stderr[-3000:]
    [launched] = [p.parent for p in (tmp_path / "launch").rglob("summary.json")]
    for ours, theirs in zip(_rows(Path(rows[0.01]["run_dir"])), _rows(launched), strict=True):
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), (key, ours, theirs)


@pytest.mark.slow
def test_a_killed_ddp_worker_restarts_the_trial_from_its_checkpoint(tmp_path: Path) -> None:
    """``fail: killed`` SIGKILLs a worker in the second epoch; Ray Train restarts both from the epoch-1 checkpoint.
    The sweep runs in a process of its own, whose plugin discovery (and its Ray workers') finds the test's model."""
    site = write_distribution(tmp_path / "site", "cnnforge-tune-testplugin", "0.1", "tune_testplugin", PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    marker = tmp_path / "killed-once"
    recipe = _write_recipe(tmp_path / "lost.yaml", model={"name": "faulty_convnet", "marker": str(marker)},
                           data={"name": "digits", "batch_size": 32, "num_workers": 0},  # forward 20: epoch 2
                           tune={"metric": "val/loss", "mode": "min", "grid": {"model.fail": ["killed", "never"]},
                                 "max_failures": 1, **DDP})
    sweep = subprocess.run([sys.executable, "-c", SWEEP_ON_4_CPUS, str(recipe)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=1500)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert marker.exists()
    [experiment] = _experiments(tmp_path / "runs", "lost")
    rows = {r["model.fail"]: r for r in _results(experiment)}
    assert rows["killed"]["status"] == "done" and rows["never"]["status"] == "done", rows
    assert (rows["killed"]["restarts"], rows["never"]["restarts"]) == ("1", "0"), rows  # Ray Train's restart counted
    killed = Path(rows["killed"]["run_dir"])
    assert _run_dirs(experiment / rows["killed"]["trial"]) == [killed] and _epochs(killed) == [1, 2]
    assert_same_weights(Path(rows["never"]["run_dir"]), killed)


@pytest.mark.slow
def test_pbt_hands_a_ddp_trials_checkpoint_to_the_weak_one_and_a_killed_sweep_continues(tmp_path: Path) -> None:
    """Two DDP trials under synchronous PBT every epoch: the weak one restarts, as a DDP job, from the strong one's
    checkpoint (Tune holds DDP trials' checkpoints). The driver is killed after the first exploit; the same
    command finishes the sweep, each trial from its own checkpoint."""
    recipe = _write_recipe(tmp_path / "pbt.yaml", train={"epochs": 3, "checkpoint_every": 1, "plots": False,
                                                          "out_dir": str(tmp_path / "runs")},
                           tune={"metric": "val/acc", "mode": "max", "grid": {"optim.lr": [1.0e-5, 0.03]},
                                 "scheduler": {"name": "pbt", "synch": True, "hyperparam_mutations":
                                               {"optim.lr": {"loguniform": [1.0e-5, 0.1]}}}, **DDP})
    program = [sys.executable, "-c", SWEEP_ON_4_CPUS]
    _kill_9_driver_when([str(recipe)], tmp_path / "first.log",
                        lambda: any((tmp_path / "runs").glob("pbt/tune-*/pbt_global.txt")), "the first exploit",
                        or_exit=True, program=program, timeout=900)
    sweep = subprocess.run([*program, str(recipe)], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    [experiment] = _experiments(tmp_path / "runs", "pbt")
    rows = _results(experiment)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done"}, rows
    manifests = {p.parent: json.loads(p.read_text()) for p in experiment.glob("*/runs/*/*/manifest.json")}
    assert all(manifest["world_size"] == 2 for manifest in manifests.values())
    warm = [run for run, manifest in manifests.items() if "started_from" in manifest]
    assert warm, "no trial continued from another trial's checkpoint"
    for run in warm:  # from a later epoch than the first, with a learning rate PBT explored
        lr = yaml.safe_load((run / "recipe.yaml").read_text())["optim"]["lr"]
        assert 1.0e-5 <= lr <= 0.1 and lr not in (1.0e-5, 0.03)
        assert all(epoch > 1 for epoch in _epochs(run))
    for row in rows:
        assert _epochs(Path(row["run_dir"]))[-1] == 3 and (Path(row["run_dir"]) / "summary.json").is_file()
