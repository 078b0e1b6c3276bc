"""Non-finite losses, a failing DDP rank, booby-trapped pickles and secrets (issue: reliability)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DDP_LAUNCH, ROOT, cli, one_error_line
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
    proc = subprocess.run([*DDP_LAUNCH, "-m", "cnnforge", "run", DIGITS,
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
    from cnnforge.rundir.files import CHECKSUMS

    proc = cli("run", DIGITS, "train.epochs=1", "train.checkpoint_every=1", f"train.out_dir={tmp_path / 'runs'}")
    assert proc.returncode == 0, proc.stderr
    run = _run_dir(tmp_path / "runs")
    (run / "summary.json").unlink()
    ckpt = next((run / "checkpoints").glob("ckpt-*"))
    pwned = tmp_path / "pwned"
    with (ckpt / "optimizer.pt").open("wb") as f:
        pickle.dump({"state": _Trap(pwned)}, f)
    manifest = json.loads((ckpt / CHECKSUMS).read_text())  # an attacker can fix up the checksums too
    manifest["files"]["optimizer.pt"] = sha256(ckpt / "optimizer.pt")
    (ckpt / CHECKSUMS).write_text(json.dumps(manifest))
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
    from cnnforge.training.step_log import StepLog

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    guard, log = NonFiniteGuard(optimizer, torch.device("cpu"), scaled=False), StepLog(4, torch.device("cpu"))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))

    def step(batch: int, scale: float) -> None:
        logits = model(x) * scale
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        guard.check(loss, log.verdict(batch))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.record(logits, loss, y)

    def tensors() -> list[torch.Tensor]:
        return [*model.parameters(), *(optimizer.state[p]["momentum_buffer"] for p in model.parameters())]

    step(0, 1.0)
    before = [t.clone() for t in tensors()]
    step(1, float("nan"))
    # skipped on the device, nothing read on the host
    assert all(torch.equal(a, b) for a, b in zip(before, tensors(), strict=True))
    step(2, 1.0)
    assert not torch.equal(before[0], model.weight)  # finite steps still train
    first, sums, counters = log.fold()  # what a sync point reads
    assert (first, counters.tolist()) == (0, [1.0, 1.0])  # one bad step, one clean batch before it
    assert sums[2].item() == 16  # the non-finite batch's samples are not in the epoch's sums
    step(3, 1.0)
    assert (log.first, log.counters().tolist()) == (3, [0.0, 1.0])  # only the batches since the fold


# ------------------------------------------------- a finished run (conftest's digits_run), copied per test
def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


HOLDER = """
import sys, time
from pathlib import Path
from cnnforge.rundir import exclusive
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_one_process_per_run_directory_and_a_killed_holder_frees_it(tmp_path: Path, digits_run: Path) -> None:
    run = _copy(digits_run, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = cli("resume", str(run))
        assert proc.returncode == 1
        assert f"is in use by process {holder.pid}" in one_error_line(proc)
        assert "resuming" not in proc.stdout
    finally:
        holder.kill()  # SIGKILL: the OS drops the lock with the process, nothing stale stays behind
        holder.wait()
    proc = cli("resume", str(run))
    assert proc.returncode == 0, proc.stderr


def test_resume_keeps_every_intact_metrics_row_after_a_damaged_line(tmp_path: Path, digits_run: Path) -> None:
    run = _copy(digits_run, tmp_path)
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2
    # a line cut short in the middle of the file
    (run / "metrics.jsonl").write_text(rows[0] + "\n" + rows[1][:25] + "\n" + rows[1] + "\n")
    (run / "summary.json").unlink()
    proc = cli("resume", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "metrics.jsonl:2: damaged line skipped" in proc.stderr
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def _limited(max_bytes: int):  # noqa: ANN202
    """A subprocess whose files cannot grow past ``max_bytes``: a full disk as the writer sees it (EFBIG)."""
    import resource
    import signal

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


def _leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".tmp-" in p.name or (p.suffix == ".png" and p.stat().st_size == 0)]


def test_a_full_disk_during_eval_names_the_file_and_keeps_the_report(tmp_path: Path, digits_run: Path) -> None:
    run = _copy(digits_run, tmp_path)
    report = (run / "reports" / "metrics.json").read_bytes()
    proc = subprocess.run([str(Path(sys.executable).parent / "cnnforge"), "eval", str(run)], cwd=ROOT, text=True,
                          capture_output=True, preexec_fn=_limited(8_000), timeout=600)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert str(run / "reports") in line and "cannot write it" in line
    assert (run / "reports" / "metrics.json").read_bytes() == report
    assert _leftovers(run) == []


def test_a_full_disk_during_training_names_the_checkpoint_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    proc = subprocess.run([str(Path(sys.executable).parent / "cnnforge"), "run", DIGITS, "train.epochs=1",
                           f"train.out_dir={tmp_path}"], cwd=ROOT, text=True, capture_output=True,
                          preexec_fn=_limited(20_000), timeout=600)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "checkpoints" in line and "cannot write" in line and "internal error" not in line
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------ plugins cannot end or hijack the program
HOSTILE = '''
"""Builders that try to end the program, and a plugin that prints while it is used."""
import sys

import cnnforge

print("hostile plugin says hello")


@cnnforge.register_model
def exits_on_build(*, num_classes, in_channels):
    """Calls sys.exit(0) when built."""
    sys.exit(0)


@cnnforge.register_model
def interrupts_on_build(*, num_classes, in_channels):
    """Raises KeyboardInterrupt when built (no Ctrl-C was pressed)."""
    raise KeyboardInterrupt


@cnnforge.register_model
def chatty_convnet(*, num_classes, in_channels, image_size=None):
    """cnnforge's convnet, printing to stdout while it is built."""
    print("building chatty_convnet")
    return cnnforge.build_model("convnet", num_classes=num_classes, in_channels=in_channels, image_size=image_size)
'''


@pytest.fixture(scope="module")
def hostile_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = write_distribution(tmp_path_factory.mktemp("hostile"), "cnnforge-hostile", "0.1", "cnnforge_hostile",
                              HOSTILE)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("builder, raised",
                         [("exits_on_build", "SystemExit"), ("interrupts_on_build", "KeyboardInterrupt")])
def test_a_builder_cannot_end_the_program(tmp_path: Path, hostile_env: dict[str, str], builder: str,
                                          raised: str) -> None:
    proc = cli("run", DIGITS, f"model={{name: {builder}}}", f"train.out_dir={tmp_path}", env=hostile_env)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc)
    assert builder in line and raised in line and "cnnforge-hostile 0.1" in line
    assert not any(tmp_path.rglob("manifest.json"))


