"""Building torchvision models for a dataset: class count, input channels, pretrained weights, freezing."""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from cnnforge.errors import did_you_mean
from cnnforge.models.transfer import apply_freeze, fetch, load_matching, one_line, read_state_dict, weights_file


def check_name(name: str) -> None:
    """A ValueError naming the closest models unless ``name`` is one of torchvision's classification models."""
    if name not in tvm.list_models(module=tvm):
        hint = did_you_mean(name, tvm.list_models(module=tvm))
        raise ValueError(f"torchvision has no classification model {name!r}" + (f" ({hint})" if hint else "")
                         + "; see `cnnforge list models 'tv/*'`")


def build(name: str, *, num_classes: int, in_channels: int, image_size: Any, pretrained: bool | str, freeze: str,
          **kwargs: Any) -> nn.Module:
    """``tv/<name>`` with a ``num_classes`` head and an ``in_channels`` stem, optionally pretrained and frozen."""
    model_id = f"tv/{name}"
    check_name(name)
    model = _create(name, model_id, num_classes=num_classes, **kwargs)
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    fixed = getattr(model, "image_size", None)  # torchvision's ViTs are built for one input size
    if size is not None and isinstance(fixed, int) and size[0] == size[1] != fixed and "image_size" not in kwargs:
        model = _create(name, model_id, num_classes=num_classes, image_size=size[0], **kwargs)
    if in_channels != 3:
        _adapt_stem(model, in_channels, model_id)
    if pretrained:
        source, state = _pretrained_state(name, model_id, pretrained)
        load_matching(model, state, num_classes, source=source)
    return apply_freeze(model, freeze, name=model_id)  # type: ignore[arg-type]


def _create(name: str, model_id: str, **kwargs: Any) -> nn.Module:
    try:
        return tvm.get_model(name, weights=None, **kwargs)
    except TypeError as exc:  # an option the model's constructor does not take
        raise ValueError(f"{model_id} does not accept these options: {one_line(exc)}") from None


def _adapt_stem(model: nn.Module, in_channels: int, model_id: str) -> None:
    """Give the first 3-channel convolution ``in_channels`` inputs (grey images, extra bands)."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3 and child.groups == 1:
                setattr(parent, child_name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, stride=child.stride, padding=child.padding,
                    dilation=child.dilation, bias=child.bias is not None, padding_mode=child.padding_mode))
                return
    raise ValueError(f"{model_id} has no 3-channel input convolution to adapt to {in_channels}-channel images")


def _pretrained_state(name: str, model_id: str, pretrained: bool | str) -> tuple[str, dict[str, torch.Tensor]]:
    """(where the weights came from, the state dict): the user's file, or the torch hub cache / a download."""
    if isinstance(pretrained, str):
        path = weights_file(pretrained)
        return str(path), read_state_dict(path)
    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        weights = None
    if weights is None:
        raise ValueError(f"torchvision publishes no pretrained weights for {name!r}; "
                         "set model.pretrained to a weights file")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    got = fetch(model_id, cached, f"torch hub cache ({cached})",
                lambda: weights.get_state_dict(progress=False, check_hash=True))
    if isinstance(got, Path):
        return str(got), read_state_dict(got)
    return weights.url, got
