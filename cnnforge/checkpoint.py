"""Crash-proof checkpoints: a folder per checkpoint, written under a temporary name, fsynced, renamed.

A checkpoint folder holds ``model.safetensors``, ``optimizer.pt``/``scheduler.pt``/``ranks.pt`` (every
rank's RNG states and metric sums) and, when used, ``scaler.pt``/``ema.pt``/``lookahead.pt`` (plain
tensors and numbers, loaded with ``weights_only=True``), ``state.json`` and ``checksums.json``
with a SHA-256 of every file. Only complete folders with matching checksums are ever loaded, and
older ones are deleted only after the new one is in place.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, TypeVar

import torch

from cnnforge.atomic_write import atomic_write_text, fsync_path, save_file_atomic, sha256
from cnnforge.errors import CnnforgeError
from cnnforge.run_files import (
    CHECKPOINT_PREFIX,
    CHECKSUMS,
    LEGACY_CHECKSUMS,
    CheckpointManifest,
    RunIdentity,
    checksum_file,
    list_checkpoints,
    read_model,
)

WEIGHTS = "model.safetensors"
STATE = "state.json"
T = TypeVar("T")


#: the safetensors metadata key holding :func:`tensor_digest` of the file's tensors
DIGEST_KEY = "cnnforge.sha256"
#: the files every checkpoint folder holds besides its manifest (the writer's list, never the manifest's)
REQUIRED = frozenset({WEIGHTS, STATE, "optimizer.pt", "scheduler.pt", "ranks.pt"})


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write weights atomically with their checksum inside the file, so every reader can verify them."""
    save_file_atomic(path, lambda tmp: _write_weights(state, tmp))


def _write_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata={DIGEST_KEY: tensor_digest(tensors)})


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a safetensors file cnnforge wrote, verified against the checksum stored in it."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get(DIGEST_KEY)
        weights = load_file(str(path))
    except FileNotFoundError:
        raise CnnforgeError("weights file is missing", where=str(path)) from None
    except Exception as exc:
        raise CnnforgeError(f"not a readable safetensors file ({type(exc).__name__})", where=str(path)) from None
    if stored is None:
        raise CnnforgeError("weights carry no checksum, so they cannot be verified", where=str(path),
                            hint="written by another program or an older cnnforge")
    if tensor_digest(weights) != stored:
        raise CnnforgeError("weights do not match their checksum (the file is damaged)", where=str(path))
    return weights


def load_tensors(path: Path) -> Any:
    """``torch.load`` that refuses anything but tensors and plain containers (no code runs)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CnnforgeError("file is missing", where=str(path)) from None
    except Exception as exc:
        raise CnnforgeError(f"refused to load: not plain tensors ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120]})", where=str(path)) from None


def save_checkpoint(ckpt_dir: Path, tag: str, *, model: dict[str, torch.Tensor], tensors: dict[str, Any],
                    state: dict[str, Any], keep: int, identity: RunIdentity | None = None) -> Path:
    """Write checkpoint ``tag`` into ``ckpt_dir`` atomically; prune all but the newest ``keep``.

    ``identity`` (run id and recipe hash) goes into the manifest, so a resume can refuse a checkpoint
    copied in from another run.
    """
    final = _unused_name(ckpt_dir, f"{CHECKPOINT_PREFIX}{tag}")
    tmp = ckpt_dir / f".tmp-{final.name}-{os.getpid()}"
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        _write_folder(tmp, model, tensors, state, identity)
        os.replace(tmp, final)
        fsync_path(ckpt_dir)
    except BaseException as exc:  # a full disk, a read-only folder or Ctrl-C: no half-written folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, CnnforgeError) or not isinstance(exc, Exception):
            raise
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())[:160]
        raise CnnforgeError(f"cannot write the checkpoint ({type(exc).__name__}: {detail})", where=str(final)) from exc
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_folder(tmp: Path, model: dict[str, torch.Tensor], tensors: dict[str, Any], state: dict[str, Any],
                  identity: RunIdentity | None) -> None:
    _write_weights(model, tmp / WEIGHTS)
    for name, obj in tensors.items():
        torch.save(obj, tmp / f"{name}.pt")
    (tmp / STATE).write_text(json.dumps(state, indent=1, sort_keys=True))
    files = sorted(p.name for p in tmp.iterdir())
    for name in files:
        with (tmp / name).open("rb+") as f:
            os.fsync(f.fileno())
    manifest = CheckpointManifest(files={name: sha256(tmp / name) for name in files}, run=identity)
    atomic_write_text(tmp / CHECKSUMS, manifest.model_dump_json(indent=1))
    fsync_path(tmp)


def _unused_name(ckpt_dir: Path, name: str) -> Path:
    """``name``, or ``name-rNN`` when a resumed run writes the same position again.

    The older folder is never replaced in place: it stays loadable until pruning, after the new
    one is complete, so a kill at any moment leaves a good checkpoint behind.
    """
    path, revision = ckpt_dir / name, 0
    while path.exists():
        revision += 1
        path = ckpt_dir / f"{name}-r{revision:02d}"
    return path


def remove_partial(ckpt_dir: Path) -> None:
    """Delete the half-written ``.tmp-*`` folders a killed run leaves behind (complete ones are never touched)."""
    for tmp in ckpt_dir.glob(".tmp-*") if ckpt_dir.is_dir() else []:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def read_manifest(path: Path) -> CheckpointManifest:
    """A checkpoint folder's validated manifest."""
    return read_model(checksum_file(path) or path / CHECKSUMS, CheckpointManifest, "checkpoint manifest")


