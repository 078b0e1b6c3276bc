"""Shared fixtures: every test runs offline, with its own data and run directories."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import cnnforge  # (first, as in the CLI: it sets OpenCV's pixel limit before any test loads cv2)
from tests.datafiles import write_cifar10

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
DDP_FLAGS = ["--multi_gpu", "--num_processes", "2", "--main_process_port", "0"]
"""Two CPU ranks under ``accelerate launch``. Port 0 lets Accelerate pick a free port: ``pytest -n 2`` runs two
launches at once, and the second to bind torch's default 29500 fails with EADDRINUSE."""
DDP_LAUNCH = [ACCELERATE, "launch", *DDP_FLAGS]

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _decoded_image_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``data.cache: disk`` and listing caches of every test go to a temporary folder, never ~/.cache."""
    os.environ["CNNFORGE_CACHE"] = str(tmp_path_factory.mktemp("cnnforge-cache"))


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CIFAR-10 in torchvision's layout (200 train, 60 test images)."""
    return write_cifar10(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run of the digits recipe, a checkpoint after each epoch, trained once per test process
    for every test that needs a finished run. Never change it: :func:`copy_run` gives a test its own copy."""
    out = tmp_path_factory.mktemp("digits-run")
    return cnnforge.train(str(ROOT / "recipes" / "digits_convnet.yaml"),
                          ["train.epochs=2", "train.checkpoint_every=1", "data.num_workers=0", f"train.out_dir={out}"],
                          quiet=True).run_dir


def free_port() -> int:
    """A TCP port no one listens on now, for a test's own rendezvous or Ray head."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def copy_run(run: Path, parent: Path) -> Path:
    """A copy of the run directory ``run`` under ``parent/<recipe name>/<run id>``, as a run of its own would lie."""
    return Path(shutil.copytree(run, parent / run.parent.name / run.name, symlinks=True))


def cli(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None, timeout: float = 600,
        module: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``cnnforge ARGS`` (or ``python -m cnnforge``) in a subprocess, as a user would."""
    script = str(Path(sys.executable).parent / "cnnforge")
    cmd = [sys.executable, "-m", "cnnforge", *args] if module else [script, *args]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def cli_here(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``cnnforge ARGS`` through ``cnnforge.cli.main`` in this process: the same result as :func:`cli`
    without a new interpreter importing torch (seconds per call), for tests of many failure paths."""
    from cnnforge.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse usage errors exit from inside main
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``cnnforge: error:`` line of a failed command (asserting there is exactly one, no traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in lines if line.startswith("cnnforge: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]
