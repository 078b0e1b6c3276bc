"""Class imbalance (issue 27): ``data.balance: loss|sampler``, ``train.class_weights``, ``balanced_acc`` and
``macro_f1``, the imbalance line and a class missing from the training split, on a skewed folder of shapes."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cnnforge
from cnnforge.recipe import load_recipe
from tests.conftest import cli, cli_here, one_error_line
from tests.datafiles import write_shapes
from tests.fake_dist import write_distribution
from tests.test_train import assert_same_weights

#: a folder as skewed as a real one: 7.5 circles for every triangle
SKEW = {"circle": 90, "square": 30, "triangle": 12}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("shapes"), SKEW)


def recipe(root: Path, out: Path, **train: Any) -> dict[str, Any]:
    """Seed 000's ConvNet on a grayscale shapes folder, in batches of 16 (5 steps an epoch), no plots."""
    return {"name": "shapes", "seed": 0,
            "data": {"name": "imagefolder", "root": str(root), "grayscale": True, "cache": "memory",
                     "batch_size": 16, "num_workers": 0},
            "model": {"name": "convnet"}, "optim": {"name": "adam", "lr": 0.01},
            "train": {"epochs": 1, "out_dir": str(out), "plots": False, **train}, "tracking": {"backend": "none"}}


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_class_scores_are_scikit_learns_with_a_class_missing_and_one_only_predicted() -> None:
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from cnnforge.training.eval_step import class_scores

    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 3], 200, p=[0.7, 0.2, 0.1])  # class 2 and 4 never true
    pred = np.where(rng.random(200) < 0.6, y, rng.choice([0, 1, 2, 3], 200))  # class 2 predicted, 4 never
    balanced, macro_f1 = class_scores(torch.from_numpy(pred), torch.from_numpy(y), 5)
    assert balanced == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    assert macro_f1 == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)


def test_a_skewed_run_says_so_and_reports_balanced_accuracy_and_macro_f1_everywhere(
        tmp_path: Path, shapes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = cnnforge.train(recipe(shapes, tmp_path, epochs=2, best_metric="val/balanced_acc"))
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("class imbalance")]
    big, small = map(int, re.search(r"'circle' has (\d+) training images, 'triangle' (\d+) ", line).groups())
    assert big >= 3 * small and "data.balance" in line and "val/balanced_acc" in line

    history = rows(result.run_dir)
    for row in history:
        assert 0 <= row["val/balanced_acc"] <= 1 and 0 <= row["val/macro_f1"] <= 1
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["best/val/balanced_acc"] == max(r["val/balanced_acc"] for r in history)
    report = json.loads((result.run_dir / "reports" / "metrics.json").read_text())  # scikit-learn's numbers
    assert summary["test/balanced_acc"] == pytest.approx(report["balanced_accuracy"], abs=1e-12)
    assert summary["test/macro_f1"] == pytest.approx(report["macro_f1"], abs=1e-12)
    assert "balanced accuracy" in (result.run_dir / "reports" / "summary.md").read_text()

    listed = cli_here(capsys, "runs", str(tmp_path), "--json")
    [run] = json.loads(listed.stdout)
    assert (run["test_balanced_acc"], run["test_macro_f1"]) == (summary["test/balanced_acc"], summary["test/macro_f1"])
    assert "test/bal_acc" in cli_here(capsys, "runs", str(tmp_path)).stdout


def test_balance_loss_weights_classes_by_inverse_frequency_and_explicit_weights_match(tmp_path: Path,
                                                                                      shapes: Path) -> None:
    from cnnforge.data.balance import class_weights
    from cnnforge.data.loading import build_splits, training_labels

    balanced = load_recipe(recipe(shapes, tmp_path, epochs=1), ["data.balance=loss"])
    train = build_splits(balanced).train
    weights = class_weights(balanced, train, 3)
    counts = np.bincount(training_labels(train), minlength=3)
    assert torch.allclose(weights * torch.from_numpy(counts).float(), torch.full((3,), counts.sum() / 3))
    assert class_weights(load_recipe(recipe(shapes, tmp_path)), train, 3) is None  # data.balance: none

    by_balance = cnnforge.train(balanced, quiet=True)
    explicit = cnnforge.train(recipe(shapes, tmp_path / "explicit", class_weights=weights.tolist()), quiet=True)
    plain = cnnforge.train(recipe(shapes, tmp_path / "plain"), quiet=True)
    assert_same_weights(by_balance.run_dir, explicit.run_dir)  # the same weights reach the loss
    assert not torch.equal(load_file(by_balance.weights)["head.1.weight"], load_file(plain.weights)["head.1.weight"])


