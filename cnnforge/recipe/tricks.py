"""The recipe sections of airbench's switchable tricks: ``train.lookahead``, ``train.whiten_init`` and ``eval``.

A trick section is ``null`` (off), a mapping of its settings, or ``true`` for its defaults
(:func:`switch`). Beside :mod:`cnnforge.recipe.tune`, below :mod:`cnnforge.recipe.schema`, which composes them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, Field, Strict

from cnnforge.recipe.section import Bool, Positive, Section

S = TypeVar("S", bound=BaseModel)


def _on_off(value: Any) -> Any:
    return {} if value is True else None if value is False else value


def switch(section: type[S]) -> Any:
    """``section | None`` that also reads ``true`` as the section's defaults and ``false`` as off."""
    return Annotated[section | None, BeforeValidator(_on_off, json_schema_input_type=section | bool | None)]


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
