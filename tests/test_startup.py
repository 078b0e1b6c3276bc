"""Commands that only look stay light (``check`` without its data probe): no torch, Ray, wandb or
albumentations at start-up (``-X importtime``)."""
from __future__ import annotations

import pytest

from benchmarks.startup import HEAVY, heavy_imports, imported_modules


@pytest.mark.parametrize("args", [["--help"], ["list", "models"], ["list", "augmentations"],
                                  ["check", "--no-data", "recipes/digits_convnet.yaml"],
                                  ["check", "--no-data", "recipes/cifar_vgg_bn.yaml", "augment.mode=batch"]],
                         ids=lambda a: " ".join(a))
def test_looking_commands_import_no_heavy_library(args: list[str]) -> None:
    modules = imported_modules(["-m", "cnnforge", *args])
    assert "cnnforge" in modules  # the trace was read
    assert not set(HEAVY) & modules, f"cnnforge {' '.join(args)} imported {sorted(set(HEAVY) & modules)}"


def test_the_import_trace_does_see_torch() -> None:
    """The check above can fail: building a model (``show``) does import torch."""
    assert "torch" in heavy_imports(["-m", "cnnforge", "show", "recipes/digits_convnet.yaml"])
