"""Messages that say what to do next: interrupted and finished runs, fp16 on a CPU, missing or empty data,
and which epoch counts as the best."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import ROOT, cli, one_error_line
from tests.datafiles import write_mnist

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")


def _quick(out_dir: Path, *extra: str) -> list[str]:
    return ["data.num_workers=0", f"train.out_dir={out_dir}", *extra]


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved_and_how_to_start_again(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "cnnforge")
    proc = subprocess.Popen([exe, "run", DIGITS, *_quick(tmp_path, "train.epochs=200", "train.checkpoint_every=0")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob("*/*/manifest.json")):  # the run directory exists: training has started
            assert proc.poll() is None and time.monotonic() < deadline, "the run never started"
            time.sleep(0.5)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    [run_dir] = [p.parent for p in tmp_path.glob("*/*/manifest.json")]
    assert proc.returncode == 130, out[-2000:]
    assert (f"interrupted before the first checkpoint: nothing was saved; start again with: "
            f"cnnforge run {run_dir / 'recipe.yaml'}") in out
    assert "cnnforge resume" not in out
    # the command repeats the run
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["train"]["epochs"] == 200


def test_fp16_without_cuda_is_one_notice_and_resuming_a_finished_run_says_so(tmp_path: Path) -> None:
    env = {"CUDA_VISIBLE_DEVICES": ""}
    proc = cli("run", DIGITS, *_quick(tmp_path, "train.epochs=1", "train.precision=fp16"), "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["train.precision: fp16 needs CUDA; training in fp32 on this machine"]
    [run_dir] = [p.parent for p in tmp_path.glob("*/*/summary.json")]

    again = cli("resume", str(run_dir), env=env)
    assert again.returncode == 0, again.stderr
    assert f"{run_dir} has trained all 1 epochs (ckpt-" in again.stdout
    assert "): nothing to train; again: test evaluation, summary.json and reports" in again.stdout
    assert "resuming" not in again.stdout and "epoch 2" not in again.stdout


def test_missing_and_empty_mnist_files_say_where_what_and_whence(tmp_path: Path) -> None:
    proc = cli("run", DIGITS, "data.name=mnist", f"data.root={tmp_path / 'nowhere'}", *_quick(tmp_path))
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert line.startswith(f"cnnforge: error: {(tmp_path / 'nowhere' / 'MNIST' / 'raw').resolve()}: no such folder")
    assert "train-images-idx3-ubyte" in line and "torchvision.datasets.MNIST" in line and "data.download: true" in line

    write_mnist(tmp_path / "m", gz=False)
    empty = tmp_path / "m" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    empty.write_bytes(b"")
    proc = cli("run", DIGITS, "data.name=mnist", f"data.root={tmp_path / 'm'}", *_quick(tmp_path))
    assert proc.returncode == 1
    assert one_error_line(proc).startswith(f"cnnforge: error: {empty}: is empty (0 bytes)")


def test_missing_image_folder_names_the_absolute_folder_and_the_layout(tmp_path: Path) -> None:
    recipe = str(ROOT / "recipes" / "resnet18_transfer.yaml")
    proc = cli("run", recipe, "data.root=data/hymenoptera_data", "model.pretrained=false", cwd=tmp_path)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert f"{tmp_path.resolve() / 'data' / 'hymenoptera_data'}: no such folder" in line
    assert "<class>/<image> folders, or train/ and val/" in line and "hymenoptera_data.zip" in line


def test_epochs_tied_on_val_acc_are_told_apart_by_val_loss(tmp_path: Path) -> None:
    # a learning rate so small that validation accuracy stalls while the loss still falls
    proc = cli("run", DIGITS, *_quick(tmp_path, "train.epochs=3", "optim.lr=0.00002", "schedule.name=none"), "-q")
    assert proc.returncode == 0, proc.stderr
    [run_dir] = [p.parent for p in tmp_path.glob("*/*/summary.json")]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    top = max(r["val/acc"] for r in rows)
    tied = [r for r in rows if r["val/acc"] == top]
    assert len(tied) >= 2, rows  # the situation under test
    expected = min(tied, key=lambda r: (r["val/loss"], r["epoch"]))["epoch"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best/epoch"] == expected != tied[0]["epoch"]

