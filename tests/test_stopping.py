"""Stopping before ``train.epochs`` (issue 27): ``train.early_stop`` and ``train.max_time``, resumed exactly, and a
sweep trial that stops early."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import cnnforge
from cnnforge.recipe import load_recipe
from cnnforge.training.run import resume
from cnnforge.training.stopping import next_epoch_exceeds
from tests.conftest import DDP_LAUNCH, ROOT, cli_here
from tests.datafiles import write_shapes
from tests.test_imbalance import SKEW, recipe, rows
from tests.test_train import assert_same_weights

#: val/acc can never improve by 1.0: the first epoch sets the best, each later one counts towards the patience
NEVER_BETTER = {"metric": "val/acc", "patience": 3, "min_delta": 1.0}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("shapes"), SKEW)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize(("text", "seconds"), [("1h30m", 5400.0), ("45m", 2700.0), ("90s", 90.0), ("1.5h", 5400.0),
                                               ("2d 1s", 172801.0), (600, 600.0), (0.5, 0.5)])
def test_max_time_reads_units_or_seconds(text: str | float, seconds: float) -> None:
    value = load_recipe(ROOT / "recipes" / "digits_convnet.yaml", [f"train.max_time={text}"]).train.max_time
    assert value == seconds


def test_the_next_epoch_is_estimated_from_the_mean_and_the_last_epoch() -> None:
    assert not next_epoch_exceeds(100.0, spent=50.0, epochs_done=5, last_epoch=10.0)
    assert next_epoch_exceeds(100.0, spent=85.0, epochs_done=5, last_epoch=10.0)  # the mean epoch took 17 s
    assert next_epoch_exceeds(100.0, spent=60.0, epochs_done=6, last_epoch=45.0)  # the last one got slower


def test_early_stop_ends_training_says_why_and_a_resume_mid_patience_stops_at_the_same_epoch(
        tmp_path: Path, shapes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stopping = recipe(shapes, tmp_path / "full", epochs=6, early_stop=NEVER_BETTER)
    full = cnnforge.train(stopping)
    assert "early stop: val/acc has not improved for 3 evaluation(s)" in capsys.readouterr().out
    assert (summary(full.run_dir)["stopped"], summary(full.run_dir)["stopped_epoch"]) == ("early_stop", 4)
    assert [r["epoch"] for r in rows(full.run_dir)] == [1, 2, 3, 4]

    def stop_after_two(row: dict, ckpt: Path | None) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cnnforge.train({**stopping, "train": {**stopping["train"], "out_dir": str(tmp_path / "cut")}}, quiet=True,
                       reporter=stop_after_two)
    [cut] = (tmp_path / "cut" / "shapes").iterdir()
    [last] = sorted((cut / "checkpoints").glob("ckpt-*"))[-1:]
    assert json.loads((last / "state.json").read_text())["stale_evals"] == 1  # the patience count is mid-way
    resume(cut, quiet=True)
    assert_same_weights(full.run_dir, cut)
    assert (summary(cut)["stopped"], summary(cut)["stopped_epoch"]) == ("early_stop", 4)

    capsys.readouterr()
    resume(cut)  # a stopped run is finished: it is not trained on to train.epochs
    assert f"{cut} has stopped (early_stop) at epoch 4" in capsys.readouterr().out
    assert [r["epoch"] for r in rows(cut)] == [1, 2, 3, 4]
    assert "4/6 (early_stop)" in cli_here(capsys, "runs", str(tmp_path / "cut")).stdout


def test_max_time_ends_training_at_the_first_epoch_boundary_that_would_overrun(tmp_path: Path, shapes: Path) -> None:
    short = cnnforge.train(recipe(shapes, tmp_path, epochs=3, max_time=0.001), quiet=True)  # any epoch takes longer
    assert (summary(short.run_dir)["stopped"], summary(short.run_dir)["stopped_epoch"]) == ("max_time", 1)
    assert len(rows(short.run_dir)) == 1 and (short.run_dir / "model.safetensors").exists()
    ample = cnnforge.train(recipe(shapes, tmp_path, epochs=2, max_time="1d"), quiet=True)
    assert (summary(ample.run_dir)["stopped"], summary(ample.run_dir)["stopped_epoch"]) == ("epochs", 2)


@pytest.mark.slow
def test_under_ddp_rank_0s_clock_stops_every_rank_at_the_same_epoch(tmp_path: Path) -> None:
    proc = subprocess.run([*DDP_LAUNCH, "-m", "cnnforge", "run",
                           str(ROOT / "recipes" / "digits_convnet.yaml"), "train.epochs=3", "train.max_time=0.001",
                           "data.balance=sampler", f"train.out_dir={tmp_path}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = [p.parent for p in tmp_path.rglob("summary.json")]
    result = summary(run_dir)
    assert (result["stopped"], result["stopped_epoch"], result["world_size"]) == ("max_time", 1, 2)
    assert result["ranks_in_sync"] is True


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_sweep_trial_that_stops_early_reports_its_last_epoch_and_finishes(tmp_path: Path) -> None:
    """Two trials stop after epoch 2 of 6; Ray records both as done there, scored by val/balanced_acc."""
    result = cnnforge.tune(ROOT / "recipes" / "sweep_digits.yaml",
                           ["tune.grid={optim.lr: [0.003, 0.01]}", "tune.metric=val/balanced_acc", "train.epochs=6",
                            "train.early_stop={metric: val/acc, patience: 1, min_delta: 1.0}",
                            f"train.out_dir={tmp_path}"], quiet=True)
    assert result.exit_code == 0 and len(result.trials) == 2
    for trial in result.trials:
        assert (trial.status, trial.epochs) == ("done", 2) and 0 < trial.value <= 1
    runs = list(tmp_path.glob("sweep_digits/tune-*/*/runs/*/*/summary.json"))
    assert len(runs) == 2 and {json.loads(p.read_text())["stopped"] for p in runs} == {"early_stop"}
