"""``cnnforge.build_model``: a registered builder called with the context it declares."""
from __future__ import annotations

from typing import Any

from cnnforge.errors import CnnforgeError, ConfigError
from cnnforge.registry import builder_kwargs, models


def build_model(name: str, *, num_classes: int, in_channels: int, image_size: Any = None, where: str = "model",
                **params: Any) -> Any:
    """Build model ``name``; errors name the recipe key or, inside a plugin, the plugin's package."""
    try:
        entry = models.get(name)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=f"{where}.name", hint=exc.hint) from None
    if image_size is not None and not isinstance(image_size, int):
        image_size = tuple(int(s) for s in image_size)
    context = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    kwargs = builder_kwargs(entry, params, context=context, where=where)
    try:
        return entry.fn(**kwargs)
    except CnnforgeError:
        raise
    except ValueError as exc:  # builders say "cannot" with ValueError, e.g. an image too small
        raise ConfigError(str(exc), where=f"{where} ({name} from {entry.package})") from None
    except Exception as exc:
        raise CnnforgeError(f"building {name!r} failed: {type(exc).__name__}: {exc}",
                            where=f"{where} ({entry.package} {entry.version})") from exc
