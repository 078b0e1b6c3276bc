"""A cluster's warning signal (SIGTERM, SIGUSR1) stops a run with a checkpoint, and rerunning the same command
with ``--run-dir`` ends with the weights of a run never stopped (issue 28).

A test plugin (loaded in every process of a run, like any plugin) sends the signal from inside the run at
a training step drawn at random, so the stop lands mid-epoch however loaded the machine is: to the
process itself, or under ``accelerate launch`` to the launcher, which forwards it to every rank. The
plan is a file that the plugin deletes as it fires: the rerun, the same command, is not signalled.
Steps are random; the seed is printed (``CNNFORGE_SIGNAL_SEED=<seed>`` replays it) and
``CNNFORGE_SIGNAL_TRIALS`` sets the trials per case (5).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DDP_LAUNCH, ROOT
from tests.fake_dist import write_distribution
from tests.test_train import assert_same_weights

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("CNNFORGE_SIGNAL_SEED", time.time_ns() % 10**6))
TRIALS = int(os.environ.get("CNNFORGE_SIGNAL_TRIALS", "5"))
EXIT_PREEMPTED, EXIT_INTERRUPTED = 75, 130
#: the last step a signal can stop at (1,078 training digits in batches of 32, 2 epochs: 68 optimizer steps, 34 on
#: each of 2 DDP ranks, which agree at step 10 (preemption.CHECK_EVERY) and at the first epoch's end, step 17, and
#: in the second epoch as often as their step time says)
LAST_STOP = {1: 67, 2: 17}
RECIPE = ["digits_convnet", "train.epochs=2", "data.batch_size=32", "data.num_workers=0", "train.plots=false"]

SIGNALLER = '''
"""Sends the signals of the plan in $SIGNAL_PLAN ({"step", "signal", "to", "in_save"}) from rank 0; step 0: as
the run starts, once its run directory exists and before its first step."""
import json
import os
import signal
from pathlib import Path

from cnnforge.rundir import checkpoint
from cnnforge.training import loop
from cnnforge.training import step as train_step

PLAN = Path(os.environ.get("SIGNAL_PLAN", "/nonexistent"))


def send(name, to="self"):
    sig = signal.Signals["SIG" + name]
    if to == "group":  # every process of the run, loader workers too, as Slurm signals a job
        os.killpg(os.getpgrp(), sig)
    else:
        os.kill(os.getppid() if to == "launcher" else os.getpid(), sig)


if PLAN.exists() and os.environ.get("RANK", "0") == "0":
    plan = json.loads(PLAN.read_text())
    PLAN.unlink()  # one shot: the rerun of the same command trains on undisturbed
    step, write, start, steps = train_step.TrainStep.__call__, checkpoint._write_folder, loop.Trainer.start, []

    def starting(*args, **kwargs):
        if plan["step"] == 0:
            send(plan["signal"], plan["to"])
        return start(*args, **kwargs)

    def counted_step(*args, **kwargs):
        steps.append(1)
        if len(steps) == plan["step"] and plan["signal"]:
            send(plan["signal"], plan["to"])
        return step(*args, **kwargs)

    def interrupted_write(*args, **kwargs):
        if len(steps) >= plan["step"] and plan["in_save"]:  # the first save after the step: the signal's own
            send(plan.pop("in_save"))
        return write(*args, **kwargs)

    train_step.TrainStep.__call__, checkpoint._write_folder = counted_step, interrupted_write
    loop.Trainer.start = starting
'''


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    site = write_distribution(tmp_path / "site", "cnnforge-signaller", "0.1", "cnnforge_signaller", SIGNALLER)
    python_path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1", "SIGNAL_PLAN": str(tmp_path / "plan"),
            # torch elastic forwards these to its ranks (SIGUSR1 is not among its defaults)
            "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"}


def _run(args: list[str], env: dict[str, str], ranks: int) -> subprocess.CompletedProcess[str]:
    """``cnnforge run ARGS`` (under ``accelerate launch`` with 2 ``ranks``) in a process group of its own."""
    launch = [str(Path(sys.executable).parent / "cnnforge")] if ranks == 1 else [*DDP_LAUNCH, "-m", "cnnforge"]
    return subprocess.run([*launch, "run", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                          start_new_session=True)


def _reference(tmp_path: Path, env: dict[str, str], ranks: int, *extra: str) -> Path:
    ref = tmp_path / "ref"
    proc = _run([*RECIPE, *extra, "--run-dir", str(ref)], env, ranks)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ref


def _stopped_and_rerun(tmp_path: Path, env: dict[str, str], plan: dict[str, object], ranks: int,
                       stopped_code: int, *extra: str) -> Path:
    """Run with the signal ``plan``, expect ``stopped_code``, rerun the same command to its end; the run dir."""
    run_dir = tmp_path / f"cut-{len(list(tmp_path.glob('cut-*')))}"
    Path(env["SIGNAL_PLAN"]).write_text(json.dumps(plan))
    args = [*RECIPE, *extra, "--run-dir", str(run_dir)]
    stopped = _run(args, env, ranks)
    assert stopped.returncode == stopped_code, (plan, stopped.stdout[-2000:], stopped.stderr[-3000:])
    assert not list(run_dir.rglob(".tmp-*")) and not list(run_dir.rglob(".*.tmp-*")), "temporary files left"
    assert not (run_dir / "summary.json").exists(), plan
    again = _run(args, env, ranks)
    assert again.returncode == 0, (plan, again.stderr[-3000:])
    return run_dir


def _plans(name: str, ranks: int, **plan: object) -> list[dict[str, object]]:
    rng = random.Random(f"{SEED}-{name}")
    print(f"signal seed {SEED} ({name})")
    to = "launcher" if ranks > 1 else "self"
    return [{"step": rng.randint(1, LAST_STOP[ranks]), "to": to, **plan} for _ in range(TRIALS)]


@pytest.mark.parametrize("sig", ["TERM", "USR1"])
def test_a_signal_checkpoints_and_the_rerun_is_bit_exact(tmp_path: Path, plugin_env: dict[str, str],
                                                         sig: str) -> None:
    ref = _reference(tmp_path, plugin_env, 1)
    for plan in _plans(sig, 1, signal=sig, in_save=None):
        cut = _stopped_and_rerun(tmp_path, plugin_env, plan, 1, EXIT_PREEMPTED)
        assert_same_weights(ref, cut)


def test_a_signal_while_the_run_starts_stops_it_after_its_first_step(tmp_path: Path,
                                                                      plugin_env: dict[str, str]) -> None:
    """Slurm's warning can come while the run directory is new and no step has run: the run holds the signal,
    checkpoints after its first step and exits 75 (the signal's default action would kill it: exit 138)."""
    ref = _reference(tmp_path, plugin_env, 1)
    cut = _stopped_and_rerun(tmp_path, plugin_env, {"step": 0, "signal": "USR1", "to": "self", "in_save": None}, 1,
                             EXIT_PREEMPTED)
    assert_same_weights(ref, cut)


def test_a_signal_to_every_process_of_the_run_spares_its_loader_workers(tmp_path: Path,
                                                                         plugin_env: dict[str, str]) -> None:
    """Slurm signals every process of a job: the 2 DataLoader workers outlive it, the run checkpoints."""
    workers = ("data.num_workers=2", "data.on_device=false")
    ref = _reference(tmp_path, plugin_env, 1, *workers)
    for plan in _plans("group", 1, signal="TERM", in_save=None, to="group"):
        cut = _stopped_and_rerun(tmp_path, plugin_env, plan, 1, EXIT_PREEMPTED, *workers)
        assert_same_weights(ref, cut)


def test_a_second_signal_during_the_save_does_not_corrupt_it(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    ref = _reference(tmp_path, plugin_env, 1)
    for plan in _plans("twice", 1, signal="TERM", in_save="USR1"):
        cut = _stopped_and_rerun(tmp_path, plugin_env, plan, 1, EXIT_PREEMPTED)
        assert_same_weights(ref, cut)


def test_ctrl_c_during_a_checkpoint_write_leaves_no_temporary_files(tmp_path: Path,
                                                                    plugin_env: dict[str, str]) -> None:
    """SIGINT keeps its meaning (stop now, exit 130) and cuts the write cleanly; the rerun starts from the
    checkpoint before (or from the beginning) and still ends bit-exact."""
    ref = _reference(tmp_path, plugin_env, 1)
    for plan in _plans("ctrl-c", 1, signal=None, in_save="INT"):
        cut = _stopped_and_rerun(tmp_path, plugin_env, plan, 1, EXIT_INTERRUPTED)
        assert_same_weights(ref, cut)


@pytest.mark.parametrize("sig", ["TERM", "USR1"])
def test_a_signal_to_accelerate_launch_stops_every_rank_at_one_step(tmp_path: Path, plugin_env: dict[str, str],
                                                                    sig: str) -> None:
    """torch elastic forwards the launcher's signal to both gloo ranks; they agree on the step, checkpoint, exit;
    the launcher exits 128 + the signal's number."""
    import signal

    ref = _reference(tmp_path, plugin_env, 2)
    for plan in _plans(f"ddp-{sig}", 2, signal=sig, in_save=None):
        cut = _stopped_and_rerun(tmp_path, plugin_env, plan, 2, 128 + signal.Signals[f"SIG{sig}"])
        assert_same_weights(ref, cut)
        assert json.loads((cut / "manifest.json").read_text())["world_size"] == 2
