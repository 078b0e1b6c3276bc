"""``augment.batch``: MixUp and CutMix on each normalised training batch, on its device, into soft targets.

The mixing is torchvision's ``transforms.v2.MixUp`` / ``CutMix`` (each sample is paired with the one
before it, ``roll(1, 0)``; the CutMix box is centred on a uniform pixel, its sides ``sqrt(1 - lam)``
of the image's, clipped to it, and ``lam`` corrected to the box's area), with two differences that
keep a run exact and the step free of host reads:

* the random draws (which op, ``lam``, the box) come from a NumPy generator seeded with
  ``SeedSequence([seed, MIX_STREAM, epoch, batch, rank])``, not torch's global RNG: a resumed run and
  every DDP rank draw what the uninterrupted run drew, and nothing reads the device;
* the targets are built with one ``scatter_`` (no ``one_hot``, which checks the labels' range with a
  read on a CPU), and ``train.label_smoothing`` is folded into them (the loss then gets no smoothing
  of its own), as timm's ``mixup_target`` does.

Each batch is mixed by at most one op: op ``i`` with probability ``prob_i``; ``mixup_cutmix`` (timm's
``prob`` and ``switch_prob``) is MixUp with ``prob * (1 - switch_prob)`` and CutMix with ``prob * switch_prob``.
The trainer also gets each sample's dominant label (its own when ``lam >= 0.5``), which train
accuracy is scored against.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

MIX_STREAM = 4  # next to loading.AUGMENT/SHUFFLE/SPLIT and batch_augment's 3: an independent random stream


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int, float]:
    """(top, bottom, left, right, corrected lam): torchvision CutMix's box for ``lam``, placed by ``rng``."""
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    r = 0.5 * math.sqrt(1.0 - lam)
    half_h, half_w = int(r * height), int(r * width)
    top, bottom = max(cy - half_h, 0), min(cy + half_h, height)
    left, right = max(cx - half_w, 0), min(cx + half_w, width)
    return top, bottom, left, right, 1.0 - (bottom - top) * (right - left) / (height * width)


class BatchMix:
    """Mixes a float NCHW batch in place and returns it with soft targets and dominant labels."""

    def __init__(self, ops: Sequence[Any], *, num_classes: int, smoothing: float, seed: int) -> None:
        self.ops = [draw for op in ops for draw in op.draws()]  # augment.batch's MixSpec entries
        self.num_classes, self.smoothing, self.seed = num_classes, smoothing, seed

    def draw(self, key: tuple[int, ...]) -> tuple[str | None, float, np.random.Generator]:
        """The op that mixes batch ``key`` = (epoch, batch, rank) (``None``: none), its ``lam`` and the stream."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, MIX_STREAM, *key]))
        u = rng.random()
        for name, alpha, prob in self.ops:
            if u < prob:
                return name, float(rng.beta(alpha, alpha)), rng
            u -= prob
        return None, 1.0, rng

    def targets(self, y: torch.Tensor, lam: float) -> torch.Tensor:
        """Smoothed one-hot targets of ``y`` mixed with those of the previous sample, ``lam`` of its own."""
        import torch

        k, eps = self.num_classes, self.smoothing
        own = torch.full((y.shape[0], k), eps / k, device=y.device).scatter_(1, y[:, None], 1.0 - eps + eps / k)
        return own if lam == 1.0 else torch.lerp(own.roll(1, 0), own, lam)

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mixed ``x``, soft targets, dominant labels) of batch ``key``; ``x`` must be the caller's to change."""
        import torch

        name, lam, rng = self.draw(key)
        if name == "mixup":
            x = torch.lerp(x.roll(1, 0), x, lam)
        elif name == "cutmix":
            top, bottom, left, right, lam = cutmix_box(x.shape[-2], x.shape[-1], lam, rng)
            x[..., top:bottom, left:right] = x.roll(1, 0)[..., top:bottom, left:right]
        return x, self.targets(y, lam), y if lam >= 0.5 else y.roll(1, 0)


def make_batch_mix(recipe: Any, num_classes: int) -> BatchMix | None:
    """The recipe's ``augment.batch`` mixing, or ``None`` without one."""
    if not recipe.augment.batch:
        return None
    return BatchMix(recipe.augment.batch, num_classes=num_classes, smoothing=recipe.train.label_smoothing,
                    seed=recipe.seed)
