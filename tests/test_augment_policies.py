"""torchvision's augmentation policies as registered ops: grayscale and RGB, seeded per (seed, epoch, index)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import cnnforge
from cnnforge.data.loading import build_splits, make_loader
from cnnforge.data.pipeline import build_pipeline, seed_pipeline
from cnnforge.recipe.schema import OpSpec
from tests.conftest import ROOT, cli, one_error_line

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
POLICIES = [{"name": "rand_augment", "num_ops": 3, "magnitude": 15}, {"name": "trivial_augment"},
            {"name": "auto_augment", "policy": "svhn"}, {"name": "augmix", "severity": 5},
            {"name": "random_erasing", "p": 1.0, "value": 255}]


def _pipeline(*specs: dict[str, Any]) -> Any:
    return build_pipeline([OpSpec(**s) for s in specs]).transform


def test_policies_are_registered_by_cnnforge() -> None:
    for spec in POLICIES:
        assert cnnforge.registry.augmentations.get(spec["name"]).package == "cnnforge"


@pytest.mark.parametrize("shape", [(12, 12), (12, 12, 1), (12, 12, 3)])
@pytest.mark.parametrize("spec", POLICIES, ids=lambda s: s["name"])
def test_policy_composes_with_albumentations_ops_on_gray_and_rgb(spec: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Between albumentations ops in one pipeline: the same seed gives the same image, other seeds other images;
    torch's global RNG (saved in checkpoints) is left alone."""
    pipe = _pipeline({"name": "hflip"}, spec, {"name": "cutout", "size": 3})
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    rng_before = torch.get_rng_state()
    outputs = []
    for seed in (0, 0, 1, 2, 3):
        seed_pipeline(pipe, np.random.default_rng(seed))
        outputs.append(pipe(image=image)["image"])
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(out.shape == image.shape and out.dtype == np.uint8 for out in outputs)
    assert np.array_equal(outputs[0], outputs[1])
    assert len({out.tobytes() for out in outputs}) >= 3


def test_random_erasing_fills_a_rectangle_with_its_value() -> None:
    pipe = _pipeline({"name": "random_erasing", "p": 1.0, "value": 7, "scale": [0.1, 0.2]})
    image = np.full((20, 20, 3), 200, np.uint8)
    seed_pipeline(pipe, np.random.default_rng(0))
    erased = (pipe(image=image)["image"] == 7).all(axis=2)
    rows, cols = np.nonzero(erased)
    assert 0.1 * 400 * 0.8 <= erased.sum() <= 0.2 * 400 * 1.2
    assert erased.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # one filled rectangle
    never = _pipeline({"name": "random_erasing", "p": 0.0})
    assert np.array_equal(never(image=image)["image"], image)


def _epochs(workers: int, augment: list[dict[str, Any]]) -> list[torch.Tensor]:
    recipe = cnnforge.load_recipe({"name": "t", "seed": 3, "data": {"name": "digits", "num_workers": workers},
                                   "augment": {"train": augment}})
    train = build_splits(cnnforge.check_recipe(recipe)).train
    loader = make_loader(train, batch_size=64, shuffle=True, seed=3, num_workers=workers)
    batches = []
    for epoch in (0, 1):
        loader.sampler.use_epoch(epoch)
        batches.append(torch.cat([x for x, _ in loader]))
    return batches


def test_batches_do_not_depend_on_num_workers() -> None:
    """Each sample's draw is fixed by (seed, epoch, index): worker processes see what the main process sees."""
    augment = [{"name": "rand_augment", "magnitude": 12}, {"name": "random_erasing"}]
    alone, workers = _epochs(0, augment), _epochs(2, augment)
    assert all(torch.equal(a, w) for a, w in zip(alone, workers, strict=True))
    assert not torch.equal(alone[0], alone[1])


@pytest.mark.parametrize(("op", "where", "words"), [
    ("{name: auto_augment, policy: cifar}", "augment.train[0].policy", "did you mean cifar10"),
    ("{name: rand_augment, magnitude: 31}", "augment.train[0].magnitude", "less than or equal to 30"),
    ("{name: rand_augment, num_op: 3}", "augment.train[0].num_op", "did you mean num_ops"),
    ("{name: random_erasing, value: 300}", "augment.train[0].value", "less than or equal to 255"),
    ("{name: trivial_augmnet}", "augment.train[0].name", "did you mean trivial_augment"),
])
def test_bad_policy_parameters_are_one_line(op: str, where: str, words: str) -> None:
    proc = cli("check", DIGITS, f"augment.train=[{op}]")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert f"{DIGITS}: {where}" in line and words in line, line


def test_preview_shows_a_policy(tmp_path: Path) -> None:
    out = tmp_path / "policy.png"
    proc = cli("augment", "preview", DIGITS, "augment.train=[{name: rand_augment}]", "--out", str(out), "--n", "4")
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 1000 and not (tmp_path / "policy-batch.png").exists()
