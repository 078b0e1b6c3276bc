"""``data.on_device``: the training split indexed on the device gives the DataLoader's batches exactly."""
from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT, cli, cli_here, one_error_line

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")


def _weights(out: Path, *overrides: str) -> dict:
    proc = cli("run", DIGITS, "train.epochs=2", "data.num_workers=0", "train.plots=false", f"train.out_dir={out}",
               *overrides, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(next(out.rglob("model.safetensors")))


def test_on_device_trains_the_same_weights_as_the_loader(tmp_path: Path) -> None:
    batch_ops = ["augment.mode=batch", "augment.train=[{name: hflip}]"]  # augmented on the device, seeded per batch
    on = _weights(tmp_path / "on", "data.on_device=true", *batch_ops)
    off = _weights(tmp_path / "off", "data.on_device=false", *batch_ops)
    assert on.keys() == off.keys() and all((on[k] == off[k]).all() for k in on)


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
