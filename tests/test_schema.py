"""`cnnforge schema`: a JSON Schema that accepts what `cnnforge check` accepts and completes registry names."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cnnforge import registry
from tests.conftest import ROOT, cli, cli_here


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    proc = cli("schema")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, recipe: dict[str, Any]) -> list[str]:
    return [e.message for e in validator.iter_errors(recipe)]


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    assert _errors(validator, yaml.safe_load(path.read_text())) == []


def test_registry_names_are_the_completion_lists(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]

    def exact(prop: dict[str, Any]) -> set[str]:
        return set(next(b["enum"] for b in prop.get("anyOf", [prop]) if "enum" in b))

    names = {n for n in registry.models.names()  # not the test modules' own models, registered in this process only
             if not n.endswith("*") and not registry.models.get(n).fn.__module__.startswith("tests.")}
    assert exact(defs["ModelConfig"]["properties"]["name"]) == names
    assert "digits" in exact(defs["DataConfig"]["properties"]["name"])
    assert {"hflip", "rotate"} <= exact(defs["OpSpec"]["properties"]["name"])
    vgg = next(r["then"] for r in defs["ModelConfig"]["allOf"] if r["if"]["properties"]["name"]["const"] == "vgg_bn")
    assert {"activation", "dropout", "batch_norm"} <= set(vgg["properties"])  # keys offered once the model is chosen
    assert "source" not in schema["properties"] and "base" in schema["properties"]


@pytest.mark.parametrize("recipe, complaint", [
    ({"model": {"name": "vgg_bnn"}}, "not valid under any of the given schemas"),
    ({"model": {"name": "vgg_bn", "dropot": 0.5}}, "'dropot' was unexpected"),
    ({"model": {"name": "vgg_bn", "activation": "relux"}}, "'relux' is not one of"),
    ({"optim": {"lr": -1}}, "-1 is not valid under any of the given schemas"),  # neither a positive number nor auto
    ({"schedule": {"name": "step", "gamma": 0}}, "less than or equal to the minimum of 0"),
    ({"trian": {"epochs": 2}}, "'trian' was unexpected"),
    ({"augment": {"train": [{"name": "rotate", "limt": 20}]}}, "is not valid under any of the given schemas"),
    ({"train": {"precision": "fp8"}}, "'fp8' is not one of"),
])
def test_mistakes_are_flagged_in_the_editor(validator: jsonschema.Draft202012Validator, recipe: dict[str, Any],
                                            complaint: str) -> None:
    errors = _errors(validator, recipe)
    assert any(complaint in e for e in errors), errors


def test_shorthands_that_cnnforge_accepts_are_valid(validator: jsonschema.Draft202012Validator) -> None:
    recipe = {"base": "digits_convnet.yaml", "augment": {"train": "hflip"},
              "tune": {"scheduler": "asha", "grid": {"optim.lr": [0.1, 0.01]}}}
    assert _errors(validator, recipe) == []


def test_name_families_complete_by_prefix(validator: jsonschema.Draft202012Validator) -> None:
    families = [n[:-1] for n in registry.models.names() if n.endswith("*")]
    if not families:
        pytest.skip("no model family (timm/*, tv/*) installed")
    for prefix in families:
        assert _errors(validator, {"model": {"name": f"{prefix}resnet18", "pretrained": False}}) == []
        assert _errors(validator, {"model": {"name": prefix}}) != []


def test_recipe_with_the_schema_comment_still_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# yaml-language-server: $schema=../cnnforge.schema.json\nname: r\nmodel: {name: convnet}\n")
    proc = cli_here(capsys, "check", str(recipe))
    assert proc.returncode == 0, proc.stderr
