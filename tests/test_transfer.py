"""Transfer learning (seed 001): pretrained weights from a file or the cache, a new head, frozen backbones,
a head learning rate, StepLR and the best weights kept; offline, `pretrained: true` fails in one line."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import cnnforge
from cnnforge.errors import ConfigError
from cnnforge.recipe import load_recipe
from cnnforge.training.assemble import make_optimizer, make_schedule
from tests.conftest import cli, one_error_line
from tests.datafiles import write_image_folder

TV_CACHE_NAME = "resnet18-f37072fd.pth"  # the file torchvision's ResNet18_Weights.IMAGENET1K_V1 downloads


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stand-ins for ImageNet weights (1000 classes, 3 channels): torchvision .pth and timm .safetensors."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    tv = root / "tv_resnet18.pth"
    torch.save(cnnforge.build_model("tv/resnet18", num_classes=1000, in_channels=3).state_dict(), tv)
    tm = root / "timm_resnet18.safetensors"
    save_file(cnnforge.build_model("timm/resnet18", num_classes=1000, in_channels=3).state_dict(), str(tm))
    return {"tv": tv, "timm": tm}


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)


@pytest.mark.parametrize("bridge", ["tv", "timm"])
def test_pretrained_file_loads_the_backbone_and_replaces_the_head(bridge: str, imagenet_like: dict[str, Path]) -> None:
    source = _state(imagenet_like[bridge])
    model = cnnforge.build_model(f"{bridge}/resnet18", num_classes=4, in_channels=3,
                                 pretrained=str(imagenet_like[bridge]))
    assert torch.equal(model.layer4[1].conv2.weight, source["layer4.1.conv2.weight"])
    assert torch.equal(model.bn1.running_var, source["bn1.running_var"])
    assert model.fc.out_features == 4 and model.fc.weight.shape == (4, 512)


@pytest.mark.parametrize("bridge", ["tv", "timm"])
def test_grey_images_get_the_rgb_stem_summed(bridge: str, imagenet_like: dict[str, Path]) -> None:
    source = _state(imagenet_like[bridge])
    model = cnnforge.build_model(f"{bridge}/resnet18", num_classes=10, in_channels=1,
                                 pretrained=str(imagenet_like[bridge]))
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.allclose(model.conv1.weight[:, 0], source["conv1.weight"].sum(1))


def test_same_class_count_keeps_the_pretrained_head(imagenet_like: dict[str, Path]) -> None:
    source = _state(imagenet_like["timm"])
    model = cnnforge.build_model("timm/resnet18", num_classes=1000, in_channels=3,
                                 pretrained=str(imagenet_like["timm"]))
    assert torch.equal(model.fc.weight, source["fc.weight"])


@pytest.mark.parametrize("bridge", ["tv", "timm"])
def test_freeze_backbone_leaves_only_the_classifier_trainable(bridge: str, imagenet_like: dict[str, Path]) -> None:
    model = cnnforge.build_model(f"{bridge}/resnet18", num_classes=2, in_channels=3,
                                 pretrained=str(imagenet_like[bridge]),
                                 freeze="backbone")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


@pytest.mark.parametrize("bridge", ["tv", "timm"])
def test_weights_of_another_architecture_are_refused(bridge: str, imagenet_like: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"weights from .* (lack|do not fit)") as info:
        cnnforge.build_model(f"{bridge}/resnet34", num_classes=2, in_channels=3, pretrained=str(imagenet_like[bridge]))
    assert f"cnnforge-{'torchvision' if bridge == 'tv' else 'timm'}" in str(info.value)


def test_missing_corrupt_and_pickled_code_weight_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        cnnforge.build_model("tv/resnet18", num_classes=2, in_channels=3, pretrained=str(tmp_path / "nope.pth"))
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read weights file"):
        cnnforge.build_model("tv/resnet18", num_classes=2, in_channels=3, pretrained=str(broken))
    code = tmp_path / "code.pth"
    # loading it would need unpickling code
    torch.save({"fc.weight": torch.zeros(2, 2), "hook": subprocess.Popen}, code)
    with pytest.raises(ConfigError, match="cannot read weights file"):
        cnnforge.build_model("tv/resnet18", num_classes=2, in_channels=3, pretrained=str(code))


def test_pretrained_true_uses_the_torch_hub_cache(tmp_path: Path, imagenet_like: dict[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CNNFORGE_OFFLINE", "1")
    cached = tmp_path / "hub" / "checkpoints" / TV_CACHE_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(imagenet_like["tv"].read_bytes())
    model = cnnforge.build_model("tv/resnet18", num_classes=3, in_channels=3, pretrained=True)
    assert torch.equal(model.layer1[0].conv1.weight, _state(imagenet_like["tv"])["layer1.0.conv1.weight"])


def test_pretrained_true_offline_fails_in_one_line_saying_how_to_supply_weights(tmp_path: Path) -> None:
    env = {"TORCH_HOME": str(tmp_path / "torch"), "CNNFORGE_OFFLINE": "1"}
    proc = cli("run", "recipes/digits_convnet.yaml", "model={name: tv/resnet18, pretrained: true}",
               f"train.out_dir={tmp_path / 'runs'}", env=env)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "tv/resnet18 from cnnforge-torchvision" in line
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / TV_CACHE_NAME) in line
    assert "set model.pretrained to a weights file" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("model.safetensors"))


def test_timm_pretrained_true_reads_the_hugging_face_cache_and_says_where_it_looked(
        tmp_path: Path, imagenet_like: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A file laid out as huggingface_hub caches timm/resnet18.a1_in1k is used; with none, one line says so."""
    import huggingface_hub.constants

    monkeypatch.setenv("CNNFORGE_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"not in the Hugging Face cache \(repository timm/resnet18.a1_in1k\) "
                                          r"and downloads are off .* set model.pretrained to a weights file"):
        cnnforge.build_model("timm/resnet18", num_classes=3, in_channels=3, pretrained=True)

    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd" / "model.safetensors").write_bytes(imagenet_like["timm"].read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = cnnforge.build_model("timm/resnet18", num_classes=3, in_channels=3, pretrained=True)
    assert torch.equal(model.layer1[0].conv1.weight, _state(imagenet_like["timm"])["layer1.0.conv1.weight"])


