"""Files written so that a crash or a full disk leaves the old version or the new one, never half a file.

Kept apart from the checkpoint code (which needs torch) so that run directories, reports and the sweep
driver can write files safely without importing torch.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries: a rename or a new file survives a power cut only once
    the folder that holds it is on disk too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half of one."""
    save_file_atomic(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0644 under the usual 022)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def save_file_atomic(path: Path, writer: Any) -> None:
    """``writer(tmp_path)`` writes the file; it is fsynced and renamed onto ``path``.

    The file gets the mode of any new file: some writers (safetensors) create theirs as 0600.
    When anything fails (a full disk, a read-only folder, the writer's own error) the temporary file
    is removed, the old ``path`` stays as it was, and the failure is one error naming ``path``.
    """
    from cnnforge.errors import CnnforgeError

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer(tmp)
        os.chmod(tmp, _new_file_mode())
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException as exc:  # Ctrl-C too: no temporary file stays behind
        _remove(tmp)
        if isinstance(exc, CnnforgeError) or not isinstance(exc, Exception):
            raise
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())[:160]
        raise CnnforgeError(f"cannot write it ({type(exc).__name__}: {detail})", where=str(path)) from exc


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only folder: nothing was written there either
