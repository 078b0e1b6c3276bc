"""Transfer learning (seed 001): pretrained weights under a new head, optionally a frozen backbone.

The model bridges (``timm/``, ``tv/``) share this module so that ``pretrained: true | <file>`` and
``freeze: backbone | none`` mean the same thing for every model: weights come from a file the user
names, from the library's download cache, or from a download; a missing file or a failed download
is one ValueError that says where the weights were looked for and how to supply them, which the
registry turns into a one-line configuration error naming the plugin.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnforge.models.params import Freeze
from cnnforge.optional_deps import require

OFFLINE_ENV = "CNNFORGE_OFFLINE"
SUPPLY_HINT = "set model.pretrained to a weights file (.pth, .pt or .safetensors) or put the file at that path"


def offline() -> bool:
    """Whether downloads are off: ``CNNFORGE_OFFLINE=1``, or Hugging Face's ``HF_HUB_OFFLINE=1``."""
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of ``exc`` on one line of at most ``limit`` characters (library errors run long)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def weights_file(pretrained: str) -> Path:
    """The user's weights file, which must exist."""
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ValueError(f"pretrained weights file {str(path)!r} does not exist (model.pretrained is true or a path)")
    return path


def fetch(model: str, cached: Path | None, cache_desc: str, download: Callable[[], Any]) -> Any:
    """``cached`` when it exists, else the result of ``download()``.

    Offline or failing, a ValueError saying how to fix it.

    ``cache_desc`` names where the library keeps downloads (the torch hub or Hugging Face cache),
    so the message tells a user on an offline machine exactly where to copy the file.
    """
    if cached is not None and cached.is_file():
        return cached
    missing = f"pretrained weights for {model} are not in the {cache_desc}"
    if offline():
        raise ValueError(f"{missing} and downloads are off ({OFFLINE_ENV} or HF_HUB_OFFLINE is set); {SUPPLY_HINT}")
    try:
        return download()
    except Exception as exc:  # no network, a proxy, a bad hash: all end the same way for the user
        raise ValueError(f"{missing} and the download failed ({one_line(exc)}); {SUPPLY_HINT}") from None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a weights file without unpickling code: safetensors, or ``torch.load(weights_only=True)``.

    Checkpoints that wrap the weights (``state_dict``/``model`` keys, DDP's ``module.`` prefix) are
    unwrapped by timm's loader, which knows those layouts.
    """
    require("timm", where=str(path))
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read weights file {str(path)!r} ({one_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return state


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], num_classes: int, *, source: str) -> list[str]:
    """Load ``state`` into ``model`` with a new classifier; return the keys left at their fresh initialisation.

    A layer whose output count is ``num_classes`` and whose weights have another count is a
    classifier of the source task (ImageNet's 1000 classes): it stays freshly initialised. A first
    convolution with another number of input channels is adapted the way timm does (summed for
    grey images). Any other difference means the file belongs to another architecture: ValueError
    naming the first key that does not fit.
    """
    require("timm", where=source)
    from timm.models import adapt_input_conv

    target = model.state_dict()
    fresh: list[str] = []
    merged: dict[str, torch.Tensor] = {}
    for key, want in target.items():
        have = state.get(key)
        if have is None:
            if key.endswith("num_batches_tracked"):
                continue
            raise ValueError(f"weights from {source} lack {key!r}: they were saved from another architecture")
        if have.shape == want.shape:
            merged[key] = have
        elif want.dim() >= 1 and want.shape[0] == num_classes and have.shape[1:] == want.shape[1:]:
            fresh.append(key)
        elif (want.dim() == 4 and have.dim() == 4 and have.shape[0] == want.shape[0]
              and have.shape[2:] == want.shape[2:]):
            merged[key] = adapt_input_conv(want.shape[1], have)
        else:
            raise ValueError(f"weights from {source} do not fit {key!r}: shape {tuple(have.shape)} in the file, "
                             f"{tuple(want.shape)} in the model")
    extra = sorted(set(state) - set(target))
    if extra:
        raise ValueError(f"weights from {source} have {len(extra)} key(s) the model lacks, e.g. {extra[0]!r}")
    model.load_state_dict(merged, strict=False)
    return fresh


def classifier_of(model: nn.Module) -> nn.Module | None:
    """The classification head: ``get_classifier()`` (timm), else a ``fc``/``head``/``heads``/``classifier`` module."""
    get = getattr(model, "get_classifier", None)
    if callable(get) and isinstance(get(), nn.Module):
        return get()
    for name in ("fc", "head", "heads", "classifier"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def apply_freeze(model: nn.Module, freeze: Freeze, *, name: str) -> nn.Module:
    """``freeze: backbone`` trains the classifier only (seed 001's second experiment); ``none`` trains everything.

    As in the seed, frozen parameters just stop receiving gradients; BatchNorm layers of the
    backbone still update their running statistics in training mode.
    """
    if freeze == "none":
        return model
    head = classifier_of(model)
    if head is None:
        raise ValueError(f"{name} has no recognisable classifier (get_classifier, fc, head, heads, classifier) "
                         "to keep trainable with freeze: backbone")
    model.requires_grad_(False)
    head.requires_grad_(True)
    return model
