"""Where ``data.cache`` puts the decoded pixels of an :class:`~cnnforge.data.encoded.EncodedImages` source.

The one module that knows every mode, so the modes' own modules (:mod:`cnnforge.data.encoded` for
``memory`` and ``none``, :mod:`cnnforge.data.disk_cache` for ``disk``) never import each other's
choice; ``auto`` estimates the decoded size from the image headers and picks the first that fits.
"""
from __future__ import annotations

import logging
import shutil
from typing import Any

import numpy as np

from cnnforge.data.decode import image_shape
from cnnforge.data.disk_cache import cache_root, cached_on_disk
from cnnforge.data.encoded import EncodedImages, LazyImages, in_memory
from cnnforge.data.work_progress import is_main_process
from cnnforge.launcher_env import env_int

log = logging.getLogger("cnnforge")


def decoded_bytes(source: EncodedImages, grayscale: bool, size: tuple[int, int] | None) -> int | None:
    """Estimated size of the decoded dataset: ``size`` (or the mean of up to 16 images' headers) times the count.

    Several headers, not the first alone: one unreadable or unusually small file must not decide the mode.
    """
    if size is not None:
        pixels = size[0] * size[1]
    else:
        picks = np.unique(np.linspace(0, len(source) - 1, min(len(source), 16)).astype(int)) if len(source) else []
        shapes = []
        for i in picks:
            try:
                shapes.append(image_shape(source.read(int(i))))
            except OSError:
                continue
        areas = [h * w for h, w in (s for s in shapes if s is not None)]
        if not areas:
            return None
        pixels = int(np.mean(areas))
    return len(source) * pixels * (1 if grayscale else 3)


def choose_cache(source: EncodedImages, grayscale: bool, size: tuple[int, int] | None) -> tuple[str, str]:
    """``auto``'s choice and why: memory when small enough, else disk when there is room, else none."""
    import psutil

    need = decoded_bytes(source, grayscale, size)
    if need is None:
        return "none", "the decoded size cannot be estimated from the image headers"
    local = env_int("LOCAL_WORLD_SIZE", 1)
    budget = psutil.virtual_memory().available / 4 / local
    gib = 2**30
    if need < budget:
        return "memory", (f"{need / gib:.2f} GiB decoded < {budget / gib:.2f} GiB "
                          f"(a quarter of available RAM / {local} local process(es))")
    root = cache_root()
    existing = next(p for p in (root, *root.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if size is not None and need < free:
        return "disk", (f"{need / gib:.2f} GiB decoded > {budget / gib:.2f} GiB of RAM per process; "
                        f"{free / gib:.1f} GiB free under {root}")
    return "none", f"{need / gib:.2f} GiB decoded fits neither RAM ({budget / gib:.2f} GiB per process) nor {root}" + (
        "" if size is not None else " without data.image_size")


def image_dataset(source: EncodedImages, *, cache: str, image_size: int | tuple[int, int] | None, grayscale: bool,
                  on_bad_image: str, where: str, cache_key: str = "mtime") -> Any:
    """``source`` as a dataset of (uint8 HxWxC or HxW image, int label) with ``classes`` and ``labels``.

    ``cache`` is one of :data:`CacheMode`, ``cache_key`` one of :data:`CacheKey`; the dataset's
    ``cache_choice`` says which mode was used and why, its ``sample_ids`` which file each sample is.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else (tuple(image_size) if image_size else None)
    reason = f"data.cache: {cache}"
    if cache == "auto":
        cache, why = choose_cache(source, grayscale, size)
        reason = f"data.cache: auto chose {cache}: {why}"
        if is_main_process():
            log.warning("cnnforge: %s: %s", where, reason)
    if cache == "memory":
        dataset: Any = in_memory(source, grayscale=grayscale, size=size, on_bad_image=on_bad_image, where=where)
    elif cache == "disk":
        dataset = cached_on_disk(source, grayscale=grayscale, size=size, on_bad_image=on_bad_image, where=where,
                                 content=cache_key == "content")
    else:
        dataset = LazyImages(source, grayscale=grayscale, image_size=size, on_bad_image=on_bad_image)
    dataset.cache_choice = {"mode": cache, "reason": reason}
    keep = getattr(dataset, "keep", None)  # memory and disk hold only the readable samples
    dataset.sample_ids = tuple(ids if keep is None else ids[keep] for ids in source.sample_ids())
    return dataset
