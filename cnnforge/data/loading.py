"""From a recipe's ``data:`` section to DataLoaders whose every batch is fixed by the seed.

Randomness is addressed, not streamed: the shuffle order of epoch ``e`` and the augmentation of
sample ``i`` in epoch ``e`` each come from ``SeedSequence([seed, stream, e, i])``. The same seed
therefore gives the same batches with any ``num_workers``, on every DDP rank, and after a resume
from the middle of an epoch (``skip_first_batches`` just drops the first positions).
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnforge.data import MAX_IMAGE_SIDE
from cnnforge.data.builtin_datasets import ChannelStats
from cnnforge.data.decode import resize_image
from cnnforge.data.pipeline import resolve_pipelines, seed_pipeline
from cnnforge.data.stratify import stratified_split
from cnnforge.errors import ConfigError, DataError

if TYPE_CHECKING:
    from cnnforge.recipe import Recipe

AUGMENT, SHUFFLE, SPLIT = 0, 1, 2  # independent random streams derived from the recipe seed
STATS_SAMPLE = 1000  # images measured for mean/std when a dataset does not give them


@dataclass(frozen=True)
class DataInfo:
    """What the model and the input normalisation need to know about the data."""

    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    image_size: tuple[int, int]


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    info: DataInfo
    cache: dict[str, Any] = field(default_factory=dict)  # split -> the data.cache mode used and why


def _rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *keys]))


class AugmentedDataset(Dataset):
    """``base[indices[i]]`` augmented with a per-(epoch, index) seed, returned as a uint8 CHW tensor.

    ``size`` (height, width) is a final resize for images of varying size (``data.cache: none``
    decodes each at its own): the pipeline sees the original, the model a fixed size.
    """

    def __init__(self, base: Any, indices: Sequence[int], transform: Any, seed: int,
                 size: tuple[int, int] | None = None) -> None:
        self.base, self.indices, self.transform, self.seed = base, np.asarray(indices, dtype=np.int64), transform, seed
        self.size = size
        self.labels = _labels(base, self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, label = self.base[int(self.indices[index])]
        if self.transform is not None:
            seed_pipeline(self.transform, _rng(self.seed, AUGMENT, epoch, index))
            image = self.transform(image=image)["image"]
        if self.size is not None and image.shape[:2] != self.size:
            image = resize_image(image, self.size)
        image = np.ascontiguousarray(image)
        if not image.flags.writeable:  # a memory-mapped or frombuffer dataset: torch wants its own copy
            image = image.copy()
        if image.ndim == 2:
            image = image[..., None]
        return torch.from_numpy(image).permute(2, 0, 1), int(label)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` so the dataset can seed each sample; the order depends on seed and epoch only.

    The epoch is set with :meth:`use_epoch`, not ``set_epoch``: Accelerate's loaders call
    ``set_epoch`` with their own iteration counter, which would break resume.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int) -> None:
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0
        self.yield_positions = False  # see training/batches.py batch_positions

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def permutation(self) -> np.ndarray:
        """The epoch's order of the dataset's indices."""
        return _rng(self.seed, SHUFFLE, self.epoch).permutation(self.n) if self.shuffle else np.arange(self.n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.arange(self.n) if self.yield_positions else self.permutation()
        return iter([(self.epoch, int(i)) for i in order])


#: the random stream of the balanced draws (beside AUGMENT, SHUFFLE and SPLIT)
BALANCE = 3


def training_labels(train: Any) -> np.ndarray:
    """The labels of the training split (an ``AugmentedDataset``), when its dataset holds them in an array.

    A dataset without a ``labels`` (or ``targets``) array gives each label only with its image; balancing
    on it would decode every image first, so ``data.balance`` refuses it with what to do instead.
    """
    base = getattr(train, "base", train)
    if getattr(base, "labels", None) is None and getattr(base, "targets", None) is None:
        raise ConfigError(f"needs the training labels in memory, but the {type(base).__name__} dataset gives each "
                          "label only with its image", where="data.balance",
                          hint="give the dataset a `labels` array (one int per image), or use data.balance: none "
                               "with train.class_weights")
    return np.asarray(train.labels, dtype=np.int64)


class BalancedSampler(EpochSampler):
    """``(epoch, index)`` keys of ``len(labels)`` draws with replacement, each class equally likely per draw."""

    def __init__(self, labels: np.ndarray, *, seed: int) -> None:
        super().__init__(len(labels), shuffle=True, seed=seed)
        counts = np.bincount(labels)
        self.weights = torch.from_numpy(1.0 / counts[labels])

    def permutation(self) -> np.ndarray:
        """The epoch's draws (indices repeat): the same for every rank, worker count and resume."""
        state = np.random.SeedSequence([self.seed, BALANCE, self.epoch]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state))
        return torch.multinomial(self.weights, self.n, replacement=True, generator=generator).numpy()


