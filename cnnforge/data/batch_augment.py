"""``augment.mode: batch``: the recipe's train ops applied to a whole batch with torch ops, on the device.

The per-sample path runs albumentations once per image in loader workers; on a GPU that leaves the
accelerator waiting on a few CPU cores. Here the uint8 batch is moved to the device first and each op
draws *per-sample* random parameters, then transforms all samples at once (one flip, one colour
matrix, one affine warp, one mask), as airbench and DALI do.

The ops keep the names, parameters and defaults of the registered albumentations ops (defaults are
read from the registered builder, so the two modes cannot drift apart), with two documented
differences: colour jitter applies brightness, contrast, then saturation and hue in that fixed order
(albumentations shuffles the order per sample), and hue is rotated in YIQ space, the linear form of
the hue shift (as DALI's ``hsv`` op), instead of through HSV.

Randomness comes from a generator seeded with ``SeedSequence([seed, stream, epoch, batch, rank])``:
the global RNG is untouched, and a resumed run draws exactly what the uninterrupted run drew.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cnnforge.errors import ConfigError

if TYPE_CHECKING:
    import torch

BATCH_AUGMENT_STREAM = 3  # next to loading.AUGMENT/SHUFFLE/SPLIT: an independent random stream


def _uniform(n: int, low: float, high: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    import torch

    return torch.rand(n, generator=g, device=device) * (high - low) + low


def _chosen(n: int, p: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """A boolean per sample: whether the op applies to it (probability ``p``)."""
    import torch

    return torch.rand(n, generator=g, device=device) < p


def _flip(dim: int) -> Callable[..., torch.Tensor]:
    def flip(x: torch.Tensor, g: torch.Generator, *, p: float) -> torch.Tensor:
        """Mirror the chosen samples along ``dim``: one gather with per-sample reversed indices."""
        import torch

        n, size = x.shape[0], x.shape[dim]
        forward = torch.arange(size, device=x.device)
        index = torch.where(_chosen(n, p, g, x.device)[:, None], forward.flip(0), forward)
        shape = [n, 1, 1, 1]
        shape[dim] = size
        return x.gather(dim, index.view(shape).expand_as(x))

    return flip


_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_YIQ_TO_RGB = ((1.0, 0.95617069, 0.62143257),  # the inverse of _RGB_TO_YIQ to float32 precision
               (1.0, -0.27268860, -0.64681324),
               (1.0, -1.10374408, 1.70062309))


def _yiq_matrices(saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Per-sample 3x3 RGB matrices that scale chroma by ``saturation`` and rotate hue by ``hue`` turns."""
    import torch

    to_yiq = torch.tensor(_RGB_TO_YIQ, device=hue.device)
    from_yiq = torch.tensor(_YIQ_TO_RGB, device=hue.device)
    angle = hue * (2 * math.pi)
    cos, sin = torch.cos(angle) * saturation, torch.sin(angle) * saturation
    mix = torch.zeros(hue.shape[0], 3, 3, device=hue.device)
    mix[:, 0, 0] = 1.0
    mix[:, 1, 1], mix[:, 1, 2], mix[:, 2, 1], mix[:, 2, 2] = cos, -sin, sin, cos
    return from_yiq @ mix @ to_yiq


def color_jitter(x: torch.Tensor, g: torch.Generator, *, brightness: float, contrast: float, saturation: float,
                 hue: float, p: float) -> torch.Tensor:
    """torchvision ColorJitter factors, drawn per sample: brightness and contrast scale, saturation and hue mix."""

    n, dev = x.shape[0], x.device
    keep = ~_chosen(n, p, g, dev)

    def factor(amount: float) -> torch.Tensor:
        f = _uniform(n, max(0.0, 1 - amount), 1 + amount, g, dev)
        return f.masked_fill(keep, 1.0).view(-1, 1, 1, 1)

    if brightness:
        x = (x * factor(brightness)).clamp_(0, 255)
    if contrast:
        gray = x.mean(dim=(1, 2, 3), keepdim=True) if x.shape[1] == 1 else \
            (x[:, 0] * 0.299 + x[:, 1] * 0.587 + x[:, 2] * 0.114).mean(dim=(1, 2), keepdim=True).unsqueeze(1)
        f = factor(contrast)
        x = (x * f + gray * (1 - f)).clamp_(0, 255)
    if x.shape[1] == 3 and (saturation or hue):
        s = _uniform(n, max(0.0, 1 - saturation), 1 + saturation, g, dev).masked_fill(keep, 1.0)
        h = _uniform(n, -hue, hue, g, dev).masked_fill(keep, 0.0)
        m = _yiq_matrices(s, h)[:, :, :, None, None]  # three broadcast multiply-adds beat bmm on 3x3 matrices
        out = m[:, :, 0] * x[:, None, 0]
        out.addcmul_(m[:, :, 1], x[:, None, 1]).addcmul_(m[:, :, 2], x[:, None, 2])
        x = out.clamp_(0, 255)
    return x


