"""Recipes: the YAML that describes a run, validated by pydantic before anything heavy starts.

A recipe is read with ``yaml.safe_load`` within bounds (:mod:`cnnforge.yaml_bounds`), may inherit from
``base:`` (a path relative to the file, or a packaged recipe's name), and takes dotted command-line
overrides whose values are parsed as YAML. Every problem becomes one
:class:`~cnnforge.errors.ConfigError` naming the file and key path.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from cnnforge.errors import ConfigError, did_you_mean
from cnnforge.extras import require
from cnnforge.recipe_catalog import find_recipe, resolve_recipe
from cnnforge.schema_base import Bool, Fraction, Positive, Section
from cnnforge.tricks_spec import EvalConfig, LookaheadConfig, WhitenConfig, switch
from cnnforge.tune_checks import check_tune
from cnnforge.tune_spec import TuneConfig
from cnnforge.yaml_bounds import load_yaml


class _Named(BaseModel):
    """A section whose ``name`` picks a registered builder and whose other keys are its params."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(_Named):
    name: str = "digits"
    root: str = Field(default_factory=lambda: os.environ.get("CNNFORGE_DATA", "data"))
    batch_size: Positive = 64
    eval_batch_size: Positive | None = None
    num_workers: Annotated[int, Strict(), Field(ge=0)] = 2
    val_fraction: Fraction = 0.1
    split: tuple[Fraction, Fraction, Fraction] = (0.6, 0.2, 0.2)
    download: Bool = False
    on_device: Literal["auto"] | Bool = "auto"  # hold the images on the device (training/batches.py)

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, split: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(split) - 1.0) > 1e-6:
            raise ValueError(f"split ratios must add up to 1, got {list(split)} (sum {sum(split):g})")
        return split

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OpSpec(_Named):
    """One augmentation op: ``{name: rotate, limit: 20}``."""


class AugmentConfig(Section):
    train: list[OpSpec] | str | None = None
    eval: list[OpSpec] | str | None = None
    mode: Literal["sample", "batch"] = "sample"


class ModelConfig(_Named):
    name: str = "convnet"


class OptimConfig(Section):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: Annotated[float, Field(gt=0)] = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: Bool = False
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    head_lr: Annotated[float, Field(gt=0)] | None = None
    bias_lr_mult: Annotated[float, Field(gt=0)] = 1.0  # lr x this for biases and norm params (training/parts.py)


class ScheduleConfig(Section):
    name: Literal["none", "step", "cosine", "onecycle"] = "none"
    step_size: Positive = 2
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0


class TrainConfig(Section):
    epochs: Positive = 10
    precision: Literal["no", "bf16", "fp16"] = "no"
    parallel: Literal["auto", "ddp", "dp", "none"] = "auto"
    grad_accum: Positive = 1
    clip_grad_norm: Annotated[float, Field(gt=0)] | None = None
    label_smoothing: Fraction = 0.0
    # decay of a moving average of the weights that evaluation uses
    ema: Annotated[float, Field(gt=0, lt=1)] | None = None
    lookahead: switch(LookaheadConfig) = None  # pulls the training weights to a slow average (training/lookahead.py)
    whiten_init: switch(WhitenConfig) = None  # the first conv from data patches (training/whiten.py)
    checkpoint_every: Annotated[int, Strict(), Field(ge=0)] = 1
    checkpoint_every_steps: Annotated[int, Strict(), Field(ge=0)] = 0
    keep_checkpoints: Positive = 2
    best_metric: str = "val/acc"
    best_mode: Literal["max", "min"] = "max"
    on_nan: Literal["stop", "skip", "rollback"] = "stop"
    channels_last: Bool | None = None  # None: auto, on for conv nets on a CPU (benchmarks/speed_knobs.py)
    compile: Bool = False
    plots: Bool = True  # the report's PNGs; metrics.json, summary.md and predictions.csv are always written
    out_dir: str = "runs"
    # one fixed run directory instead of out_dir/<name>/<time>: rerunning the command continues it (training/requeue.py)
    run_dir: str | None = None
    # signals that stop the run at the next optimizer step with a checkpoint (training/preemption.py); [] turns it off
    signals: list[Literal["TERM", "USR1", "USR2", "HUP"]] = Field(default_factory=lambda: ["TERM", "USR1"])

    @field_validator("precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` (train.precision=no) as false


class TrackingConfig(Section):
    backend: Literal["wandb", "tensorboard", "csv", "none"] = "none"
    project: str = "cnnforge"
    entity: str | None = None
    group: str | None = None
    log_model: Bool = False


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: Annotated[int, Strict(), Field(ge=0, lt=2**32)] = 0  # NumPy seeds are 32-bit
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tune: TuneConfig | None = None

    #: where the recipe came from, for error messages (not part of the YAML)
    source: str = Field(default="<recipe>", exclude=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------------------------- reading

def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML file; syntax errors carry the file, line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such recipe file", where=str(p)) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read recipe: {exc.__class__.__name__}", where=str(p)) from None
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
    try:
        recipe = Recipe.model_validate({k: v for k, v in data.items() if k != "source"})
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


#: metrics every run reports; a tune metric or best_metric must be one of these
REPORTED_METRICS = ("val/acc", "val/loss", "train/loss", "train/acc", "lr")


def check_recipe(recipe: Recipe) -> Recipe:
    """Check every registry name and builder param in ``recipe`` (light: no torch, no data)."""
    _check_names(recipe)
    src = recipe.source
    if recipe.tracking.backend in ("wandb", "tensorboard"):  # the two trackers that are extras
        require(recipe.tracking.backend, where=f"{src}: tracking.backend")
    for key, value, allowed in (("train.best_metric", recipe.train.best_metric, REPORTED_METRICS),
                                ("tune.metric", recipe.tune.metric if recipe.tune else None, REPORTED_METRICS)):
        if value is not None and value not in allowed:
            raise ConfigError(f"{value!r} is not a metric the trainer reports ({', '.join(allowed)})",
                              where=f"{src}: {key}", hint=did_you_mean(value, allowed))
    if recipe.tune is not None:  # `check` applies the sweep's checks too
        for key, value, where in check_tune(recipe):
            check_swept_value(recipe, key, value, where=where)
    return recipe


def check_swept_value(recipe: Recipe, key: str, value: Any, *, where: str) -> None:
    """A grid or sampled ``value`` of ``key`` must give a valid recipe, names and params included."""
    trial = {**set_key(recipe.to_dict(), key, value), "tune": None}
    try:
        check_recipe(recipe_from_dict(trial, recipe.source))
    except ConfigError as exc:
        raise ConfigError(f"value {value!r} is invalid: {exc.message}", where=where, hint=exc.hint) from None


def _check_names(recipe: Recipe) -> None:
    from cnnforge import registry
    from cnnforge.data.pipeline import check_augment

    src = recipe.source
    for section, reg in (("model", registry.models), ("data", registry.datasets)):
        spec = getattr(recipe, section)
        try:
            entry = reg.get(spec.name)
        except ConfigError as exc:
            raise ConfigError(exc.message, where=f"{src}: {section}.name", hint=exc.hint) from None
        registry.builder_kwargs(entry, spec.params, context=dict.fromkeys(reg.context), where=f"{src}: {section}")
    check_augment(recipe.augment, src)


def yaml_value(value: Any) -> str:
    """``value`` as the YAML text an override ``key=value`` parses back to the same value (one line)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def set_key(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``dotted`` (``optim.lr``) set to ``value``."""
    return apply_overrides(data, [f"{dotted}={yaml_value(value)}"])
