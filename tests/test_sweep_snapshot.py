"""The archive of Ray's experiment state (``ray_state.zip``): what is packed, what a rerun puts back, what it refuses.

The end-to-end case (a driver killed while Ray copies its state, then rerun) is
``test_searchers_spend_the_budget_and_resume_by_rerunning`` in ``tests/test_sweep_search.py``."""
from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from cnnforge.errors import CnnforgeError
from cnnforge.sweep.snapshot import ARCHIVE, StateSnapshot, newest_save, put_back
from tests.conftest import ROOT, cli, one_error_line
from tests.test_tune import _experiments, _kill_9_driver_when

OLD, NEW = "2026-12-01_01-00-00", "2026-12-01_02-00-00"


def _save(folder: Path, session: str, searcher: bytes = b"searcher") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"experiment_state-{session}.json").write_text(f'{{"session": "{session}"}}')
    (folder / f"search_gen_state-{session}.json").write_text("{}")
    (folder / f"searcher-state-{session}.pkl").write_bytes(searcher)


def _archive(experiment: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(experiment / ARCHIVE) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_newest_save_is_the_greatest_session_and_only_its_files(tmp_path: Path) -> None:
    _save(tmp_path, OLD)
    _save(tmp_path, NEW)
    (tmp_path / "tuner.pkl").write_bytes(b"not a save")
    assert sorted(p.name for p in newest_save(tmp_path)) == [
        f"experiment_state-{NEW}.json", f"search_gen_state-{NEW}.json", f"searcher-state-{NEW}.pkl"]
    assert newest_save(tmp_path / "nothing") == []


def test_each_step_packs_the_staging_folder_once_per_save(tmp_path: Path) -> None:
    staging, experiment = tmp_path / "staging", tmp_path / "experiment"
    experiment.mkdir()
    trial = SimpleNamespace(local_experiment_path=str(staging), remote_experiment_path=str(experiment))
    callback = StateSnapshot()
    callback.on_step_end(0, [])
    callback.on_step_end(1, [trial])
    assert not (experiment / ARCHIVE).exists()  # no trial, or no save yet: nothing to keep

    _save(staging, OLD, b"first")
    callback.on_step_end(2, [trial])
    packed = (experiment / ARCHIVE).stat().st_mtime_ns
    assert _archive(experiment)[f"searcher-state-{OLD}.pkl"] == b"first"
    callback.on_step_end(3, [trial])
    assert (experiment / ARCHIVE).stat().st_mtime_ns == packed  # the same save is not packed again

    _save(staging, OLD, b"second, longer")
    callback.on_experiment_end([trial])
    assert _archive(experiment) == {p.name: p.read_bytes() for p in newest_save(staging)}
    assert not list(experiment.glob(".*tmp*"))


def test_put_back_replaces_every_ray_save_with_the_archived_one(tmp_path: Path) -> None:
    staging, experiment = tmp_path / "staging", tmp_path / "experiment"
    _save(staging, OLD, b"complete")
    experiment.mkdir()
    StateSnapshot().on_step_end(0, [SimpleNamespace(local_experiment_path=str(staging),
                                                    remote_experiment_path=str(experiment))])
    _save(experiment, OLD, b"compl")  # cut by a kill during Ray's copy
    _save(experiment, NEW)  # a later session that never saved completely
    (experiment / "sweep.yaml").write_text("kept")

    put_back(experiment)
    assert {p.name: p.read_bytes() for p in newest_save(experiment)} == _archive(experiment)
    assert _archive(experiment)[f"searcher-state-{OLD}.pkl"] == b"complete"
    assert not list(experiment.glob(f"*{NEW}*")) and (experiment / "sweep.yaml").read_text() == "kept"


def test_without_an_archive_ray_keeps_its_copy(tmp_path: Path) -> None:
    _save(tmp_path, OLD)
    put_back(tmp_path)  # an experiment of an older cnnforge
    assert len(newest_save(tmp_path)) == 3


@pytest.mark.parametrize(("content", "message"), [
    (b"PK\x03\x04 cut short", "cannot read Ray's saved experiment state"),
    ({"../escape.json": b"{}", f"experiment_state-{OLD}.json": b"{}"}, "is not an archive of Ray's experiment state"),
    ({f"searcher-state-{OLD}.pkl": b""}, "is not an archive of Ray's experiment state"),
])
def test_a_bad_archive_names_itself_and_touches_nothing(tmp_path: Path, content: bytes | dict[str, bytes],
                                                        message: str) -> None:
    _save(tmp_path, OLD)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    if isinstance(content, bytes):
        (tmp_path / ARCHIVE).write_bytes(content)
    else:
        with zipfile.ZipFile(tmp_path / ARCHIVE, "w") as archive:
            for name, data in content.items():
                archive.writestr(name, data)
    with pytest.raises(CnnforgeError) as err:
        put_back(tmp_path)
    assert err.value.where == str(tmp_path / ARCHIVE) and message in err.value.message
    assert "--fresh" in err.value.one_line()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != ARCHIVE} == before
    assert not (tmp_path.parent / "escape.json").exists()


@pytest.mark.slow
def test_a_state_ray_cannot_restore_is_one_line_and_trains_nothing(tmp_path: Path) -> None:
    """Without the archive (an experiment of an older cnnforge) and with Ray's copy cut, Ray would log the failure
    and train the whole sweep again: the rerun stops instead, naming the experiment, and leaves it as it was."""
    args = ["tune", str(ROOT / "recipes" / "sweep_digits.yaml"), "train.epochs=2", f"train.out_dir={tmp_path}"]
    _kill_9_driver_when(args, tmp_path / "first.log",
                        lambda: any(tmp_path.glob("sweep_digits/tune-*/*/runs/*/*/summary.json")),
                        "a finished trial", env={"OMP_NUM_THREADS": "1"})
    [experiment] = _experiments(tmp_path, "sweep_digits")
    (experiment / ARCHIVE).unlink()
    [saved] = experiment.glob("experiment_state-*.json")
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])

    def state() -> tuple[dict[str, bytes], list[str]]:
        """Ray's files (its storage marker and cnnforge's lock, which holds the pid of its holder, aside) and the
        trial folders."""
        files = {p.name: p.read_bytes() for p in experiment.iterdir()
                 if p.is_file() and p.name not in (".validate_storage_marker", ".lock")}
        return files, sorted(p.name for p in experiment.iterdir() if p.is_dir())

    before = state()
    finished = {p: p.stat().st_mtime_ns for p in experiment.glob("*/runs/*/*/summary.json")}

    proc = cli(*args, "-q", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert str(experiment) in line and "--fresh" in line
    assert "Ray cannot restore this experiment (JSONDecodeError" in line
    assert state() == before  # no trial started, nothing written or deleted
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in finished.items())  # not trained again
