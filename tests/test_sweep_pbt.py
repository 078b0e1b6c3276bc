"""``tune.scheduler: pbt``: the recipe checks, Ray's scheduler as cnnforge builds it, a warm start from another
run's checkpoint, and a population-based sweep that exploits, is killed and continues by rerunning."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from cnnforge.errors import ConfigError
from cnnforge.recipe import load_recipe
from tests.conftest import ROOT, cli
from tests.test_tune import _experiments, _kill_9_driver_when, _results

SWEEP_DIGITS = ROOT / "recipes" / "sweep_digits.yaml"
#: a hopeless and a good learning rate, mutated within a log range: PBT has something to fix and to explore
PBT = ["tune.grid={optim.lr: [1.0e-5, 0.03]}",
       "tune.scheduler={name: pbt, synch: true, hyperparam_mutations: {optim.lr: {loguniform: [1.0e-5, 0.1]}}}"]


@pytest.mark.parametrize(("overrides", "where", "message"), [
    (["tune.search=optuna"], "tune.search", "optuna cannot propose the trials of scheduler pbt"),
    (["tune.scheduler.perturbation_interval=3"], "tune.scheduler.perturbation_interval",
     "not shorter than train.epochs"),
    (["train.checkpoint_every=2"], "train.checkpoint_every", "does not divide tune.scheduler.perturbation_interval"),
    (["tune.scheduler.grace_period=2"], "tune.scheduler", "grace_period is a setting of the asha scheduler"),
    (["tune.scheduler.hyperparam_mutations={model.dropout: {uniform: [0.1, 1.5]}}"],
     "tune.scheduler.hyperparam_mutations.model.dropout", "value 1.5 is invalid"),
    (["tune.grid={model.activation: [relu, elu]}", "tune.scheduler.hyperparam_mutations={}"],
     "tune.scheduler.hyperparam_mutations", "nothing to mutate"),
    (["tune.grid={train.epochs: [2, 3]}"], "tune.grid.train.epochs", "cannot vary"),
])
def test_pbt_mistakes_are_config_errors_before_ray(tmp_path: Path, overrides: list[str], where: str,
                                                    message: str) -> None:
    import cnnforge

    with pytest.raises(ConfigError) as err:
        cnnforge.tune(SWEEP_DIGITS, [*PBT, *overrides, f"train.out_dir={tmp_path}"])
    assert err.value.where.endswith(where) and message in err.value.message, err.value.one_line()
    assert not any(tmp_path.iterdir())


def test_pbt_with_optuna_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = cli("tune", str(SWEEP_DIGITS), *PBT, "tune.search=optuna", f"train.out_dir={tmp_path}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "tune.search: optuna cannot propose the trials of scheduler pbt" in proc.stderr


def test_pbt_mutates_the_swept_numbers_by_default_within_their_ranges() -> None:
    from ray.tune.search.sample import Float

    from cnnforge.sweep.scheduler import checkpoints_to_keep, clip_to_ranges, scheduler

    recipe = load_recipe(SWEEP_DIGITS, ["tune.scheduler=pbt", "tune.sample={model.dropout: {uniform: [0.1, 0.5]}}"])
    assert recipe.tune is not None
    pbt = scheduler(recipe, recipe.tune)
    # optim.lr's grid becomes Ray's list (a neighbouring value), the range a distribution; activations stay put
    assert pbt._hyperparam_mutations["optim.lr"] == [0.003, 0.01, 0.03]
    assert isinstance(pbt._hyperparam_mutations["model.dropout"], Float)
    assert set(pbt._hyperparam_mutations) == {"optim.lr", "model.dropout"}
    assert recipe.tune.swept_keys() == ["model.activation", "optim.lr", "model.dropout"]
    assert pbt._time_attr == "epoch" and checkpoints_to_keep(recipe, recipe.tune) == 3  # Ray warns at 2
    clipped = clip_to_ranges({"model.dropout": 0.6, "data.batch_size": 300},
                             ranges={"model.dropout": (0.1, 0.5), "data.batch_size": (16.0, 256.0)})
    assert clipped == {"model.dropout": 0.5, "data.batch_size": 256}


def test_warm_start_takes_the_checkpoints_state_and_this_recipes_hyperparameters(tmp_path: Path) -> None:
    """What a trial does when PBT hands it a better trial's checkpoint with a perturbed learning rate."""
    import cnnforge
    from cnnforge.rundir.checkpoint import load_weights

    recipe = ROOT / "recipes" / "digits_convnet.yaml"
    base = ["train.epochs=2", "train.checkpoint_every=1", "schedule.name=none", "data.batch_size=64",
            "train.plots=false"]
    donor = cnnforge.train(recipe, [*base, f"train.out_dir={tmp_path / 'donor'}"], quiet=True)
    start = next((donor.run_dir / "checkpoints").glob("ckpt-e0001-*"))
    warm = cnnforge.train(recipe, [*base, "optim.lr=1.0e-12", f"train.out_dir={tmp_path / 'warm'}"], quiet=True,
                          warm_start=start)
    assert warm.run_dir != donor.run_dir
    assert json.loads((warm.run_dir / "manifest.json").read_text())["started_from"] == str(start)
    [row] = warm.history  # epoch 1 is the donor's
    assert row["epoch"] == 2 and row["lr"] == 1.0e-12  # this recipe's learning rate, not the donor's 0.01
    before, after = load_weights(start / "model.safetensors"), load_weights(warm.run_dir / "model.safetensors")
    convs = [k for k in before if k.endswith("weight") and before[k].ndim == 4]
    assert convs and all((before[k] - after[k]).abs().max() < 1e-6 for k in convs)  # the donor's weights, kept
    assert warm.metrics["best/epoch"] == 2  # the best epoch is its own


