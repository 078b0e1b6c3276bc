"""``fastnet``: the small network of recipes/cifar_fast.yaml, after Keller Jordan's airbench94.

airbench reaches 94 % CIFAR-10 test accuracy in seconds on one GPU with a plain stack: a 2x2 stem
conv, three groups of (conv, max-pool, BatchNorm, GELU, conv, BatchNorm, GELU) of widths 64/256/256,
and a max-pooled linear head whose logits are scaled by 1/9 (it keeps them small at the high learning
rates a short schedule needs). BatchNorm scales stay fixed at 1 (only the shifts learn) and the
running statistics move fast (momentum 0.4), as there. airbench's training tricks are recipe options
that recipes/cifar_fast.yaml turns on: the stem as a frozen patch-whitening layer (``train.whiten_init``:
the default ``stem_width`` 24 is 2 x 3 x 2 x 2, what whitening RGB 2x2 patches needs), the BatchNorm
shifts' larger learning rate (``optim.bias_lr_mult``), lookahead (``train.lookahead``, which replaces
an evaluation-only ``train.ema`` there, as in airbench) and flip test-time augmentation (``eval.tta``).

Light at import (the module is registered by cnnforge.bundled): torch loads when a model is built.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any

from pydantic import Field

from cnnforge.models.params import Size, Width
from cnnforge.registry import register_model


@register_model
def fastnet(*, num_classes: int, in_channels: int = 3, image_size: Size | None = None,
            widths: tuple[Width, Width, Width] = (64, 256, 256), stem_width: Width = 24,
            logit_scale: Annotated[float, Field(gt=0)] = 1 / 9) -> Any:
    """airbench94's net: 2x2 stem, conv-pool-BN-GELU groups 64/256/256, max-pooled head (1,972,792 params, 3x32x32)."""
    import torch
    from torch import nn

    class Scale(nn.Module):  # defined here so that importing this module stays free of torch
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * logit_scale

    height, width = (32, 32) if image_size is None else (image_size, image_size) if isinstance(image_size, int) \
        else image_size
    if min(height, width) < 9:  # the stem takes one pixel, each group halves: 8 pixels must remain for 3 halvings
        raise ValueError(f"fastnet needs images of at least 9x9 pixels, got {height}x{width}")

    def batch_norm(channels: int) -> nn.BatchNorm2d:
        norm = nn.BatchNorm2d(channels, momentum=0.4, eps=1e-12)
        norm.weight.requires_grad_(False)  # scale fixed at 1; the optimizer sees only the shift
        return norm

    def group(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), batch_norm(cout),
                             nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False), batch_norm(cout), nn.GELU())

    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Conv2d(in_channels, stem_width, 2), stem_act=nn.GELU())
    cin = stem_width
    for i, cout in enumerate(widths, 1):
        layers[f"group{i}"] = group(cin, cout)
        cin = cout
    layers.update(pool=nn.AdaptiveMaxPool2d(1), flatten=nn.Flatten(), head=nn.Linear(cin, num_classes, bias=False),
                  scale=Scale())
    return nn.Sequential(layers)
