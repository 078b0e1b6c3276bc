"""Optional dependencies: the core trains and checks recipes; Ray, wandb, TensorBoard, timm and ONNX are extras.

A command that needs a missing extra stops before anything starts, with one line naming the extra to
install (exit code 2), instead of an ``ImportError`` traceback from deep inside a library.
"""
from __future__ import annotations

import importlib.util

from cnnforge.errors import ConfigError

#: importable module -> the ``cnnforge[...]`` extra that installs it
EXTRAS = {"ray": "tune", "optuna": "tune", "wandb": "wandb", "tensorboard": "tensorboard", "timm": "timm",
          "onnx": "onnx", "onnxruntime": "onnx"}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found on the path; not imported here)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, *, where: str) -> None:
    """Stop with the ``pip install 'cnnforge[extra]'`` line when ``module`` is not installed."""
    if not installed(module):
        extra = EXTRAS[module]
        raise ConfigError(f"needs {module}, which is not installed", where=where,
                          hint=f"pip install 'cnnforge[{extra}]'")
