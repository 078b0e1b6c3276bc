"""Several machines: two ``accelerate launch --num_machines 2`` on localhost (one process each, gloo) make one
run directory with ``world_size: 2``, and a run killed on both "machines" resumes on both to the same weights.

Both launchers share the folder the run writes to, as real nodes share storage (README: Several machines).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ACCELERATE, ROOT, free_port
from tests.test_train import assert_same_weights

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
OVERRIDES = ["train.epochs=3", "data.batch_size=32", "data.num_workers=0", "train.checkpoint_every_steps=9"]


def _machines(*args: str) -> list[subprocess.Popen[str]]:
    """``accelerate launch`` as machine 0 and machine 1 of two, one process each, meeting on localhost."""
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([ACCELERATE, "launch", "--multi_gpu",
                              "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
                              "--main_process_ip", "127.0.0.1", "--main_process_port", port, "-m", "cnnforge", *args],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True) for rank in (0, 1)]


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants: torchrun starts each worker in a session of its own, so killing the
    launcher's process group would leave the training process running."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(parents.get(found[-1], []))
    return found


def _finish(procs: list[subprocess.Popen[str]]) -> list[str]:
    outputs = [proc.communicate(timeout=900) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


def _run_dir(out: Path) -> Path:
    [run] = [p.parent for p in out.rglob("manifest.json")]  # one run directory for both machines
    return run


@pytest.mark.slow
def test_two_machines_make_one_run_and_resume_exactly(tmp_path: Path) -> None:
    stdouts = _finish(_machines("run", DIGITS, *OVERRIDES, f"train.out_dir={tmp_path / 'ref'}"))
    ref = _run_dir(tmp_path / "ref")
    assert json.loads((ref / "manifest.json").read_text())["world_size"] == 2
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert [out.count("run directory:") for out in stdouts] == [1, 0]  # machine 0's process is the main one

    cut_out = tmp_path / "cut"
    procs = _machines("run", DIGITS, *OVERRIDES, f"train.out_dir={cut_out}")
    deadline = time.monotonic() + 600
    while not list(cut_out.rglob("ckpt-*")) and all(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in [pid for proc in procs for pid in _tree(proc.pid)]:  # both machines go down, as when a job is cancelled
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in procs:
        proc.communicate()
    cut = _run_dir(cut_out)
    assert not (cut / "summary.json").exists()
    _finish(_machines("resume", str(cut)))
    assert_same_weights(ref, cut)


def test_slurm_example_is_valid_bash_with_the_readme_flags() -> None:
    script = ROOT / "examples" / "slurm" / "multinode.sbatch"
    assert subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True).returncode == 0
    text = script.read_text()
    for flag in ("--num_machines $SLURM_NNODES", "--machine_rank \\$SLURM_NODEID", "--main_process_ip",
                 "--main_process_port", "-m cnnforge"):
        assert flag in text, flag
