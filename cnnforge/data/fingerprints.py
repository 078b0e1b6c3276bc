"""What a dataset is, in a few bytes: content digests for ``data.cache_key: content`` and a run's split records.

Two uses, two notions of "the same data":

* the decoded-image cache must never serve stale pixels, so ``data.cache_key: content`` hashes the
  bytes of every file the cache was decoded from (:func:`files_digest`), where ``mtime`` trusts each
  file's path, size and modification time;
* a run must continue and be evaluated on the data it started with, so ``manifest.json`` records each
  split's sample count and a digest of its samples (:func:`split_record`): which files (path and
  size, shard member, row) in which order with which labels. Copying the data elsewhere keeps it;
  adding, removing, resizing or relabelling a file changes it. ``resume`` and ``eval`` compare it
  (:func:`check_splits`) and refuse a difference unless forced.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from cnnforge.errors import ConfigError

log = logging.getLogger("cnnforge")


def _file_digest(path: str) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").digest()


def files_digest(paths: Sequence[str]) -> str:
    """One digest of the bytes of every file in ``paths`` (in order), read on threads (I/O bound)."""
    digest = hashlib.blake2b()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for path, part in zip(paths, pool.map(_file_digest, paths), strict=True):
            digest.update(path.encode("utf-8", "surrogateescape") + b"\0" + part)
    return digest.hexdigest()


def _sample_arrays(base: Any, indices: np.ndarray) -> list[np.ndarray]:
    """What identifies the samples ``indices`` of ``base`` beyond their labels: the file of each (``sample_ids``,
    set by :func:`cnnforge.data.cache_modes.image_dataset`), else the pixels of an in-memory array dataset."""
    ids = getattr(base, "sample_ids", None)
    if ids is not None:
        return [np.asarray(a)[indices] for a in ids]
    images = getattr(base, "images", None)
    if isinstance(images, np.ndarray) and len(images) == len(base):
        return [images[indices]]
    return []  # a plugin's dataset: its labels alone


def split_record(dataset: Any) -> dict[str, Any]:
    """``{"samples": n, "sha256": ...}`` of an :class:`~cnnforge.data.loading.AugmentedDataset`: its samples'
    identities and labels, in order."""
    indices = np.asarray(dataset.indices, dtype=np.int64)
    digest = hashlib.sha256(np.ascontiguousarray(dataset.labels, dtype=np.int64).tobytes())
    for array in _sample_arrays(dataset.base, indices):
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"samples": len(indices), "sha256": digest.hexdigest()}


def what_changed(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """None when the records agree, else how the split differs, in words."""
    if recorded.get("sha256") == now["sha256"]:
        return None
    before, after = recorded.get("samples"), now["samples"]
    if before != after:
        return f"it has {after} samples now, {before} when the run started"
    return f"its {after} samples are other files, sizes or labels than when the run started"


def check_splits(recorded: Mapping[str, Any] | None, splits: Any, names: Sequence[str], *, where: str,
                 force: bool, action: str) -> list[str]:
    """Compare ``splits`` (a :class:`~cnnforge.data.loading.Splits`) with a run's records; the split names that
    differ.

    A difference is a :class:`ConfigError` naming the split and what changed, unless ``force``: then one
    warning line says what ``action`` goes on with. A run that recorded nothing (older runs) is not checked.
    """
    changed = []
    for name in names:
        if recorded is None or name not in recorded:
            continue
        why = what_changed(recorded[name], split_record(getattr(splits, name)))
        if why is None:
            continue
        if not force:
            raise ConfigError(f"the {name} split differs from the run's data: {why}", where=where,
                              hint=f"restore the data, or use --force to {action} anyway")
        log.warning("cnnforge: %s: the %s split differs from the run's data (%s); --force: %s anyway",
                    where, name, why, action)
        changed.append(name)
    return changed
