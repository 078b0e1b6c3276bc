"""The small recipe sections that :mod:`cnnforge.recipe` composes, and the field types they share.

Kept apart so that ``recipe.py`` stays readable in one sitting: the sweep's sub-sections
(``tune.scheduler``, ``tune.resources_per_trial``, ``tune.sample``) and airbench's switchable tricks
(``train.lookahead``, ``train.whiten_init``, ``eval``). A trick section is ``null`` (off), a mapping
of its settings, or ``true`` for its defaults (:func:`switch`).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
# integers and booleans are strict: `train.epochs: true` is a mistake, not 1 epoch
Positive = Annotated[int, Strict(), Field(ge=1)]
Bool = Annotated[bool, Strict()]
S = TypeVar("S", bound=BaseModel)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _on_off(value: Any) -> Any:
    return {} if value is True else None if value is False else value


def switch(section: type[S]) -> Any:
    """``section | None`` that also reads ``true`` as the section's defaults and ``false`` as off."""
    return Annotated[section | None, BeforeValidator(_on_off, json_schema_input_type=section | bool | None)]


# --------------------------------------------------------------------------------------------- tune

class SchedulerSpec(Section):
    name: Literal["fifo", "asha"] = "fifo"
    grace_period: Positive = 1
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0


class ResourcesSpec(Section):
    """CPUs and GPUs of one sweep trial; ``auto`` is what fits (``cnnforge.sweep.trial_resources``)."""

    cpu: Annotated[float, Field(gt=0)] | Literal["auto"] = "auto"
    gpu: Annotated[float, Field(ge=0)] | Literal["auto"] = "auto"


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


# --------------------------------------------------------------------------------------------- airbench's tricks

class LookaheadConfig(Section):
    """``train.lookahead``: every ``every`` steps the weights move to a slow average of themselves (airbench).

    The slow copy decays by ``decay`` per step (``decay ** every`` per update), ramped in by
    ``(step / total steps) ** power``, from epoch ``start_epoch`` (0-based) on; each epoch ends on it.
    """

    decay: Annotated[float, Field(gt=0, lt=1)] = 0.95
    every: Positive = 5
    start_epoch: Annotated[int, Strict(), Field(ge=0)] = 0
    power: Annotated[float, Field(ge=0)] = 3.0


class WhitenConfig(Section):
    """``train.whiten_init``: the first conv becomes a patch-whitening filter bank from ``samples`` training images."""

    samples: Positive = 5000
    eps: Annotated[float, Field(gt=0)] = 5e-4
    freeze: Bool = True  # airbench keeps the whitening weights fixed; the bias still learns


class EvalConfig(Section):
    """``eval``: how validation, test and ``cnnforge eval``/``predict`` run the model."""

    tta: Literal["none", "flip"] = "none"  # flip: the mean of the logits of the image and its mirror image
