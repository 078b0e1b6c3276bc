"""How a sweep picks its trials: ``tune.search: grid | random | optuna``.

- ``grid`` (default): every combination of ``tune.grid``, each with ``num_samples`` draws of ``tune.sample``
  (Ray's basic variant generator);
- ``random``: ``num_samples`` trials, every key drawn at random (grid values become a uniform choice);
- ``optuna``: ``num_samples`` trials chosen one after another by Optuna's TPE (Ray Tune's ``OptunaSearch``),
  which models the results so far and proposes where the metric looks best.

Random and TPE are seeded with the recipe's ``seed``, so a sweep proposes the same trials again. The
searcher's state is part of Ray's experiment snapshot: rerunning the command restores it with the trials.
"""
from __future__ import annotations

from typing import Any

from cnnforge.recipe.tune import SampleSpec, TuneConfig


def search_space(spec: TuneConfig) -> dict[str, Any]:
    """Ray's ``param_space``: grid keys as ``grid_search`` (``search: grid``) or a choice, sampled keys as their
    distribution."""
    from ray import tune as ray_tune

    grid = ray_tune.grid_search if spec.search == "grid" else ray_tune.choice
    space: dict[str, Any] = {key: grid(list(values)) for key, values in spec.grid.items()}
    return {**space, **{key: distribution(sample) for key, sample in spec.sample.items()}}


def distribution(sample: SampleSpec) -> Any:
    """Ray's sampler of one ``tune.sample`` entry: a choice, or a uniform or log-uniform range."""
    from ray import tune as ray_tune

    if sample.choice is not None:
        return ray_tune.choice(list(sample.choice))
    if sample.uniform is not None:
        return ray_tune.uniform(*sample.uniform)
    return ray_tune.loguniform(*sample.loguniform)  # type: ignore[misc]


def searcher(spec: TuneConfig, seed: int, max_concurrent: int | None) -> Any:
    """Ray's ``search_alg`` for ``spec.search``; at most ``max_concurrent`` trials at once (None: no cap)."""
    from ray.tune.search import BasicVariantGenerator

    if spec.search != "optuna":  # a generator, not a Searcher: Ray would ignore max_concurrent_trials for it
        return BasicVariantGenerator(max_concurrent=max_concurrent or 0, random_state=seed)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial otherwise
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed))
