"""Recipes through the public API: inheritance, dotted overrides, validation, check and show."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import cnnforge
from cnnforge.errors import ConfigError
from tests.conftest import ROOT, cli_here


def test_load_recipe_defaults_name_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "my_run.yaml"
    path.write_text("model: {name: vgg_bn, dropout: 0.5}\noptim: {lr: 0.1}\n")
    recipe = cnnforge.load_recipe(path, ["optim.lr=0.01", "model.dropout=null", "train.epochs=3",
                                         "tune.grid={model.activation: [relu, elu]}"])
    assert recipe.name == "my_run"  # the file name
    assert recipe.optim.lr == 0.01 and recipe.train.epochs == 3
    assert recipe.model.params == {"dropout": None}
    assert recipe.tune is not None and recipe.tune.grid == {"model.activation": ["relu", "elu"]}


def test_base_inheritance_deep_merges(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("data: {name: cifar10, batch_size: 128}\noptim: {name: sgd, lr: 0.1}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim: {lr: 0.05}\n")
    recipe = cnnforge.load_recipe(tmp_path / "child.yaml")
    got = (recipe.data.name, recipe.data.batch_size, recipe.optim.name, recipe.optim.lr)
    assert got == ("cifar10", 128, "sgd", 0.05)


def test_base_cycle_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        cnnforge.load_recipe(tmp_path / "a.yaml")


def test_resolved_recipe_round_trips(tmp_path: Path) -> None:
    recipe = cnnforge.check_recipe(cnnforge.load_recipe(ROOT / "recipes" / "cifar_vgg_bn.yaml", ["optim.lr=0.02"]))
    again = tmp_path / "again.yaml"
    again.write_text(recipe.to_yaml())
    assert cnnforge.load_recipe(again).to_dict() == recipe.to_dict()


@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "recipes").glob("*.yaml")))
def test_every_shipped_recipe_checks(recipe: str) -> None:
    cnnforge.check_recipe(cnnforge.load_recipe(ROOT / "recipes" / recipe))


def test_check_and_show_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the recipes' relative paths, as `cli` runs them
    ok = cli_here(capsys, "check", "recipes/digits_convnet.yaml", "optim.lr=0.01")
    assert ok.returncode == 0 and "ok" in ok.stdout.lower(), ok.stderr
    shown = cli_here(capsys, "show", "recipes/digits_convnet.yaml", "optim.lr=0.02")
    assert shown.returncode == 0, shown.stderr
    resolved = yaml.safe_load(shown.stdout.split("\n\n")[0])
    assert resolved["optim"]["lr"] == 0.02 and resolved["model"]["name"] == "convnet"
    assert "parameters:" in shown.stdout
