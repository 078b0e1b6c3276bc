"""cnnforge-timm: any timm model by name, sized for the data, with timm's own options passed through."""
from __future__ import annotations

import pytest
import torch

import cnnforge


def build(name: str, **params: object) -> torch.nn.Module:
    params.setdefault("num_classes", 7)
    params.setdefault("in_channels", 3)
    return cnnforge.build_model(f"timm/{name}", **params)


def test_the_family_is_registered_by_this_distribution() -> None:
    entry = cnnforge.registry.models.get("timm/resnet18")
    assert entry.package == "cnnforge-timm"
    assert "timm/*" in cnnforge.registry.models.names()


def test_num_classes_and_in_chans_reach_timm() -> None:
    model = build("resnet18", num_classes=7, in_channels=1)
    assert model.get_classifier().out_features == 7 and model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_pretrained_tags_and_timm_options_pass_through() -> None:
    model = build("resnet18.a1_in1k", drop_rate=0.3)
    assert model.drop_rate == 0.3


def test_fixed_size_models_get_the_data_image_size() -> None:
    model = build("vit_tiny_patch16_224", image_size=32)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert build("vit_tiny_patch16_224", image_size=32, img_size=64).patch_embed.img_size == (64, 64)


def test_list_names_is_timms_registry() -> None:
    import timm

    entry = next(e for e in cnnforge.registry.models.entries() if e.name == "timm/*")
    assert entry.fn.list_names() == timm.list_models()


def test_freeze_backbone_trains_what_get_classifier_returns() -> None:
    model = build("resnet18", freeze="backbone")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}


@pytest.mark.parametrize("name,params,message", [
    ("resnet_18", {}, r"timm has no model 'resnet_18' \(did you mean .*resnet18"),
    ("resnet18", {"bogus_option": 1}, r"timm/resnet18 does not accept these options: .*bogus_option"),
])
def test_bad_names_and_options_are_one_line_config_errors(name: str, params: dict, message: str) -> None:
    with pytest.raises(cnnforge.ConfigError, match=message) as info:
        build(name, **params)
    assert "cnnforge-timm" in str(info.value) and "\n" not in str(info.value)
