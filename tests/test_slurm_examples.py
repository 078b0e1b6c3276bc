"""The Slurm scripts of ``examples/slurm/`` run without Slurm: ``srun``, ``scontrol``, ``scancel``, ``ray`` and the
``accelerate`` launcher are stubs that record their calls (``accelerate launch`` flags are parsed by
Accelerate's own parser), while the cnnforge command lines in the scripts are real."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

SLURM = ROOT / "examples" / "slurm"
SCRIPTS = ("single_node.sbatch", "multinode.sbatch", "sweep.sbatch")

STUBS = {
    # srun [options] COMMAND...: the command, here (the options with a separate value are the scripts' -w)
    "srun": 'echo "srun $*" >> "$CALLS"\nwhile [ "${1#-}" != "$1" ]; do [ "$1" = -w ] && shift; shift; done\n'
            'exec "$@"\n',
    "scontrol": 'echo "scontrol $*" >> "$CALLS"\n[ "$1 $2" = "show hostnames" ] && echo localhost\nexit 0\n',
    "scancel": 'echo "scancel $*" >> "$CALLS"\n',
    # ray status answers once a head has started, as the real one does (the script starts the head in the background)
    "ray": 'echo "ray $*" >> "$CALLS"\n[ "$1" != status ] || grep -q "^ray start --head" "$CALLS"\n',
    # accelerate launch FLAGS -m cnnforge ARGS: Accelerate checks the flags, then one process runs the command
    "accelerate": 'echo "accelerate $*" >> "$CALLS"\nexec "$PYTHON" -c \'import sys\n'
                  'from accelerate.commands.launch import launch_command_parser\n'
                  'args = launch_command_parser().parse_args(sys.argv[2:])\n'
                  'assert args.module and args.training_script == "cnnforge", args\n'
                  'from cnnforge.cli import run_program\nrun_program(args.training_script_args)\' "$@"\n',
}


@pytest.fixture
def slurm_env(tmp_path: Path) -> dict[str, str]:
    """PATH with the stubs first (cnnforge and python stay this environment's), a job's Slurm variables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}")
        (bin_dir / name).chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHON": sys.executable, "CALLS": str(tmp_path / "calls"),
            "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1",
            "SLURM_NODEID": "0", "SLURM_GPUS_ON_NODE": "1", "SLURM_CPUS_PER_TASK": "2", "OMP_NUM_THREADS": "1"}


def _sbatch(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SLURM / script), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_scripts_are_valid_bash_that_requeue_on_the_warning_signal(script: str) -> None:
    path = SLURM / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    text = path.read_text()
    for line in ("#SBATCH --requeue", "#SBATCH --signal=B:USR1@", "scontrol requeue", "trap stop USR1 TERM"):
        assert line in text, line


@pytest.mark.parametrize("script", ["single_node.sbatch", "multinode.sbatch"])
def test_the_run_scripts_pass_a_command_line_cnnforge_parses(tmp_path: Path, slurm_env: dict[str, str],
                                                             script: str) -> None:
    proc = _sbatch(script, "run", "digits_convnet", "--run-dir", str(tmp_path / "run"), "train.epochs=1", "--help",
                   env=slurm_env)
    assert proc.returncode == 0, proc.stderr
    assert "--run-dir DIR" in proc.stdout
    calls = Path(slurm_env["CALLS"]).read_text() if script == "multinode.sbatch" else ""
    assert script != "multinode.sbatch" or "--machine_rank 0" in calls, calls


def test_the_sweep_script_starts_ray_then_tune_on_it(tmp_path: Path, slurm_env: dict[str, str]) -> None:
    proc = _sbatch("sweep.sbatch", str(ROOT / "recipes" / "sweep_activation_dropout_lr.yaml"), "--help",
                   env={**slurm_env, "SLURM_JOB_NUM_NODES": "2"})
    assert proc.returncode == 0, proc.stderr
    assert "usage: cnnforge tune" in proc.stdout
    calls = Path(slurm_env["CALLS"]).read_text().splitlines()
    starts = [c.split()[2].split("=")[0] for c in calls if c.startswith("ray start")]
    assert starts == ["--head", "--address"], calls  # the head here, a worker on the other node
    assert calls[-1] == "ray stop --force", calls


@pytest.mark.slow
def test_the_single_node_script_checkpoints_requeues_and_continues(tmp_path: Path,
                                                                   slurm_env: dict[str, str]) -> None:
    """Slurm's warning (SIGUSR1 to the batch script) while the run trains: the run checkpoints and exits 75, the
    script requeues the job; the requeued script, the same command, finishes the run."""
    run_dir = tmp_path / "run"
    args = ["run", "digits_convnet", "--run-dir", str(run_dir), "train.epochs=2", "data.num_workers=0",
            "train.plots=false"]
    job = subprocess.Popen(["bash", str(SLURM / "single_node.sbatch"), *args], cwd=ROOT, env=slurm_env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not (run_dir / "manifest.json").exists() and job.poll() is None:  # training has started
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    out, err = job.communicate(timeout=600)
    assert job.returncode == 75, err[-3000:]
    assert "SIGUSR1: stopped with checkpoint" in out, out
    assert "scontrol requeue 42" in Path(slurm_env["CALLS"]).read_text()
    again = _sbatch("single_node.sbatch", *args, env=slurm_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "summary.json").exists()
