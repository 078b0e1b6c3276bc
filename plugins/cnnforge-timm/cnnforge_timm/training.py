"""timm's optimizers and LR schedulers for cnnforge recipes: ``optim.name: timm/lamb``, ``schedule.name: timm/cosine``.

Bridges, not copies: ``timm.optim.create_optimizer_v2`` builds the optimizer over cnnforge's parameter
groups (head LR, ``bias_lr_mult`` and their weight decay stay cnnforge's), and
``timm.scheduler.create_scheduler_v2`` computes the schedule, which a torch ``LambdaLR`` applies after
every optimizer step: its position is a step count (exact resume) and cnnforge's rollback and
population-based training rescale it like the built-in schedules. Reading the values of a timm scheduler
at a step uses its ``_get_lr``/``_add_noise`` (what its own ``step_update`` calls).
"""
from __future__ import annotations

import inspect
from typing import Any

#: timm schedulers a step count determines (``plateau`` follows a metric, which cnnforge's step does not give)
SCHEDULES = ("cosine", "tanh", "step", "multistep", "poly")


def check_optimizer_name(name: str) -> None:
    """A ValueError naming the closest optimizers unless timm's factory knows ``name``."""
    from timm import optim

    from cnnforge.errors import did_you_mean

    if name not in optim.list_optimizers():
        hint = did_you_mean(name, optim.list_optimizers())
        raise ValueError(f"timm has no optimizer {name!r}" + (f" ({hint})" if hint else "")
                         + "; see `cnnforge list optimizers 'timm/*'`")


def check_schedule_name(name: str) -> None:
    """A ValueError naming the schedulers cnnforge can step unless ``name`` is one."""
    from cnnforge.errors import did_you_mean

    if name not in SCHEDULES:
        hint = did_you_mean(name, SCHEDULES) or f"one of {', '.join(SCHEDULES)}"
        raise ValueError(f"timm scheduler {name!r} is not one cnnforge can step ({hint})")


def create_optimizer(name: str, params: Any, *, lr: float, weight_decay: float, **kwargs: Any) -> Any:
    """``timm.optim.create_optimizer_v2`` over ``params``; an option its class does not take is a ValueError."""
    from timm import optim

    from cnnforge.errors import did_you_mean

    check_optimizer_name(name)
    accepted = [p for p in inspect.signature(optim.get_optimizer_class(name)).parameters if p not in ("self", "params")]
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        hint = did_you_mean(unknown[0], accepted) or f"it takes {', '.join(accepted)}"
        raise ValueError(f"timm/{name} takes no option {unknown[0]!r} ({hint})")
    return optim.create_optimizer_v2(params, opt=name, lr=lr, weight_decay=weight_decay, **kwargs)


def create_schedule(name: str, optimizer: Any, *, epochs: int, steps_per_epoch: int, **kwargs: Any) -> Any:
    """``timm.scheduler.create_scheduler_v2`` counted in optimizer steps, applied by a ``LambdaLR``."""
    import torch
    from timm.scheduler import create_scheduler_v2

    from cnnforge.errors import did_you_mean

    check_schedule_name(name)
    options = set(inspect.signature(create_scheduler_v2).parameters) - {"optimizer", "sched", "num_epochs",
                                                                         "updates_per_epoch", "step_on_epochs"}
    unknown = [key for key in kwargs if key not in options]
    if unknown:
        raise ValueError(f"timm/{name} takes no option {unknown[0]!r} ({did_you_mean(unknown[0], options) or ''})")
    timm_schedule, _ = create_scheduler_v2(optimizer, sched=name, num_epochs=epochs, updates_per_epoch=steps_per_epoch,
                                           step_on_epochs=False, **kwargs)
    bases = timm_schedule.base_values

    def factor(group: int) -> Any:
        return lambda step: timm_schedule._add_noise(timm_schedule._get_lr(step), step)[group] / bases[group]

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(i) for i in range(len(bases))])
