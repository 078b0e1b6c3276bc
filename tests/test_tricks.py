"""airbench's tricks as recipe options: lookahead, whitening init, bias LR multiplier, flip TTA (issue 19, item 4)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnforge
from cnnforge.training.run import resume
from tests.conftest import ROOT, cli_here, one_error_line

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
#: fastnet on the digits, brought to 16x16 (fastnet needs 9x9 or more); its stem fits whitening of grey 2x2 patches
FASTNET = ["model={name: fastnet, stem_width: 8, widths: [16, 32, 32]}", "augment.train=[{name: resize, size: 16}]"]


def _quick(tmp: Path, *extra: str) -> list[str]:
    return ["data.num_workers=0", "data.batch_size=64", f"train.out_dir={tmp}", "train.plots=false", *extra]


def _checkpoints(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("ckpt-*"))


def test_lookahead_ends_each_epoch_on_the_slow_weights(tmp_path: Path) -> None:
    plain = cnnforge.train(DIGITS, _quick(tmp_path / "plain", "train.epochs=2"), quiet=True)
    ahead = cnnforge.train(DIGITS, _quick(tmp_path / "ahead", "train.epochs=2", "train.lookahead={every: 3}"),
                           quiet=True)
    last = _checkpoints(ahead.run_dir)[-1]
    slow, model = torch.load(last / "lookahead.pt", weights_only=True), load_file(last / "model.safetensors")
    assert slow.keys() == {k for k in model if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert all(torch.equal(model[k], slow[k]) for k in slow)  # the epoch ended on the slow copy
    different = load_file(plain.weights)["head.1.weight"], load_file(ahead.weights)["head.1.weight"]
    assert not torch.equal(*different)


@pytest.mark.parametrize("position", ["e0000-b000014", "e0001-b000011"], ids=["before-start", "mid-epoch"])
def test_lookahead_resumes_bit_exact(tmp_path: Path, position: str) -> None:
    """From a checkpoint before lookahead starts (epoch 2) and from one in the middle of its first epoch."""
    run = cnnforge.train(DIGITS, _quick(tmp_path, "train.epochs=3", "train.checkpoint_every_steps=7",
                                        "train.keep_checkpoints=50", "train.lookahead={every: 2, start_epoch: 1}"),
                         quiet=True).run_dir
    uninterrupted = load_file(run / "model.safetensors")
    start = run / "checkpoints" / f"ckpt-{position}"
    assert (start / "lookahead.pt").exists() == (position != "e0000-b000014")
    resume(run, checkpoint=start, quiet=True)
    resumed = load_file(run / "model.safetensors")
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


def test_whiten_init_makes_the_stem_a_frozen_whitening_filter_bank(tmp_path: Path) -> None:
    from cnnforge.data.loading import build_splits
    from cnnforge.training.whiten import sample_images

    overrides = _quick(tmp_path, "train.epochs=1", *FASTNET, "train.whiten_init={samples: 300}")
    result = cnnforge.train(DIGITS, overrides, quiet=True)
    weights = load_file(result.weights)
    stem = weights["stem.weight"]
    assert stem.shape == (8, 1, 2, 2) and torch.equal(stem[4:], -stem[:4])  # filters and their negatives
    recipe = cnnforge.load_recipe(DIGITS, overrides)
    splits = build_splits(recipe)
    out = torch.nn.functional.conv2d(sample_images(splits.train, 300, splits.info), stem[:4].double())
    flat = out.transpose(0, 1).reshape(4, -1)
    assert torch.allclose(flat @ flat.T / flat.shape[1], torch.eye(4, dtype=torch.float64), atol=0.08)  # white
    again = cnnforge.train(DIGITS, [*overrides, "train.epochs=2"], quiet=True)
    assert torch.equal(load_file(again.weights)["stem.weight"], stem)  # frozen: training leaves it as initialised
    assert not torch.equal(load_file(again.weights)["stem.bias"], torch.zeros(8))  # the bias learns


def test_bias_lr_mult_gives_biases_and_norm_params_their_own_group(tmp_path: Path) -> None:
    result = cnnforge.train(DIGITS, _quick(tmp_path, "train.epochs=1", "optim.bias_lr_mult=4", "optim.lr=0.02",
                                           "optim.weight_decay=0.001", "optim.head_lr=0.1"), quiet=True)
    optimizer = torch.load(_checkpoints(result.run_dir)[-1] / "optimizer.pt", weights_only=True)
    groups = [(g["initial_lr"], g["weight_decay"]) for g in optimizer["param_groups"]]
    assert groups == [(0.02, 0.001), (0.08, 0.00025), (0.1, 0.001), (0.4, 0.00025)]  # body, biases, head, biases


def test_flip_tta_averages_the_mirror_images_logits_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = cnnforge.train(DIGITS, _quick(tmp_path, "train.epochs=1", "eval.tta=flip"), quiet=True)
    predictor = cnnforge.load_predictor(result.run_dir, device="cpu")
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        x = predictor.normalise(images)
        expected = torch.softmax((predictor.model(x) + predictor.model(x.flip(-1))) / 2, 1)
    assert torch.allclose(torch.from_numpy(predictor.probabilities(images.permute(0, 2, 3, 1).numpy())), expected,
                          atol=1e-6)
    proc = cli_here(capsys, "eval", str(result.run_dir))  # cnnforge eval reproduces the run's TTA test accuracy
    assert proc.returncode == 0, proc.stderr
    report = json.loads((result.run_dir / "reports" / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(result["test/acc"])


@pytest.mark.parametrize(("override", "key"), [
    ("train.lookahead={decay: 1.5}", "train.lookahead.decay"),
    ("train.lookahead={every: 0}", "train.lookahead.every"),
    ("train.lookahead={evry: 2}", "train.lookahead.evry"),
    ("train.whiten_init={samples: 0}", "train.whiten_init.samples"),
    ("train.whiten_init=3", "train.whiten_init"),
    ("optim.bias_lr_mult=0", "optim.bias_lr_mult"),
    ("eval.tta=mirror", "eval.tta"),
    ("eval.ttta=flip", "eval.ttta"),
])
def test_bad_trick_values_are_one_line_naming_the_key(override: str, key: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    proc = cli_here(capsys, "run", DIGITS, override, f"train.out_dir={tmp_path}")
    assert proc.returncode == 2
    assert f": {key}: " in one_error_line(proc)
    assert not any(tmp_path.iterdir())


def test_whiten_init_on_a_model_without_a_whitening_stem_is_a_config_error(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    proc = cli_here(capsys, "run", DIGITS, "train.whiten_init=true", *_quick(tmp_path))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "digits_convnet.yaml: train.whiten_init: needs the model's first layer to be a Conv2d" in line
    assert "Conv2d(1, 4, kernel_size=(3, 3)" in line
