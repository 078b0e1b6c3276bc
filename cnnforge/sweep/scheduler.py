"""How a sweep spends its trials' epochs: ``tune.scheduler: fifo | asha | pbt`` as Ray Tune schedulers.

``pbt`` is Ray's ``PopulationBasedTraining`` on the epoch counter: every ``perturbation_interval``
epochs a trial in the worst quantile is paused and restarted from the better trial's latest checkpoint
with that trial's config, perturbed (:mod:`cnnforge.sweep.trial` starts a new run directory from it).
cnnforge adds two things Ray leaves to its users: a perturbed value stays inside the range the recipe
gives (every value in it was checked before Ray started), and no trial is perturbed after its last
epoch, when its run has already been tested.
"""
from __future__ import annotations

import functools
from typing import Any

from cnnforge.compat import ray_internals
from cnnforge.recipe import Recipe
from cnnforge.recipe.tune import SampleSpec, TuneConfig
from cnnforge.sweep.search import distribution

#: the result key that counts a trial's progress (the epochs cnnforge reports)
TIME_ATTR = "epoch"


def scheduler(recipe: Recipe, spec: TuneConfig) -> Any:
    """Ray's scheduler for ``spec.scheduler``."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    settings = spec.scheduler
    if settings.name == "asha":
        sampled = getattr(spec.sample.get("train.epochs"), "choice", None) or []
        swept_epochs = [*spec.grid.get("train.epochs", []), *sampled]
        return ASHAScheduler(time_attr=TIME_ATTR, max_t=max([recipe.train.epochs, *swept_epochs]),
                             grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)
    if settings.name == "pbt":
        return _population_based_training(recipe, spec)
    return FIFOScheduler()


def checkpoints_to_keep(recipe: Recipe, spec: TuneConfig) -> int:
    """Ray checkpoints kept per trial: two, or with PBT enough that the one a weaker trial is told to copy is
    still there when it restarts (Ray warns that two are too few): those of two perturbation intervals."""
    if spec.scheduler.name != "pbt":
        return 2
    return 2 * spec.scheduler.perturbation_interval // recipe.train.checkpoint_every + 1


def _population_based_training(recipe: Recipe, spec: TuneConfig) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    interval = spec.scheduler.perturbation_interval

    class EpochBoundPBT(PopulationBasedTraining):  # type: ignore[misc]
        """PBT that leaves a trial alone at its last epoch (that report comes after the run's test) and that
        continues a restored experiment where its trials stand.

        ``Tuner.restore`` brings back the trials but not the scheduler's state: a synchronous PBT counting
        from epoch 0 again would wait forever for trials that are already past its next perturbation
        (Ray 2.60). So each restored trial's progress is taken from its last result, and the next
        synchronisation point is the first one after the slowest trial.
        """

        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            super().on_trial_add(tune_controller, trial)
            epoch = int((trial.last_result or {}).get(TIME_ATTR, 0))  # a restored trial's; 0 for a new one
            if epoch:
                ray_internals.restore_pbt_progress(self, trial, epoch, interval)

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            if result.get(TIME_ATTR, 0) >= recipe.train.epochs:
                return self.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

    mutations = spec.mutations()
    settings = spec.scheduler
    return EpochBoundPBT(
        time_attr=TIME_ATTR, perturbation_interval=settings.perturbation_interval,
        hyperparam_mutations={key: _mutation(sample) for key, sample in mutations.items()},
        quantile_fraction=settings.quantile_fraction, resample_probability=settings.resample_probability,
        synch=settings.synch,
        custom_explore_fn=functools.partial(clip_to_ranges, ranges={k: s.bounds for k, s in mutations.items()
                                                                    if s.bounds is not None}))


def _mutation(sample: SampleSpec) -> Any:
    """Ray's form of one mutation: a list (moves to a neighbouring value) or a distribution (multiplied by 0.8
    or 1.2). A choice is a list: Ray would multiply the values of a ``tune.choice``."""
    return list(sample.choice) if sample.choice is not None else distribution(sample)


def clip_to_ranges(config: dict[str, Any], *, ranges: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """A perturbed config with every ranged key inside its range (integers stay integers)."""
    for key, (low, high) in ranges.items():
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            config[key] = type(value)(min(max(value, low), high))
    return config
