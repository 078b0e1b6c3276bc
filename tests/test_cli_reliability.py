"""Reads, launcher variables, recipe names, progress and interrupted writes (issue 31, "Signals, reads and the
command line"): every case is one line naming the file, key or variable, or the behaviour the docs promise."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, cli, cli_here, one_error_line

DIGITS = ROOT / "recipes" / "digits_convnet.yaml"
TINY = ["train.epochs=1", "data.batch_size=256", "train.plots=false"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished digits run; tests copy it before damaging anything."""
    import cnnforge

    out = tmp_path_factory.mktemp("runs")
    return cnnforge.train(DIGITS, [*TINY, f"train.out_dir={out}"], quiet=True).run_dir


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "runs" / run.parent.name / run.name, symlinks=True))


# ------------------------------------------------------------------------------------------- bounded reads

@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_a_recipe_that_is_no_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    recipe = tmp_path / "recipe.yaml"
    if kind == "fifo":
        os.mkfifo(recipe)  # `check` used to wait for a writer forever
    elif kind == "dev-zero":
        recipe.symlink_to("/dev/zero")  # stat says 0 bytes; a whole read never ends
    proc = cli("check", str(recipe) if kind != "folder" else str(tmp_path) + "/", timeout=120)
    line = one_error_line(proc)
    assert proc.returncode == 2, proc.stderr
    expected = {"fifo": "is a FIFO, not a recipe", "dev-zero": "is a character device, not a recipe",
                "folder": "is a folder, not a recipe file"}[kind]
    assert expected in line


def test_a_base_recipe_on_a_fifo_and_a_huge_recipe_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    os.mkfifo(tmp_path / "base.yaml")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nname: child\n")
    proc = cli("check", str(tmp_path / "child.yaml"), timeout=120)
    assert proc.returncode == 2 and f"{tmp_path / 'base.yaml'}: is a FIFO" in one_error_line(proc)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (2 << 20) + "\nname: huge\n")
    proc = cli_here(capsys, "check", str(huge))
    assert proc.returncode == 2 and "is larger than 1048576 bytes" in one_error_line(proc)


@pytest.mark.parametrize(("name", "command", "message"), [
    ("manifest.json", "resume", "not a run directory"), ("summary.json", "eval", "summary.json: is a character device"),
    ("metrics.jsonl", "runs", None)])
def test_run_files_that_are_devices_are_refused_at_once(finished_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str], name: str, command: str,
                                                        message: str | None) -> None:
    run = _copy(finished_run, tmp_path)
    (run / name).unlink()
    (run / name).symlink_to("/dev/zero")  # stat says 0 bytes; a whole read never ends
    if message is not None:
        proc = cli(command, str(run), timeout=300)
        assert proc.returncode != 0 and message in one_error_line(proc)
    listed = cli_here(capsys, "runs", str(tmp_path / "runs"), "--json")  # the table reads around it
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == ([] if name == "manifest.json" else [run.name])


def test_a_huge_run_file_is_refused_reading_at_most_the_bound(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    with (run / "manifest.json").open("ab") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of NUL bytes after the JSON
    proc = cli("resume", str(run), timeout=300)
    assert proc.returncode == 1 and "manifest.json: is larger than 16777216 bytes" in one_error_line(proc)


# ------------------------------------------------------------------------------------------- environment

@pytest.mark.parametrize(("env", "variable"), [
    ({"WORLD_SIZE": ""}, "WORLD_SIZE"), ({"LOCAL_WORLD_SIZE": "two"}, "LOCAL_WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK"), ({"MASTER_PORT": "70000"}, "MASTER_PORT"),
    ({"MASTER_ADDR": ""}, "MASTER_ADDR"), ({"CNNFORGE_LOG_EVERY": "soon"}, "CNNFORGE_LOG_EVERY"),
])
def test_a_malformed_launcher_variable_is_one_line_naming_it(tmp_path: Path, env: dict[str, str],
                                                             variable: str) -> None:
    proc = cli("run", str(DIGITS), *TINY, f"train.out_dir={tmp_path}", env=env, timeout=300)
    assert proc.returncode == 2 and f"environment variable {variable}:" in one_error_line(proc)
    assert not any(tmp_path.iterdir())  # no run directory was made


# ------------------------------------------------------------------------------------------- recipe names

def test_a_folder_cnnforge_wrote_never_shadows_the_packaged_recipe(tmp_path: Path) -> None:
    for _ in range(2):  # the first run writes ./digits_convnet/<run id>/; the second must still find the recipe
        proc = cli("run", "digits_convnet", *TINY, "train.out_dir=.", cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "digits_convnet").glob("*/summary.json"))) == 2


def test_a_missing_recipes_path_suggests_the_packaged_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # outside the checkout: no recipes/ folder here
    proc = cli_here(capsys, "check", "recipes/digits_convnet.yaml")
    line = one_error_line(proc)
    assert proc.returncode == 2 and "recipes/digits_convnet.yaml: no such recipe file" in line
    assert "as `digits_convnet`" in line


