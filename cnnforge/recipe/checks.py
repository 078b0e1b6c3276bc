"""Checks a schema cannot make: registry names and builder params, reported metrics, a sweep's values (light:
no torch, no data)."""
from __future__ import annotations

from typing import Any

from cnnforge.errors import ConfigError, did_you_mean
from cnnforge.optional_deps import require
from cnnforge.recipe.loading import recipe_from_dict, set_key
from cnnforge.recipe.schema import Recipe
from cnnforge.recipe.tune_checks import check_tune

#: metrics every run reports; a tune metric or best_metric must be one of these
REPORTED_METRICS = ("val/acc", "val/loss", "val/balanced_acc", "val/macro_f1", "train/loss", "train/acc", "lr")


def check_recipe(recipe: Recipe) -> Recipe:
    """Check every registry name and builder param in ``recipe`` (light: no torch, no data)."""
    _check_names(recipe)
    src = recipe.source
    if recipe.tracking.backend in ("wandb", "tensorboard"):  # the two trackers that are extras
        require(recipe.tracking.backend, where=f"{src}: tracking.backend")
    stop = recipe.train.early_stop
    for key, value, allowed in (("train.best_metric", recipe.train.best_metric, REPORTED_METRICS),
                                ("train.early_stop.metric", stop.metric if stop else None, REPORTED_METRICS),
                                ("tune.metric", recipe.tune.metric if recipe.tune else None, REPORTED_METRICS)):
        if value is not None and value not in allowed:
            raise ConfigError(f"{value!r} is not a metric the trainer reports ({', '.join(allowed)})",
                              where=f"{src}: {key}", hint=did_you_mean(value, allowed))
    if recipe.train.class_weights is not None and recipe.data.balance == "sampler":
        raise ConfigError("weight the loss, and data.balance: sampler already draws balanced batches",
                          where=f"{src}: train.class_weights", hint="use data.balance: loss with class weights")
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


def check_family_names(recipe: Recipe) -> None:
    """What the name families (``timm/``, ``tv/``) say of the recipe's names: their libraries are imported (torch
    with them), so the callers that probe the data ask this, not :func:`check_recipe`."""
    for key, spec, reg in _named_parts(recipe):
        try:
            reg.check_name(spec.name)
        except ConfigError as exc:
            raise ConfigError(exc.message, where=f"{recipe.source}: {key}.name", hint=exc.hint) from None


def _named_parts(recipe: Recipe) -> list[tuple[str, Any, Any]]:
    """(recipe key, spec, registry) of every part the recipe names."""
    from cnnforge import registry

    return [("model", recipe.model, registry.models), ("data", recipe.data, registry.datasets),
            ("optim", recipe.optim, registry.optimizers), ("schedule", recipe.schedule, registry.schedules),
            ("train.loss", recipe.train.loss, registry.losses),
            *((f"callbacks[{i}]", spec, registry.callbacks) for i, spec in enumerate(recipe.callbacks))]


def _check_names(recipe: Recipe) -> None:
    from cnnforge import registry
    from cnnforge.data.pipeline import check_augment

    src = recipe.source
    for key, spec, reg in _named_parts(recipe):
        try:
            entry = reg.get(spec.name)
        except ConfigError as exc:
            raise ConfigError(exc.message, where=f"{src}: {key}.name", hint=exc.hint) from None
        own = tuple(f for f in type(spec).model_fields if f != "name")
        kwargs = registry.builder_kwargs(entry, spec.params, context=dict.fromkeys(reg.context),
                                         where=f"{src}: {key}", known=own)
        if key == "train.loss" and recipe.train.label_smoothing and "label_smoothing" not in kwargs:
            raise ConfigError(f"loss {spec.name!r} ({entry.package}) takes no label smoothing",
                              where=f"{src}: train.label_smoothing")
    check_augment(recipe.augment, src)