def _open(recipe: Recipe, split: str) -> Any:
    from cnnforge import registry

    d = recipe.data
    entry = registry.datasets.get(d.name)
    kwargs = registry.builder_kwargs(entry, d.params, context={"root": d.root, "split": split, "download": d.download},
                                     where=f"{recipe.source}: data")
    return registry.call_builder(entry, kwargs, where=f"{recipe.source}: data")


def _labels(ds: Any, indices: Any = None) -> np.ndarray:
    """Labels of ``ds`` (at ``indices``): its ``labels``/``targets`` array, else read item by item."""
    picks = np.arange(len(ds)) if indices is None else np.asarray(indices, dtype=np.int64)
    labels = getattr(ds, "labels", None)
    if labels is None:
        labels = getattr(ds, "targets", None)
    if labels is None:
        return np.asarray([ds[int(i)][1] for i in picks], dtype=np.int64)
    return np.asarray(labels, dtype=np.int64)[picks]


def data_info(ds: Any, where: str) -> DataInfo:
    """Classes, channels and size of ``ds``; mean/std from the dataset, else measured on up to 1,000 images."""
    if len(ds) == 0:
        raise DataError("the dataset is empty", where=where)
    classes = getattr(ds, "classes", None)
    if classes is not None and (isinstance(classes, str) or not isinstance(classes, list | tuple)):
        raise DataError(f"the dataset's `classes` must be a list of names, not {type(classes).__name__} "
                        f"{classes!r:.60}", where=where)
    if not classes:
        raise DataError("the dataset has no `classes` list", where=where)
    if len(classes) < 2:
        raise DataError(f"the dataset has one class ({classes[0]!r}); a classifier needs at least two", where=where)
    classes = printable_classes(classes, where)
    first = np.asarray(ds[0][0])
    if first.ndim == 2:
        first = first[..., None]
    mean, std = getattr(ds, "mean", None), getattr(ds, "std", None)
    if mean is None or std is None:  # a bounded sample, summed image by image: never a pass over all the data
        stats = ChannelStats(first.shape[-1])
        for i in np.linspace(0, len(ds) - 1, min(len(ds), STATS_SAMPLE)).astype(int):
            stats.add(np.asarray(ds[int(i)][0]))
        mean, std = stats.result()
    return DataInfo(list(classes), tuple(float(m) for m in mean), tuple(float(s) for s in std), int(first.shape[-1]),
                    (int(first.shape[0]), int(first.shape[1])))


def printable_classes(classes: Sequence[Any], where: str) -> list[str]:
    """Class names the reports (JSON, CSV, plots) can write and read back as they are, each once.

    Bytes that are not UTF-8 (a Latin-1 folder name) are spelled out (``d\\xf6g``), so two such names
    stay two; a name that repeats is refused, since its classes would be reported as one.
    """
    names = [str(c).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for c in classes]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"class name {repeated[0]!r} appears {names.count(repeated[0])} times in the dataset's "
                        "classes", where=where, hint="each class needs its own name")
    return names


