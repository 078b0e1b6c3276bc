"""cnnforge-torchvision: every torchvision classification model as ``tv/<name>``.

Importing this module (which cnnforge does through the ``cnnforge.plugins`` entry point) only
registers the ``tv/`` name family; torchvision is imported when a model is built or listed, so
``cnnforge list models`` and ``cnnforge check`` stay fast.
"""
from __future__ import annotations

from typing import Any

from cnnforge import register_model
from cnnforge.models.params import Freeze, Pretrained, Size

__version__ = "0.1.0"


@register_model("tv/", prefix=True)
def torchvision_model(name: str, /, *, num_classes: int, in_channels: int = 3, image_size: Size | None = None,
                      pretrained: Pretrained = False, freeze: Freeze = "none", **kwargs: Any) -> Any:
    """Any torchvision classification model as tv/<name> (pretrained: true|<file>, freeze: backbone|none)."""
    from cnnforge_torchvision.bridge import build

    return build(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                 pretrained=pretrained, freeze=freeze, **kwargs)


def list_names() -> list[str]:
    """torchvision's classification models (no detection, segmentation or video models)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def check_name(name: str) -> None:
    """Refuse a name torchvision does not have while the recipe is checked (cnnforge's registry calls it)."""
    from cnnforge_torchvision.bridge import check_name as check

    check(name)


torchvision_model.list_names = list_names  # type: ignore[attr-defined]  # `cnnforge list models 'tv/*'` expands it
torchvision_model.check_name = check_name  # type: ignore[attr-defined]
