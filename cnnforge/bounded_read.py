"""Files read with a bound fixed before the first byte, so no file can make cnnforge hang or allocate without limit.

A size from ``stat`` is no bound: ``/dev/zero`` and a FIFO report 0 bytes and then never end, and a file can
grow between the ``stat`` and the read. So a file is opened without blocking (a FIFO with no writer opens at
once), refused unless the open file is a regular file, and read for at most ``limit + 1`` bytes: one byte
more than the limit means the file is not one cnnforge wrote.
"""
from __future__ import annotations

import os
import stat

from cnnforge.errors import CnnforgeError

#: what a file that is not a regular file is, for the error message
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_bounded(path: str | os.PathLike[str], limit: int, *, what: str = "file",
                 error: type[CnnforgeError] = CnnforgeError) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; anything else is one ``error`` naming it.

    ``FileNotFoundError`` passes through, so callers say what a missing file means for them.
    """
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"cannot read the {what}: {exc.strerror or exc}", where=where) from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise error(f"is {kind}, not a {what}", where=where)
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read the {what}: {exc.strerror or exc}", where=where) from None
    if len(data) > limit:
        raise error(f"is larger than {limit} bytes; a {what} is at most {limit} bytes", where=where)
    return data


def read_bounded_text(path: str | os.PathLike[str], limit: int, *, what: str = "file",
                      error: type[CnnforgeError] = CnnforgeError) -> str:
    """:func:`read_bounded` decoded as UTF-8; other bytes are one ``error`` naming the file."""
    try:
        return read_bounded(path, limit, what=what, error=error).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"cannot read the {what}: UnicodeDecodeError at byte {exc.start} (not UTF-8 text)",
                    where=str(path)) from None
