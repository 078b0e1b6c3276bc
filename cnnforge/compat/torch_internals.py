"""torch's private kernels and attributes that keep the training step free of host syncs.

Each is what torch's own GradScaler, optimizers and ``AveragedModel`` use; the public equivalents
(a loop over tensors, a host read of a flag) give the same numbers, slower or with a sync per step.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from cnnforge.compat.versions import supported

#: the torch releases these names were read from (2.14) and checked against
TORCH = ">=2.4,<2.15"


def _native() -> bool:
    return supported("torch", TORCH)


def foreach_copy_(dst: Sequence[torch.Tensor], src: Sequence[torch.Tensor]) -> None:
    """``dst[i].copy_(src[i])`` for all i, in one kernel launch per device and dtype."""
    if _native():
        torch._foreach_copy_(list(dst), list(src))
        return
    for d, s in zip(dst, src, strict=True):
        d.copy_(s)


def foreach_lerp_(start: Sequence[torch.Tensor], end: Sequence[torch.Tensor], weight: float) -> None:
    """``start[i].lerp_(end[i], weight)`` for all i, in one kernel launch per device and dtype."""
    if _native():
        torch._foreach_lerp_(list(start), list(end), weight)
        return
    for s, e in zip(start, end, strict=True):
        s.lerp_(e, weight)


def group_by_device_and_dtype(
        lists: list[list[torch.Tensor]]) -> list[tuple[list[torch.Tensor], ...]]:
    """Parallel lists of tensors split into groups of one device and dtype (what a foreach kernel takes)."""
    if _native():
        from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

        return [tuple(group) for group, _ in _group_tensors_by_device_and_dtype(lists).values()]
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], ...]] = {}
    for row in zip(*lists, strict=True):
        bucket = groups.setdefault((row[0].device, row[0].dtype), tuple([] for _ in lists))
        for column, tensor in zip(bucket, row, strict=True):
            column.append(tensor)
    return list(groups.values())


def non_finite_to(found: torch.Tensor, grads: list[torch.Tensor], one: torch.Tensor) -> None:
    """Set ``found`` (a float32 scalar on the device, zero) to 1 when any gradient has a NaN or inf, on the device.

    GradScaler's own kernel, unscaling by ``one`` (a scalar 1 on the device: the gradients stay as they are).
    """
    if _native():
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, one)
        return
    if grads:
        found.copy_(torch.stack([(~torch.isfinite(g)).any() for g in grads]).any())


def skips_on_device(optimizer: torch.optim.Optimizer, found: torch.Tensor) -> bool:
    """Have ``optimizer``'s fused step leave weights and state untouched while ``found`` > 0, as under GradScaler.

    False outside the known torch range: the caller then skips the step itself, after a host read.
    """
    if not _native():
        return False
    optimizer.found_inf = found  # type: ignore[attr-defined]  # read by torch's fused steps (Adam, AdamW, SGD)
    return True

