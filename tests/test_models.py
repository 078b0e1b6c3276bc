"""The seed models: names, exact parameter counts, the seeds' layer order, knobs, other input sizes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnforge
from cnnforge.errors import ConfigError
from cnnforge.models.layers import SpatialDropout
from tests.conftest import ROOT, cli_here, one_error_line

# (name, channels, input size, parameters the seed reports or implies)
SEEDS = [
    ("fcnet", 1, (28, 28), 25_818),
    ("convnet", 1, (28, 28), 6_474),
    ("feedforward", 3, (32, 32), 397_802),
    ("lenet", 3, (32, 32), 62_006),
    ("vgg_baseline", 3, (32, 32), 528_474),
    ("vgg_bn", 3, (32, 32), 205_274),
    ("my_first_convnet", 1, (28, 28), 794_310),
]

_VGG_BLOCK = ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
# the leaf layers in the order the seed notes write them
LAYER_ORDER = {
    "fcnet": ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"],
    "feedforward": ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"],
    "convnet": ["Conv2d", "ReLU", "MaxPool2d"] * 3 + ["Flatten", "Linear", "ReLU", "Linear"],
    "lenet": ["Conv2d", "ReLU", "MaxPool2d"] * 2 + ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"],
    "vgg_baseline": ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"],
    "vgg_bn": _VGG_BLOCK * 3 + ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"],
    "my_first_convnet": ["Conv2d", "ReLU", "MaxPool2d"] * 2 + ["Flatten", "Linear", "Sigmoid", "Linear"],
}


def build(name: str, channels: int = 3, size: tuple[int, int] | int | None = (32, 32), **params: object) -> nn.Module:
    return cnnforge.build_model(name, num_classes=10, in_channels=channels, image_size=size, **params)


def leaves(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model.modules() if not list(m.children())]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,channels,size,expected", SEEDS)
def test_seed_parameter_counts_are_exact(name: str, channels: int, size: tuple[int, int], expected: int) -> None:
    model = build(name, channels, size)
    assert n_params(model) == expected
    assert model(torch.randn(2, channels, *size)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(LAYER_ORDER))
def test_layer_order_follows_the_seed(name: str) -> None:
    channels, size = next((c, s) for n, c, s, _ in SEEDS if n == name)
    assert leaves(build(name, channels, size)) == LAYER_ORDER[name]


@pytest.mark.parametrize("name", sorted(LAYER_ORDER))
def test_docstring_names_the_seed(name: str) -> None:
    entry = cnnforge.registry.models.get(name)
    assert entry.package == "cnnforge"
    assert entry.summary.startswith("Seed 00"), entry.summary


@pytest.mark.parametrize("name,size", [("fcnet", 8), ("convnet", 8), ("vgg_bn", 8), ("my_first_convnet", 8),
                                       ("feedforward", 28), ("lenet", 28), ("vgg_baseline", (40, 24)),
                                       ("convnet", (64, 48))])
def test_flatten_sizes_follow_other_input_sizes(name: str, size: int | tuple[int, int]) -> None:
    model = build(name, 1, size)
    h, w = (size, size) if isinstance(size, int) else size
    assert model(torch.randn(3, 1, h, w)).shape == (3, 10)


def test_an_input_too_small_says_what_the_model_needs() -> None:
    with pytest.raises(ConfigError, match=r"lenet needs images of at least 16x16 pixels .* got 8x8"):
        build("lenet", 1, 8)


@pytest.mark.parametrize("name", sorted(LAYER_ORDER))
@pytest.mark.parametrize("act,cls", [("elu", nn.ELU), ("selu", nn.SELU), ("gelu", nn.GELU)])
def test_activation_knob_replaces_every_seed_activation(name: str, act: str, cls: type[nn.Module]) -> None:
    channels, size = next((c, s) for n, c, s, _ in SEEDS if n == name)
    model = build(name, channels, size, activation=act)
    kinds = leaves(model)
    assert "ReLU" not in kinds and cls.__name__ in kinds
    if name == "my_first_convnet":  # the seed's head keeps its Sigmoid unless head_activation says otherwise
        assert kinds.count("Sigmoid") == 1


def test_an_unknown_activation_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        build("vgg_bn", activation="selu2")
    assert info.value.where == "model.activation" and "selu" in (info.value.hint or "")


@pytest.mark.parametrize("name", sorted(LAYER_ORDER))
def test_dropout_sits_before_the_classifier(name: str) -> None:
    channels, size = next((c, s) for n, c, s, _ in SEEDS if n == name)
    model = build(name, channels, size, dropout=0.3)
    head = list(model.head)
    assert isinstance(head[-1], nn.Linear) and isinstance(head[-2], nn.Dropout) and head[-2].p == 0.3


def test_batch_norm_switches_on_and_off_for_the_vgg_models() -> None:
    assert "BatchNorm2d" in leaves(build("vgg_baseline", batch_norm=True))
    plain = leaves(build("vgg_bn", batch_norm=False, dropout=0.0))
    assert not {"BatchNorm2d", "BatchNorm1d", "Dropout"} & set(plain)
    assert plain == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"] * 3 + ["Flatten", "Linear", "ReLU", "Linear"]


def test_spatial_dropout_goes_after_each_block() -> None:
    model = build("vgg_bn", spatial_dropout=[0.2, 0.3, 0.4])
    found = [m.p for m in model.modules() if isinstance(m, SpatialDropout)]
    assert found == [0.2, 0.3, 0.4]
    kinds = leaves(model)
    assert [kinds[i - 1] for i, k in enumerate(kinds) if k == "SpatialDropout"] == ["MaxPool2d"] * 3
    with pytest.raises(ConfigError, match="one p per block"):
        build("vgg_bn", spatial_dropout=[0.2])


def test_spatial_dropout_zeroes_whole_channels_and_rescales() -> None:
    torch.manual_seed(0)
    layer = SpatialDropout(0.25).train()
    x = torch.ones(64, 32, 5, 5)
    y = layer(x)
    per_channel = y.flatten(2)
    assert torch.all(per_channel.amax(-1) == per_channel.amin(-1)), "a channel was partly dropped"
    assert per_channel[..., 0].unique().tolist() == [0.0, pytest.approx(1 / 0.75)]
    dropped = (per_channel[..., 0] == 0).float().mean().item()
    assert 0.2 < dropped < 0.3
    assert y.mean().item() == pytest.approx(1.0, abs=0.05)  # the expectation is kept
    assert torch.equal(layer.eval()(x), x)
    with pytest.raises(ValueError):
        SpatialDropout(1.0)


def test_convnet_embed_is_the_flattened_encoder_output() -> None:
    model = build("convnet", 1, (28, 28)).eval()
    x = torch.randn(4, 1, 28, 28)
    emb = model.embed(x)
    assert emb.shape == (4, 144)
    assert torch.allclose(model.head(model.features(x)), model(x))


def test_unknown_parameter_names_what_the_builder_accepts() -> None:
    with pytest.raises(ConfigError) as info:
        build("lenet", dropuot=0.5)
    assert info.value.where == "model.dropuot" and "dropout" in (info.value.hint or "")


def test_cli_reports_a_model_that_cannot_take_the_data_in_one_line(tmp_path, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the recipes' relative paths, as `cli` runs them
    proc = cli_here(capsys, "run", "recipes/digits_convnet.yaml", "model.name=lenet", f"train.out_dir={tmp_path}")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "lenet needs images of at least 16x16 pixels" in line and "got 8x8" in line


def test_show_prints_layer_table_parameters_and_flops_at_the_data_size(capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the recipes' relative paths, as `cli` runs them
    proc = cli_here(capsys, "show", "recipes/digits_convnet.yaml")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout[proc.stdout.index("model: convnet"):]
    assert text.splitlines()[0] == "model: convnet (SeedNet)  input 1x8x8"
    rows = {line.split()[0]: line.split() for line in text.splitlines()[3:16]}
    # conv 1->4, 3x3 'same' on 8x8: 2 * 9 * 1 * 4 * 64 = 4,608 FLOPs; 40 parameters; output 4x8x8
    assert rows["features.0"] == ["features.0", "Conv2d", "4x8x8", "40", "4.61", "K"]
    assert rows["features.8"][:3] == ["features.8", "MaxPool2d", "16x1x1"]
    assert rows["head.1"][:4] == ["head.1", "Linear", "32", "544"]  # flatten is 16 on 8x8 inputs
    assert "parameters: 2,378 (2,378 trainable)" in text
    assert "FLOPs per image (forward): 24.70 K (24,704)" in text  # 2 * multiply-adds of the 3 convs and 2 linears


def test_layer_table_flops_add_up_and_training_mode_is_restored() -> None:
    from cnnforge.models.summary import layer_table

    model = build("vgg_bn", 3, (32, 32), spatial_dropout=[0.2, 0.3, 0.4]).train()
    rows, total = layer_table(model, (3, 32, 32))
    assert model.training
    assert sum(r.flops for r in rows) == total > 0
    assert sum(r.params for r in rows) == 205_274
    assert [r.output for r in rows if r.kind == "MaxPool2d"] == ["16x16x16", "32x8x8", "64x4x4"]
