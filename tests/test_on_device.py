"""``data.on_device``: the splits held on the device give the DataLoaders' batches exactly."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import DDP_LAUNCH, ROOT, cli, cli_here, one_error_line

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")


def _run(out: Path, *overrides: str) -> tuple[dict, list[dict], dict]:
    """The final weights, the metrics rows without timings, and the summary's test metrics of one run."""
    proc = cli("run", DIGITS, "train.epochs=2", "data.num_workers=0", "train.plots=false", f"train.out_dir={out}",
               *overrides, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in next(out.rglob("metrics.jsonl")).read_text().splitlines()]
    summary = json.loads(next(out.rglob("summary.json")).read_text())
    timings = ("time/epoch_s", "time/data_wait_s", "train/samples_per_s")
    return (load_file(next(out.rglob("model.safetensors"))),
            [{k: v for k, v in row.items() if k not in timings} for row in rows],
            {k: summary[k] for k in ("test/acc", "test/loss", "test/samples")})


def test_on_device_trains_and_evaluates_as_the_loader(tmp_path: Path) -> None:
    batch_ops = ["augment.mode=batch", "augment.train=[{name: hflip}]"]  # augmented on the device, seeded per batch
    on, on_rows, on_test = _run(tmp_path / "on", "data.on_device=true", *batch_ops)
    off, off_rows, off_test = _run(tmp_path / "off", "data.on_device=false", *batch_ops)
    assert on.keys() == off.keys() and all((on[k] == off[k]).all() for k in on)
    # validation and test slice the splits held on the device: the loaders' metrics, to the last bit
    assert on_rows == off_rows and len(on_rows) == 2 and "val/loss" in on_rows[0]
    assert on_test == off_test and on_test["test/samples"] > 0


def test_on_device_true_with_per_sample_augmentation_is_a_config_error(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    proc = cli_here(capsys, "run", DIGITS, "data.on_device=true", "augment.train=[{name: hflip}]",
                    f"train.out_dir={tmp_path}")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "data.on_device" in line and "augment.mode: batch" in line


def test_a_bad_on_device_value_names_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "check", DIGITS, "data.on_device=sometimes")
    assert proc.returncode == 2 and "data.on_device" in one_error_line(proc)


@pytest.mark.slow
def test_on_device_under_ddp_trains_each_ranks_shard_as_the_loader(tmp_path: Path) -> None:
    """Every rank holds the split and gathers the batches Accelerate's sharded batch sampler gives it (padded)."""
    def weights(out: Path, setting: str) -> dict:
        cmd = [*DDP_LAUNCH, "-m", "cnnforge", "run", DIGITS,
               "train.epochs=1", "data.batch_size=40", "data.num_workers=0", "train.plots=false",  # 27 batches: padded
               f"data.on_device={setting}", f"train.out_dir={out}"]
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return load_file(next(out.rglob("model.safetensors")))

    on, off = weights(tmp_path / "on", "true"), weights(tmp_path / "off", "false")
    assert on.keys() == off.keys() and all((on[k] == off[k]).all() for k in on)
