"""The trainer through the public API and CLI: run directory, repeatability, resume, knobs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnforge
from cnnforge.training.run import resume
from tests.conftest import ROOT, cli

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")


def _quick(tmp: Path, *extra: str) -> list[str]:
    return ["data.num_workers=0", "data.batch_size=64", f"train.out_dir={tmp}", *extra]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_train_writes_the_run_directory(tmp_path: Path) -> None:
    result = cnnforge.train(DIGITS, _quick(tmp_path, "train.epochs=2"), quiet=True)
    run = result.run_dir
    assert run.parent == tmp_path / "digits_convnet"
    for name in ("recipe.yaml", "manifest.json", "metrics.jsonl", "summary.json", "model.safetensors", "checkpoints"):
        assert (run / name).exists(), name
    manifest = json.loads((run / "manifest.json").read_text())
    for key in ("cnnforge", "python", "torch", "accelerate", "git_commit", "plugins", "seed", "world_size", "device",
                "precision"):
        assert key in manifest, key
    assert manifest["world_size"] == 1 and manifest["device"] == "cpu"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train/loss", "val/loss", "val/acc", "lr", "time/epoch_s"} <= rows[0].keys()
    summary = json.loads((run / "summary.json").read_text())
    assert {"test/acc", "test/loss", "best/val/acc"} <= summary.keys()
    assert result["test/acc"] == summary["test/acc"] > 0.3  # two epochs already learn something
    assert cnnforge.load_recipe(run / "recipe.yaml").train.epochs == 2  # resolved recipe, overrides applied


def test_same_seed_is_bit_identical_and_seed_matters(tmp_path: Path) -> None:
    a = cnnforge.train(DIGITS, _quick(tmp_path / "a", "train.epochs=1"), quiet=True)
    b = cnnforge.train(DIGITS, _quick(tmp_path / "b", "train.epochs=1"), quiet=True)
    c = cnnforge.train(DIGITS, _quick(tmp_path / "c", "train.epochs=1", "seed=1"), quiet=True)
    assert_same_weights(a.run_dir, b.run_dir)
    assert not torch.equal(weights(a.run_dir)["head.1.weight"], weights(c.run_dir)["head.1.weight"])


@pytest.mark.parametrize(("ema", "old_checksum_name"), [([], False), (["train.ema=0.9"], False), ([], True)],
                         ids=["plain", "ema", "checkpoint-of-an-older-version"])
def test_resume_reaches_the_uninterrupted_weights(tmp_path: Path, ema: list[str], old_checksum_name: bool) -> None:
    full = cnnforge.train(DIGITS, _quick(tmp_path / "full", "train.epochs=4", *ema), quiet=True)

    def stop_after_two(row: dict, ckpt: Path | None) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cnnforge.train(DIGITS, _quick(tmp_path / "cut", "train.epochs=4", "train.checkpoint_every=1", *ema), quiet=True,
                       reporter=stop_after_two)
    run_dir = next((tmp_path / "cut" / "digits_convnet").iterdir())
    assert not (run_dir / "model.safetensors").exists()
    if old_checksum_name:  # checkpoints written before checksums.json was renamed from MANIFEST.json still resume
        for ckpt in (run_dir / "checkpoints").glob("ckpt-*"):
            (ckpt / "checksums.json").rename(ckpt / "MANIFEST.json")
    proc = cli("resume", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert f"run directory: {run_dir}" in proc.stdout
    assert_same_weights(full.run_dir, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


def test_ema_weights_are_evaluated_and_saved(tmp_path: Path) -> None:
    """train.ema: the saved model is the moving average of every step's weights; checkpoints keep both."""
    result = cnnforge.train(DIGITS, _quick(tmp_path, "train.epochs=2", "train.ema=0.95", "train.best_metric=train/loss",
                                           "train.best_mode=min"), quiet=True)
    run = result.run_dir
    [last] = [p for p in sorted((run / "checkpoints").glob("ckpt-*")) if p.name.startswith("ckpt-e0002")]
    average = torch.load(last / "callbacks.pt", weights_only=True)["train.ema"]  # the ema callback's state
    raw, saved = load_file(last / "model.safetensors"), weights(run)
    assert int(average["n_averaged"]) == result["steps"] > 1
    for key, value in saved.items():
        assert torch.equal(value, average[f"module.{key}"]), key
    assert not torch.equal(saved["head.1.weight"], raw["head.1.weight"])
    proc = cli("eval", str(run))  # test/acc of the summary came from the averaged weights
    assert proc.returncode == 0, proc.stderr
    report = json.loads((run / "reports" / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(result["test/acc"])


def test_ema_decay_warms_up() -> None:
    from cnnforge.training.ema import WeightEMA

    model = torch.nn.Linear(2, 1)
    ema = WeightEMA(model, decay=0.99)
    for step, value in enumerate([1.0, 3.0, 5.0]):
        model.weight.data.fill_(value)
        ema.update(model, step)
    first = 1.0 * (2 / 11) + 3.0 * (9 / 11)  # step 1: min(0.99, 2/11); step 0 copies
    assert ema.module.weight[0, 0].item() == pytest.approx(first * (3 / 12) + 5.0 * (9 / 12))


def test_resume_refuses_a_changed_recipe(tmp_path: Path) -> None:
    result = cnnforge.train(DIGITS, _quick(tmp_path, "train.epochs=1"), quiet=True)
    recipe = result.run_dir / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("lr: 0.01", "lr: 0.02"))
    with pytest.raises(cnnforge.ConfigError, match="recipe.yaml changed.*--force"):
        resume(result.run_dir)


@pytest.mark.parametrize(("optim", "schedule", "precision"), [
    ("sgd", "step", "no"), ("adamw", "onecycle", "bf16"), ("adam", "none", "fp16")])
def test_optimizers_schedules_precision_accumulation(tmp_path: Path, optim: str, schedule: str, precision: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    extra = [f"optim.name={optim}", f"schedule.name={schedule}", f"train.precision={precision}", "train.epochs=2",
             "train.grad_accum=2", "train.clip_grad_norm=1.0", "train.label_smoothing=0.1",
             f"optim.lr={0.05 if optim == 'sgd' else 0.005}"]
    result = cnnforge.train(DIGITS, _quick(tmp_path, *extra), quiet=True)
    notices = [r.getMessage() for r in caplog.records if "fp16 needs CUDA" in r.getMessage()]
    assert len(notices) == (precision == "fp16")  # no CUDA here: one notice and fp32, never a crash
    losses = [row["train/loss"] for row in result.history]
    assert losses[1] < losses[0] and torch.isfinite(torch.tensor(result["test/loss"]))
    lrs = [row["lr"] for row in result.history]
    if schedule == "step":  # StepLR(step_size=2, gamma=0.1) per epoch: decayed once two epochs are done
        assert lrs == pytest.approx([0.05, 0.005])


def test_main_job_cli_prints_accuracy_and_run_dir(tmp_path: Path) -> None:
    proc = cli("run", "recipes/digits_convnet.yaml", f"train.out_dir={tmp_path}", "-q")
    assert proc.returncode == 0, proc.stderr
    acc_line, dir_line = proc.stdout.strip().splitlines()[-2:]
    assert float(acc_line.split()[1]) >= 0.9  # the README's main job: a useful model in seconds
    assert Path(dir_line.removeprefix("run directory: ")).is_dir()


def test_python_m_from_another_directory(tmp_path: Path) -> None:
    proc = cli("run", DIGITS, "train.epochs=1", f"train.out_dir={tmp_path}", module=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" in proc.stdout + proc.stderr


def test_dataparallel_says_it_does_nothing_without_gpus(tmp_path: Path) -> None:
    proc = cli("run", DIGITS, *_quick(tmp_path, "train.epochs=1", "train.parallel=dp"))
    assert proc.returncode == 0, proc.stderr
    assert "train.parallel: dp does nothing here" in proc.stderr
