"""Reading dataset pickles (CIFAR's python layout) without executing arbitrary code.

``pickle.load`` runs whatever a file names; a dataset folder is user input, so only the handful
of globals a NumPy array needs are allowed and everything else is refused with a one-line error.
"""
from __future__ import annotations

import io
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
    """Unpickle ``path`` allowing plain containers and NumPy arrays only.

    The file is read into memory first: a length field the pickle declares can then never make the
    reader allocate more than the file holds (a 100-byte "allocation bomb" is just cut short).
    """
    try:
        data = path.read_bytes()
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except FileNotFoundError:
        raise DataError("file is missing", where=str(path)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError) as exc:
        raise DataError(f"not a readable dataset pickle ({type(exc).__name__}: {exc})"[:300], where=str(path)) from None
