"""Checks of a recipe's ``tune:`` section, applied alike by ``check``, ``run`` and ``tune`` (no Ray, no torch).

Every grid value, every sampled value and every value PBT may mutate to (the ends of a range) must give
a valid recipe, so a sweep never fails after Ray has started, or "continues" into a trial with a value
it cannot use.
Checking one value builds the trial's recipe, which is :func:`cnnforge.recipe.checks.check_swept_value`'s
job; this module sits below ``checks`` and hands it the values to check.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnforge.errors import ConfigError

if TYPE_CHECKING:
    from cnnforge.recipe import Recipe
    from cnnforge.recipe.tune import SampleSpec


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
        swept += _sampled(sample, f"{src}: tune.sample.{key}", key)
    _check_schedule_and_resources(recipe)
    if spec.scheduler.name == "pbt":
        swept += _check_pbt(recipe)
    return swept


def _sampled(sample: SampleSpec, where: str, key: str) -> list[tuple[str, Any, str]]:
    """The values to check of a sampled or mutated key: every choice, or the two ends of its range."""
    low, high = sample.bounds or (0.0, 1.0)
    if low >= high or (sample.loguniform is not None and low <= 0):
        what = " of positive numbers" if sample.loguniform else ""
        raise ConfigError(f"[{low:g}, {high:g}] is not a range{what}", where=where)
    if sample.choice is not None and not sample.choice:
        raise ConfigError("is empty: nothing to choose from", where=f"{where}.choice", hint="give at least one value")
    values = sample.choice if sample.choice is not None else (low, high)
    return [(key, value, where) for value in values]


def _check_pbt(recipe: Recipe) -> list[tuple[str, Any, str]]:
    """``scheduler: pbt``: a searcher Ray's PBT accepts, perturbations between epochs at checkpoints, fixed
    epochs, something to mutate; returns every value a mutation can give (ranges: their ends)."""
    spec, src = recipe.tune, recipe.source
    assert spec is not None
    where = f"{src}: tune.scheduler"
    if spec.search == "optuna":  # Ray refuses it, but only once the first trial is added
        raise ConfigError("optuna cannot propose the trials of scheduler pbt (Ray's PBT changes them itself)",
                          where=f"{src}: tune.search", hint="use search: grid or random with pbt")
    interval, every, epochs = spec.scheduler.perturbation_interval, recipe.train.checkpoint_every, recipe.train.epochs
    if interval >= epochs:
        raise ConfigError(f"{interval} is not shorter than train.epochs ({epochs}): PBT would never perturb a trial",
                          where=f"{where}.perturbation_interval")
    if every == 0 or interval % every:
        raise ConfigError(f"{every} does not divide tune.scheduler.perturbation_interval ({interval}): PBT copies "
                          "the checkpoint a trial wrote when it perturbs", where=f"{src}: train.checkpoint_every")
    mutations = spec.mutations()
    if not mutations:
        raise ConfigError("nothing to mutate: no swept key has numeric values", where=f"{where}.hyperparam_mutations",
                          hint="name them, e.g. hyperparam_mutations: {optim.lr: {loguniform: [1.0e-4, 0.1]}}")
    varied = [f"tune.{part}.train.epochs" for part, keys in (("grid", spec.grid), ("sample", spec.sample),
                                                            ("scheduler.hyperparam_mutations", mutations))
              if "train.epochs" in keys]
    if varied:
        raise ConfigError("PBT trials all train for train.epochs epochs; it cannot vary", where=f"{src}: {varied[0]}")
    # mutations taken from the grid and samples by default were checked there
    return [value for key, sample in spec.scheduler.hyperparam_mutations.items()
            for value in _sampled(sample, f"{where}.hyperparam_mutations.{key}", key)]


def _check_schedule_and_resources(recipe: Recipe) -> None:
    spec, src = recipe.tune, recipe.source
    assert spec is not None
    if spec.scheduler.name == "asha" and spec.scheduler.grace_period > recipe.train.epochs:
        raise ConfigError(f"grace_period {spec.scheduler.grace_period} is longer than train.epochs "
                          f"({recipe.train.epochs})", where=f"{src}: tune.scheduler.grace_period")
    _check_workers(recipe)
    gpu = spec.resources_per_trial.gpu
    if gpu == "auto":
        return
    if gpu > 1 and not float(gpu).is_integer():
        raise ConfigError(f"{gpu:g} GPUs: Ray shares a GPU only in fractions below 1, more must be whole",
                          where=f"{src}: tune.resources_per_trial.gpu")
    if gpu >= 2 and recipe.train.parallel != "dp":
        raise ConfigError(f"a trial is one process; to use its {gpu:g} GPUs set train.parallel: dp",
                          where=f"{src}: tune.resources_per_trial.gpu")


def _check_workers(recipe: Recipe) -> None:
    """DDP trials (``workers_per_trial`` > 1) size their processes with ``*_per_worker``, one GPU at most each."""
    spec, src = recipe.tune, recipe.source
    assert spec is not None
    if spec.workers_per_trial == 1:
        return
    if spec.resources_per_trial.cpu != "auto" or spec.resources_per_trial.gpu != "auto":
        raise ConfigError("a DDP trial's processes are sized by tune.cpus_per_worker and tune.gpus_per_worker",
                          where=f"{src}: tune.resources_per_trial", hint="leave it out with workers_per_trial > 1")
    if spec.gpus_per_worker != "auto" and spec.gpus_per_worker > 1:
        raise ConfigError(f"{spec.gpus_per_worker:g}: a DDP process drives one GPU",
                          where=f"{src}: tune.gpus_per_worker", hint="more GPUs: raise tune.workers_per_trial")
