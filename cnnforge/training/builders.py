"""Building a registered training part (loss, optimizer, LR schedule, callback) from its recipe section, and a
run's callbacks (:func:`attach_callbacks`).

One path for cnnforge's own parts and every plugin's: the registry finds the name (or says which names
are close), the builder's signature checks the params, and a failure inside the builder names the
package that registered it.
"""
from __future__ import annotations

from typing import Any

from cnnforge import registry
from cnnforge.errors import CnnforgeError, ConfigError
from cnnforge.training.callbacks import Attached, Callback, CallbackList


def build_part(kind: str, name: str, params: dict[str, Any], context: dict[str, Any], where: str,
               expected: type | None = None, *, required: tuple[str, ...] = ()) -> Any:
    """The ``kind`` builder ``name`` called with the recipe's ``params`` and the ``context`` it declares.

    ``where`` is the recipe key (``optim``); ``required`` are context keys the builder must declare for
    the run to mean what the recipe says (a loss given class weights must take ``weight``); ``expected``
    is the type the builder must return.
    """
    try:
        entry = registry.REGISTRIES[kind].get(name)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=f"{where}.name", hint=exc.hint) from None
    kwargs = registry.builder_kwargs(entry, params, context=context, where=where)
    for key in required:
        if key not in kwargs:
            raise ConfigError(f"{name!r} ({entry.package}) does not take {key}", where=f"{where}.name")
    part = registry.call_builder(entry, kwargs, where=where)
    if expected is not None and not isinstance(part, expected):
        raise CnnforgeError(f"{name!r} returned {type(part).__name__}, not a {expected.__name__}",
                            where=f"{where} ({entry.package} {entry.version})")
    return part


def attach_callbacks(recipe: Any, acc: Any) -> CallbackList:
    """The recipe's callbacks, then those its keys imply (``train.ema``, a tracking backend), for this process."""
    from cnnforge.training.tracking import TrackingCallback

    specs = [(f"callbacks[{i}]", spec.name, spec.params) for i, spec in enumerate(recipe.callbacks)]
    if recipe.train.ema is not None:
        specs.append(("train.ema", "ema", {"decay": recipe.train.ema}))
    every = []
    for key, name, params in specs:
        entry = registry.callbacks.get(name)
        where = f"{recipe.source}: {key} ({name} from {entry.package} {entry.version})"
        every.append(Attached(key, where, build_part("callbacks", name, params, {}, key, Callback)))
    if recipe.tracking.backend != "none":
        every.append(Attached("tracking", f"{recipe.source}: tracking", TrackingCallback()))
    mine = [a for a in every if acc.is_main_process or a.callback.all_ranks]
    return CallbackList(mine, present=bool(every))