def test_source_is_an_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsource: elsewhere.yaml\n")
    proc = cli_here(capsys, "check", str(recipe))
    assert proc.returncode == 2 and one_error_line(proc).endswith(f"{recipe}: source: unknown key")
    proc = cli_here(capsys, "check", str(DIGITS), "source=x")
    assert proc.returncode == 2 and "source: unknown key" in one_error_line(proc)


# ------------------------------------------------------------------------------------------- outputs

def test_augment_preview_writes_exactly_the_path_it_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    out = tmp_path / "grid.png"
    proc = cli_here(capsys, "augment", "preview", str(DIGITS), "--out", str(out), "--n", "2", "--epochs", "1")
    assert proc.returncode == 0 and proc.stdout.strip() == f"wrote {out}", proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(tmp_path) == ["grid.png"]  # no .tmp- left
    for bad in (tmp_path / "grid", tmp_path / "grid.jpg"):  # matplotlib would have written grid.png, or a JPEG
        proc = cli_here(capsys, "augment", "preview", str(DIGITS), "--out", str(bad))
        assert proc.returncode == 2 and "--out:" in one_error_line(proc) and not bad.exists()


def test_a_log_gets_step_lines_inside_a_long_epoch(tmp_path: Path) -> None:
    proc = cli("run", str(DIGITS), "train.epochs=1", "data.batch_size=64", f"train.out_dir={tmp_path}",
               env={"CNNFORGE_LOG_EVERY": "0.000001"}, timeout=600)  # stdout is a pipe: no live bar
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = [line for line in proc.stdout.splitlines() if re.match(r"epoch 1/1  step \d+/17  loss \S+  \S+ it/s", line)]
    assert len(steps) >= 10, proc.stdout
    quiet = cli("run", str(DIGITS), *TINY, f"train.out_dir={tmp_path}", env={"CNNFORGE_LOG_EVERY": "0"}, timeout=600)
    assert quiet.returncode == 0 and " step " not in quiet.stdout


INTERRUPTED_SAVE = '''
import sys
import torch
import cnnforge

real_save = torch.save
def save(obj, path, *args, **kwargs):  # a Ctrl-C arrives while a checkpoint's files are being written
    real_save(obj, path, *args, **kwargs)
    raise KeyboardInterrupt
torch.save = save
cnnforge.train(sys.argv[1], sys.argv[2:], quiet=True)
'''


def test_ctrl_c_during_a_checkpoint_write_leaves_no_temporary_folder(tmp_path: Path) -> None:
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPTED_SAVE)
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(script), str(DIGITS), *TINY, f"train.out_dir={tmp_path / 'runs'}"],
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
    [run] = (tmp_path / "runs" / "digits_convnet").iterdir()
    assert not list(run.rglob(".tmp-*")) and not list(run.rglob(".*.tmp-*"))


# ------------------------------------------------------------------------------------------- runs table

def test_runs_shows_a_sweep_trials_id_and_swept_values_and_one_duration_format(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cnnforge

    experiment = tmp_path / "out" / "sweep_digits" / "tune-20260101-000000"
    sweep = cnnforge.load_recipe(ROOT / "recipes" / "sweep_digits.yaml")
    experiment.mkdir(parents=True)
    (experiment / "sweep.yaml").write_text(sweep.to_yaml())
    overrides = [*TINY, "model.activation=elu", "optim.lr=0.003"]
    trial_runs = experiment / "a1b2c3" / "runs"
    cnnforge.train(ROOT / "recipes" / "sweep_digits.yaml", [*overrides, f"train.out_dir={trial_runs}"], quiet=True)
    [row] = json.loads(cli_here(capsys, "runs", str(tmp_path / "out"), "--json").stdout)
    assert row["trial"] == "a1b2c3" and row["swept"] == {"model.activation": "elu", "optim.lr": 0.003}
    table = cli_here(capsys, "runs", str(tmp_path / "out")).stdout
    assert "a1b2c3 model.activation=elu optim.lr=0.003" in table
    assert re.search(r"finished\s+1/1\s+val/acc \S+(\s+\S+){3}\s+\d+:\d\d\s*$", table, re.M), table  # 3 test columns
    assert yaml.safe_load((experiment / "sweep.yaml").read_text())["tune"]


def test_a_run_with_loader_workers_exits_cleanly(tmp_path: Path) -> None:
    """The workers ignore SIGTERM, so cnnforge SIGKILLs them at exit; torch's SIGCHLD handler used to raise inside
    that loop ("Exception ignored in atexit callback ... killed by signal: Killed") and leave some workers alive,
    and multiprocessing's exit then waited for them for ever."""
    for _ in range(2):
        proc = cli("run", str(DIGITS), "train.epochs=1", "data.num_workers=2", "data.on_device=false",
                   "train.plots=false", f"train.out_dir={tmp_path}", "-q", timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Exception ignored" not in proc.stderr and "killed by signal" not in proc.stderr, proc.stderr[-2000:]
