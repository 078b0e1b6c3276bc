"""The training batches of an epoch: from a DataLoader, or indexed from a dataset held on the device.

``data.on_device``: a small uint8 dataset (every seed's) is copied to the device once and each batch
is one gather from it. The prepared DataLoader's batch sampler still picks the batches (the epoch's
order, :class:`~cnnforge.data.loading.EpochSampler`; under DDP this rank's shard, padded as
Accelerate pads it), so the batches are the DataLoader's exactly and runs, resumes and the
``(seed, epoch, index)`` contract do not depend on the switch; only the per-sample items, the
collation, the workers and the host-to-device copy per step are gone (one copy of the epoch's
indices remains). It needs an in-memory array dataset (``images``), no per-sample augmentation
(none, or ``augment.mode: batch``, which then runs on the device) and no gradient accumulation;
``auto`` uses it when those hold and the images take at most a quarter of the free device memory
(every rank holds the whole split). In one process the validation and test splits then join it
there when they fit too, and evaluation slices them in order instead of collating per-sample
tensors every epoch.
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
    """Training batches gathered from uint8 NCHW images and labels that live on the device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_sampler: Any, sampler: EpochSampler) -> None:
        self.images, self.labels, self.sampler = images, labels, sampler
        self.positions, self.sizes = batch_positions(batch_sampler, sampler)
        self.offsets = np.cumsum([0, *self.sizes]).tolist()

    def __len__(self) -> int:
        return len(self.sizes)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epoch ``epoch``'s batches from batch ``start`` on (a resumed run skips the ones it trained)."""
        if start >= len(self.sizes):
            return
        self.sampler.use_epoch(epoch)
        order = torch.from_numpy(self.sampler.permutation())[self.positions[self.offsets[start]:]]
        for index in order.to(self.labels.device, non_blocking=True).split(self.sizes[start:]):
            yield self.images[index], self.labels[index]


def batch_positions(batch_sampler: Any, sampler: EpochSampler) -> tuple[torch.Tensor, list[int]]:
    """Where the samples of each of ``batch_sampler``'s batches sit in an epoch's order, and the batch sizes.

    A batch sampler picks by position in the order it is given (chunks of it, this rank's shard of them,
    the padding that repeats its first ones), never by index, so one pass over it gives the batches of
    every epoch: each is then one gather from that epoch's order, not a Python list of
    ``(epoch, index)`` keys (~1.5 ms an epoch of 10,000 samples, ~10 us a step). For that one pass the
    sampler gives the positions themselves as indices, so an order with repeated indices (the balanced
    sampler's draws, data/balance.py) has its positions too.
    """
    sampler.use_epoch(0)
    sampler.yield_positions = True
    try:
        batches = list(batch_sampler)
    finally:
        sampler.yield_positions = False
    picked = np.asarray([position for batch in batches for _, position in batch], dtype=np.int64)
    return torch.from_numpy(picked), [len(batch) for batch in batches]


class DeviceSplit:
    """An evaluation split held on the device, batched in its own order as its loader would (slices, no copy)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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


def fits(images: np.ndarray, indices: Any, device: torch.device, copies: int = 1) -> bool:
    """Whether ``copies`` of the ``indices`` of ``images`` take at most :data:`MEMORY_SHARE` of the free memory on
    ``device`` (on a CPU every DDP rank's copy is in the same memory)."""
    return images[:1].nbytes * len(indices) * copies <= MEMORY_SHARE * free_memory(device)


def use_on_device(setting: str | bool, ds: Any, acc: Any, where: str) -> bool:
    """Whether ``data.on_device`` (``auto``/true/false) puts the training split on the device."""
    if setting is False:
        return False
    reason = None
    arrays = device_arrays(ds)
    if arrays is None:
        reason = "needs an in-memory array dataset without per-sample augmentation (augment.mode: batch)"
    elif acc.gradient_accumulation_steps > 1:
        reason = "needs train.grad_accum: 1 (Accelerate ends an accumulation at its DataLoader's end)"
    elif not fits(arrays[0], ds.indices, acc.device, acc.num_processes if acc.device.type == "cpu" else 1):
        reason = f"needs the images to fit in {MEMORY_SHARE:.0%} of the free {acc.device.type} memory"
    if reason is not None and setting is True:
        raise ConfigError(reason, where=where, hint="set data.on_device: auto")
    return reason is None


def on_device(ds: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images (uint8 NCHW, what the DataLoader's batches hold) and labels, copied to ``device`` once."""
    images, labels = device_arrays(ds)
    picked = torch.from_numpy(images[ds.indices]).permute(0, 3, 1, 2).contiguous()
    return picked.to(device), torch.from_numpy(np.asarray(labels)).to(device)


def train_batches(recipe: Any, train: Any, loader: Any, sampler: EpochSampler,
                  acc: Any) -> DeviceBatches | LoaderBatches:
    """The training split's batches: on the device when ``data.on_device`` allows, else ``loader``'s (both picked
    by the prepared loader's batch sampler)."""
    if use_on_device(recipe.data.on_device, train, acc, f"{recipe.source}: data.on_device"):
        return DeviceBatches(*on_device(train, acc.device), loader.batch_sampler, sampler)
    return LoaderBatches(loader, sampler)


def eval_batches(recipe: Any, splits: Any, loaders: dict[str, Any], train: DeviceBatches | LoaderBatches,
                 acc: Any) -> dict[str, Any]:
    """The validation and test splits' batches: held on the device as well when the training split is, in one
    process (under DDP the loaders shard them and ``gather_for_metrics`` drops their padding), and each is an
    in-memory array that fits; else its (Accelerate-prepared) loader's."""
    size = recipe.data.eval_batch_size or recipe.data.batch_size
    held = isinstance(train, DeviceBatches) and acc.num_processes == 1
    out = {}
    for name in ("val", "test"):
        ds = getattr(splits, name)
        arrays = device_arrays(ds) if held else None
        fitting = arrays is not None and fits(arrays[0], ds.indices, acc.device)
        out[name] = DeviceSplit(*on_device(ds, acc.device), size) if fitting else loaders[name]
    return out
