"""cnnforge-timm: every timm model, optimizer and LR scheduler as ``timm/<name>``.

``model.name: timm/resnet18`` (or ``timm/resnet18.a1_in1k``), ``optim.name: timm/lamb`` (``timm/lion``,
``timm/adan`` ...) and ``schedule.name: timm/cosine`` (with ``cycle_limit`` for warm restarts). Importing
this module (which cnnforge does through the ``cnnforge.plugins`` entry point) only registers the
``timm/`` name families; timm is imported when a part is built or listed, so ``cnnforge list`` and
``cnnforge check`` stay fast.
"""
from __future__ import annotations

from typing import Any

from cnnforge import register_model, register_optimizer, register_schedule
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


def check_model_name(name: str) -> None:
    """Refuse a name timm does not have while the recipe is checked (cnnforge's registry calls it)."""
    from cnnforge_timm.bridge import check_name

    check_name(name)


def check_optimizer_name(name: str) -> None:
    """Refuse an optimizer timm's factory does not know while the recipe is checked."""
    from cnnforge_timm.training import check_optimizer_name as check

    check(name)


def check_schedule_name(name: str) -> None:
    """Refuse a scheduler cnnforge cannot step while the recipe is checked."""
    from cnnforge_timm.training import check_schedule_name as check

    check(name)


timm_model.list_names = list_names  # type: ignore[attr-defined]  # `cnnforge list models 'timm/*'` expands it


@register_optimizer("timm/", prefix=True)
def timm_optimizer(name: str, /, params: Any, *, lr: float, weight_decay: float = 0.0, **kwargs: Any) -> Any:
    """Any timm optimizer as timm/<name> (create_optimizer_v2: lamb, lion, adan, ...; its options as params)."""
    from cnnforge_timm.training import create_optimizer

    return create_optimizer(name, params, lr=lr, weight_decay=weight_decay, **kwargs)


def list_optimizers() -> list[str]:
    """Every optimizer name timm's factory knows."""
    from timm.optim import list_optimizers as names

    return names()


@register_schedule("timm/", prefix=True)
def timm_schedule(name: str, /, optimizer: Any, *, epochs: int, steps_per_epoch: int, **kwargs: Any) -> Any:
    """A timm scheduler as timm/<name> (create_scheduler_v2, per step: cosine with cycle_limit restarts, ...)."""
    from cnnforge_timm.training import create_schedule

    return create_schedule(name, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **kwargs)


def list_schedules() -> list[str]:
    """The timm schedulers a step count drives."""
    from cnnforge_timm.training import SCHEDULES

    return list(SCHEDULES)


timm_optimizer.list_names = list_optimizers  # type: ignore[attr-defined]
timm_schedule.list_names = list_schedules  # type: ignore[attr-defined]
# the registry asks these while it checks a recipe: a misspelt name is one line before anything is built
timm_model.check_name = check_model_name  # type: ignore[attr-defined]
timm_optimizer.check_name = check_optimizer_name  # type: ignore[attr-defined]
timm_schedule.check_name = check_schedule_name  # type: ignore[attr-defined]
