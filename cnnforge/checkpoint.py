"""Crash-proof checkpoints: a folder per checkpoint, written under a temporary name, fsynced, renamed.

A checkpoint folder holds ``model.safetensors``, ``optimizer.pt``/``scheduler.pt``/``ranks.pt`` (every
rank's RNG states and metric sums) and, when used, ``scaler.pt``/``ema.pt`` (plain tensors and numbers,
loaded with ``weights_only=True``), ``state.json`` and ``MANIFEST.json``
with a SHA-256 of every file. Only complete folders with matching checksums are ever loaded, and
older ones are deleted only after the new one is in place.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from cnnforge.atomic_write import atomic_write_text, fsync_dir, save_file_atomic, sha256
from cnnforge.errors import CnnforgeError

PREFIX = "ckpt-"
MANIFEST = "MANIFEST.json"
WEIGHTS = "model.safetensors"
STATE = "state.json"


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file_atomic(path, lambda tmp: save_file(tensors, str(tmp)))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CnnforgeError("weights file is missing", where=str(path)) from None
    except Exception as exc:
        raise CnnforgeError(f"not a readable safetensors file ({type(exc).__name__})", where=str(path)) from None


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
                    state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``tag`` into ``ckpt_dir`` atomically; prune all but the newest ``keep``."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = _unused_name(ckpt_dir, f"{PREFIX}{tag}")
    tmp = ckpt_dir / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    from safetensors.torch import save_file

    save_file({k: v.detach().to("cpu").contiguous() for k, v in model.items()}, str(tmp / WEIGHTS))
    for name, obj in tensors.items():
        torch.save(obj, tmp / f"{name}.pt")
    (tmp / STATE).write_text(json.dumps(state, indent=1, sort_keys=True))
    files = sorted(p.name for p in tmp.iterdir())
    for name in files:
        with (tmp / name).open("rb+") as f:
            os.fsync(f.fileno())
    manifest = {"files": {name: sha256(tmp / name) for name in files}}
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
    fsync_dir(tmp)
    os.replace(tmp, final)
    fsync_dir(ckpt_dir)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders are never listed)."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / MANIFEST).exists())


def verify(path: Path) -> str | None:
    """None when every file matches the manifest, else what is wrong."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({type(exc).__name__})"
    for name, digest in manifest.get("files", {}).items():
        f = path / name
        if not f.exists():
            return f"{name} is missing"
        if sha256(f) != digest:
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


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model weights, {name: tensors}, state) of a verified checkpoint folder."""
    problem = verify(path)
    if problem is not None:
        raise CnnforgeError(f"damaged checkpoint: {problem}", where=str(path))
    tensors = {p.stem: load_tensors(p) for p in sorted(path.glob("*.pt"))}
    state = json.loads((path / STATE).read_text())
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
