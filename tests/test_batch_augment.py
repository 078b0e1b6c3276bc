"""``augment.mode: batch``: per-sample random ops on whole batches, seeded by (epoch, batch, rank)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cnnforge
from cnnforge.data.batch_augment import BatchAugment, make_batch_augment
from cnnforge.data.loading import build_splits
from tests.conftest import cli, one_error_line

DIGITS = "recipes/digits_convnet.yaml"


def augmenter(*ops: str) -> BatchAugment:
    overrides = ["augment.mode=batch", f"augment.train=[{', '.join(ops)}]"]
    aug = make_batch_augment(cnnforge.check_recipe(cnnforge.load_recipe(DIGITS, overrides)))
    assert aug is not None
    return aug


def images(n: int = 16, channels: int = 3, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)


def test_sample_mode_has_no_batch_augmenter() -> None:
    assert make_batch_augment(cnnforge.load_recipe(DIGITS)) is None


def test_same_key_same_batch_other_key_other_batch() -> None:
    aug = augmenter("{name: rotate, limit: 30}", "{name: cutout, size: 6}", "{name: hflip}")
    x = images()
    assert torch.equal(aug(x, (0, 3, 0)), aug(x, (0, 3, 0)))
    for other in [(1, 3, 0), (0, 4, 0), (0, 3, 1)]:  # another epoch, batch, or DDP rank
        assert not torch.equal(aug(x, (0, 3, 0)), aug(x, other))


def test_parameters_differ_per_sample() -> None:
    x = images(1).expand(8, -1, -1, -1)
    out = augmenter("{name: rotate, limit: 30}")(x, (0, 0, 0))
    assert len({tuple(o.flatten()[:2000].tolist()) for o in out}) == 8


def test_flips_mirror_exactly() -> None:
    x = images()
    assert torch.equal(augmenter("{name: hflip, p: 1.0}")(x, (0, 0, 0)), x.float().flip(3))
    assert torch.equal(augmenter("{name: vflip, p: 1.0}")(x, (0, 0, 0)), x.float().flip(2))
    half = augmenter("{name: hflip}")(x, (0, 0, 0))  # p 0.5: some samples flipped, some not
    flipped = [torch.equal(h, s.float().flip(2)) for h, s in zip(half, x, strict=False)]
    assert any(flipped) and not all(flipped)


def test_p_zero_leaves_images_alone() -> None:
    x = images()
    out = augmenter("{name: color_jitter, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.0}",
                    "{name: rotate, p: 0.0}", "{name: cutout, p: 0.0}", "{name: hflip, p: 0.0}")(x, (0, 0, 0))
    assert torch.allclose(out, x.float(), atol=1e-3)


def test_hue_and_saturation_keep_grays_gray() -> None:
    gray = images(8, 1).expand(-1, 3, -1, -1)
    out = augmenter("{name: color_jitter, saturation: 0.5, hue: 0.2}")(gray, (0, 0, 0))
    assert torch.allclose(out, gray.float(), atol=1e-2)
    colour = images(8)
    assert (augmenter("{name: color_jitter, hue: 0.2}")(colour, (0, 0, 0)) - colour.float()).abs().max() > 5


def test_cutout_zeroes_one_square_per_chosen_sample() -> None:
    out = augmenter("{name: cutout, size: 8, p: 1.0}")(images(), (0, 0, 0))
    assert ((out == 0).sum(dim=(2, 3)) == 64).all()


def test_random_crop_cuts_windows_of_the_padded_image() -> None:
    x = images(4)
    out = augmenter("{name: random_crop, size: 24}")(x, (0, 0, 0))
    assert out.shape == (4, 3, 24, 24)
    for o, s in zip(out, x.float(), strict=False):
        assert any(torch.equal(o, s[:, t:t + 24, left:left + 24]) for t in range(9) for left in range(9))
    padded = augmenter("{name: random_crop, size: 32, padding: 2}")(x, (0, 0, 0))
    assert padded.shape == x.shape


def test_training_in_batch_mode_is_reproducible(tmp_path: Path) -> None:
    overrides = ["augment.mode=batch", "train.epochs=1", f"train.out_dir={tmp_path}",
                 "augment.train=[{name: rotate, limit: 15}, {name: random_crop, size: 8, padding: 1}]"]
    recipe = cnnforge.load_recipe(DIGITS, overrides)
    assert build_splits(recipe).train.transform is None  # the loader leaves the train split to the trainer
    first = cnnforge.train(recipe, quiet=True)
    second = cnnforge.train(recipe, quiet=True)
    assert first.run_dir != second.run_dir
    assert first.weights.read_bytes() == second.weights.read_bytes()


@pytest.mark.parametrize(("train", "where"), [
    ("[{name: perspective}]", "augment.train[0].name"),
    ("cifar_standard", "augment.train"),
    ("[{name: hflip}, {name: random_crop, size: 8, pading: 1}]", "augment.train[1].pading"),
])
def test_ops_without_a_batched_form_fail_before_training(train: str, where: str) -> None:
    proc = cli("check", DIGITS, "augment.mode=batch", f"augment.train={train}")
    assert proc.returncode == 2
    assert f"{DIGITS}: {where}" in one_error_line(proc)
