"""The data checks ``run`` makes when it starts, at the cost of one decoded image: for ``check`` and ``tune``.

A sweep whose data is missing would otherwise start Ray and fail every trial with a long traceback, each
retried; ``cnnforge check`` would say "ok" about a recipe whose first ``run`` stops at once. The probe opens
every split the way a run does (the files are listed, nothing is decoded in bulk: a dataset that takes
``data.cache`` is opened with ``cache: none`` so no cache is built), decodes one training image and checks the
augmentation pipelines on it, including the model-input-size rule of ``data.cache: none``.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import numpy as np

from cnnforge.data.decode import resize_image
from cnnforge.data.loading import _model_sized, _open
from cnnforge.data.pipeline import resolve_pipelines
from cnnforge.errors import ConfigError, DataError

if TYPE_CHECKING:
    from cnnforge.recipe import Recipe


def _uncached(recipe: Recipe) -> Recipe:
    """``recipe`` with ``data.cache: none`` when its dataset takes a ``cache`` parameter (no cache gets built)."""
    from cnnforge import registry

    if "cache" not in inspect.signature(registry.datasets.get(recipe.data.name).fn).parameters:
        return recipe
    probe = recipe.model_copy(deep=True)
    probe.data.cache = "none"  # a dataset param: the section keeps extra keys
    return probe


def check_data(recipe: Recipe) -> None:
    """Raise what a run of ``recipe`` would raise about its data before its first step (DataError: exit 1).

    Present and laid out as the dataset expects (every split it has), at least two classes, one training image
    decodable, the augmentation pipelines valid on it.
    """
    d, src = recipe.data, recipe.source
    probe = _uncached(recipe)
    pool = _open(probe, "train")
    if pool is None:
        raise ConfigError(f"dataset {d.name!r} has no train split", where=f"{src}: data.name")
    where = f"{d.root} ({d.name})"
    if len(pool) == 0:
        raise DataError("the dataset is empty", where=where)
    classes = list(getattr(pool, "classes", None) or [])
    if len(classes) < 2:
        raise DataError(f"the dataset has {len(classes)} class(es); a classifier needs at least two", where=where)
    for split in ("val", "test"):  # a separate split's folder or files are listed and checked as a run does
        _open(probe, split)
    sample = np.asarray(pool[0][0])
    sample = sample if sample.ndim == 3 else sample[..., None]
    if getattr(pool, "full_resolution", False):
        own_size = probe is recipe or d.params.get("cache") == "none"  # the run decodes at the images' own size too
        size = pool.image_size
        sample = _model_sized(sample, size, recipe) if own_size else resize_image(sample, size) if size else sample
    resolve_pipelines(recipe.augment, src, sample)

