"""Reading dataset pickles (CIFAR's python layout) without executing arbitrary code.

``pickle.load`` runs whatever a file names; a dataset folder is user input, so only the handful
of globals a NumPy array needs are allowed and everything else is refused with a one-line error.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from cnnforge.errors import DataError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_pickle(path: Path) -> Any:
    """Unpickle ``path`` allowing plain containers and NumPy arrays only."""
    try:
        with path.open("rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError("file is missing", where=str(path)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"not a readable dataset pickle ({exc or type(exc).__name__})", where=str(path)) from None
