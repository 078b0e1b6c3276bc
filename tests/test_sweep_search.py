"""``tune.search: grid | random | optuna``: the trials each proposes, the budget, and resume by rerunning."""
from __future__ import annotations

import csv
import sys
import zipfile
from pathlib import Path

import pytest

from cnnforge.errors import ConfigError
from cnnforge.recipe import load_recipe
from cnnforge.sweep.snapshot import newest_save
from tests.conftest import ROOT, cli, one_error_line
from tests.test_tune import _experiments, _kill_9_driver_when

SWEEP_DIGITS = ROOT / "recipes" / "sweep_digits.yaml"
#: sweep_digits with a continuous learning rate next to the activation grid
CONTINUOUS = ["tune.grid={model.activation: [relu, elu]}", "tune.sample={optim.lr: {loguniform: [1.0e-3, 1.0e-1]}}"]


def test_random_and_optuna_draw_grid_keys_as_choices() -> None:
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from cnnforge.sweep.search import search_space, searcher

    grid = load_recipe(SWEEP_DIGITS, CONTINUOUS).tune
    assert grid is not None and search_space(grid)["model.activation"] == {"grid_search": ["relu", "elu"]}
    for name, kind in (("random", BasicVariantGenerator), ("optuna", OptunaSearch)):
        spec = load_recipe(SWEEP_DIGITS, [*CONTINUOUS, f"tune.search={name}"]).tune
        assert spec is not None
        space = search_space(spec)
        assert set(space["model.activation"].sample(size=60)) == {"relu", "elu"}
        assert all(1e-3 <= v <= 1e-1 for v in space["optim.lr"].sample(size=60))
        assert isinstance(searcher(spec, 0, None), kind)


def test_an_unknown_searcher_is_one_line(tmp_path: Path) -> None:
    proc = cli("tune", str(SWEEP_DIGITS), "tune.search=optuner", f"train.out_dir={tmp_path}")
    assert proc.returncode == 2
    assert "tune.search" in one_error_line(proc) and not any(tmp_path.iterdir())


def test_optuna_without_the_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnforge

    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError, match=r"needs optuna, which is not installed \(pip install 'cnnforge\[tune\]'\)"):
        cnnforge.tune(SWEEP_DIGITS, ["tune.search=optuna", f"train.out_dir={tmp_path}"])
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("search", ["random", "optuna"])
def test_searchers_spend_the_budget_and_resume_by_rerunning(tmp_path: Path, search: str) -> None:
    """kill -9 the driver after two trials while Ray copies its state, rerun: finished trials stay, the budget is
    spent exactly once."""
    args = ["tune", str(SWEEP_DIGITS), *CONTINUOUS, f"tune.search={search}", "tune.num_samples=6",
            "train.epochs=2", f"train.out_dir={tmp_path}"]
    _kill_9_driver_when(args, tmp_path / "first.log",
                        lambda: len(list(tmp_path.glob("sweep_digits/tune-*/*/runs/*/*/summary.json"))) >= 2,
                        "two finished trials", env={"OMP_NUM_THREADS": "1"})
    [experiment] = _experiments(tmp_path, "sweep_digits")
    ray_copy = list(experiment.glob("*state-*.*"))
    assert ray_copy and (experiment / "ray_state.zip").is_file()
    for state in ray_copy:  # what a kill in the middle of Ray's copy leaves
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    finished = {p: p.stat().st_mtime_ns for p in experiment.glob("*/runs/*/*/summary.json")}

    proc = cli(*args, "-q", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"continuing experiment {experiment}" in proc.stdout
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in finished.items())  # not trained again
    with (experiment / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"done"}
    assert len(list(experiment.glob("*/runs/*/*/summary.json"))) == 6  # one run per trial: nothing repeated
    lrs = [float(r["optim.lr"]) for r in rows]
    assert len(set(lrs)) == 6 and all(1e-3 <= lr <= 1e-1 for lr in lrs)
    assert {r["model.activation"] for r in rows} <= {"relu", "elu"}
    with zipfile.ZipFile(experiment / "ray_state.zip") as archive:  # the last save is kept after the sweep ends
        assert {name: archive.read(name) for name in archive.namelist()} == {
            p.name: p.read_bytes() for p in newest_save(experiment)}
