"""``cnnforge lr-find`` and ``optim.lr: auto``: the learning-rate range test on a recipe's own parts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import cnnforge
from cnnforge.training.lr_finder import valley
from cnnforge.training.run import resume
from tests.conftest import DDP_LAUNCH, ROOT, cli_here, one_error_line
from tests.test_train import assert_same_weights, weights

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")


@cnnforge.register_model
def nan_net(*, num_classes: int, in_channels: int, image_size: tuple[int, int] | None = None) -> nn.Module:
    """A linear model whose weights are NaN: its loss is non-finite from the first step."""
    height, width = image_size or (8, 8)
    layer = nn.Linear(in_channels * height * width, num_classes)
    nn.init.constant_(layer.weight, float("nan"))
    return nn.Sequential(nn.Flatten(), layer)


def _quick(tmp: Path, *extra: str) -> list[str]:
    return ["data.num_workers=0", f"train.out_dir={tmp}", *extra]


def test_valley_picks_two_thirds_down_the_longest_fall_not_its_steep_end() -> None:
    lrs = [10.0 ** (k / 4 - 6) for k in range(30)]  # 1e-6 .. ~1e1
    # flat and noisy, a long gentle fall over points 10..22 (a bump at 15 does not cut it), then divergence
    loss = [2.0, 2.01] * 5 + [1.9, 1.8, 1.7, 1.6, 1.5, 1.55, 1.4, 1.3, 1.2, 1.1, 1.0, 0.5, 0.4] + [3.0] * 7
    # the longest decreasing run: 2.01 at 7, 2.0 at 8, down to 0.4 at 22 with the bump left out: 14 points, so
    # start = 22 - 14 = 8, and two thirds down it is 8 + int(14 / 3) + int(14 / 3 / 2) = 14
    assert valley(lrs, loss) == float(f"{lrs[14]:.3g}")
    assert valley(lrs, loss) < lrs[21]  # the steepest drop (1.0 -> 0.5) is further right, near divergence
    assert valley(lrs[:2], loss[:2]) is None
    assert valley([1e-3, 1e-2, 1e-1, 1.0], [2.0, float("nan"), 1.0, float("inf")]) is None  # 2 finite points


def test_lr_find_writes_curve_and_suggestion_and_keeps_no_model(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "finder"
    proc = cli_here(capsys, "lr-find", DIGITS, *_quick(tmp_path), "--steps", "40", "--start", "1e-4", "--end", "1e4",
                    "--out", str(out), "optim.name=sgd")
    assert proc.returncode == 0, proc.stderr
    found = json.loads((out / "lr_find.json").read_text())
    assert f"suggested optim.lr {found['lr']:.3g}" in proc.stdout
    assert found["stopped"] == "diverged" and len(found["lrs"]) < 40  # SGD blows up long before lr 1e4
    assert len(found["lrs"]) == len(found["losses"]) == len(found["smoothed"])
    assert found["lrs"] == sorted(found["lrs"]) and found["lrs"][0] == pytest.approx(1e-4)
    assert 1e-4 < found["lr"] < found["lrs"][-1]
    assert (out / "lr_find.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["lr_find.json", "lr_find.png"]


def test_loss_non_finite_from_the_first_step_is_one_line_and_the_plot_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "lr-find", DIGITS, *_quick(tmp_path), "model={name: nan_net}", "--steps", "20")
    line = one_error_line(proc)
    assert proc.returncode == 2 and "non-finite from the first step" in line and "digits_convnet.yaml" in line
    seen = tmp_path / "digits_convnet" / "lr_find"
    assert (seen / "lr_find.png").stat().st_size > 0
    assert json.loads((seen / "lr_find.json").read_text())["stopped"] == "non-finite"


@pytest.mark.parametrize(("args", "where"), [(["--steps", "1"], "--steps"), (["--start", "1", "--end", "0.1"], "--end"),
                                             (["optim.lr=auto", "optim.head_lr=0.1"], "optim")])
def test_bad_finder_settings_are_one_line(args: list[str], where: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "lr-find", DIGITS, *_quick(tmp_path), *args)
    assert proc.returncode == 2 and where in one_error_line(proc)
    assert not any(tmp_path.iterdir())


def test_optim_lr_auto_records_the_value_and_trains_as_that_number(tmp_path: Path) -> None:
    """onecycle needs its peak before training: it gets the finder's value. The run is the one the recorded
    number gives (same weights), and a resume trains on with it, without a new range test."""
    auto = cnnforge.train(DIGITS, _quick(tmp_path / "auto", "optim.lr=auto", "schedule.name=onecycle",
                                         "train.epochs=2", "train.checkpoint_every=1"), quiet=True)
    recorded = yaml.safe_load((auto.run_dir / "recipe.yaml").read_text())["optim"]["lr"]
    entry = json.loads((auto.run_dir / "manifest.json").read_text())["lr_find"]
    assert isinstance(recorded, float) and entry["lr"] == recorded and entry["file"] == "reports/lr_find.json"
    assert json.loads((auto.run_dir / "reports" / "lr_find.json").read_text())["lr"] == recorded
    fixed = cnnforge.train(DIGITS, _quick(tmp_path / "fixed", f"optim.lr={recorded}", "schedule.name=onecycle",
                                          "train.epochs=2", "train.checkpoint_every=1"), quiet=True)
    assert_same_weights(auto.run_dir, fixed.run_dir)
    final = weights(auto.run_dir)
    shutil.rmtree(max((auto.run_dir / "checkpoints").glob("ckpt-*")))  # as if killed before the last checkpoint
    (auto.run_dir / "model.safetensors").unlink()
    resumed = resume(auto.run_dir, quiet=True)
    assert resumed.metrics["epochs"] == 2
    assert all(torch.equal(final[k], v) for k, v in weights(auto.run_dir).items())


@pytest.mark.slow
def test_two_process_lr_find_and_auto_take_one_value_on_every_rank(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*DDP_LAUNCH, "-m", "cnnforge", *args, *_quick(tmp_path)]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)

    found = launch("lr-find", DIGITS, "--steps", "30", "--out", str(tmp_path / "finder"))
    assert found.returncode == 0, found.stderr[-3000:]
    assert found.stdout.count("suggested optim.lr") == 1  # printed by the main process only
    assert json.loads((tmp_path / "finder" / "lr_find.json").read_text())["steps"] <= 30
    run = launch("run", DIGITS, "optim.lr=auto", "train.epochs=1")
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = next(tmp_path.rglob("manifest.json")).parent
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["lr_find"]["lr"] > 0
    assert json.loads((run_dir / "summary.json").read_text())["ranks_in_sync"] is True  # one LR on both ranks


def test_folder_small_runs_on_a_skewed_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The packaged recipe for a user's own folder, pointed at one: 3 classes of 30, 12 and 6 images."""
    from tests.datafiles import write_image_folder

    root = tmp_path / "images"
    for seed, (name, count) in enumerate((("good", 30), ("scratch", 12), ("dent", 6))):
        write_image_folder(root, classes=(name,), per_class=count, size=40, suffix=".jpg", seed=seed)
    proc = cli_here(capsys, "run", "folder_small", f"data.root={root}", "train.epochs=1", "data.image_size=32",
                    "data.num_workers=0", f"train.out_dir={tmp_path / 'runs'}")
    assert proc.returncode == 0, proc.stderr
    run_dir = next((tmp_path / "runs").rglob("manifest.json")).parent
    assert "suggested optim.lr" in proc.stdout
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["optim"]["lr"] == pytest.approx(
        json.loads((run_dir / "manifest.json").read_text())["lr_find"]["lr"])
    assert json.loads((run_dir / "summary.json").read_text())["test/samples"] > 0