def _check_labels(labels: np.ndarray, info: DataInfo, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= len(info.classes)):
        raise DataError(f"labels must lie in 0..{len(info.classes) - 1}, found {labels.min()}..{labels.max()}",
                        where=where)


def build_splits(recipe: Recipe) -> Splits:
    """Train / val / test datasets of ``recipe``; missing splits carved from train, stratified by label.

    ``info`` describes what the model receives: the training pipeline's output size and channels,
    and the statistics of a ``normalize`` op when the recipe has one.
    """
    d, seed, src = recipe.data, recipe.seed, recipe.source
    pool = _open(recipe, "train")
    if pool is None:
        raise ConfigError(f"dataset {d.name!r} has no train split", where=f"{src}: data.name")
    info = data_info(pool, f"{d.root} ({d.name})")
    labels = _labels(pool)
    _check_labels(labels, info, f"{d.root} ({d.name}, train split)")
    test, val = _open(recipe, "test"), _open(recipe, "val")
    for name, split in (("test", test), ("val", val)):  # a separate split's labels are checked before training too
        if split is not None:
            _check_labels(_labels(split), info, f"{d.root} ({d.name}, {name} split)")
    train_idx, val, val_idx, test, test_idx = _carve(pool, labels, val, test, d, seed)
    if len(train_idx) == 0:
        raise ConfigError("leaves no training samples", where=f"{src}: data.split")
    sample = np.asarray(pool[int(train_idx[0])][0])
    sample = sample if sample.ndim == 3 else sample[..., None]
    full_resolution = getattr(pool, "full_resolution", False)
    if full_resolution:
        sample = _model_sized(sample, pool.image_size, recipe)
    pipes = resolve_pipelines(recipe.augment, src, sample)
    height, width, channels = pipes.shape
    if max(height, width) > MAX_IMAGE_SIDE:  # refused now: the run's records hold sides up to this
        raise ConfigError(f"the model would get {height}x{width} images; sides up to {MAX_IMAGE_SIDE} are supported",
                          where=f"{src}: augment.train", hint="resize or crop to a smaller size")
    info = replace(info, image_size=(height, width), channels=channels,
                   **(dict(zip(("mean", "std"), pipes.stats, strict=False)) if pipes.stats else {}))
    train_transform = pipes.train if recipe.augment.mode == "sample" else None  # batch: the trainer augments
    size = (height, width) if full_resolution else None
    cache = {name: ds.cache_choice for name, ds in (("train", pool), ("val", val), ("test", test))
             if getattr(ds, "cache_choice", None)}
    return Splits(AugmentedDataset(pool, train_idx, train_transform, seed, size),
                  AugmentedDataset(val, val_idx, pipes.eval, seed, size),
                  AugmentedDataset(test, test_idx, pipes.eval, seed, size), info, cache)


def _carve(pool: Any, labels: np.ndarray, val: Any, test: Any, d: Any, seed: int) -> tuple[Any, ...]:
    """(train indices, val dataset, its indices, test dataset, its indices): the splits a dataset lacks are carved
    from its train split, stratified by label."""
    if test is None and val is None:  # one pool: data.split
        train_idx, val_idx, test_idx = stratified_split(labels, d.split, seed)
        return train_idx, pool, val_idx, pool, test_idx
    if test is None:  # train/ and val/ folders: the test share of data.split comes out of train
        train_idx, test_idx = stratified_split(labels, (1.0 - d.split[2], d.split[2]), seed)
        return train_idx, val, np.arange(len(val)), pool, test_idx
    if val is None:
        train_idx, val_idx = stratified_split(labels, (1.0 - d.val_fraction, d.val_fraction), seed)
        return train_idx, pool, val_idx, test, np.arange(len(test))
    return np.arange(len(pool)), val, np.arange(len(val)), test, np.arange(len(test))


