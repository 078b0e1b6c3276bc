"""Checks of a recipe's ``tune:`` section, applied alike by ``check``, ``run`` and ``tune`` (no Ray, no torch).

Every grid value and every sampled value (the ends of a range) must give a valid recipe, so a
sweep never fails after Ray has started, or "continues" into a trial with a value it cannot use.
Checking one value builds the trial's recipe, which is :func:`cnnforge.recipe.check_swept_value`'s
job; this module sits below ``recipe`` and hands it the values to check.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnforge.errors import ConfigError

if TYPE_CHECKING:
    from cnnforge.recipe import Recipe


def check_tune(recipe: Recipe) -> list[tuple[str, Any, str]]:
    """One ConfigError for the first problem of ``recipe.tune`` (which must be set) that needs no trial recipe;
    else every ``(key, value, where)`` a trial can take, for the caller to check as a whole recipe."""
    spec, src = recipe.tune, recipe.source
    assert spec is not None
    both = sorted(set(spec.grid) & set(spec.sample))
    if both:
        raise ConfigError("a key is both in grid and in sample", where=f"{src}: tune.sample.{both[0]}")
    swept: list[tuple[str, Any, str]] = []
    for key, values in spec.grid.items():
        if not values:
            raise ConfigError("is empty: nothing to choose from", where=f"{src}: tune.grid.{key}",
                              hint="give at least one value")
        swept += [(key, value, f"{src}: tune.grid.{key}") for value in values]
    for key, sample in spec.sample.items():
        low, high = sample.uniform or sample.loguniform or (0.0, 1.0)
        if low >= high or (sample.loguniform is not None and low <= 0):
            what = " of positive numbers" if sample.loguniform else ""
            raise ConfigError(f"[{low:g}, {high:g}] is not a range{what}",
                              where=f"{src}: tune.sample.{key}")
        if sample.choice is not None and not sample.choice:
            raise ConfigError("is empty: nothing to choose from", where=f"{src}: tune.sample.{key}.choice",
                              hint="give at least one value")
        values = sample.choice if sample.choice is not None else (low, high)
        swept += [(key, value, f"{src}: tune.sample.{key}") for value in values]
    _check_schedule_and_resources(recipe)
    return swept


def _check_schedule_and_resources(recipe: Recipe) -> None:
    spec, src = recipe.tune, recipe.source
    assert spec is not None
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
