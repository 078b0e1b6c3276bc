"""cnnforge: train image classifiers from YAML recipes on a CPU, GPUs (Accelerate) or a Ray cluster.

Only the public API lives here, and importing it stays light: torch, Accelerate and Ray load when a
function that needs them is called.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnforge.errors import CnnforgeError, ConfigError, DataError
from cnnforge.recipe import Recipe, check_recipe, load_recipe
from cnnforge import registry  # registry.models / .datasets / .augmentations (not top-level: cnnforge.models is the zoo)
from cnnforge.registry import register_augmentation, register_dataset, register_model

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cnnforge.models.build import build_model
    from cnnforge.predict import Predictor, load_predictor
    from cnnforge.sweep import TuneResult, tune
    from cnnforge.training.run import RunResult, train

_LAZY = {
    "build_model": "cnnforge.models.build",
    "train": "cnnforge.training.run",
    "RunResult": "cnnforge.training.run",
    "tune": "cnnforge.sweep",
    "TuneResult": "cnnforge.sweep",
    "load_predictor": "cnnforge.predict",
    "Predictor": "cnnforge.predict",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnforge' has no attribute {name!r}")


__all__ = [
    "__version__", "CnnforgeError", "ConfigError", "DataError", "Recipe", "load_recipe", "check_recipe",
    "registry", "register_model", "register_dataset", "register_augmentation",
    *_LAZY,
]
