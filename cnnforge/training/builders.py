"""Building a registered training part (loss, optimizer, LR schedule, callback) from its recipe section.

One path for cnnforge's own parts and every plugin's: the registry finds the name (or says which names
are close), the builder's signature checks the params, and a failure inside the builder names the
package that registered it.
"""
from __future__ import annotations

from typing import Any

from cnnforge import registry
from cnnforge.errors import CnnforgeError, ConfigError


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
