"""The ``tune:`` section of a recipe: what a sweep varies, how Ray Tune schedules it, what a trial gets.

Its checks that need the whole recipe (values that must give a valid trial, a scheduler that fits
``train.epochs``) live in :mod:`cnnforge.recipe.tune_checks`; turning it into Ray objects is ``cnnforge.sweep``'s job.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, Strict, field_validator, model_validator

from cnnforge.recipe.section import Bool, Positive, Section

#: the settings that belong to each scheduler; setting one for another scheduler is an error
SCHEDULER_KEYS = {"asha": ("grace_period", "reduction_factor"),
                  "pbt": ("perturbation_interval", "hyperparam_mutations", "quantile_fraction", "resample_probability",
                          "synch")}


class SampleSpec(Section):
    """A sampled hyperparameter: ``{choice: [...]}``, ``{uniform: [lo, hi]}`` or ``{loguniform: [lo, hi]}``."""

    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SampleSpec:
        given = [k for k in ("choice", "uniform", "loguniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, uniform, loguniform")
        return self

    @property
    def bounds(self) -> tuple[float, float] | None:
        """(low, high) of a range; None for a choice."""
        return self.uniform or self.loguniform


class SchedulerSpec(Section):
    """``tune.scheduler``: ``fifo`` (every trial to its end), ``asha`` (stops weak trials early) or ``pbt``.

    ``pbt`` is population-based training: every ``perturbation_interval`` epochs a trial in the worst
    ``quantile_fraction`` continues from a checkpoint of one in the best, with its hyperparameters
    perturbed (``hyperparam_mutations``: a list shifts to a neighbouring value, a range multiplies by 0.8 or
    1.2 and stays inside it; either is drawn afresh with ``resample_probability``). Without
    ``hyperparam_mutations`` it mutates the swept numeric keys (:meth:`TuneConfig.mutations`). ``synch``
    waits until every trial has reached the interval (the trials pause and restart from their checkpoints);
    by default each trial is compared with the others' latest scores as it gets there.
    """

    name: Literal["fifo", "asha", "pbt"] = "fifo"
    grace_period: Positive = 1
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0
    perturbation_interval: Positive = 1
    hyperparam_mutations: dict[str, SampleSpec] = Field(default_factory=dict)
    quantile_fraction: Annotated[float, Field(gt=0, le=0.5)] = 0.25
    resample_probability: Annotated[float, Field(ge=0, le=1)] = 0.25
    synch: Bool = False  # perturb only once every trial has reached the interval (Ray's synchronous PBT)

    @field_validator("hyperparam_mutations", mode="before")
    @classmethod
    def _list_is_a_choice(cls, value: Any) -> Any:
        """``optim.lr: [0.001, 0.01, 0.1]`` is Ray's list form: ``{choice: [...]}`` here."""
        if isinstance(value, dict):
            return {k: {"choice": v} if isinstance(v, list) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _own_settings_only(self) -> SchedulerSpec:
        """Another scheduler's setting, changed from its default, is a mistake (a resolved recipe holds them all)."""
        for name, keys in SCHEDULER_KEYS.items():
            fields = type(self).model_fields
            stray = [k for k in keys if name != self.name and getattr(self, k) != fields[k].get_default(
                call_default_factory=True)]
            if stray:
                raise ValueError(f"{stray[0]} is a setting of the {name} scheduler, not of {self.name}")
        return self


class ResourcesSpec(Section):
    """CPUs and GPUs of one sweep trial; ``auto`` is what fits (``cnnforge.sweep.trial_resources``)."""

    cpu: Annotated[float, Field(gt=0)] | Literal["auto"] = "auto"
    gpu: Annotated[float, Field(ge=0)] | Literal["auto"] = "auto"


class TuneConfig(Section):
    metric: str = "val/acc"
    mode: Literal["max", "min"] = "max"
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    sample: dict[str, SampleSpec] = Field(default_factory=dict)
    search: Literal["grid", "random", "optuna"] = "grid"  # cnnforge.sweep.search
    num_samples: Positive = 1
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources_per_trial: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent: Positive | None = None
    max_failures: Annotated[int, Strict(), Field(ge=0)] = 1
    # >1: every trial is a DDP job of that many processes, a Ray Train TorchTrainer (cnnforge.sweep.ddp_trial)
    workers_per_trial: Positive = 1
    cpus_per_worker: Annotated[float, Field(gt=0)] | Literal["auto"] = "auto"  # auto: data.num_workers + 1
    gpus_per_worker: Annotated[float, Field(ge=0)] | Literal["auto"] = "auto"  # auto: 1 when the cluster has GPUs
    trial_plots: Bool = False  # PNG reports per trial: most of a short trial's time; `cnnforge eval` writes them later

    @model_validator(mode="before")
    @classmethod
    def _scheduler_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("scheduler"), str):
            data = {**data, "scheduler": {"name": data["scheduler"]}}
        return data

    def mutations(self) -> dict[str, SampleSpec]:
        """What ``pbt`` mutates: ``scheduler.hyperparam_mutations``, else every swept key whose values are numbers
        (a grid or choice of numbers, a range), within what the sweep allows it."""
        if self.scheduler.hyperparam_mutations:
            return dict(self.scheduler.hyperparam_mutations)
        spaces = {**{k: SampleSpec(choice=v) for k, v in self.grid.items()}, **self.sample}
        return {key: space for key, space in spaces.items()
                if space.choice is None or (space.choice and all(_is_number(v) for v in space.choice))}

    def trial_count(self) -> int:
        """The trials the sweep plans: every grid combination, ``num_samples`` times over."""
        return self.num_samples * math.prod(len(values) for values in self.grid.values())

    def swept_keys(self) -> list[str]:
        """Every key a trial's config holds: grid, sampled and (pbt) mutated keys, in that order."""
        mutated = self.mutations() if self.scheduler.name == "pbt" else {}
        return list(dict.fromkeys([*self.grid, *self.sample, *mutated]))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
