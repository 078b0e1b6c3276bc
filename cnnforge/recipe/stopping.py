"""The recipe keys that end training before ``train.epochs``: ``train.early_stop`` and ``train.max_time``.

Beside :mod:`cnnforge.recipe.tricks`, below :mod:`cnnforge.recipe.schema`, which composes them; the trainer's side
is :mod:`cnnforge.training.stopping`.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from cnnforge.recipe.section import Positive, Section

#: seconds per unit of a ``max_time`` string: ``1h30m``, ``45m``, ``2d``, ``90s``
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([dhms])")


def parse_duration(value: Any) -> Any:
    """``"1h30m"`` -> 5400.0 and a number of seconds as it is; anything else is a validation error.

    Pydantic's own durations read ISO 8601 (``PT1H30M``) and ``HH:MM:SS``, not the ``1h30m`` that
    ultralytics, SLURM users and people write, so the units are read here.
    """
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 1h30m, 45m or 90s, or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip() and _PART.sub("", value).strip() == "":
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    else:
        raise ValueError(f"cannot read {value!r} as a duration: write it like 1h30m, 45m, 90s or a number of seconds")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be more than 0 seconds, got {value!r}")
    return seconds


#: ``train.max_time``: seconds (a number, or a string of units read by :func:`parse_duration`)
Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=str | float)]


class EarlyStopConfig(Section):
    """``train.early_stop``: end training when ``metric`` has not improved by more than ``min_delta`` for
    ``patience`` evaluations (Keras' and Lightning's ``EarlyStopping``); ``mode: auto`` minimises a loss
    and maximises anything else."""

    metric: str = "val/loss"
    mode: Literal["auto", "min", "max"] = "auto"
    patience: Positive = 5
    min_delta: Annotated[float, Field(ge=0)] = 0.0

    @property
    def maximize(self) -> bool:
        """Whether a larger ``metric`` is better."""
        return self.mode == "max" or (self.mode == "auto" and not self.metric.endswith("loss"))
