"""What every recipe section is built from: a strict pydantic base and the constrained number types.

It sits below :mod:`cnnforge.recipe.schema` and :mod:`cnnforge.recipe.tune` so that both can describe sections
the same way without importing each other.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
# integers and booleans are strict: `train.epochs: true` is a mistake, not 1 epoch
Positive = Annotated[int, Strict(), Field(ge=1)]
Bool = Annotated[bool, Strict()]


class Section(BaseModel):
    """A recipe section: unknown keys, assignments of the wrong type and NaN/inf are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
