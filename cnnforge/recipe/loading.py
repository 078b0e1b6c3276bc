"""Reading a recipe: bounded YAML, ``base:`` inheritance, dotted overrides, validation into a :class:`Recipe`.

A recipe is read with ``yaml.safe_load`` within bounds (:mod:`cnnforge.recipe.bounds`), may inherit from
``base:`` (a path relative to the file, or a packaged recipe's name), and takes dotted command-line
overrides whose values are parsed as YAML. Every problem becomes one
:class:`~cnnforge.errors.ConfigError` naming the file and key path.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cnnforge.bounded_read import read_bounded_text
from cnnforge.errors import ConfigError, did_you_mean
from cnnforge.recipe.bounds import MAX_BYTES, load_yaml
from cnnforge.recipe.catalog import find_recipe, resolve_recipe
from cnnforge.recipe.schema import Recipe


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML file; syntax errors carry the file, line and column."""
    p = Path(path)
    try:  # read up to the bound, never whole: a FIFO, a device or a huge file is refused at once
        text = read_bounded_text(p, MAX_BYTES, what="recipe", error=ConfigError)
    except FileNotFoundError:
        raise ConfigError("no such recipe file", where=str(p)) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", where=where) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a recipe must be a mapping of keys, got {type(data).__name__}", where=str(p))
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into ``base``: mappings merge key by key, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"base recipes form a cycle: {chain}", where=str(seen[0]) + ": base")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError("must be a path or a list of paths", where=f"{path}: base")
    merged: dict[str, Any] = {}
    for b in bases:
        target = _base_path(path, b)
        merged = merge(merged, _read_with_bases(target, (*seen, path)))
    return merge(merged, data)


def _base_path(path: Path, base: str) -> Path:
    """A base beside the recipe file, else the packaged recipe of that name (``base: cifar_vgg_bn``)."""
    target = path.parent / base
    if target.exists():
        return target
    if len(Path(base).parts) == 1:
        try:
            return find_recipe(base).path
        except ConfigError as exc:
            raise ConfigError(f"base recipe {base!r} not found beside the file or among packaged recipes",
                              where=f"{path}: base", hint=exc.hint) from None
    raise ConfigError(f"base recipe {base!r} not found (looked in {path.parent})", where=f"{path}: base")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=0.01`` -> (["optim", "lr"], 0.01); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError("an override must look like key.path=value", where=f"override {text!r}")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"value is not valid YAML: {getattr(exc, 'problem', exc)}",
                          where=f"override {text!r}") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = merge({}, data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{part!r} is not a mapping, cannot set {'.'.join(path)}", where=f"override {text!r}")
            node = child
        node[path[-1]] = value
    return out


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Known keys of the section an error points into (for did-you-mean)."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        current = next((a for a in getattr(ann, "__args__", (ann,))
                        if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _error_from_validation(exc: ValidationError, source: str) -> ConfigError:
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "list[", "tagged-union")))]
    key = ".".join(str(p) for p in loc) or "<top>"
    hint = None
    if err["type"] == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), [f for f in _fields_at(Recipe, loc) if f != "source"])
        message = "unknown key"
    elif err["type"] == "missing":
        message = "required key is missing"
    else:
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        expected = (err.get("ctx") or {}).get("expected")
        if expected and isinstance(value, str):
            hint = did_you_mean(value, [c.strip(" '") for c in str(expected).replace(" or ", ",").split(",")])
    return ConfigError(message, where=f"{source}: {key}", hint=hint)


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    if "source" in data:  # a field of the model, never of the YAML: set only from where the recipe was read
        raise ConfigError("unknown key", where=f"{source}: source")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise _error_from_validation(exc, source) from None
    recipe.source = source
    return recipe


def load_recipe(path: str | os.PathLike[str] | Recipe | dict[str, Any], overrides: Iterable[str] = ()) -> Recipe:
    """Read, inherit, override and validate a recipe (schema only; see :func:`check_recipe` for names)."""
    overrides = list(overrides)
    if isinstance(path, Recipe):
        data, source = path.to_dict(), path.source
    elif isinstance(path, dict):
        data, source = path, "<dict>"
    else:
        file = resolve_recipe(path)  # a path wins; otherwise a packaged recipe's name
        data, source = _read_with_bases(file), str(file)
        data.setdefault("name", file.stem)  # a recipe's name defaults to its file name
    return recipe_from_dict(apply_overrides(data, overrides), source)


def yaml_value(value: Any) -> str:
    """``value`` as the YAML text an override ``key=value`` parses back to the same value (one line)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def set_key(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``dotted`` (``optim.lr``) set to ``value``."""
    return apply_overrides(data, [f"{dotted}={yaml_value(value)}"])