def rotate(x: torch.Tensor, g: torch.Generator, *, limit: float, p: float) -> torch.Tensor:
    """Rotate about the centre by a uniform angle in [-limit, limit] degrees; corners filled with 0."""
    import torch
    from torch.nn import functional as F

    n, _, h, w = x.shape
    angle = torch.deg2rad(_uniform(n, -limit, limit, g, x.device)).masked_fill(~_chosen(n, p, g, x.device), 0.0)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    # the sampling grid of F.affine_grid (align_corners=False), built with broadcasts instead of a tiny bmm
    ys = ((torch.arange(h, device=x.device) * 2 + 1) / h - 1)[:, None]
    xs = (torch.arange(w, device=x.device) * 2 + 1) / w - 1
    grid = torch.stack([cos * xs - sin * (h / w) * ys, sin * (w / h) * xs + cos * ys], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cutout(x: torch.Tensor, g: torch.Generator, *, size: int, holes: int, p: float) -> torch.Tensor:
    """Zero ``holes`` squares of ``size`` pixels per chosen sample, placed inside the image (as CoarseDropout)."""
    import torch

    n, _, h, w = x.shape
    chosen = _chosen(n, p, g, x.device)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    hole = torch.zeros(n, h, w, dtype=torch.bool, device=x.device)
    for _ in range(holes):
        top = torch.randint(0, max(1, h - size + 1), (n, 1), generator=g, device=x.device)
        left = torch.randint(0, max(1, w - size + 1), (n, 1), generator=g, device=x.device)
        in_rows = (rows >= top) & (rows < top + size)
        in_cols = (cols >= left) & (cols < left + size)
        hole |= in_rows[:, :, None] & in_cols[:, None, :]
    return x * (~(hole & chosen.view(-1, 1, 1))).unsqueeze(1)


def random_crop(x: torch.Tensor, g: torch.Generator, *, size: int | tuple[int, int], padding: int) -> torch.Tensor:
    """Pad by ``padding`` black pixels per side, then cut ``size`` at a random place per sample (one gather)."""
    import torch
    from torch.nn import functional as F

    n = x.shape[0]
    h, w = (size, size) if isinstance(size, int) else size
    padded = F.pad(x, (padding,) * 4) if padding else x
    top = torch.randint(0, padded.shape[2] - h + 1, (n, 1), generator=g, device=x.device)
    left = torch.randint(0, padded.shape[3] - w + 1, (n, 1), generator=g, device=x.device)
    rows = (top + torch.arange(h, device=x.device))[:, :, None]
    cols = (left + torch.arange(w, device=x.device))[:, None, :]
    samples = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[samples, rows, cols].permute(0, 3, 1, 2)


#: registered augmentation name -> its batched counterpart (same parameters)
BATCH_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "hflip": _flip(3), "vflip": _flip(2), "color_jitter": color_jitter, "rotate": rotate, "cutout": cutout,
    "random_crop": random_crop,
}
#: ops that only carry statistics (the trainer normalises every batch itself)
STATISTICS_ONLY = {"normalize"}


def batch_ops(augment: Any, source: str) -> list[tuple[Callable[..., Any], dict[str, Any]]]:
    """The batched ops of ``augment.train`` with full parameters; a ConfigError for an op that has none (light)."""
    from cnnforge import registry

    spec = augment.train
    if isinstance(spec, str):
        raise ConfigError(f"is the pipeline name {spec!r}; augment.mode: batch needs a list of ops",
                          where=f"{source}: augment.train", hint=f"batched ops: {', '.join(BATCH_OPS)}")
    ops = []
    for i, op in enumerate(spec or []):
        where = f"{source}: augment.train[{i}]"
        if op.name in STATISTICS_ONLY:
            continue
        fn = BATCH_OPS.get(op.name)
        if fn is None:
            raise ConfigError(f"{op.name!r} has no batched implementation", where=f"{where}.name",
                              hint=f"augment.mode: batch supports {', '.join(BATCH_OPS)}; or use augment.mode: sample")
        entry = registry.augmentations.get(op.name)
        defaults = {k: v.default for k, v in inspect.signature(entry.fn).parameters.items()
                    if v.default is not inspect.Parameter.empty}
        params = {**defaults, **registry.builder_kwargs(entry, op.params, context={}, where=where)}
        accepted = inspect.signature(fn).parameters
        for key in params:
            if key not in accepted:
                raise ConfigError("is not supported by augment.mode: batch", where=f"{where}.{key}",
                                  hint="use augment.mode: sample for this op")
        ops.append((fn, params))
    return ops


class BatchAugment:
    """Applies the batched ops to a uint8 NCHW batch on its device; returns float32 in [0, 255] (not rounded)."""

    def __init__(self, ops: list[tuple[Callable[..., Any], dict[str, Any]]], seed: int) -> None:
        self.ops, self.seed = ops, seed
        self._generators: dict[Any, Any] = {}

    def generator(self, device: torch.device, key: tuple[int, ...]) -> torch.Generator:
        import numpy as np
        import torch

        g = self._generators.get(device)
        if g is None:
            g = self._generators[device] = torch.Generator(device=device)
        seq = np.random.SeedSequence([self.seed, BATCH_AUGMENT_STREAM, *key])
        return g.manual_seed(int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))

    def __call__(self, x: torch.Tensor, key: tuple[int, ...]) -> torch.Tensor:
        """``key`` (epoch, batch, rank) fixes the random parameters of this batch."""
        g = self.generator(x.device, key)
        x = x.float()
        for fn, params in self.ops:
            x = fn(x, g, **params)
        return x


def make_batch_augment(recipe: Any) -> BatchAugment | None:
    """The recipe's batch augmentation, or ``None`` unless ``augment.mode`` is ``batch``."""
    if recipe.augment.mode != "batch":
        return None
    return BatchAugment(batch_ops(recipe.augment, recipe.source), recipe.seed)
