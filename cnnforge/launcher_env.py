"""The variables a launcher (``accelerate launch``, torchrun, a cluster's scheduler) sets, checked before use.

Accelerate and torch read ``WORLD_SIZE``, ``RANK`` and their kin with a bare ``int()``, so ``WORLD_SIZE=""``
left behind by a job script ends in a ``ValueError`` traceback from deep inside a library. cnnforge checks
them once, when a command starts, and names the variable.
"""
from __future__ import annotations

import os

from cnnforge.errors import ConfigError

#: whole numbers a launcher sets, with the smallest value each may take
_COUNTS = {"WORLD_SIZE": 1, "LOCAL_WORLD_SIZE": 1, "RANK": 0, "LOCAL_RANK": 0, "NODE_RANK": 0, "GROUP_RANK": 0,
           "MASTER_PORT": 1}
#: (rank, count): a rank counts from 0 to one less than its count
_RANKS = (("RANK", "WORLD_SIZE"), ("LOCAL_RANK", "LOCAL_WORLD_SIZE"))


def env_int(name: str, default: int) -> int:
    """The launcher variable ``name`` as a whole number (``default`` when unset); a malformed value is one line."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    smallest = _COUNTS.get(name, 0)
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < smallest or (name == "MASTER_PORT" and value > 65535):
        raise ConfigError(f"must be a whole number of at least {smallest}, got {raw!r}",
                          where=f"environment variable {name}",
                          hint="unset it, or start the processes with `accelerate launch`")
    return value


def check_launcher_env() -> None:
    """Every launcher variable that is set is well formed and the ranks lie inside their counts."""
    values = {name: env_int(name, -1) for name in _COUNTS}
    for rank, count in _RANKS:
        if values[rank] >= 0 and values[count] >= 1 and values[rank] >= values[count]:
            raise ConfigError(f"is {values[rank]} but {count} is {values[count]} (ranks count from 0)",
                              where=f"environment variable {rank}")
    if os.environ.get("MASTER_ADDR") == "":
        raise ConfigError("is set but empty", where="environment variable MASTER_ADDR",
                          hint="unset it, or start the processes with `accelerate launch`")
