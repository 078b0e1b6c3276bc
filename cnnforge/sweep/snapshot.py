"""Ray's experiment state kept so that a driver killed at any moment leaves a state a rerun restores.

Ray Tune saves its experiment state (the trial table, the searcher, the callbacks) into a staging folder on
the driver, then copies that folder into the experiment directory on a background thread, file by file, each
file rewritten in place. A driver killed during that copy leaves a truncated file, or files of two different
saves. The rerun's restore then fails; Ray logs it and starts the sweep over: finished trials train again,
and an Optuna searcher, restored without its search space, cannot propose a single trial.

Ray writes the staging folder only on its controller thread, which is also the thread that runs callbacks,
so after each step the folder holds one complete save. :class:`StateSnapshot` packs that save into one
archive in the experiment directory (:data:`ARCHIVE`), replaced atomically; before a rerun restores,
:func:`put_back` puts the archive's files in place of Ray's copy.
"""
from __future__ import annotations

import fnmatch
import zipfile
from pathlib import Path
from typing import Any

from ray.tune import Callback

from cnnforge.atomic_write import save_file_atomic
from cnnforge.compat.ray_internals import state_file_templates
from cnnforge.errors import CnnforgeError

ARCHIVE = "ray_state.zip"
#: the way out of an archive that cannot be put back
FRESH_HINT = "run with --fresh to start a new experiment beside this one"
#: the files of one Ray save, by the save's session (the time its driver started); the first names the session.
#: Empty with a Ray cnnforge does not know: nothing is archived, and a rerun restores from Ray's own copy.
STATE_FILES = state_file_templates()


class StateSnapshot(Callback):
    """Packs Ray's newest save after every step that wrote one, and once more after Ray's last save."""

    def __init__(self) -> None:
        self._packed: list[tuple[str, int, int]] = []  # (name, mtime, size) of the files packed last

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if trials:  # each trial knows both folders; without a trial there is nothing worth restoring
            self._pack(Path(trials[0].local_experiment_path), Path(trials[0].remote_experiment_path))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.on_step_end(-1, trials)

    def _pack(self, staging: Path, experiment: Path) -> None:
        files = newest_save(staging) if STATE_FILES else []
        stats = [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files]
        if not files or stats == self._packed:
            return

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w") as archive:
                for path in files:
                    archive.write(path, path.name)

        save_file_atomic(experiment / ARCHIVE, write)
        self._packed = stats


def newest_save(folder: Path) -> list[Path]:
    """The files of the newest Ray save in ``folder`` (none without an experiment state file)."""
    first = STATE_FILES[0]
    states = sorted(folder.glob(first.format("*")))  # Ray's own rule: the greatest name is the newest
    if not states:
        return []
    prefix, suffix = first.split("{}")
    session = states[-1].name.removeprefix(prefix).removesuffix(suffix)
    return [p for p in (folder / name.format(session) for name in STATE_FILES) if p.is_file()]


def put_back(experiment: Path) -> None:
    """Replace Ray's saves in ``experiment`` with the archived one, if there is an archive (experiments written
    by cnnforge before it existed have none, and are restored from Ray's copy)."""
    path = experiment / ARCHIVE
    if not path.is_file() or not STATE_FILES:
        return
    try:
        with zipfile.ZipFile(path) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise CnnforgeError(f"cannot read Ray's saved experiment state ({exc})", where=str(path),
                            hint=FRESH_HINT) from exc
    if not any(fnmatch.fnmatchcase(name, STATE_FILES[0].format("*")) for name in files) or not all(
            _is_state_file(name) for name in files):
        raise CnnforgeError("is not an archive of Ray's experiment state", where=str(path),
                            hint=FRESH_HINT)
    for name in STATE_FILES:
        for old in experiment.glob(name.format("*")):
            old.unlink()
    for name, data in files.items():
        save_file_atomic(experiment / name, lambda tmp, data=data: tmp.write_bytes(data))


def _is_state_file(name: str) -> bool:
    """A file name of one of Ray's saves: never a path, so nothing lands outside the experiment directory."""
    return "/" not in name and any(fnmatch.fnmatchcase(name, pattern.format("*")) for pattern in STATE_FILES)