def verify(path: Path) -> str | None:
    """None when the folder holds exactly the files a checkpoint must have, each matching the manifest.

    The file list comes from the folder and :data:`REQUIRED`, never from the manifest alone: an
    emptied manifest or one naming ``../`` paths cannot make a damaged checkpoint pass, and no path
    outside the folder is ever opened.
    """
    try:
        listed = read_manifest(path).files
    except CnnforgeError as exc:
        return exc.message
    present = {p.name for p in path.iterdir() if not p.name.startswith(".")}  # Ray adds hidden files
    present -= {CHECKSUMS, *LEGACY_CHECKSUMS}
    for name in sorted(REQUIRED - present):
        return f"{name} is missing"
    for name in sorted(present ^ set(listed)):
        return f"{name} is {'not in the manifest' if name in present else 'in the manifest but not in the folder'}"
    for name in sorted(present):
        f = path / name
        if f.is_symlink() or not f.is_file():
            return f"{name} is not a plain file"
        if sha256(f) != listed[name]:
            return f"{name} does not match its checksum"
    return None


def latest_valid(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint whose checksums match; damaged newer ones are skipped with a warning."""
    import warnings

    for path in reversed(list_checkpoints(ckpt_dir)):
        problem = verify(path)
        if problem is None:
            return path
        warnings.warn(f"skipping damaged checkpoint {path}: {problem}", stacklevel=2)
    return None


def load_checkpoint(path: Path, state_type: type[T]) -> tuple[dict[str, torch.Tensor], dict[str, Any], T]:
    """(model weights, {name: tensors}, state) of a verified checkpoint folder.

    ``state.json`` is validated as ``state_type``.
    """
    problem = verify(path)
    if problem is not None:
        raise CnnforgeError(f"damaged checkpoint: {problem}", where=str(path))
    tensors = {p.stem: load_tensors(p) for p in sorted(path.glob("*.pt")) if not p.name.startswith(".")}
    state = read_model(path / STATE, state_type, "checkpoint state")
    return load_weights(path / WEIGHTS), tensors, state


def check_compatible(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Weights from another model are an error naming the first mismatched layer."""
    own = model.state_dict()
    for key, value in own.items():
        if key not in weights:
            raise CnnforgeError(f"checkpoint has no weights for layer {key!r} (it is from another model)", where=where)
        if tuple(weights[key].shape) != tuple(value.shape):
            raise CnnforgeError(f"layer {key!r} has shape {tuple(weights[key].shape)} in the checkpoint but "
                                f"{tuple(value.shape)} in the model", where=where)
    extra = [k for k in weights if k not in own]
    if extra:
        raise CnnforgeError(f"checkpoint has layer {extra[0]!r} that the model lacks (it is from another model)",
                            where=where)
