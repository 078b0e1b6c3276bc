"""The JSON files cnnforge writes into a run directory and reads back, described as pydantic models.

A file damaged on disk, edited by hand or written by another version (wrong JSON type, non-UTF-8
bytes, an unknown field, an absurd image shape) must be one error naming the file, never an
``AttributeError`` or a 30 GB allocation deep inside resume or evaluation. Every reader goes
through :func:`read_model`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cnnforge.bounded_read import read_bounded
from cnnforge.data import MAX_IMAGE_SIDE
from cnnforge.errors import CnnforgeError

#: no run file cnnforge writes comes near this; a bigger one is not ours
MAX_FILE_BYTES = 16 << 20
#: a checkpoint is a folder ``ckpt-*`` under the run's ``checkpoints/``, complete once its checksum file is in place
CHECKPOINT_PREFIX = "ckpt-"
CHECKSUMS = "checksums.json"  # not "manifest.json": that name is the run directory's
LEGACY_CHECKSUMS = ("MANIFEST.json",)  # what cnnforge wrote before the rename; still read, never written

T = TypeVar("T")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Finite = Annotated[float, AfterValidator(_finite)]
Side = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]
Channels = Annotated[int, Field(ge=1, le=4)]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RunIdentity(_File):
    """Which run a checkpoint belongs to: a checkpoint of another run must never be resumed silently."""

    run_id: str
    recipe_sha256: str


class SplitRecord(_File):
    """A split's sample count and the digest of its samples (:mod:`cnnforge.data.fingerprints`)."""

    samples: Annotated[int, Field(ge=0)]
    sha256: str


class RunManifest(_File):
    """``manifest.json``: versions, devices and the recipe hash of a run, written when it starts."""

    cnnforge: str
    git_commit: str | None
    python: str
    torch: str
    accelerate: str
    platform: str
    plugins: dict[str, str]
    seed: Annotated[int, Field(ge=0)]
    world_size: Annotated[int, Field(ge=1)]
    device: str
    precision: str
    recipe_sha256: str
    created: str
    command: list[str]
    run_id: str | None = None  # runs made before checkpoints recorded their run have none
    data_cache: Any = None  # how the data was held (data.cache) and why, as build_splits chose it
    started_from: str | None = None  # another run's checkpoint this one continued (population-based training)
    lr_find: dict[str, Any] | None = None  # optim.lr: auto's range test: the value chosen, how (training/lr_finder.py)
    data_splits: dict[str, SplitRecord] | None = None  # what resume and eval check the data against


class CheckpointManifest(_File):
    """A checkpoint folder's ``checksums.json``: the SHA-256 of every file and the run it belongs to."""

    files: dict[str, str]
    run: RunIdentity | None = None


class DataInfoFile(_File):
    """``data_info.json``: classes, normalisation and image shapes, so predicting never needs the data."""

    classes: Annotated[list[str], Field(min_length=2)]
    mean: Annotated[list[Finite], Field(min_length=1, max_length=4)]
    std: Annotated[list[Annotated[Finite, Field(gt=0)]], Field(min_length=1, max_length=4)]
    channels: Channels
    image_size: tuple[Side, Side]
    stored_shape: tuple[Side, Side, Channels]


def read_model(path: Path, kind: type[T], what: str | None = None) -> T:
    """``path`` parsed as JSON and validated as ``kind``; anything wrong is one error naming the file."""
    try:  # a symlink to /dev/zero reports 0 bytes and never ends: read at most the bound
        raw = read_bounded(path, MAX_FILE_BYTES, what=what or "run file")
    except FileNotFoundError:
        raise CnnforgeError("file is missing", where=str(path)) from None
    try:
        return TypeAdapter(kind).validate_json(raw)
    except ValidationError as exc:
        raise CnnforgeError(f"not a valid {what or kind.__name__} ({describe(exc)})", where=str(path)) from None


def describe(exc: ValidationError) -> str:
    """The first problem of a validation error as ``key: message``."""
    err: dict[str, Any] = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    message = "unknown field" if err["type"] in ("extra_forbidden", "unexpected_keyword_argument") else err["msg"]
    return f"{key}: {message}" if key else message


def checksum_file(folder: Path) -> Path | None:
    """The checksum file of a complete checkpoint folder (the current name first), None while it is incomplete."""
    return next((folder / name for name in (CHECKSUMS, *LEGACY_CHECKSUMS) if (folder / name).exists()), None)


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders are never listed).

    Here, not in ``checkpoint``, so that ``cnnforge runs`` can tell a resumable run without importing torch.
    """
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
                  and checksum_file(p))
