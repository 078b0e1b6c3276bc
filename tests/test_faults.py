"""Non-finite losses, a failing DDP rank, booby-trapped pickles and secrets (issue: reliability)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, one_error_line
from tests.datafiles import write_cifar10
from tests.fake_dist import write_distribution

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
FAULTS = '''
"""Models that fail on cue, for testing what the trainer does about it."""
import os
import time
from pathlib import Path

import cnnforge


def _net(num_classes, in_channels):
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


@cnnforge.register_model
def nan_on_cue(*, num_classes, in_channels, nan_at: int = 40):
    """A linear model whose training forward number ``nan_at`` returns NaN logits (once)."""
    from torch import nn

    class NanOnCue(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.calls = _net(num_classes, in_channels), 0

        def forward(self, x):
            out = self.net(x)
            if self.training:
                self.calls += 1
                if self.calls == nan_at:
                    out = out * float("nan")
            return out

    return NanOnCue()


@cnnforge.register_model
def rank_fails(*, num_classes, in_channels, fail_at: int = 5, stamp: str = ""):
    """Raises on DDP rank 1 at training forward number ``fail_at``, first writing the time to ``stamp``."""
    from torch import nn

    class RankFails(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.calls = _net(num_classes, in_channels), 0

        def forward(self, x):
            self.calls += self.training
            if os.environ.get("RANK") == "1" and self.calls == fail_at:
                if stamp:
                    Path(stamp).write_text(repr(time.time()))
                raise RuntimeError("rank 1 fails on cue")
            return self.net(x)

    return RankFails()
'''


@pytest.fixture(scope="module")
def fault_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = write_distribution(tmp_path_factory.mktemp("site"), "cnnforge-faults", "0.1", "cnnforge_faults", FAULTS)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def _nan_run(tmp_path: Path, env: dict[str, str], policy: str) -> subprocess.CompletedProcess[str]:
    # 1,078 training digits in batches of 32: 34 steps per epoch, so forward 40 is epoch 2, step 6
    return cli("run", DIGITS, "model={name: nan_on_cue, nan_at: 40}", "train.epochs=3", "train.checkpoint_every=1",
               f"train.on_nan={policy}", f"train.out_dir={tmp_path}", env=env)


def _run_dir(out: Path) -> Path:
    return next(out.rglob("manifest.json")).parent


def test_nan_stop_exits_3_naming_step_and_checkpoint(tmp_path: Path, fault_env: dict[str, str]) -> None:
    proc = _nan_run(tmp_path, fault_env, "stop")
    assert proc.returncode == 3
    line = one_error_line(proc)
    assert "non-finite loss at epoch 2, step 6" in line and "ckpt-e0001-b000000" in line


def test_nan_skip_counts_skipped_steps(tmp_path: Path, fault_env: dict[str, str]) -> None:
    proc = _nan_run(tmp_path, fault_env, "skip")
    assert proc.returncode == 0, proc.stderr
    run = _run_dir(tmp_path)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/skipped_steps"] for r in rows] == [0, 1, 1]
    assert json.loads((run / "summary.json").read_text())["train/skipped_steps"] == 1


def test_nan_rollback_reloads_and_lowers_lr(tmp_path: Path, fault_env: dict[str, str]) -> None:
    proc = _nan_run(tmp_path, fault_env, "rollback")
    assert proc.returncode == 0, proc.stderr
    assert "rolled back to ckpt-e0001-b000000, LR scaled by 0.5" in proc.stdout + proc.stderr
    run = _run_dir(tmp_path)
    assert json.loads((run / "summary.json").read_text())["train/rollbacks"] == 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # epoch 2 was redone, not duplicated


@pytest.mark.slow
def test_a_failing_ddp_rank_ends_every_rank(tmp_path: Path, fault_env: dict[str, str]) -> None:
    stamp = tmp_path / "failed-at"
    proc = subprocess.run([str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes",
                           "2", "-m", "cnnforge", "run", DIGITS,
                           f"model={{name: rank_fails, fail_at: 5, stamp: '{stamp}'}}",
                           f"train.out_dir={tmp_path}"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **fault_env}, cwd=tmp_path)
    after_fault = time.time() - float(stamp.read_text())
    assert proc.returncode != 0
    assert "rank 1 fails on cue" in proc.stderr
    # counted from the fault, not from start-up (minutes on a loaded machine); a rank left waiting would sit in
    # the collective until its 30-minute timeout
    assert after_fault < 300, f"the other rank took {after_fault:.0f}s to stop"


class _Trap:
    """Unpickling this runs ``open(path, 'w')``: what a malicious checkpoint or dataset would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.path), "w"))


