"""cnnforge: train image classifiers from YAML recipes on a CPU, GPUs (Accelerate) or a Ray cluster.

Only the public API lives here, and importing it stays light: torch, Accelerate and Ray load when a
function that needs them is called.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# OpenCV (the fallback image decoder) reads its pixel limit once, when it loads: Pillow's decompression-bomb
# limit (2 x PIL.Image.MAX_IMAGE_PIXELS) must hold for it too, checked from the header before decoding;
# set before anything below can import it
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2 * 89_478_485))

# registry.models / .datasets / .losses ... (not top-level names: cnnforge.models is the zoo)
from cnnforge import registry
from cnnforge._version import __version__
from cnnforge.errors import CnnforgeError, ConfigError, DataError
from cnnforge.recipe import Recipe, check_recipe, load_recipe
from cnnforge.registry import (
    register_augmentation,
    register_callback,
    register_dataset,
    register_loss,
    register_model,
    register_optimizer,
    register_schedule,
)

if TYPE_CHECKING:  # the names __getattr__ loads on first use, for type checkers and editors
    from cnnforge.models.build import build_model  # noqa: F401
    from cnnforge.predict import Predictor, load_predictor  # noqa: F401
    from cnnforge.sweep import TuneResult, tune  # noqa: F401
    from cnnforge.training.run import RunResult, train  # noqa: F401

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
    "registry", "register_model", "register_dataset", "register_augmentation", "register_loss", "register_optimizer",
    "register_schedule", "register_callback",
    *_LAZY,
]