@pytest.mark.slow
def test_pbt_sweep_exploits_and_continues_after_kill_9(tmp_path: Path) -> None:
    """Two trials, synchronous PBT every epoch: the weak one restarts from the strong one's checkpoint with a
    perturbed learning rate. The driver is killed after the first exploit; the same command finishes the sweep."""
    args = ["tune", str(SWEEP_DIGITS), *PBT, "train.epochs=4", f"train.out_dir={tmp_path}"]
    env = {"OMP_NUM_THREADS": "1"}
    _kill_9_driver_when(args, tmp_path / "first.log", lambda: any(tmp_path.glob("sweep_digits/tune-*/pbt_global.txt")),
                        "the first exploit", env=env, or_exit=True)
    [experiment] = _experiments(tmp_path, "sweep_digits")

    proc = cli(*args, "-q", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"continuing experiment {experiment}" in proc.stdout
    rows = _results(experiment)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done"} and all(r["val/acc"] for r in rows)
    assert (experiment / "pbt_global.txt").read_text().strip()  # Ray's log of every exploit
    warm = [p.parent for p in experiment.glob("*/runs/*/*/manifest.json")
            if "started_from" in json.loads(p.read_text())]
    assert warm, "no trial continued from another trial's checkpoint"
    for run_dir in warm:
        source = Path(json.loads((run_dir / "manifest.json").read_text())["started_from"])
        assert source.parent.name != run_dir.parents[2].name  # another trial's checkpoint
        lr = yaml.safe_load((run_dir / "recipe.yaml").read_text())["optim"]["lr"]
        assert 1.0e-5 <= lr <= 0.1 and lr not in (1.0e-5, 0.03)  # explored: perturbed or drawn again
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        if metrics:  # epochs continue the checkpoint's, at the new learning rate (cosine over 4 epochs)
            first_epoch = metrics[0]["epoch"]
            assert first_epoch > 1
            assert metrics[0]["lr"] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * first_epoch / 4)))
    for row in rows:  # each trial ends in a finished run with the learning rate the table reports
        final = Path(row["run_dir"])
        assert (final / "summary.json").is_file() and [json.loads(line)["epoch"] for line in
                                                       (final / "metrics.jsonl").read_text().splitlines()][-1] == 4
        assert yaml.safe_load((final / "recipe.yaml").read_text())["optim"]["lr"] == pytest.approx(
            float(row["optim.lr"]))
