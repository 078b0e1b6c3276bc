"""cnnforge-torchvision: torchvision's classification models by name, sized for the data."""
from __future__ import annotations

import pytest
import torch

import cnnforge


def build(name: str, **params: object) -> torch.nn.Module:
    params.setdefault("num_classes", 5)
    params.setdefault("in_channels", 3)
    return cnnforge.build_model(f"tv/{name}", **params)


def test_the_family_is_registered_by_this_distribution() -> None:
    assert cnnforge.registry.models.get("tv/resnet18").package == "cnnforge-torchvision"


@pytest.mark.parametrize("name,stem", [("resnet18", "conv1"), ("vgg11", "features.0"), ("efficientnet_b0",
                                                                                        "features.0.0"),
                                       ("convnext_tiny", "features.0.0")])
def test_grey_images_get_a_one_channel_stem_and_the_head_gets_the_classes(name: str, stem: str) -> None:
    model = build(name, in_channels=1)
    assert model.get_submodule(stem).in_channels == 1
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5)


def test_vits_are_rebuilt_for_the_data_image_size() -> None:
    model = build("vit_b_16", image_size=32)
    assert model.image_size == 32 and model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_model_options_pass_through() -> None:
    assert build("mobilenet_v3_small", dropout=0.1).classifier[2].p == 0.1


def test_freeze_backbone_keeps_the_classifier_module_trainable() -> None:
    model = build("vgg11", freeze="backbone")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("classifier.")}


def test_only_classification_models_are_listed() -> None:
    import torchvision.models as tvm

    entry = next(e for e in cnnforge.registry.models.entries() if e.name == "tv/*")
    names = entry.fn.list_names()
    assert "resnet18" in names
    assert "fasterrcnn_resnet50_fpn" in tvm.list_models() and "fasterrcnn_resnet50_fpn" not in names


@pytest.mark.parametrize("name,params,message", [
    ("resnt18", {}, r"torchvision has no classification model 'resnt18' \(did you mean resnet18"),
    ("resnet18", {"bogus": 1}, r"tv/resnet18 does not accept these options: .*bogus"),
    ("resnet18", {"pretrained": "/no/such/weights.pth"},
     r"pretrained weights file '/no/such/weights.pth' does not exist"),
])
def test_bad_names_options_and_files_are_one_line_config_errors(name: str, params: dict, message: str) -> None:
    with pytest.raises(cnnforge.ConfigError, match=message) as info:
        build(name, **params)
    assert "cnnforge-torchvision" in str(info.value) and "\n" not in str(info.value)
