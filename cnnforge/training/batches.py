"""The training batches of an epoch: from a DataLoader, or indexed from a dataset held on the device.

``data.on_device``: a small uint8 dataset (every seed's) is copied to the device once and each batch
is one gather from it, in the epoch's order (:class:`~cnnforge.data.loading.EpochSampler`'s
permutation): no workers, no per-sample tensors, no collation, no host-to-device copy per step. The
batches are the DataLoader's exactly, so runs, resumes and the ``(seed, epoch, index)`` contract do
not depend on the switch. It needs an in-memory array dataset (``images``), no per-sample
augmentation (none, or ``augment.mode: batch``, which then runs on the device), one process and no
gradient accumulation; ``auto`` uses it when those hold and the images take at most a quarter of
the free device memory. The validation and test splits then join it there when they fit too, and
evaluation slices them in order instead of collating per-sample tensors every epoch.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from cnnforge.data.loading import EpochSampler
from cnnforge.errors import ConfigError

#: ``auto`` keeps the data on the device when it takes at most this share of the free memory
MEMORY_SHARE = 0.25


class DeviceBatches:
    """Batches gathered from uint8 NCHW images and labels that live on the device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.order = EpochSampler(len(labels), shuffle=True, seed=seed)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epoch ``epoch``'s batches from batch ``start`` on (a resumed run skips the ones it trained)."""
        self.order.use_epoch(epoch)
        order = torch.from_numpy(self.order.permutation()).to(self.labels.device)
        for index in order.split(self.batch_size)[start:]:
            yield self.images[index], self.labels[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split in its own order, as an evaluation loader gives it (slices: no gather, no copy)."""
        for start in range(0, len(self.labels), self.batch_size):
            yield self.images[start:start + self.batch_size], self.labels[start:start + self.batch_size]


class LoaderBatches:
    """The Accelerate-prepared DataLoader over ``(epoch, index)`` keys (sharded across ranks)."""

    def __init__(self, loader: Any, sampler: EpochSampler) -> None:
        self.loader, self.sampler = loader, sampler

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, start: int = 0) -> Any:
        self.sampler.use_epoch(epoch)
        if not start:
            return self.loader
        from accelerate import skip_first_batches

        return skip_first_batches(self.loader, start)


def device_arrays(ds: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The uint8 NHWC images and labels of an un-augmented training split held in memory, else None."""
    base = getattr(ds, "base", None)
    images = getattr(base, "images", None)
    per_sample = getattr(ds, "transform", True) is not None or getattr(ds, "size", None) is not None  # resize
    if per_sample or not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        return None
    return images, ds.labels


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` (for the CPU, the memory available to new processes)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def fits(images: np.ndarray, indices: Any, device: torch.device) -> bool:
    """Whether the ``indices`` of ``images`` take at most :data:`MEMORY_SHARE` of the free memory on ``device``."""
    return images[:1].nbytes * len(indices) <= MEMORY_SHARE * free_memory(device)


def use_on_device(setting: str | bool, ds: Any, acc: Any, where: str) -> bool:
    """Whether ``data.on_device`` (``auto``/true/false) puts the training split on the device."""
    if setting is False:
        return False
    reason = None
    arrays = device_arrays(ds)
    if arrays is None:
        reason = "needs an in-memory array dataset without per-sample augmentation (augment.mode: batch)"
    elif acc.num_processes > 1:
        reason = "needs a single process (under DDP each rank takes its shard from the DataLoader)"
    elif acc.gradient_accumulation_steps > 1:
        reason = "needs train.grad_accum: 1 (Accelerate ends an accumulation at its DataLoader's end)"
    elif not fits(arrays[0], ds.indices, acc.device):
        reason = f"needs the images to fit in {MEMORY_SHARE:.0%} of the free {acc.device.type} memory"
    if reason is not None and setting is True:
        raise ConfigError(reason, where=where, hint="set data.on_device: auto")
    return reason is None


def device_batches(ds: Any, device: torch.device, *, batch_size: int, seed: int) -> DeviceBatches:
    """Copy the training split to ``device`` once, as uint8 NCHW (what the DataLoader's batches hold)."""
    images, labels = device_arrays(ds)
    picked = torch.from_numpy(images[ds.indices]).permute(0, 3, 1, 2).contiguous()
    return DeviceBatches(picked.to(device), torch.from_numpy(np.asarray(labels)).to(device),
                         batch_size=batch_size, seed=seed)


def train_batches(recipe: Any, train: Any, loader: Any, sampler: EpochSampler,
                  acc: Any) -> DeviceBatches | LoaderBatches:
    """The training split's batches: on the device when ``data.on_device`` allows, else ``loader``'s."""
    d = recipe.data
    if use_on_device(d.on_device, train, acc, f"{recipe.source}: data.on_device"):
        return device_batches(train, acc.device, batch_size=d.batch_size, seed=recipe.seed)
    return LoaderBatches(loader, sampler)


def eval_batches(recipe: Any, splits: Any, loaders: dict[str, Any], train: DeviceBatches | LoaderBatches,
                 acc: Any) -> dict[str, Any]:
    """The validation and test splits' batches: held on the device as well when the training split is and each
    is an in-memory array that fits, else its (Accelerate-prepared) loader's."""
    size = recipe.data.eval_batch_size or recipe.data.batch_size
    out = {}
    for name in ("val", "test"):
        ds = getattr(splits, name)
        arrays = device_arrays(ds) if isinstance(train, DeviceBatches) else None
        on_device = arrays is not None and fits(arrays[0], ds.indices, acc.device)
        out[name] = device_batches(ds, acc.device, batch_size=size, seed=recipe.seed) if on_device else loaders[name]
    return out
