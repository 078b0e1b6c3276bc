"""Sweeps that fail fast, share nothing and report what happened (issue 31, "Sweeps"): data probed before Ray,
one driver per experiment, one dataset per experiment, state writable by others never restored, paths into trials
as values, replay commands only for trials that succeeded, trials under their own ids, a PBT example that exploits."""
from __future__ import annotations

import fcntl
import json
import os
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT, cli, cli_here, one_error_line
from tests.datafiles import write_image_folder
from tests.test_tune import _experiments, _results

SWEEP_DIGITS = ROOT / "recipes" / "sweep_digits.yaml"
ENV = {"OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------- before Ray

@pytest.mark.parametrize("command", ["tune", "check"])
def test_missing_data_is_one_line_before_ray(tmp_path: Path, command: str) -> None:
    proc = cli(command, str(SWEEP_DIGITS), "data.name=imagefolder", f"data.root={tmp_path / 'nowhere'}",
               f"train.out_dir={tmp_path / 'out'}", env=ENV, timeout=300)
    assert proc.returncode == 1 and f"{tmp_path / 'nowhere'}: no such folder" in one_error_line(proc)
    assert "starting experiment" not in proc.stdout and not (tmp_path / "out").exists()  # no Ray, no experiment


def test_an_undecodable_first_image_is_one_line_before_ray(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images", per_class=4)
    first = sorted((root / "cat").iterdir())[0]
    first.write_bytes(b"not an image at all")
    proc = cli("tune", str(SWEEP_DIGITS), "data.name=imagefolder", f"data.root={root}", "data.cache=memory",
               f"train.out_dir={tmp_path / 'out'}", env=ENV, timeout=300)
    assert proc.returncode == 1 and str(first) in one_error_line(proc), proc.stderr
    assert not (tmp_path / "out").exists()


def test_check_catches_what_run_raises_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_image_folder(tmp_path / "images", per_class=4)
    base = [str(ROOT / "recipes" / "digits_convnet.yaml"), "data.name=imagefolder", f"data.root={root}",
            "data.cache=none"]
    proc = cli_here(capsys, "check", *base)  # images at their own size and nothing fixes the model's input size
    assert proc.returncode == 2 and "data.image_size: data.cache: none decodes each image" in one_error_line(proc)
    assert cli_here(capsys, "check", *base, "data.image_size=16").returncode == 0
    assert cli_here(capsys, "check", *base, "augment.train=[{name: random_crop, size: 12}]").returncode == 0
    light = cli_here(capsys, "check", "--no-data", *base[:2], f"data.root={tmp_path / 'nowhere'}")
    assert light.returncode == 0, light.stderr  # the recipe alone: data not there yet


# ------------------------------------------------------------------------------------------- results

def test_a_trial_is_reported_under_its_own_folders_id(tmp_path: Path) -> None:
    """After a PBT exploit a trial's last result can carry the donor's ``trial_id``; its folder is its own."""
    import cnnforge
    from cnnforge.sweep.results import collect_trials

    recipe = cnnforge.load_recipe(SWEEP_DIGITS)
    own = tmp_path / "b_00001"
    own.mkdir()
    failed = SimpleNamespace(metrics={"trial_id": "a_00000", "val/acc": 0.9, "epoch": 2}, path=str(own),
                             error=RuntimeError("failed after the exploit"), config={"optim.lr": 0.01})
    [row] = collect_trials([failed], recipe, ["cnnforge", "run", "r.yaml"])
    assert row.trial == "b_00001" and row.failed


# ------------------------------------------------------------------------------------------- a real sweep

@pytest.mark.slow
def test_a_sweep_keeps_to_its_experiment_and_is_refused_when_shared(tmp_path: Path) -> None:
    """One sweep, one good trial and one that fails (a learning rate that makes the loss infinite), into a
    train.out_dir holding `#`; then a second driver, a rerun on other data and state writable by others."""
    out = tmp_path / "a#b"
    args = ["tune", str(SWEEP_DIGITS), "tune.grid={optim.lr: [0.01, 1.0e+30]}", "train.epochs=1", "tune.max_failures=0",
            f"train.out_dir={out}"]
    proc = cli(*args, "-q", env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [experiment] = _experiments(out, "sweep_digits")
    runs = [p.parent for p in tmp_path.rglob("manifest.json")]
    assert len(runs) == 2 and all(experiment in run.parents for run in runs)  # `#` started no YAML comment
    rows = {r["optim.lr"]: r for r in _results(experiment)}
    assert rows["0.01"]["status"] == "done" and rows["1e+30"]["status"].startswith("error")
    replays = proc.stdout.split("replay a trial with")[1].split("\n\n")[0].strip().splitlines()[1:]
    assert [shlex.split(line)[0] for line in replays] == [rows["0.01"]["trial"]]  # only the trial that succeeded
    listed = {r["trial"]: r["swept"] for r in json.loads(cli("runs", str(out), "--json").stdout)}
    assert listed[rows["0.01"]["trial"]] == {"optim.lr": 0.01}

    with (experiment / ".lock").open("r+") as held:  # another driver holds the experiment
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(str(os.getpid()))
        held.flush()
        second = cli(*args, env=ENV, timeout=300)
    assert second.returncode == 1, second.stderr
    assert f"{experiment}: is in use by process {os.getpid()}" in one_error_line(second)

    elsewhere = cli(*args, cwd=tmp_path, env=ENV, timeout=300)  # the relative data.root now names another folder
    assert elsewhere.returncode == 2 and f"sweeps the data in {ROOT / 'data'}" in one_error_line(elsewhere)

    tuner = experiment / "tuner.pkl"
    tuner.chmod(tuner.stat().st_mode | 0o002)
    untrusted = cli(*args, env=ENV, timeout=600)
    assert untrusted.returncode == 1 and f"{tuner}: is writable by every user" in one_error_line(untrusted)


@pytest.mark.slow
def test_the_documented_pbt_example_exploits(tmp_path: Path) -> None:
    """docs/sweeps.md's population-based training, as written: the weak trial continues from the strong one."""
    proc = cli("tune", "sweep_digits_pbt", f"train.out_dir={tmp_path}", "-q", env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [experiment] = _experiments(tmp_path, "sweep_digits_pbt")
    assert (experiment / "pbt_global.txt").read_text().strip()  # Ray's line per exploit
    started = [json.loads(p.read_text()).get("started_from") for p in experiment.glob("*/runs/*/*/manifest.json")]
    assert any(started), "no trial continued from another trial's checkpoint"
    assert {r["status"] for r in _results(experiment)} == {"done"}
