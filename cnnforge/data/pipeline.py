"""A recipe's ``augment:`` section -> validated op specs -> one albumentations ``Compose``."""
from __future__ import annotations

from typing import Any

from cnnforge.errors import ConfigError


def _op_kwargs(name: str, params: dict[str, Any], where: str) -> tuple[Any, dict[str, Any]]:
    from cnnforge import registry

    try:
        entry = registry.augmentations.get(name)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=f"{where}.name", hint=exc.hint) from None
    return entry, registry.builder_kwargs(entry, params, context={}, where=where)


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


def build_transform(spec: Any, source: str = "<recipe>", split: str = "train") -> Any | None:
    """One ``Compose`` for ``spec`` (a list of ops or a pipeline name); ``None`` when there is nothing to do.

    Randomness is reseeded per sample by the dataset wrapper, so the pipeline's own seed only
    matters for code that calls it directly.
    """
    import os

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    ops = []
    for i, (name, params) in enumerate(_specs(spec)):
        entry, kwargs = _op_kwargs(name, params, _where(source, split, spec, i))
        ops.append(entry.fn(**kwargs))
    return A.Compose(ops, seed=0) if ops else None
