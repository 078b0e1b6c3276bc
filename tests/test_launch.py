"""The launch modes of design.md §6, each run for real on this CPU machine."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ACCELERATE, DDP_FLAGS, ROOT, cli, one_error_line


def _accelerate(*args: str, cwd: Path, env: dict[str, str] | None = None,
                command: str = "launch") -> subprocess.CompletedProcess[str]:
    return subprocess.run([ACCELERATE, command, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _test_size() -> int:
    import cnnforge
    from cnnforge.data.loading import build_splits

    return len(build_splits(cnnforge.load_recipe(ROOT / "recipes" / "digits_convnet.yaml")).test)


def _only_run_dir(out: Path) -> Path:
    runs = [p.parent for p in out.rglob("manifest.json")]
    assert len(runs) == 1, runs  # one set of files, however many processes
    return runs[0]


@pytest.mark.slow
def test_accelerate_launch_with_its_default_config_and_quiet_prints_only_cnnforges_lines(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path / "hf")}  # no launch configuration yet, as on a fresh machine
    bare = _accelerate("cnnforge", "check", "missing.yaml", cwd=ROOT, env=env)
    assert bare.returncode == 1  # what Accelerate prints by itself (README: what cannot be removed without these)
    assert "were not passed to `accelerate launch`" in bare.stderr and "CalledProcessError" in bare.stderr

    assert _accelerate("default", cwd=ROOT, env=env, command="config").returncode == 0  # the README's one-time step
    ok = _accelerate("cnnforge", "check", "recipes/digits_convnet.yaml", cwd=ROOT, env=env)
    assert ok.returncode == 0 and ok.stderr.strip() == "", ok.stderr
    assert ok.stdout.strip() == "recipes/digits_convnet.yaml: ok (convnet on digits, 20 epochs)"
    failed = _accelerate("--quiet", "cnnforge", "check", "missing.yaml", cwd=ROOT, env=env)
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert failed.returncode == 1 and len(lines) == 1, failed.stderr
    assert lines[0].startswith("cnnforge: error: ") and "missing.yaml" in lines[0]


@pytest.mark.slow
def test_literal_accelerate_launch_of_the_flagship(tmp_path: Path, cifar_root: Path) -> None:
    proc = _accelerate("cnnforge", "run", "recipes/cifar_vgg_bn.yaml", f"data.root={cifar_root}", "train.epochs=1",
                       "data.num_workers=0", "data.batch_size=32", f"train.out_dir={tmp_path}", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _only_run_dir(tmp_path)
    for name in ("recipe.yaml", "metrics.jsonl", "summary.json", "model.safetensors"):
        assert (run / name).exists(), name
    assert json.loads((run / "summary.json").read_text())["test/samples"] == 60


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path: Path) -> None:
    proc = _accelerate(*DDP_FLAGS, "-m", "cnnforge", "run",
                       str(ROOT / "recipes" / "digits_convnet.yaml"), "train.epochs=2", "train.ema=0.9",
                       "train.lookahead={every: 2}", "optim.bias_lr_mult=4", "eval.tta=flip",
                       f"train.out_dir={tmp_path}", cwd=tmp_path)  # ranks average the same weights (EMA, lookahead)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _only_run_dir(tmp_path)
    assert json.loads((run / "manifest.json").read_text())["world_size"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ranks_in_sync"] is True  # both ranks end with bit-identical weights
    assert summary["test/samples"] == _test_size()  # gathered without the padding duplicates
    assert proc.stdout.count("run directory:") == 1  # only the main process prints


def test_world_size_without_a_launcher_is_a_clear_error(tmp_path: Path) -> None:
    proc = cli("run", "recipes/digits_convnet.yaml", f"train.out_dir={tmp_path}", env={"WORLD_SIZE": "2"})
    assert proc.returncode == 1
    assert "WORLD_SIZE=2" in one_error_line(proc)
    assert not any(tmp_path.iterdir())
