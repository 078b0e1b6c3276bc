"""Augmentation ops and named pipelines: registration, validation errors, train-only use, normalise, preview."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pytest
import yaml

import cnnforge
from cnnforge.data import lean_transforms
from cnnforge.data.loading import Splits, build_splits
from cnnforge.data.pipeline import build_pipeline, seed_pipeline
from cnnforge.errors import ConfigError
from cnnforge.recipe.schema import OpSpec
from tests.conftest import cli_here, one_error_line

OPS = ["hflip", "vflip", "color_jitter", "rotate", "cutout", "random_crop", "random_resized_crop", "gaussian_noise",
       "perspective", "normalize", "resize", "center_crop"]
PIPELINES = ["cifar_standard", "imagenet_train", "none"]
IMAGE = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def ops(*specs: dict[str, Any]) -> list[OpSpec]:
    return [OpSpec(**s) for s in specs]


def open_splits(data: dict[str, Any], augment: dict[str, Any], seed: int = 0) -> Splits:
    recipe = cnnforge.load_recipe({"name": "t", "seed": seed, "data": {"num_workers": 0, **data}, "augment": augment})
    return build_splits(cnnforge.check_recipe(recipe))


def test_every_op_and_pipeline_is_registered() -> None:
    assert set(OPS + PIPELINES) <= set(cnnforge.registry.augmentations.names())
    for name in OPS + PIPELINES:
        assert cnnforge.registry.augmentations.get(name).package == "cnnforge"


@pytest.mark.parametrize("spec", [
    {"name": "hflip", "p": 1.0}, {"name": "vflip", "p": 1.0}, {"name": "color_jitter", "brightness": 0.3, "hue": 0.1},
    {"name": "rotate", "limit": 30}, {"name": "cutout", "size": 8, "holes": 2, "p": 1.0},
    {"name": "random_crop", "size": 32, "padding": 4}, {"name": "gaussian_noise", "std": 0.1, "p": 1.0},
    {"name": "perspective", "distortion": 0.2, "p": 1.0},
])
def test_op_changes_the_image_and_keeps_its_shape(spec: dict[str, Any]) -> None:
    pipe = build_pipeline(ops(spec))
    seed_pipeline(pipe.transform, np.random.default_rng(1))
    out = pipe.transform(image=IMAGE)["image"]
    assert out.shape == IMAGE.shape and out.dtype == np.uint8 and not np.array_equal(out, IMAGE)


@pytest.mark.parametrize(("spec", "shape"), [
    ({"name": "random_crop", "size": [20, 24]}, (20, 24, 3)),
    ({"name": "random_resized_crop", "size": 48}, (48, 48, 3)),
    ({"name": "resize", "size": 16}, (16, 16, 3)), ({"name": "center_crop", "size": 10}, (10, 10, 3)),
])
def test_size_changing_ops(spec: dict[str, Any], shape: tuple[int, ...]) -> None:
    assert build_pipeline(ops(spec)).transform(image=IMAGE)["image"].shape == shape


def test_random_crop_pads_with_black() -> None:
    pipe = build_pipeline(ops({"name": "random_crop", "size": 32, "padding": 4}))
    white = np.full((32, 32, 3), 255, np.uint8)
    shifted = 0
    for seed in range(20):
        seed_pipeline(pipe.transform, np.random.default_rng(seed))
        shifted += int((pipe.transform(image=white)["image"] == 0).any())
    assert shifted >= 15  # most crops include some padding


def test_ops_in_one_pipeline_draw_independently() -> None:
    """albumentations' set_random_seed gives all ops one seed: hflip and vflip would always flip together."""
    pipe = build_pipeline(ops({"name": "hflip"}, {"name": "vflip"}))
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    seen = set()
    for seed in range(64):
        seed_pipeline(pipe.transform, np.random.default_rng(seed))
        out = pipe.transform(image=image)["image"].reshape(4, 4)
        seen.add((bool(out[0, 0] in (3, 15)), bool(out[0, 0] in (12, 15))))  # (h flipped, v flipped)
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