def _model_sized(sample: np.ndarray, image_size: tuple[int, int] | None, recipe: Recipe) -> np.ndarray:
    """The image the pipelines are checked on when images keep their own size (``data.cache: none``).

    With ``data.image_size`` it is the sample at that size, as the other cache modes store it (the
    model gets the size it would get there). Without, the training pipeline must fix the size by
    itself (a crop or resize), or the model's input size is unknown.
    """
    if image_size is not None:
        return resize_image(sample, image_size)
    from cnnforge.data.pipeline import build_pipeline

    transform = build_pipeline(recipe.augment.train, recipe.source, "train").transform
    shapes = set()
    for variant in (sample, resize_image(sample, (sample.shape[0] + 9, sample.shape[1] + 5))):
        if transform is not None:
            seed_pipeline(transform, np.random.default_rng(0))
            try:
                variant = transform(image=variant)["image"]
            except Exception:  # resolve_pipelines names the problem with the real sample
                return sample
        shapes.add(variant.shape[:2])
    if len(shapes) > 1:
        raise ConfigError("data.cache: none decodes each image at its own size, so the model's input size is unknown",
                          where=f"{recipe.source}: data.image_size",
                          hint="set data.image_size, or end augment.train with a crop or resize to a fixed size")
    return sample


def split_loader(dataset: Dataset, data: Any, seed: int, *, train: bool) -> DataLoader:
    """The loader of one split of ``data`` (a recipe's ``data:`` section), the one place that sizes it.

    Training shuffles at ``batch_size``; evaluation keeps the dataset order at ``eval_batch_size``
    (default ``batch_size``). Memory is pinned only where CUDA can use it.
    """
    batch_size = data.batch_size if train else data.eval_batch_size or data.batch_size
    sampler = None
    if train and data.balance == "sampler":  # class-balanced draws instead of the shuffle
        sampler = BalancedSampler(training_labels(dataset), seed=seed)
    return make_loader(dataset, batch_size=batch_size, shuffle=train, seed=seed, num_workers=data.num_workers,
                       pin_memory=torch.cuda.is_available(), sampler=sampler)


def make_loader(ds: Dataset, *, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                pin_memory: bool = False, sampler: EpochSampler | None = None) -> DataLoader:
    """A loader over ``(epoch, index)`` keys (``sampler``'s, else a shuffle or the dataset order); its own
    generator keeps the global RNG untouched (exact resume)."""
    workers = num_workers > 0
    if sampler is None:
        sampler = EpochSampler(len(ds), shuffle=shuffle, seed=seed)
    if workers:
        _end_workers_at_exit()
    return DataLoader(ds, batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=workers,
                      prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(seed),
                      worker_init_fn=outlive_stop_signals if workers else None)


@functools.cache
def _end_workers_at_exit() -> None:
    """At exit, multiprocessing ends daemonic children (loader workers) with SIGTERM, which the workers ignore
    (:func:`outlive_stop_signals`), then waits for them: a script that called ``cnnforge.train`` would never
    exit. This handler, registered after multiprocessing's own (torch imports it) and so run before it, ends
    them with SIGKILL."""
    import atexit

    atexit.register(_kill_loader_workers)


def _kill_loader_workers() -> None:
    """SIGKILL and reap every daemonic child. torch's SIGCHLD handler raises as soon as one of its workers dies:
    left in place it cut this loop after the first kill, and the workers still alive kept multiprocessing's
    exit waiting for ever. At exit nothing needs it, so SIGCHLD gets its default action first."""
    import multiprocessing
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    children = [child for child in multiprocessing.active_children() if child.daemon]
    for child in children:
        child.kill()
    for child in children:
        child.join()


def outlive_stop_signals(worker_id: int) -> None:
    """A loader worker ignores SIGTERM and SIGUSR1: Slurm signals every process of a job, and a worker killed
    by it would fail the run that is about to checkpoint (training/preemption.py); it ends with its run."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
