"""``cnnforge runs``: finished, failed and interrupted runs at a glance, newest first, and a resume line that works."""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, cli_here, copy_run, one_error_line

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")


def _set_created(run: Path, created: str) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "created": created}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, digits_run: Path) -> dict[str, Path]:
    """A finished run, a copy of it cut before its end (no summary.json) and a run stopped by a NaN loss."""
    out = tmp_path_factory.mktemp("runs")
    finished = copy_run(digits_run, out)
    interrupted = finished.with_name("20990101-000000")
    shutil.copytree(finished, interrupted)
    (interrupted / "summary.json").unlink()
    proc = cli("run", DIGITS, "optim.lr=1e30", "train.on_nan=stop", "train.epochs=2", f"train.out_dir={out}")
    assert proc.returncode == 3, proc.stderr
    failed = next(p for p in (out / "digits_convnet").iterdir() if p not in (finished, interrupted))
    for run, created in ((finished, "2026-01-02T00:00:00"), (interrupted, "2026-01-03T00:00:00"),
                         (failed, "2026-01-01T00:00:00")):
        _set_created(run, created)
    return {"out": out, "finished": finished, "interrupted": interrupted, "failed": failed}


def test_runs_json_newest_first_with_status_and_metrics(runs: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "runs", str(runs["out"]), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["id"], r["status"]) for r in rows] == [
        (runs["interrupted"].name, "interrupted"), (runs["finished"].name, "finished"), (runs["failed"].name, "failed")]
    summary = json.loads((runs["finished"] / "summary.json").read_text())
    interrupted, finished, failed = rows
    assert finished["epochs"] == finished["max_epochs"] == 2 and finished["name"] == "digits_convnet"
    assert finished["best_metric"] == "val/acc" and finished["best_value"] == summary["best/val/acc"]
    assert finished["test_acc"] == summary["test/acc"] and finished["duration_s"] >= 0 and finished["resume"] is None
    assert interrupted["best_value"] == summary["best/val/acc"]  # from metrics.jsonl
    assert interrupted["test_acc"] is None
    assert interrupted["resume"] == f"cnnforge resume {runs['interrupted']}"
    assert failed["epochs"] == 0 and failed["resume"] is None and "non-finite loss" in failed["error"]


def test_runs_table_shows_the_resume_line_and_it_works(runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(runs["out"].parent)
    proc = cli_here(capsys, "runs", runs["out"].name)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["name", "id", "status", "epochs", "best", "test/acc", "test/bal_acc", "test/macro_f1",
                                "duration"]
    assert lines[1].split()[:4] == ["digits_convnet", runs["interrupted"].name, "interrupted", "2/2"]
    assert lines[2].split()[2] == "finished" and lines[3].split()[2] == "failed"
    resume = next(line.split(": ", 1)[1] for line in lines if "cnnforge resume" in line)
    proc = cli(*shlex.split(resume)[1:], "-q", cwd=runs["out"].parent)
    assert proc.returncode == 0, proc.stderr
    assert (runs["interrupted"] / "summary.json").is_file()


def test_runs_of_a_missing_or_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "runs", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "nope: no such folder" in one_error_line(proc)
    assert cli_here(capsys, "runs", str(tmp_path)).stdout.startswith("no run directories under")
