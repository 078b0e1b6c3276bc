"""``cnnforge schema``: the JSON Schema of recipes, for editors that complete and check YAML.

The schema comes from the pydantic models that validate recipes, so it accepts what ``cnnforge check``
accepts; the names in the registries (built-ins and every installed plugin) become completion lists,
and each builder's keyword parameters become the keys offered next to its ``name``. Save it once
(``cnnforge schema > cnnforge.schema.json``) and point the YAML language server at it.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import typing
from typing import Any

from cnnforge.registry import REGISTRIES, Entry, Registry, signature_target

#: keys of the builders' context (``Registry.context``) that a recipe may still state (checked against the data)
_RECIPE_MAY_SET = {"models": {"num_classes", "in_channels"}, "augmentations": {"p"}}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("schema", parents=[common], help="print the recipe JSON Schema (for editor completion)",
                       description="Print the JSON Schema of recipes, with the names of every installed model, "
                                   "dataset, augmentation, loss, optimizer, schedule and callback, on stdout.",
                       epilog="cnnforge schema > cnnforge.schema.json, then in a recipe: "
                              "# yaml-language-server: $schema=cnnforge.schema.json")
    p.set_defaults(func=_schema)


def _schema(args: argparse.Namespace) -> int:
    json.dump(recipe_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def recipe_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of a recipe file."""
    from cnnforge import registry
    from cnnforge._version import __version__
    from cnnforge.recipe import Recipe
    from cnnforge.recipe.tune import SchedulerSpec

    schema = Recipe.model_json_schema()
    defs = schema.setdefault("$defs", {})
    props = schema["properties"]
    props.pop("source", None)  # where a recipe was read from; not a key
    schema["required"] = []  # a recipe's name defaults to its file name
    props["base"] = {"description": "recipe file(s) this one extends, relative to this file",
                     "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    schema.update({"$schema": "https://json-schema.org/draft/2020-12/schema",
                   "title": f"cnnforge {__version__} recipe"})

    _by_name(defs["ModelConfig"], registry.models, defs)
    _by_name(defs["DataConfig"], registry.datasets, defs)
    _by_name(defs["OpSpec"], registry.augmentations, defs)
    for section, reg in (("OptimConfig", registry.optimizers), ("ScheduleConfig", registry.schedules),
                         ("LossConfig", registry.losses), ("CallbackSpec", registry.callbacks)):
        _by_name(defs[section], reg, defs)
    for split in ("train", "eval"):  # a string names one registered augmentation (often a whole pipeline)
        for branch in defs["AugmentConfig"]["properties"][split]["anyOf"]:
            if branch.get("type") == "string":
                branch.update(_names(registry.augmentations))
    scheduler_names = SchedulerSpec.model_json_schema()["properties"]["name"]["enum"]
    defs["TuneConfig"]["properties"]["scheduler"] = {  # `scheduler: asha` is shorthand for {name: asha}
        "anyOf": [{"$ref": "#/$defs/SchedulerSpec"}, {"type": "string", "enum": scheduler_names}]}
    return schema


def _names(reg: Registry) -> dict[str, Any]:
    """``enum`` of exact names, plus a pattern per open family such as ``timm/*``."""
    names = [n for n in reg.names() if not n.endswith("*")]
    families = [n[:-1] for n in reg.names() if n.endswith("*")]
    if not families:
        return {"enum": names}
    return {"anyOf": [{"enum": names}, *({"type": "string", "pattern": f"^{_escape(f)}.+"} for f in families)]}


def _escape(prefix: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\/" else c for c in prefix)


def _by_name(section: dict[str, Any], reg: Registry, defs: dict[str, Any]) -> None:
    """Complete ``name`` from ``reg``; once a name is chosen, offer (and type-check) that builder's params."""
    name = section["properties"]["name"]
    name.pop("type", None)
    name.update(_names(reg))
    name["description"] = f"a registered {reg.noun} (`cnnforge list {reg.kind}`)"
    rules = []
    own = set(section["properties"])  # the section's own keys (optim.lr ...) stay allowed beside the builder's
    for entry in reg.entries():
        if entry.name.endswith("*"):
            continue
        params = _params_schema(entry, reg.kind, defs, own)
        if params is not None:
            rules.append({"if": {"properties": {"name": {"const": entry.name}}, "required": ["name"]}, "then": params})
    if rules:
        section["allOf"] = rules


def _params_schema(entry: Entry, kind: str, defs: dict[str, Any], own: set[str]) -> dict[str, Any] | None:
    """The builder's keyword params as schema properties (None when its signature cannot be described).

    Only sections whose keys are all builder params (models, augmentation ops) forbid other keys; the
    data section also holds cnnforge's own keys.
    """
    from pydantic import ConfigDict, create_model

    try:
        sig = inspect.signature(entry.fn)
        hints = typing.get_type_hints(signature_target(entry.fn), include_extras=True)
        fields = {n: (hints.get(n, Any), ... if p.default is p.empty else p.default)
                  for n, p in sig.parameters.items()
                  if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in REGISTRIES[kind].context}
        model = create_model(f"{entry.name}_params", __config__=ConfigDict(arbitrary_types_allowed=True), **fields)
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
    except Exception:  # a plugin's unusual annotations must not break the schema: its name still completes
        return None
    defs.update(schema.pop("$defs", {}))
    props = schema.get("properties", {})
    for prop in props.values():
        prop.pop("title", None)
    if kind == "datasets":
        return {"properties": props}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    allowed = {**{k: {} for k in own | _RECIPE_MAY_SET.get(kind, set())}, **props}
    return {"properties": allowed, **({} if takes_any else {"additionalProperties": False})}
