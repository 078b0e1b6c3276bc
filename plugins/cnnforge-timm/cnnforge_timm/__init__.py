"""cnnforge-timm: every timm model as ``timm/<name>`` (``timm/resnet18``, ``timm/resnet18.a1_in1k``).

Importing this module (which cnnforge does through the ``cnnforge.plugins`` entry point) only
registers the ``timm/`` name family; timm is imported when a model is built or listed, so
``cnnforge list models`` and ``cnnforge check`` stay fast.
"""
from __future__ import annotations

from typing import Any

from cnnforge import register_model
from cnnforge.models.params import Freeze, Pretrained, Size

__version__ = "0.1.0"


@register_model("timm/", prefix=True)
def timm_model(name: str, /, *, num_classes: int, in_channels: int = 3, image_size: Size | None = None,
               pretrained: Pretrained = False, freeze: Freeze = "none", **kwargs: Any) -> Any:
    """Any timm model as timm/<name> (pretrained: true|<file>, freeze: backbone|none, other timm options)."""
    from cnnforge_timm.bridge import build

    return build(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                 pretrained=pretrained, freeze=freeze, **kwargs)


def list_names() -> list[str]:
    """Every architecture timm registers (pretrained tags such as ``.a1_in1k`` work too)."""
    import timm

    return timm.list_models()


timm_model.list_names = list_names  # type: ignore[attr-defined]  # `cnnforge list models 'timm/*'` expands it