def test_head_lr_gives_the_classifier_its_own_learning_rate(imagenet_like: dict[str, Path]) -> None:
    recipe = load_recipe({"name": "t", "model": {"name": "tv/resnet18"}, "optim": {"lr": 0.001, "head_lr": 0.01}})
    model = cnnforge.build_model("tv/resnet18", num_classes=2, in_channels=3, pretrained=str(imagenet_like["tv"]))
    body, head = make_optimizer(model, recipe.optim).param_groups
    assert (body["lr"], head["lr"]) == (0.001, 0.01)
    assert {id(p) for p in head["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert len(body["params"]) == len(list(model.parameters())) - 2


def test_step_schedule_is_seed_001s_steplr() -> None:
    """StepLR(step_size=2, gamma=0.1) counts epochs: epochs 0-1 at lr, 2-3 at lr/10, 4 at lr/100."""
    recipe = load_recipe({"name": "t", "optim": {"lr": 0.001},
                          "schedule": {"name": "step", "step_size": 2, "gamma": 0.1}, "train": {"epochs": 5}})
    optimizer = make_optimizer(torch.nn.Linear(2, 2), recipe.optim)
    schedule = make_schedule(optimizer, recipe.schedule, recipe.train.epochs, steps_per_epoch=3)
    used = []
    for _ in range(5):
        used.append(optimizer.param_groups[0]["lr"])
        for _ in range(3):
            optimizer.step()
            schedule.step()
    assert used == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])


def test_frozen_transfer_run_trains_the_head_keeps_the_backbone_and_the_best_weights(
        tmp_path: Path, imagenet_like: dict[str, Path]) -> None:
    """Seed 001's second experiment on a small image folder: frozen backbone, StepLR, best weights kept."""
    folder = write_image_folder(tmp_path / "data", per_class=10, size=16)
    recipe = {
        "name": "folder_transfer", "seed": 0,
        "data": {"name": "imagefolder", "root": str(folder), "batch_size": 6, "num_workers": 0},
        "model": {"name": "tv/resnet18", "pretrained": str(imagenet_like["tv"]), "freeze": "backbone"},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "schedule": {"name": "step", "step_size": 2, "gamma": 0.1},
        "train": {"epochs": 2, "checkpoint_every": 0, "out_dir": str(tmp_path / "runs")},
        "tracking": {"backend": "none"},
    }
    result = cnnforge.train(recipe, quiet=True)
    source = _state(imagenet_like["tv"])
    trained = load_file(str(result.weights))
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight", "layer3.0.bn1.weight"):
        assert torch.equal(trained[key], source[key]), key
    assert trained["fc.weight"].shape == (3, 512)
    assert result.history[0]["lr"] == pytest.approx(0.05) and result.history[-1]["lr"] == pytest.approx(0.005)
    assert result["test/weights"] == "best" and result["best/epoch"] in (1, 2)
    assert (result.run_dir / "checkpoints" / "best.safetensors").is_file()
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"] - 0.2  # the head did learn
    assert "test/acc" in json.loads((result.run_dir / "summary.json").read_text())