def test_cifar_standard_is_seed_002() -> None:
    steps = build_pipeline("cifar_standard").transform.transforms
    jitter, flip, rotate = steps
    assert isinstance(jitter, A.ColorJitter) and jitter.hue == (-0.05, 0.05) and jitter.saturation == (0.95, 1.05)
    assert isinstance(flip, A.HorizontalFlip) and isinstance(rotate, lean_transforms.Rotate) and rotate.limit == 20
    with_cutout = build_pipeline(ops({"name": "cifar_standard", "cutout": 8})).transform.transforms
    assert isinstance(with_cutout[-1], lean_transforms.Cutout) and len(with_cutout) == 4


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1), (28, 28), (17, 23, 4)])
@pytest.mark.parametrize("angle", [-20.0, -7.3, 0.0, 13.1, 45.0])
def test_rotate_gives_albumentations_pixels(shape: tuple[int, ...], angle: float) -> None:
    """The lean op is a faster albumentations.Rotate, not an approximation of it."""
    import cv2

    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    reference = A.Rotate(limit=(angle, angle), border_mode=cv2.BORDER_CONSTANT, fill=0, p=1)(image=image)["image"]
    assert np.array_equal(lean_transforms.Rotate(limit=20).apply(image, angle=angle), reference)


def test_rotate_handles_more_channels_than_opencv_warps_at_once() -> None:
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 6), dtype=np.uint8)
    rotate = lean_transforms.Rotate()
    out = rotate.apply(image, angle=30.0)
    assert out.shape == image.shape
    assert np.array_equal(out[..., 4:], rotate.apply(np.ascontiguousarray(image[..., 4:]), angle=30.0))


@pytest.mark.parametrize(("shape", "size", "holes"), [((32, 32, 3), 8, 1), ((28, 28, 1), 5, 3), ((6, 6), 10, 1)])
def test_cutout_zeroes_whole_squares_inside_the_image(shape: tuple[int, ...], size: int, holes: int) -> None:
    pipe = build_pipeline(ops({"name": "cutout", "size": size, "holes": holes, "p": 1.0}))
    white = np.full(shape, 255, np.uint8)
    for seed in range(20):
        seed_pipeline(pipe.transform, np.random.default_rng(seed))
        out = pipe.transform(image=white)["image"]
        zero = (out == 0).reshape(shape[0], shape[1], -1).all(axis=2)
        side = min(size, shape[0])
        rows, cols = np.nonzero(zero)
        assert out.shape == shape and side * side <= zero.sum() <= holes * side * side
        if holes == 1:  # exactly one side x side square
            assert zero.sum() == side * side and np.ptp(rows) + 1 == side and np.ptp(cols) + 1 == side
    never = build_pipeline(ops({"name": "cutout", "p": 0.0})).transform
    assert np.array_equal(never(image=white)["image"], white)


def test_imagenet_train_is_seed_001() -> None:
    pipe = build_pipeline(ops({"name": "imagenet_train", "size": 24}))
    crop, flip = pipe.transform.transforms
    assert isinstance(crop, A.RandomResizedCrop) and crop.size == (24, 24) and isinstance(flip, A.HorizontalFlip)
    assert pipe.stats == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert build_pipeline("none").transform is None and build_pipeline(None).transform is None


@pytest.mark.parametrize(("augment", "where", "words"), [
    ({"train": [{"name": "hflip"}, {"name": "rotate", "limt": 20}]}, "augment.train[1].limt", "did you mean limit"),
    ({"train": [{"name": "rotate", "limit": 400}]}, "augment.train[0].limit", "less than or equal to 180"),
    ({"train": [{"name": "hflip", "p": 1.5}]}, "augment.train[0].p", "less than or equal to 1"),
    ({"train": [{"name": "hflp"}]}, "augment.train[0].name", "did you mean hflip"),
    ({"train": [{"name": "random_crop", "padding": 4}]}, "augment.train[0].size",
     "required parameter of 'random_crop' is missing"),
    ({"train": "cifar_standrd"}, "augment.train.name", "did you mean cifar_standard"),
    ({"eval": [{"name": "cifar_standard", "cutuot": 8}]}, "augment.eval[0].cutuot",
     "unknown parameter of 'cifar_standard'"),
])
def test_parameter_errors_name_the_op(augment: dict[str, Any], where: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        cnnforge.check_recipe(cnnforge.load_recipe({"name": "t", "augment": augment}))
    assert f"<dict>: {where}" in str(err.value) and words in str(err.value)


def test_cli_check_reports_op_typo_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"augment": {"train": [{"name": "color_jitter", "hue": 0.05, "satur": 0.1}]}}))
    proc = cli_here(capsys, "check", str(recipe))
    assert proc.returncode == 2
    assert one_error_line(proc).endswith("augment.train[0].satur: unknown parameter of 'color_jitter' (did you mean "
                                         "saturation?)")


