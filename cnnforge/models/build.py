"""``cnnforge.build_model``: a registered builder called with the context it declares."""
from __future__ import annotations

from typing import Any

from cnnforge.errors import ConfigError
from cnnforge.registry import builder_kwargs, call_builder, models


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
    return call_builder(entry, kwargs, where=where)