def test_booby_trapped_checkpoint_is_refused(tmp_path: Path) -> None:
    import shutil

    from cnnforge.atomic_write import sha256
    from cnnforge.checkpoint import MANIFEST

    proc = cli("run", DIGITS, "train.epochs=1", "train.checkpoint_every=1", f"train.out_dir={tmp_path / 'runs'}")
    assert proc.returncode == 0, proc.stderr
    run = _run_dir(tmp_path / "runs")
    (run / "summary.json").unlink()
    ckpt = next((run / "checkpoints").glob("ckpt-*"))
    pwned = tmp_path / "pwned"
    with (ckpt / "optimizer.pt").open("wb") as f:
        pickle.dump({"state": _Trap(pwned)}, f)
    manifest = json.loads((ckpt / MANIFEST).read_text())  # an attacker can fix up the checksums too
    manifest["files"]["optimizer.pt"] = sha256(ckpt / "optimizer.pt")
    (ckpt / MANIFEST).write_text(json.dumps(manifest))
    before = sorted(p.name for p in run.iterdir())
    proc = cli("resume", str(run))
    assert proc.returncode == 1
    assert "refused to load" in one_error_line(proc) and "optimizer.pt" in one_error_line(proc)
    assert not pwned.exists()
    assert sorted(p.name for p in run.iterdir()) == before
    shutil.rmtree(run)


def test_booby_trapped_dataset_pickle_is_refused(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path / "data", n_train=10, n_test=10)
    pwned = tmp_path / "pwned"
    with (root / "cifar-10-batches-py" / "test_batch").open("wb") as f:
        pickle.dump({b"data": _Trap(pwned), b"labels": [0]}, f)
    proc = cli("run", "recipes/cifar_vgg_bn.yaml", f"data.root={root}", f"train.out_dir={tmp_path / 'runs'}")
    assert proc.returncode == 1
    assert "test_batch" in one_error_line(proc) and "refusing to load" in one_error_line(proc)
    assert not pwned.exists()


def test_secrets_never_reach_the_run_directory(tmp_path: Path) -> None:
    secret = "fake-wandb-key-0123456789abcdef"
    proc = cli("run", DIGITS, "train.epochs=1", "tracking.backend=csv", f"train.out_dir={tmp_path}",
               "tracking.entity=team", env={"WANDB_API_KEY": secret, "HF_TOKEN": secret})
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout + proc.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_non_finite_step_never_reaches_weights_or_optimizer_state() -> None:
    import torch
    from torch import nn

    from cnnforge.training.nonfinite import NonFiniteGuard

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    guard = NonFiniteGuard(optimizer, torch.device("cpu"), scaled=False)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))

    def step(scale: float) -> None:
        loss = nn.functional.cross_entropy(model(x) * scale, y)
        loss.backward()
        guard.check(loss, True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def tensors() -> list[torch.Tensor]:
        return [*model.parameters(), *(optimizer.state[p]["momentum_buffer"] for p in model.parameters())]

    step(1.0)
    before = [t.clone() for t in tensors()]
    step(float("nan"))
    # skipped on the device, nothing read on the host
    assert all(torch.equal(a, b) for a, b in zip(before, tensors(), strict=True))
    step(1.0)
    assert not torch.equal(before[0], model.weight)  # finite steps still train
    assert torch.stack(guard.counters()).tolist() == [1.0, 1.0]  # one bad step, one clean batch before it
