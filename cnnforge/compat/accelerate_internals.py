"""Accelerate's process-wide state, which a second run in one process (a notebook, a sweep worker) must reset.

Accelerate keeps one ``AcceleratorState`` per process, and a new ``Accelerator`` inherits the first
one's mixed precision; only its private ``_reset_state`` forgets it.
"""
from __future__ import annotations

from cnnforge.compat.versions import supported, unsupported

#: the Accelerate releases ``_reset_state`` was read from (1.16) and checked against
ACCELERATE = ">=0.30,<1.17"


def reset_accelerator_state() -> None:
    """Forget the state an earlier ``Accelerator`` of this process left, so the next one takes its own settings.

    Outside the known range: nothing to do before the first ``Accelerator``; after one, one line naming the version.
    """
    from accelerate.state import AcceleratorState, is_initialized

    if supported("accelerate", ACCELERATE):
        AcceleratorState._reset_state(reset_partial_state=True)
    elif is_initialized():
        raise unsupported("accelerate", ACCELERATE, "a second run in one process")