def test_the_balanced_sampler_draws_classes_evenly_seeded_by_epoch_on_both_batch_paths(tmp_path: Path,
                                                                                      shapes: Path) -> None:
    from cnnforge.data.loading import build_splits, split_loader
    from cnnforge.training.batches import DeviceBatches, on_device

    r = load_recipe(recipe(shapes, tmp_path), ["data.balance=sampler"])
    train = build_splits(r).train
    labels = np.asarray(train.labels)

    def epoch_keys(epoch: int) -> list[tuple[int, int]]:
        loader = split_loader(train, r.data, r.seed, train=True)
        loader.sampler.use_epoch(epoch)
        return list(loader.sampler)

    first, again, second = epoch_keys(0), epoch_keys(0), epoch_keys(1)
    assert first == again and first != second and len(first) == len(train)
    for keys in (first, second):
        drawn = np.bincount(labels[[i for _, i in keys]], minlength=3)
        assert drawn.min() >= len(train) / 3 * 0.6, (drawn, np.bincount(labels))  # the shuffle has 7.5x
    loader = split_loader(train, r.data, r.seed, train=True)
    held = DeviceBatches(*on_device(train, torch.device("cpu")), loader.batch_sampler, loader.sampler)
    for epoch in (0, 1):
        loader.sampler.use_epoch(epoch)
        from_loader = [y for _, y in loader]
        from_device = [y for _, y in held.epoch(epoch)]
        assert all(torch.equal(a, b) for a, b in zip(from_loader, from_device, strict=True))


@pytest.mark.parametrize("on_device", ["false", "true"])
def test_a_balanced_run_resumed_mid_epoch_reaches_the_uninterrupted_weights(tmp_path: Path, shapes: Path,
                                                                             on_device: str) -> None:
    from cnnforge.training.run import resume

    overrides = ["data.balance=sampler", f"data.on_device={on_device}"]
    full = cnnforge.train(recipe(shapes, tmp_path / "full", epochs=2, checkpoint_every_steps=3, keep_checkpoints=10),
                          overrides, quiet=True)
    cut = tmp_path / "cut"
    shutil.copytree(full.run_dir, cut)
    for later in [p for p in (cut / "checkpoints").glob("ckpt-*") if p.name > "ckpt-e0001-b000004"]:
        shutil.rmtree(later)  # the newest left was written mid-way through the second epoch
    for name in ("summary.json", "model.safetensors"):
        (cut / name).unlink()
    resumed = resume(cut, quiet=True)
    assert_same_weights(full.run_dir, resumed.run_dir)
    assert rows(cut) == [{**row, **{k: v for k, v in new.items() if k.startswith("time/") or k.endswith("per_s")}}
                         for row, new in zip(rows(full.run_dir), rows(cut), strict=True)]


def test_a_class_missing_from_training_warns_by_name_and_is_still_scored_on_test(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from cnnforge.data.image_folder import list_image_folder
    from cnnforge.data.stratify import stratified_split

    root = write_shapes(tmp_path / "shapes", {"circle": 24, "square": 12, "triangle": 1})
    labels = list_image_folder(root).labels
    seed = next(s for s in range(100) if 2 in labels[stratified_split(labels, (0.6, 0.2, 0.2), s)[2]])
    with caplog.at_level(logging.WARNING, logger="cnnforge"):  # the one triangle went to the test split
        result = cnnforge.train({**recipe(root, tmp_path / "runs"), "seed": seed}, ["data.balance=loss"], quiet=True)
    assert "class 'triangle' has no training images" in caplog.text
    report = json.loads((result.run_dir / "reports" / "metrics.json").read_text())
    assert report["per_class"]["triangle"]["support"] == 1 and report["per_class"]["triangle"]["recall"] == 0
    assert result["test/balanced_acc"] == pytest.approx(report["balanced_accuracy"], abs=1e-12)


UNLABELLED = '''
import numpy as np

import cnnforge


class Unlabelled:
    """Gives each label only with its image (no ``labels`` array), like a lazy plugin dataset."""

    classes = ["a", "b"]

    def __len__(self):
        return 40

    def __getitem__(self, index):
        return np.full((8, 8, 1), index * 5, np.uint8), index % 2


@cnnforge.register_dataset
def unlabelled(*, root, split):
    """Forty 8x8 images whose labels are read one by one."""
    return Unlabelled() if split == "train" else None
'''


@pytest.mark.parametrize("balance", ["loss", "sampler"])
def test_balance_without_labels_in_memory_is_one_line_saying_what_to_do(tmp_path: Path, balance: str) -> None:
    site = write_distribution(tmp_path / "site", "cnnforge-unlabelled", "0.1", "cnnforge_unlabelled", UNLABELLED)
    python_path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = cli("run", str(Path(__file__).parents[1] / "recipes" / "digits_convnet.yaml"), "data.name=unlabelled",
               f"data.balance={balance}", f"train.out_dir={tmp_path / 'runs'}", env={"PYTHONPATH": python_path})
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "data.balance: needs the training labels in memory" in line and "`labels` array" in line
    assert not (tmp_path / "runs").exists()
