"""``cnnforge run RECIPE --run-dir DIR`` is idempotent: a new run, the run continued, or "finished" (issue 28).

Bit-exact continuation after a signal is ``tests/test_preemption.py``'s; here every answer the command gives
for what ``DIR`` holds, and that nothing in ``DIR`` is written where it must not be.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import cli_here, one_error_line

ARGS = ["digits_convnet", "train.epochs=1", "data.num_workers=0", "train.plots=false", "--quiet"]


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` but the lock file: (mtime, contents)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run made by ``--run-dir`` in a folder that did not exist."""
    from cnnforge.cli import main

    run_dir = tmp_path_factory.mktemp("runs") / "new" / "run"
    assert main(["run", *ARGS, "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_an_absent_folder_gets_a_new_run(finished: Path) -> None:
    for name in ("recipe.yaml", "manifest.json", "metrics.jsonl", "summary.json", "model.safetensors"):
        assert (finished / name).is_file(), name
    assert "run_dir:" in (finished / "recipe.yaml").read_text()


def test_a_finished_run_is_reported_and_left_untouched(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(finished)
    proc = cli_here(capsys, "run", *ARGS, "--run-dir", str(finished))
    assert proc.returncode == 0, proc.stderr
    assert "has finished already" in proc.stdout and "test/acc" in proc.stdout
    assert _snapshot(finished) == before


def test_an_unfinished_run_is_continued_in_its_folder(finished: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A moved copy of the run without its results: continued from its checkpoint, same run id, results again."""
    run_dir = tmp_path / "moved"
    shutil.copytree(finished, run_dir)
    (run_dir / "summary.json").unlink()
    (run_dir / "model.safetensors").unlink()
    manifest = (run_dir / "manifest.json").read_bytes()
    proc = cli_here(capsys, "run", *ARGS, "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "summary.json").is_file() and (run_dir / "model.safetensors").is_file()
    assert (run_dir / "manifest.json").read_bytes() == manifest
    assert [p.parent for p in tmp_path.rglob("manifest.json")] == [run_dir]  # no second run directory


@pytest.mark.parametrize("what", ["another recipe", "a foreign folder", "a file"])
def test_a_folder_of_something_else_is_one_line_and_exit_2(finished: Path, tmp_path: Path, what: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    if what == "another recipe":
        target = tmp_path / "run"
        shutil.copytree(finished, target)
        args, expected = [*ARGS, "optim.lr=0.5"], "holds a run of another recipe"
    elif what == "a foreign folder":
        target = tmp_path / "thesis"
        target.mkdir()
        (target / "chapter1.tex").write_text("...")
        args, expected = ARGS, "holds something else than a cnnforge run"
    else:
        target = tmp_path / "notes.txt"
        target.write_text("...")
        args, expected = ARGS, "is a file, not a run directory"
    before = _snapshot(target) if target.is_dir() else {"": (target.stat().st_mtime_ns, target.read_bytes())}
    proc = cli_here(capsys, "run", *args, "--run-dir", str(target))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert expected in line and str(target) in line, line
    after = _snapshot(target) if target.is_dir() else {"": (target.stat().st_mtime_ns, target.read_bytes())}
    assert after == before
    assert what != "a foreign folder" or not (target / ".lock").exists()


def test_a_sweep_refuses_one_run_dir_for_every_trial(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    proc = cli_here(capsys, "tune", "digits_convnet", "tune.grid={optim.lr: [0.1, 0.01]}",
                    f"train.run_dir={tmp_path}")
    assert proc.returncode == 2
    assert "train.run_dir" in one_error_line(proc)
