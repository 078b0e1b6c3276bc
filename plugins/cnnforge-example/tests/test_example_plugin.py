"""Tests a plugin ships with: its components build, behave, are found by cnnforge and train together.

Run them with ``pytest plugins/cnnforge-example`` (or ``pytest`` inside a copy of this folder).
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import cnnforge  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "cnnforge_example" / "recipes" / "shapes_gap_net.yaml"


@pytest.mark.parametrize("kind,name", [("models", "example_gap_net"), ("datasets", "example_shapes"),
                                       ("augmentations", "example_jitter"), ("losses", "example_poly1"),
                                       ("callbacks", "example_stop_at_accuracy")])
def test_cnnforge_finds_each_component_through_the_entry_point(kind: str, name: str) -> None:
    entry = cnnforge.registry.REGISTRIES[kind].get(name)
    assert entry.package == "cnnforge-example"
    assert entry.summary  # the first docstring line is what `cnnforge list` prints


@pytest.mark.parametrize("channels,size", [(1, 16), (3, 40)])
def test_model_runs_on_any_input_size(channels: int, size: int) -> None:
    model = cnnforge.build_model("example_gap_net", num_classes=3, in_channels=channels, image_size=size, depth=3)
    assert model(torch.randn(2, channels, size, size)).shape == (2, 3)
    assert model.embed(torch.randn(2, channels, size, size)).shape == (2, 64)


def test_model_too_deep_for_the_images_names_this_package() -> None:
    with pytest.raises(cnnforge.ConfigError, match="16-pixel images need depth <= 4") as info:
        cnnforge.build_model("example_gap_net", num_classes=3, in_channels=1, image_size=16, depth=5)
    assert "cnnforge-example" in str(info.value)


def test_dataset_is_balanced_deterministic_and_in_cnnforge_format() -> None:
    entry = cnnforge.registry.datasets.get("example_shapes")
    train = entry.fn(split="train", size=20, samples=30)
    again = entry.fn(split="train", size=20, samples=30)
    test = entry.fn(split="test", size=20, samples=30)
    image, label = train[0]
    assert image.dtype == np.uint8 and image.shape == (20, 20, 1) and label in (0, 1, 2)
    assert train.classes == ["circle", "square", "triangle"]
    assert np.bincount(train.labels).tolist() == [10, 10, 10]
    assert np.array_equal(train.images, again.images)
    assert not np.array_equal(train.images[:7], test.images[:7])
    assert entry.fn(split="val") is None


def test_augmentation_keeps_shape_and_type_and_changes_pixels() -> None:
    image = cnnforge.registry.datasets.get("example_shapes").fn(split="train", size=24, samples=3)[0][0]
    transform = cnnforge.registry.augmentations.get("example_jitter").fn(shift=0.2, degrees=30, p=1.0)
    transform.set_random_seed(0)
    out = transform(image=image)["image"]
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_recipe_trains_with_all_three_components(tmp_path: Path) -> None:
    result = cnnforge.train(RECIPE, ["data.samples=90", "train.epochs=1", f"train.out_dir={tmp_path}"], quiet=True)
    assert 0.0 <= result["test/acc"] <= 1.0
    assert (result.run_dir / "model.safetensors").is_file()


@pytest.mark.parametrize("target", [torch.tensor([0, 2, 1]), torch.tensor([[0.8, 0.1, 0.1], [0.0, 0.0, 1.0],
                                                                           [0.2, 0.7, 0.1]])])
def test_poly1_is_cross_entropy_plus_epsilon_times_the_missed_probability(target: torch.Tensor) -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 1.0, 0.0]])
    build = cnnforge.registry.losses.get("example_poly1").fn
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(build(epsilon=0.0)(logits, target), ce)
    soft = target if target.ndim == 2 else torch.nn.functional.one_hot(target, 3).float()
    missed = (1 - (soft * logits.softmax(1)).sum(1)).mean()
    assert torch.allclose(build(epsilon=2.0)(logits, target), ce + 2.0 * missed)


def test_packaged_recipe_with_the_loss_and_the_callback_stops_at_its_target(tmp_path: Path) -> None:
    recipe = RECIPE.with_name("shapes_poly1_stop.yaml")
    result = cnnforge.train(recipe, ["data.samples=90", "train.epochs=3", f"train.out_dir={tmp_path}",
                                     "callbacks=[{name: example_stop_at_accuracy, target: 0.01}]"], quiet=True)
    assert result["epochs"] == 1 and result["stopped"] == "callback" and "reached 0.01" in result["stop_reason"]
    assert result.history[0]["example/gap"] == 0.0
