"""A recipe's ``augment:`` section -> validated op specs -> the albumentations pipelines for train and eval.

Three decisions live here:

* normalisation is not a pipeline step: the trainer normalises uint8 batches on the device (a
  quarter of the bytes to move), so a ``normalize`` op only supplies the statistics it uses;
* evaluation sees no random ops unless ``augment.eval`` says so, only the resize that brings its
  images to the size the training pipeline produces;
* each image reseeds the whole pipeline with one stream its ops draw from in turn.
  albumentations' ``Compose.set_random_seed`` hands all its ops the *same* seed, so ``hflip`` and
  ``vflip`` (both p=0.5) would always flip together.
"""
from __future__ import annotations

import inspect
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnforge.errors import ConfigError

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def _albumentations() -> Any:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A


def _op_kwargs(name: str, params: dict[str, Any], where: str) -> tuple[Any, dict[str, Any]]:
    from cnnforge import registry

    try:
        entry = registry.augmentations.get(name)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=f"{where}.name", hint=exc.hint) from None
    kwargs = registry.builder_kwargs(entry, params, context={}, where=where)
    missing = [p.name for p in inspect.signature(entry.fn).parameters.values()
               if p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in kwargs]
    if missing:
        raise ConfigError(f"{name!r} needs {', '.join(missing)}", where=f"{where}.{missing[0]}")
    return entry, kwargs


def _specs(spec: Any) -> list[tuple[str, dict[str, Any]]]:
    if spec is None:
        return []
    if isinstance(spec, str):
        return [(spec, {})]
    return [(op.name, op.params) for op in spec]


def _where(source: str, split: str, spec: Any, index: int) -> str:
    return f"{source}: augment.{split}" if isinstance(spec, str) else f"{source}: augment.{split}[{index}]"


def check_augment(augment: Any, source: str) -> None:
    """Every op name and parameter of ``augment.train`` / ``augment.eval`` (light: no albumentations import)."""
    for split in ("train", "eval"):
        spec = getattr(augment, split)
        for i, (name, params) in enumerate(_specs(spec)):
            _op_kwargs(name, params, _where(source, split, spec, i))
    if augment.mode == "batch":
        from cnnforge.data.batch_augment import batch_ops

        batch_ops(augment, source)


@dataclass(frozen=True)
class Pipeline:
    """One split's transform (``None``: nothing to do) and the statistics of its ``normalize`` op, if any."""

    transform: Any | None
    stats: Stats | None


def _flatten(transform: Any) -> Iterator[Any]:
    """The steps of plain, always-applied ``Compose`` objects (named pipelines), recursively; other transforms as they
    are."""
    A = _albumentations()
    if type(transform) is A.Compose and transform.p == 1:
        for step in transform.transforms:
            yield from _flatten(step)
    else:
        yield transform


def build_pipeline(spec: Any, source: str = "<recipe>", split: str = "train") -> Pipeline:
    """One ``Compose`` for ``spec`` (a list of ops or a pipeline name), its ``normalize`` steps taken out."""
    from cnnforge import registry

    A = _albumentations()
    steps: list[Any] = []
    stats: Stats | None = None
    for i, (name, params) in enumerate(_specs(spec)):
        where = _where(source, split, spec, i)
        entry, kwargs = _op_kwargs(name, params, where)
        for step in _flatten(registry.call_builder(entry, kwargs, where=where)):
            if isinstance(step, A.Normalize):
                stats = (tuple(np.atleast_1d(step.mean).tolist()), tuple(np.atleast_1d(step.std).tolist()))
            else:
                steps.append(step)
    return Pipeline(A.Compose(steps, seed=0) if steps else None, stats)


def seed_pipeline(transform: Any, rng: np.random.Generator) -> None:
    """Point ``transform`` and every op inside it at one random stream drawn from ``rng``.

    The ops take turns drawing from the shared stream, so they stay independent (hflip and vflip do
    not flip together, as with ``set_random_seed``'s one seed for all), and reseeding costs one
    generator per image instead of two per op: ``set_random_seed`` made it 40 % of the sample path.
    ``set_random_state`` propagates through nested ``Compose`` objects.
    """
    transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))


@dataclass(frozen=True)
class Pipelines:
    """Train and eval transforms that agree on output shape, and the normalisation they ask for."""

    train: Any | None
    eval: Any | None
    stats: Stats | None
    shape: tuple[int, int, int]  # (height, width, channels) the model receives


def _output_shape(transform: Any | None, sample: np.ndarray, where: str) -> tuple[int, int, int]:
    image = sample
    if transform is not None:
        seed_pipeline(transform, np.random.default_rng(0))
        try:
            image = transform(image=sample)["image"]
        except Exception as exc:  # a crop larger than the image, an op that needs 3 channels ...
            raise ConfigError(f"cannot transform a {sample.shape[0]}x{sample.shape[1]} image of this dataset: "
                              f"{type(exc).__name__}: {exc}", where=where) from None
    channels = image.shape[2] if image.ndim == 3 else 1
    return int(image.shape[0]), int(image.shape[1]), int(channels)


def _stats_for(stats: Stats, channels: int, where: str) -> Stats:
    mean, std = stats
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise ConfigError(f"normalize has {len(mean)} mean and {len(std)} std values for {channels}-channel images",
                          where=where, hint=f"give it {channels} value(s) or 1")
    return tuple(np.broadcast_to(mean, channels).tolist()), tuple(np.broadcast_to(std, channels).tolist())


def resolve_pipelines(augment: Any, source: str, sample: np.ndarray) -> Pipelines:
    """The train and eval pipelines of ``augment``, checked on one ``sample`` image (HxW or HxWxC uint8).

    Without ``augment.eval``, evaluation gets only a resize to the training output size (when the
    training pipeline changes it). Both splits share one normalisation: the model sees one input
    distribution.
    """
    train = build_pipeline(augment.train, source, "train")
    evaluation = build_pipeline(augment.eval, source, "eval")
    shape = _output_shape(train.transform, sample, f"{source}: augment.train")
    eval_transform = evaluation.transform
    if augment.eval is None and shape[:2] != sample.shape[:2]:
        A = _albumentations()
        eval_transform = A.Compose([A.Resize(height=shape[0], width=shape[1])], seed=0)
    eval_shape = _output_shape(eval_transform, sample, f"{source}: augment.eval")
    if eval_shape != shape:
        raise ConfigError(f"gives {eval_shape[0]}x{eval_shape[1]}x{eval_shape[2]} images but augment.train gives "
                          f"{shape[0]}x{shape[1]}x{shape[2]}", where=f"{source}: augment.eval",
                          hint="end augment.eval with a resize or center_crop to the training size")
    if train.stats and evaluation.stats and train.stats != evaluation.stats:
        raise ConfigError("normalize differs from augment.train's; both splits must share one normalisation",
                          where=f"{source}: augment.eval")
    stats = train.stats or evaluation.stats
    if stats is not None:
        stats = _stats_for(stats, shape[2], f"{source}: augment.{'train' if train.stats else 'eval'}")
    return Pipelines(train.transform, eval_transform, stats, shape)
