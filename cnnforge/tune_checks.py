"""Checks of a recipe's ``tune:`` section, applied alike by ``check``, ``run`` and ``tune`` (no Ray, no torch).

Every grid value and every sampled value (the ends of a range) must give a valid recipe, so a
sweep never fails after Ray has started, or "continues" into a trial with a value it cannot use.
"""
from __future__ import annotations

from typing import Any

from cnnforge.errors import ConfigError
from cnnforge.recipe import Recipe, check_recipe, recipe_from_dict, set_key


def check_tune(recipe: Recipe) -> None:
    """One ConfigError for the first problem of ``recipe.tune`` (which must be set)."""
    spec, src = recipe.tune, recipe.source
    assert spec is not None
    both = sorted(set(spec.grid) & set(spec.sample))
    if both:
        raise ConfigError("a key is both in grid and in sample", where=f"{src}: tune.sample.{both[0]}")
    for key, values in spec.grid.items():
        if not values:
            raise ConfigError("is empty: nothing to choose from", where=f"{src}: tune.grid.{key}",
                              hint="give at least one value")
        for value in values:
            _check_value(recipe, key, value, f"tune.grid.{key}")
    for key, sample in spec.sample.items():
        low, high = sample.uniform or sample.loguniform or (0.0, 1.0)
        if low >= high or (sample.loguniform is not None and low <= 0):
            what = " of positive numbers" if sample.loguniform else ""
            raise ConfigError(f"[{low:g}, {high:g}] is not a range{what}",
                              where=f"{src}: tune.sample.{key}")
        if sample.choice is not None and not sample.choice:
            raise ConfigError("is empty: nothing to choose from", where=f"{src}: tune.sample.{key}.choice",
                              hint="give at least one value")
        for value in sample.choice if sample.choice is not None else (low, high):
            _check_value(recipe, key, value, f"tune.sample.{key}")
    if spec.scheduler.name == "asha" and spec.scheduler.grace_period > recipe.train.epochs:
        raise ConfigError(f"grace_period {spec.scheduler.grace_period} is longer than train.epochs "
                          f"({recipe.train.epochs})", where=f"{src}: tune.scheduler.grace_period")
    gpu = spec.resources_per_trial.gpu
    if gpu == "auto":
        return
    if gpu > 1 and not float(gpu).is_integer():
        raise ConfigError(f"{gpu:g} GPUs: Ray shares a GPU only in fractions below 1, more must be whole",
                          where=f"{src}: tune.resources_per_trial.gpu")
    if gpu >= 2 and recipe.train.parallel != "dp":
        raise ConfigError(f"a trial is one process; to use its {gpu:g} GPUs set train.parallel: dp",
                          where=f"{src}: tune.resources_per_trial.gpu")


def _check_value(recipe: Recipe, key: str, value: Any, at: str) -> None:
    """The trial recipe with ``key`` set to ``value`` must pass every check a run applies."""
    trial = {**set_key(recipe.to_dict(), key, value), "tune": None}
    try:
        check_recipe(recipe_from_dict(trial, recipe.source))
    except ConfigError as exc:
        raise ConfigError(f"value {value!r} is invalid: {exc.message}", where=f"{recipe.source}: {at}",
                          hint=exc.hint) from None
