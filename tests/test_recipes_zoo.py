"""Every seed system's recipe passes `cnnforge check` and trains a few steps on tiny data of its format."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cnnforge
from tests.conftest import ROOT, cli
from tests.datafiles import write_image_folder, write_mnist

SEED_RECIPES = ["mnist_fcnet", "mnist_convnet", "cifar_feedforward", "cifar_lenet", "cifar_vgg_baseline",
                "cifar_vgg_spatial_dropout", "mnist_my_first_convnet", "resnet18_transfer"]
QUICK = ["train.epochs=1", "data.num_workers=0", "train.checkpoint_every=0", "tracking.backend=none"]


@pytest.mark.parametrize("name", SEED_RECIPES)
def test_recipe_passes_cnnforge_check(name: str) -> None:
    proc = cli("check", "--no-data", f"recipes/{name}.yaml")  # the recipe, not the data (not downloaded here)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"recipes/{name}.yaml: ok")


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=120, n_test=40)


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seed 004's layout: one folder of grey 28x28 JPEGs per digit."""
    return write_image_folder(tmp_path_factory.mktemp("mnist_jpg"), classes=tuple(str(d) for d in range(10)),
                              per_class=6, size=28, suffix=".jpg", gray=True)


@pytest.fixture(scope="module")
def ants_and_bees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Seed 001's hymenoptera layout (train/ and val/ class folders) and an 'ImageNet' ResNet-18 weights file."""
    root = tmp_path_factory.mktemp("hymenoptera")
    write_image_folder(root / "train", classes=("ants", "bees"), per_class=8, size=48, suffix=".jpg")
    write_image_folder(root / "val", classes=("ants", "bees"), per_class=3, size=48, suffix=".jpg", seed=1)
    weights = root / "resnet18-imagenet.pth"
    torch.save(cnnforge.build_model("tv/resnet18", num_classes=1000, in_channels=3).state_dict(), weights)
    return root, weights


@pytest.mark.parametrize("name", SEED_RECIPES)
def test_recipe_trains_on_tiny_data(name: str, tmp_path: Path, cifar_root: Path, mnist_root: Path,
                                    digit_folders: Path, ants_and_bees: tuple[Path, Path]) -> None:
    overrides = [*QUICK, f"train.out_dir={tmp_path}"]
    if name.startswith("cifar_"):
        overrides += [f"data.root={cifar_root}", "data.batch_size=50"]
    elif name == "mnist_my_first_convnet":
        overrides += [f"data.root={digit_folders}"]
    elif name.startswith("mnist_"):
        overrides += [f"data.root={mnist_root}"]
    else:  # resnet18_transfer: small images, pretrained weights from a file, 2 classes
        root, weights = ants_and_bees
        overrides += [f"data.root={root}", "data.image_size=40", "augment.train=[{name: imagenet_train, size: 32}]",
                      "augment.eval=[{name: center_crop, size: 32}, {name: normalize}]", f"model.pretrained={weights}",
                      "data.batch_size=8"]
    result = cnnforge.train(ROOT / "recipes" / f"{name}.yaml", overrides, quiet=True)
    assert result["steps"] >= 1
    assert 0.0 <= result["test/acc"] <= 1.0
    assert (result.run_dir / "model.safetensors").is_file()