@pytest.mark.parametrize("statement", ["sys.exit(3)", "sys.exit(0)", "raise KeyboardInterrupt"])
def test_a_plugin_ending_the_program_on_import_is_only_that_plugins_failure(tmp_path: Path, statement: str) -> None:
    site = write_distribution(tmp_path, "cnnforge-quitter", "0.2", "cnnforge_quitter", f"import sys\n{statement}\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = cli("list", "models", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "convnet" in proc.stdout
    assert "cnnforge-quitter 0.2 failed to load" in proc.stderr
    assert ("SystemExit" if "exit" in statement else "KeyboardInterrupt") in proc.stderr


def test_a_real_ctrl_c_while_a_plugin_loads_still_interrupts(tmp_path: Path) -> None:
    import signal

    source = "import sys, time\nprint('loading', file=sys.stderr, flush=True)\ntime.sleep(120)\n"
    site = write_distribution(tmp_path, "cnnforge-slow", "0.1", "cnnforge_slow", source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "cnnforge"), "list", "models"], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    assert any(proc.stderr.readline().strip() == "loading" for _ in range(50))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)  # generous: without the interrupt the plugin ends after 120 s with 0
    assert proc.returncode == 130 and "cnnforge: interrupted" in err


def test_a_third_party_plugin_cannot_take_a_first_party_prefix(tmp_path: Path) -> None:
    source = '''
import cnnforge

@cnnforge.register_model("timm/", prefix=True)
def hijack(name, *, num_classes, in_channels):
    """Not timm."""
    raise RuntimeError("hijacked")
'''
    # "aaa-..." sorts before "timm": loaded by name alone, it would come first and take timm/
    site = write_distribution(tmp_path, "aaa-hijack", "6.6", "aaa_hijack", source)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = cli("list", "models", env=env)
    assert proc.returncode == 0, proc.stderr
    timm_row = next(line for line in proc.stdout.splitlines() if line.startswith("timm/"))
    assert "cnnforge-timm" in timm_row
    warning = next(line for line in proc.stderr.splitlines() if "failed to load" in line)
    assert "from aaa-hijack 6.6" in warning and "registered twice" in warning


def test_predict_json_stays_json_when_a_plugin_prints(tmp_path: Path, hostile_env: dict[str, str]) -> None:
    from PIL import Image

    out = tmp_path / "runs"
    proc = cli("run", DIGITS, "model={name: chatty_convnet}", "train.epochs=1", "train.plots=false",
               f"train.out_dir={out}", env=hostile_env)
    assert proc.returncode == 0, proc.stderr
    image = tmp_path / "digit.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(image)
    proc = cli("predict", "--json", str(_run_dir(out)), str(image), env=hostile_env)
    assert proc.returncode == 0, proc.stderr
    predictions = json.loads(proc.stdout)  # nothing the plugin printed is mixed in
    assert predictions[0]["image"] == str(image) and predictions[0]["label"] in [str(d) for d in range(10)]
    assert "building chatty_convnet" in proc.stderr


def test_bad_images_are_skipped_and_odd_class_names_reach_the_report(tmp_path: Path) -> None:
    import cnnforge
    from tests.datafiles import write_image_folder

    root = write_image_folder(tmp_path / "images", classes=("cat", "dog"), per_class=6, size=8)
    os.rename(root / "dog", os.path.join(os.fsencode(root), b"d\xf6g"))  # a Latin-1 folder name: not UTF-8
    (root / "cat" / "000.png").write_bytes(b"")  # a zero-byte image
    overrides = [f"data={{name: imagefolder, root: '{root}', on_bad_image: skip}}", "data.split=[0.5, 0.25, 0.25]",
                 "train.epochs=1", f"train.out_dir={tmp_path / 'runs'}"]
    from cnnforge.data.loading import build_splits

    assert len(build_splits(cnnforge.load_recipe(DIGITS, overrides)).train.base) == 11  # the empty file is skipped
    result = cnnforge.train(DIGITS, overrides, quiet=True)
    report = json.loads((result.run_dir / "reports" / "metrics.json").read_text())
    assert report["classes"] == ["cat", "d\\xf6g"]  # the byte spelled out: two such names never collide
    assert (result.run_dir / "reports" / "confusion_matrix.png").stat().st_size > 0
