"""Experiment tracking (wandb offline, TensorBoard, CSV) through Accelerate's trackers, from the CLI."""
from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from cnnforge.recipe import load_recipe
from cnnforge.training.tracking import CSVTracker, flat_config, wandb_mode
from tests.conftest import DDP_LAUNCH, cli

FAKE_KEY = "fakewandbkey0123456789abcdef0123456789abcd"


def _recipe(tmp: Path, backend: str, **tracking: object) -> Path:
    path = tmp / "tracked.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tracked", "data": {"name": "digits", "batch_size": 64, "num_workers": 0},
        "model": {"name": "convnet"}, "optim": {"name": "adam", "lr": 0.003},
        "train": {"epochs": 2, "out_dir": str(tmp / "runs")}, "tracking": {"backend": backend, **tracking},
    }))
    return path


def _train(tmp: Path, backend: str, *overrides: str) -> Path:
    """In-process (the CLI's start-up is tested with wandb below): the run directory."""
    import cnnforge

    return cnnforge.train(_recipe(tmp, backend), overrides, quiet=True).run_dir


def _run_dir(tmp: Path) -> Path:
    runs = [p.parent for p in (tmp / "runs").rglob("manifest.json")]
    assert len(runs) == 1, runs
    return runs[0]


def _wandb_env(tmp: Path) -> dict[str, str]:
    """wandb's own caches and settings inside the test's folder, never the user's."""
    return {"WANDB_MODE": "offline", "WANDB_DATA_DIR": str(tmp / "wandb-data"),
            "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
            "WANDB_CONFIG_DIR": str(tmp / "wandb-config")}


def test_csv_backend_logs_config_epochs_and_final_metrics(tmp_path: Path) -> None:
    run = _train(tmp_path, "csv")
    with (run / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"]
    assert all(float(r["val/acc"]) > 0 for r in rows)
    assert rows[-1]["test/acc"] and not rows[0]["test/acc"]  # final metrics join the last epoch's row
    hparams = yaml.safe_load((run / "csv" / "hparams.yaml").read_text())
    assert hparams["optim.lr"] == 0.003 and hparams["model.name"] == "convnet"


def test_csv_tracker_replaces_repeated_steps_like_a_resume(tmp_path: Path) -> None:
    first = CSVTracker(tmp_path)
    first.start()
    for step in (1, 2, 3):
        first.log({"val/acc": step / 10}, step=step)
    again = CSVTracker(tmp_path)  # a resumed run restarts at epoch 2
    again.start()
    again.log({"val/acc": 0.25, "lr": 0.1}, step=2)
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"step": "1", "val/acc": "0.1", "lr": ""}, {"step": "2", "val/acc": "0.25", "lr": "0.1"}]


def test_tensorboard_backend_writes_scalars_image_and_hparams(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(tmp_path, "tensorboard")
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert [e.step for e in events.Scalars("val/acc")] == [1, 2]
    assert [e.step for e in events.Scalars("test/acc")] == [2]
    image = events.Images("test/confusion_matrix/0" if "test/confusion_matrix/0" in tags["images"]
                          else "test/confusion_matrix")[0]
    assert image.width > 300 and image.height > 300, tags["images"]
    assert list((run / "tensorboard").rglob("hparams.yml"))


def test_wandb_offline_run_keeps_the_api_key_out_of_the_run_directory(tmp_path: Path) -> None:
    env = {**_wandb_env(tmp_path), "WANDB_API_KEY": FAKE_KEY}
    proc = cli("run", str(_recipe(tmp_path, "wandb", log_model=True)), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run_dir(tmp_path)
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list(run.rglob("*"))
    record = next(offline[0].glob("*.wandb")).read_bytes()
    for logged in (b"optim.lr", b"val/acc", b"test/acc", b"test/confusion_matrix", b"tracked-model",
                   b"model.safetensors"):
        assert logged in record, logged
    assert list(offline[0].rglob("media/images/test/confusion_matrix*.png"))
    leaked = [p for p in run.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert not leaked
    assert FAKE_KEY not in proc.stdout + proc.stderr
    assert proc.stderr.strip() == "", proc.stderr[-2000:]  # wandb stays silent; offline is the normal case


def test_wandb_is_offline_without_a_login_and_online_with_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.org login me password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    netrc.write_text("machine wandb.example.org login user password key\n")  # what `wandb login` writes
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # an explicit choice always wins
    assert wandb_mode() == "disabled"


def test_unreachable_wandb_server_is_one_error_line(tmp_path: Path) -> None:
    env = {**_wandb_env(tmp_path), "WANDB_MODE": "online", "WANDB_API_KEY": FAKE_KEY,
           "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_INIT_TIMEOUT": "5"}
    proc = cli("run", str(_recipe(tmp_path, "wandb")), cwd=tmp_path, env=env)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("cnnforge: error:")]
    assert len(lines) == 1 and "tracking.backend: wandb tracking could not start" in lines[0], proc.stderr[-2000:]
    assert "WANDB_MODE=offline" in lines[0] and "Traceback" not in proc.stderr


def test_backend_none_writes_no_tracker_files(tmp_path: Path) -> None:
    run = _train(tmp_path, "none", "train.epochs=1")
    assert not any((run / d).exists() for d in ("csv", "tensorboard", "wandb"))


def test_flat_config_uses_override_keys_and_scalar_values(tmp_path: Path) -> None:
    config = flat_config(load_recipe(_recipe(tmp_path, "csv")))
    assert config["optim.lr"] == 0.003 and config["train.epochs"] == 2 and config["data.name"] == "digits"
    assert config["data.split"] == "[0.6, 0.2, 0.2]"  # lists become JSON text (TensorBoard hparams take scalars)
    assert all(v is None or isinstance(v, (bool, int, float, str)) for v in config.values())


@pytest.mark.slow
def test_only_the_main_process_logs_under_ddp(tmp_path: Path) -> None:
    proc = subprocess.run([*DDP_LAUNCH, "-m", "cnnforge", "run",
                           str(_recipe(tmp_path, "csv"))], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (_run_dir(tmp_path) / "csv" / "metrics.csv").open() as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2"]
    assert proc.stdout.count("epoch 2/2") == 1  # one progress line per epoch, from rank 0 only
