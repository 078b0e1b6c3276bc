"""A sweep trial whose process dies (``kill -9``, a lost node) restarts from its checkpoint, up to
``tune.max_failures`` times; the results table shows the restarts (issue 28)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import cli
from tests.test_train import assert_same_weights
from tests.test_tune import _experiments, _results, _run_dirs, _write_recipe, plugin_env  # noqa: F401

pytestmark = pytest.mark.slow


def test_a_killed_trial_restarts_from_its_checkpoint_to_the_same_weights(tmp_path: Path,
                                                                          plugin_env: dict[str, str]) -> None:  # noqa: F811
    """``fail: killed`` SIGKILLs its trial's process in the second epoch; ``never`` is the same trial undisturbed."""
    marker = tmp_path / "killed-once"
    recipe = _write_recipe(tmp_path / "lost.yaml", model={"name": "faulty_convnet", "marker": str(marker)},
                           tune={"metric": "val/loss", "mode": "min", "grid": {"model.fail": ["killed", "never"]},
                                 "max_failures": 1, "max_concurrent": 1})
    proc = cli("tune", str(recipe), "--quiet", env=plugin_env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert marker.exists()  # the trial's process was killed
    [experiment] = _experiments(tmp_path / "runs", "lost")
    rows = {r["model.fail"]: r for r in _results(experiment)}
    killed, never = rows["killed"], rows["never"]
    assert killed["status"] == "done" and killed["restarts"] == "1" and never["restarts"] == "0", rows
    assert _run_dirs(experiment / killed["trial"]) == [Path(killed["run_dir"])]  # continued in its run directory
    assert_same_weights(Path(never["run_dir"]), Path(killed["run_dir"]))