def test_augmentation_is_train_only_by_default() -> None:
    s = open_splits({"name": "digits"},
                    {"train": [{"name": "rotate", "limit": 45}, {"name": "gaussian_noise", "p": 1.0}]})
    for ds in (s.val, s.test):
        image, _ = ds[(2, 5)]
        assert np.array_equal(image.permute(1, 2, 0).numpy(), ds.base[int(ds.indices[5])][0])
    augmented, _ = s.train[(0, 5)]
    assert not np.array_equal(augmented.permute(1, 2, 0).numpy(), s.train.base[int(s.train.indices[5])][0])


def test_eval_gets_resized_to_the_training_size() -> None:
    s = open_splits({"name": "digits"}, {"train": [{"name": "random_resized_crop", "size": 16, "scale": [0.5, 1.0]}]})
    assert s.info.image_size == (16, 16)
    assert s.train[(0, 0)][0].shape == s.val[0][0].shape == s.test[0][0].shape == (1, 16, 16)
    with pytest.raises(ConfigError, match="augment.eval: gives 8x8x1 images but augment.train gives 16x16x1"):
        open_splits({"name": "digits"}, {"train": [{"name": "resize", "size": 16}], "eval": "none"})
    with pytest.raises(ConfigError, match="augment.train: cannot transform a 8x8 image"):
        open_splits({"name": "digits"}, {"train": [{"name": "random_crop", "size": 12}]})


def test_normalize_sets_the_statistics_for_both_splits(cifar_root: Path) -> None:
    data = {"name": "cifar10", "root": str(cifar_root)}
    plain = open_splits(data, {})
    assert plain.info.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    s = open_splits(data, {"train": "imagenet_train", "eval": [{"name": "resize", "size": 224}]})
    assert s.info.mean == (0.485, 0.456, 0.406) and s.info.image_size == (224, 224)
    # still uint8: normalised on the device
    assert s.train[(0, 0)][0].dtype == s.test[0][0].dtype == plain.train[0][0].dtype
    gray = open_splits({"name": "digits"}, {"train": [{"name": "normalize", "mean": [0.5], "std": [0.25]}]})
    assert (gray.info.mean, gray.info.std) == ((0.5,), (0.25,))
    with pytest.raises(ConfigError, match="normalize has 3 mean and 3 std values for 1-channel images"):
        open_splits({"name": "digits"}, {"train": "imagenet_train"})
    with pytest.raises(ConfigError, match="both splits must share one normalisation"):
        open_splits(data, {"train": [{"name": "normalize"}], "eval": [{"name": "normalize", "mean": [0.5],
                                                                       "std": [0.5]}]})


def test_preview_writes_a_readable_grid(cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib.image

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "prev", "data": {"name": "cifar10", "root": str(cifar_root)},
                                      "augment": {"train": "cifar_standard"}}))
    out = tmp_path / "grid.png"
    proc = cli_here(capsys, "augment", "preview", str(recipe), "augment.train=[{name: cifar_standard, cutout: 10}]",
               "--out", str(out), "--n", "12")
    assert proc.returncode == 0, proc.stderr
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[0] > 600 and pixels.shape[1] > 600 and pixels.std() > 0.05
    batch = cli_here(capsys, "augment", "preview", str(recipe), "augment.mode=batch", "augment.train=[{name: hflip}]",
                "--out", str(tmp_path / "batch.png"), "--n", "2", "--epochs", "1")
    assert batch.returncode == 0 and (tmp_path / "batch.png").stat().st_size > 1000, batch.stderr
    bad = cli_here(capsys, "augment", "preview", str(recipe), "--out", str(out), "--n", "0")
    assert bad.returncode == 2 and "--n: must be at least 1" in one_error_line(bad)


def test_preview_takes_classes_in_turn() -> None:
    from cnnforge.data.preview import pick_samples

    labels = np.array([2, 2, 0, 1, 0, 2, 1])
    assert pick_samples(labels, 5) == [2, 3, 0, 4, 6]  # first of each class (0, 1, 2), then the second ones
