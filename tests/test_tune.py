"""``cnnforge tune``: Ray Tune sweeps from the CLI, killed, interrupted, failing and on a started cluster.

Ray starts slowly on 2 shared cores, so each slow test runs few sweeps and checks everything about them.
"""
from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cnnforge.errors import ConfigError
from cnnforge.recipe import load_recipe
from tests.conftest import ROOT, cli, free_port, one_error_line
from tests.fake_dist import write_distribution

SWEEP_DIGITS = ROOT / "recipes" / "sweep_digits.yaml"

#: a model Ray workers can only know through plugin discovery, which fails on demand: ``fail: once`` raises
#: in the second epoch unless the marker file says it already did (``fail: killed``: SIGKILLs its own process
#: there instead), ``fail: always`` at every first batch;
#: while the file ``hold`` exists, the second epoch's first batch touches ``<hold>.waiting`` and waits, so a
#: test can interrupt a sweep that is certainly training, however slow the machine
PLUGIN = '''
import os
import signal
import time
from pathlib import Path

from cnnforge import register_model
from cnnforge.models.seed_models import convnet


@register_model
def faulty_convnet(*, num_classes, in_channels=1, image_size=None, activation="relu", fail="never", marker="",
                   hold=""):
    """Seed 000's ConvNet from a plugin, failing on demand."""
    model = convnet(num_classes=num_classes, in_channels=in_channels, image_size=image_size, activation=activation)
    forward, calls = model.forward, []

    def failing_forward(x):
        if model.training:
            calls.append(1)
            if fail == "always" and len(calls) == 1:
                raise RuntimeError("always failing, injected by the test")
            if fail in ("once", "killed") and len(calls) == 20 and not Path(marker).exists():  # 17 batches an epoch
                Path(marker).touch()
                if fail == "killed":  # the trial's process dies as on a lost node: no exception, no last words
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError("failing once, injected by the test")
            if hold and len(calls) == 18 and Path(hold).exists():
                Path(hold + ".waiting").touch()
                deadline = time.monotonic() + 600
                while Path(hold).exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
        return forward(x)

    model.forward = failing_forward
    return model
'''


# --------------------------------------------------------------------------------------------- helpers

@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with a throwaway distribution whose ``cnnforge.plugins`` entry point adds the models above."""
    site = write_distribution(tmp_path / "site", "cnnforge-tune-testplugin", "0.1", "tune_testplugin", PLUGIN)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
            "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}


def _write_recipe(path: Path, **sections: object) -> Path:
    recipe = {"name": path.stem, "seed": 0, "data": {"name": "digits", "batch_size": 64, "num_workers": 0},
              "model": {"name": "convnet"}, "optim": {"name": "adam", "lr": 0.01},
              "train": {"epochs": 2, "checkpoint_every": 1, "out_dir": str(path.parent / "runs")},
              "tracking": {"backend": "none"}, **sections}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _experiments(out_dir: Path, name: str) -> list[Path]:
    return sorted((out_dir / name).glob("tune-*"))


def _results(experiment: Path) -> list[dict[str, str]]:
    with (experiment / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _run_dirs(trial_dir: Path) -> list[Path]:
    return sorted(p.parent for p in trial_dir.glob("runs/*/*/manifest.json"))


def _epochs(run_dir: Path) -> list[int]:
    return [yaml.safe_load(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _start(args: list[str], log: Path, env: dict[str, str] | None = None,
           program: list[str] | None = None) -> subprocess.Popen[bytes]:
    """``cnnforge ARGS`` (or ``PROGRAM ARGS``) in its own process group (so Ray's processes can be cleaned up with
    it)."""
    program = program or [str(Path(sys.executable).parent / "cnnforge")]
    out = log.open("wb")
    return subprocess.Popen([*program, *args], cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Whatever this test started in the process group (Ray's helpers outlive a killed driver)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _wait_for(condition, what: str, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def _kill_9_driver_when(args: list[str], log: Path, condition, what: str,  # type: ignore[no-untyped-def]
                        env: dict[str, str] | None = None, or_exit: bool = False,
                        program: list[str] | None = None, timeout: float = 300.0) -> None:
    """Start ``cnnforge ARGS`` (or ``PROGRAM ARGS``), wait for ``condition`` (``or_exit``: or for the driver to end
    on its own), SIGKILL the driver (a crash), then what it left running."""
    first = _start(args, log, env=env, program=program)
    try:
        _wait_for(lambda: condition() or (or_exit and first.poll() is not None), what, timeout=timeout)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        _kill_group(first)


# --------------------------------------------------------------------------------------------- fast checks

def test_bad_metric_is_one_line_and_exit_2_before_ray_starts(tmp_path: Path) -> None:
    proc = cli("tune", str(SWEEP_DIGITS), "tune.metric=val/acuracy", f"train.out_dir={tmp_path}")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "tune.metric" in line and "'val/acuracy' is not a metric the trainer reports" in line
    assert "did you mean val/acc" in line
    assert not any(tmp_path.iterdir())  # no experiment directory: nothing started
    assert "ray" not in proc.stdout.lower() + proc.stderr.lower().replace("cnnforge", "")


@pytest.mark.parametrize(("overrides", "where", "message"), [
    (["tune=null"], "tune", "no tune: section"),
    (["tune.grid={}"], "tune", "nothing to sweep"),
    (["tune.grid={optim.lr: [0.1, -1]}"], "tune.grid.optim.lr", "value -1 is invalid"),
    (["tune.grid={optim.lr: [0.1]}", "tune.sample={optim.lr: {uniform: [0.1, 0.2]}}"], "tune.sample.optim.lr",
     "both in grid and in sample"),
    (["tune.sample={optim.weight_decay: {loguniform: [0, 0.1]}}"], "tune.sample.optim.weight_decay",
     "not a range of positive numbers"),
    (["tune.sample={model.dropout: {choice: [0.1, 1.5]}}"], "tune.sample.model.dropout", "value 1.5 is invalid"),
    (["tune.sample={model.dropout: {choice: []}}"], "tune.sample.model.dropout.choice", "is empty"),
    (["tune.scheduler={name: asha, grace_period: 9}"], "tune.scheduler.grace_period", "longer than train.epochs"),
    (["tune.resources_per_trial.gpu=2"], "tune.resources_per_trial.gpu", "set train.parallel: dp"),
    (["tune.resources_per_trial.gpu=1.5"], "tune.resources_per_trial.gpu", "must be whole"),
])
def test_sweep_mistakes_are_config_errors_before_ray(tmp_path: Path, overrides: list[str], where: str,
                                                     message: str) -> None:
    import cnnforge

    with pytest.raises(ConfigError) as err:
        cnnforge.tune(SWEEP_DIGITS, [*overrides, f"train.out_dir={tmp_path}"])
    assert err.value.where.endswith(where), err.value.one_line()
    assert message in err.value.message, err.value.one_line()
    assert not any(tmp_path.iterdir())
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_empty_choice_is_one_config_line_before_ray(tmp_path: Path) -> None:
    proc = cli("tune", str(SWEEP_DIGITS), "tune.sample={model.dropout: {choice: []}}", f"train.out_dir={tmp_path}")
    assert proc.returncode == 2
    assert "tune.sample.model.dropout.choice: is empty: nothing to choose from" in one_error_line(proc)
    assert not any(tmp_path.iterdir())


def _trial(i: int, status: str = "RUNNING", **config: object) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"t_{i:05d}", status=status, config=config, path="")


def test_sweep_console_lines_count_trials_keep_the_best_and_estimate_the_whole_sweep() -> None:
    from cnnforge.sweep.console import SweepConsole

    out = io.StringIO()
    console = SweepConsole(metric="val/acc", mode="max", keys=["optim.lr"], total=4, epochs=2, console="lines",
                           stream=out)
    trials = [_trial(i, **{"optim.lr": lr}) for i, lr in enumerate((0.1, 0.01, 0.001))]
    console.tick(trials)
    console.started()
    console.first_start -= 10.0  # 10 s of trials so far
    console.result(trials[0], {"val/acc": 0.5, "epoch": 2})
    console.finished(trials[0], trials, error=None)
    trials[0].status = "TERMINATED"
    console.result(trials[1], {"val/acc": 0.75, "epoch": 1})  # a running trial's last value counts for the best
    assert console.counts == {"done": 1, "running": 2, "pending": 1, "failed": 0}
    # 1.5 trials of work in 10 s, 2.5 to go: about 17 s for the rest of the sweep
    assert console.eta_s() == pytest.approx(10.0 * 2.5 / 1.5, rel=0.05)
    console.finished(trials[1], trials, error=None)
    console.finished(trials[2], trials, error="RuntimeError: boom")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("1/4 t_00000 val/acc 0.5000  optim.lr=0.1 | best val/acc 0.5000 (optim.lr=0.1) | 0:")
    assert lines[1].startswith("2/4 t_00001 val/acc 0.7500  optim.lr=0.01 | best val/acc 0.7500 (optim.lr=0.01) | ")
    assert lines[2].startswith("3/4 t_00002 failed: RuntimeError: boom  optim.lr=0.001 | best val/acc 0.7500")
    assert console.counts == {"done": 2, "running": 0, "pending": 1, "failed": 1}


def test_sweep_console_live_line_is_rewritten_in_place_and_quiet_prints_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnforge.sweep.console import SweepConsole, console_mode

    monkeypatch.setenv("COLUMNS", "200")
    out = io.StringIO()
    console = SweepConsole(metric="val/loss", mode="min", keys=["optim.lr"], total=2, epochs=1, console="live",
                           stream=out)
    trials = [_trial(0, **{"optim.lr": 0.1}), _trial(1, "PENDING", **{"optim.lr": 0.2})]
    console.result(trials[0], {"val/loss": 0.25, "epoch": 1})
    console.finished(trials[0], trials, error=None)
    console.close()
    text = out.getvalue()
    assert text.startswith("\r\x1b[K") and text.endswith("\n") and text.count("\n") == 1
    assert "trials 1/2 done, 0 running, 1 pending, 0 failed | 0:00 eta " in text
    assert text.rstrip().endswith(" | best val/loss 0.2500 (optim.lr=0.1)")
    monkeypatch.setenv("COLUMNS", "40")
    narrow = io.StringIO()
    console.stream = narrow
    console.tick(trials, force=True)
    assert narrow.getvalue() == "\r\x1b[K" + "trials 1/2 done, 0 running, 1 pending, 0 failed"[:39]  # never wraps
    quiet = io.StringIO()
    silent = SweepConsole(metric="val/acc", mode="max", keys=[], total=1, epochs=1, console="off", stream=quiet)
    silent.finished(_trial(0), [_trial(0)], error="boom")
    silent.close()
    assert quiet.getvalue() == ""
    tty = SimpleNamespace(isatty=lambda: True)
    assert [console_mode(False, False, tty), console_mode(False, True, tty), console_mode(True, False, tty),
            console_mode(False, False, io.StringIO())] == ["live", "lines", "off", "lines"]


def test_tune_command_usage_errors_and_light_help() -> None:
    proc = cli("tune", str(SWEEP_DIGITS), "--max-concurrent", "0")
    assert proc.returncode == 2 and "must be at least 1" in one_error_line(proc)
    code = "import sys; from cnnforge.cli import build_parser; build_parser(); assert 'ray' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True).returncode == 0


def test_both_sweep_recipes_are_valid_sweeps() -> None:
    from cnnforge.sweep.driver import check_sweep

    digits = check_sweep(load_recipe(SWEEP_DIGITS))
    assert len(digits.grid["model.activation"]) * len(digits.grid["optim.lr"]) == 12
    seed002 = load_recipe(ROOT / "recipes" / "sweep_activation_dropout_lr.yaml")
    spec = check_sweep(seed002)  # names are checked by check_recipe; CIFAR files are not needed for this
    assert spec.grid == {"model.activation": ["relu", "leaky_relu", "elu", "selu"], "model.dropout": [0.3, 0.5, 0.7],
                         "optim.lr": [0.1, 0.05, 0.01]}
    assert spec.scheduler.name == "asha" and seed002.model.name == "vgg_bn" and seed002.data.name == "cifar10"


def test_search_space_has_every_grid_key_and_each_sampled_distribution() -> None:
    import numpy as np

    from cnnforge.sweep.search import search_space

    spec = load_recipe(SWEEP_DIGITS, ["tune.sample={optim.weight_decay: {loguniform: [1.0e-5, 1.0e-3]}, "
                                      "model.dropout: {uniform: [0.1, 0.5]}, data.batch_size: {choice: [32, "
                                      "64]}}"]).tune
    assert spec is not None
    space = search_space(spec)
    assert space["model.activation"] == {"grid_search": ["relu", "leaky_relu", "elu", "selu"]}
    assert space["optim.lr"] == {"grid_search": [0.003, 0.01, 0.03]}
    decay = np.array(space["optim.weight_decay"].sample(size=400))
    assert decay.min() >= 1e-5 and decay.max() <= 1e-3 and 3e-5 < np.median(decay) < 3e-4  # log-uniform, not uniform
    dropout = np.array(space["model.dropout"].sample(size=400))
    assert dropout.min() >= 0.1 and dropout.max() <= 0.5 and 0.25 < np.median(dropout) < 0.35
    assert set(space["data.batch_size"].sample(size=50)) == {32, 64}


def test_a_trial_restored_after_failing_before_its_first_report_keeps_its_values(tmp_path: Path) -> None:
    """Ray's Result.config comes from the last result; a trial that never reported has only params.json."""
    import json
    from types import SimpleNamespace

    from cnnforge.sweep.results import collect_trials

    failed = tmp_path / "t_00001"
    failed.mkdir()
    (failed / "params.json").write_text(json.dumps({"model.activation": "elu"}))
    grid = [SimpleNamespace(config={}, metrics={}, path=str(failed), error=RuntimeError("boom")),
            SimpleNamespace(config={"model.activation": "relu"}, metrics={"val/acc": 0.5, "epoch": 3},
                            path=str(tmp_path / "t_00000"), error=None)]
    rows = collect_trials(grid, load_recipe(SWEEP_DIGITS), ["cnnforge", "run", "r.yaml"])
    assert [(r.params, r.status) for r in rows] == [({"model.activation": "relu"}, "stopped early"),
                                                    ({"model.activation": "elu"}, "error: boom")]
    assert rows[1].command == "cnnforge run r.yaml model.activation=elu"


# --------------------------------------------------------------------------------------------- sweeps

@pytest.mark.slow
def test_more_than_any_node_has_is_one_line_naming_every_resource_not_a_hang(tmp_path: Path) -> None:
    proc = cli("tune", str(SWEEP_DIGITS), "tune.resources_per_trial={cpu: 64, gpu: 1}", f"train.out_dir={tmp_path}",
               env={"CUDA_VISIBLE_DEVICES": ""}, timeout=900)
    assert proc.returncode == 2
    line = one_error_line(proc)
    cpus = os.cpu_count()
    assert (f"tune.resources_per_trial: a trial asks for more than any node has (cpu: 64 but the largest Ray node "
            f"has {cpus} CPU; gpu: 1 but the largest Ray node has 0 GPU)") in line
    assert not any(tmp_path.iterdir())


#: ``cnnforge.tune`` with a Ctrl-C that arrives once every trial has ended, before Ray hands back the results
LATE_CTRL_C = """
import signal, sys
import cnnforge, ray.tune

fit = ray.tune.Tuner.fit

def fit_then_ctrl_c(self):
    grid = fit(self)
    signal.raise_signal(signal.SIGINT)
    return grid

ray.tune.Tuner.fit = fit_then_ctrl_c
result = cnnforge.tune(sys.argv[1], sys.argv[2:], quiet=True)
print('heavy:', [m for m in ('tensorboardX',) if m in sys.modules], result.exit_code)
"""


@pytest.mark.slow
def test_the_whole_sweep_digits_fits_one_screen(tmp_path: Path) -> None:
    """What a new user reads: a line per trial, the ranked table and where everything is; no Ray tables."""
    proc = cli("tune", str(SWEEP_DIGITS), f"train.out_dir={tmp_path}", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    progress = [line for line in lines if re.match(r"^ ?\d+/12 \S+_\d{5} val/acc \d\.\d{4}  model\.activation=", line)]
    assert len(progress) == 12 and progress[-1].startswith("12/12 "), "\n".join(lines)
    assert all(re.search(r"\| best val/acc \d\.\d{4} \(model\.activation=\S+ optim\.lr=[\d.]+\) \| \d+:\d\d eta ", line)
               for line in progress[1:]), "\n".join(progress)
    assert not any(mark in proc.stdout + proc.stderr for mark in ("Trial status", "╭", "Token authentication", "(pid="))


@pytest.mark.slow
def test_seed_002_sweep_runs_on_a_two_cpu_machine_with_auto_resources(tmp_path: Path, cifar_root: Path) -> None:
    """The README's seed-002 sweep (data.num_workers 3: 4 CPUs a trial where there are) on this machine's CPUs."""
    seed002 = ROOT / "recipes" / "sweep_activation_dropout_lr.yaml"
    grid = "tune.grid={model.activation: [elu], model.dropout: [0.5], optim.lr: [0.05]}"
    proc = cli("tune", str(seed002), grid, "train.epochs=1", "tune.scheduler=fifo", f"data.root={cifar_root}",
               f"train.out_dir={tmp_path}", "--verbose", env={"CUDA_VISIBLE_DEVICES": ""}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cpus = min(4, os.cpu_count() or 1)
    # --verbose: Ray's tables, which show what a trial got
    assert f"Logical resource usage: {cpus:.1f}/{os.cpu_count()} CPUs, 0/0 GPUs" in proc.stdout
    [experiment] = _experiments(tmp_path, "sweep_activation_dropout_lr")
    assert [r["status"] for r in _results(experiment)] == ["done"]


@pytest.mark.slow
def test_the_sweep_driver_has_no_tensorboard_logger_and_a_late_ctrl_c_keeps_the_results(tmp_path: Path) -> None:
    """No TensorBoard logger in the driver (Ray's default one wrote event files nobody reads and cost 1-3 s a sweep;
    torch itself loads once there, for the data probe before Ray starts). A Ctrl-C after the last trial ended stops
    nothing: the sweep says it is complete and writes its results."""
    proc = subprocess.run([sys.executable, "-c", LATE_CTRL_C, str(SWEEP_DIGITS), "tune.grid={model.activation: [relu]}",
                           "train.epochs=1", f"train.out_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "heavy: [] 0"
    assert "interrupted after every trial had ended: the sweep is complete" in proc.stdout
    assert "run the same command again" not in proc.stdout
    [experiment] = _experiments(tmp_path, "sweep_digits")
    [trial] = [p for p in experiment.iterdir() if (p / "params.json").exists()]
    assert (trial / "result.json").stat().st_size > 0 and (trial / "progress.csv").stat().st_size > 0
    assert not list(trial.glob("events.out.tfevents.*"))  # each trial's run directory has its metrics already
    [row] = _results(experiment)
    assert row["status"] == "done" and (experiment / "best.yaml").is_file()


@pytest.mark.slow
def test_sweep_digits_survives_kill_9_of_the_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """kill -9 mid-sweep, rerun (through the Python API): finished trials are not trained again."""
    args = ["tune", str(SWEEP_DIGITS), f"train.out_dir={tmp_path}"]
    _kill_9_driver_when(args, tmp_path / "first.log",
                        lambda: len(list(tmp_path.glob("sweep_digits/tune-*/*/runs/*/*/summary.json"))) >= 3,
                        "three finished trials")
    [experiment] = _experiments(tmp_path, "sweep_digits")
    finished = {p.parent: (p.stat().st_mtime_ns, (p.parent / "metrics.jsonl").read_text())
                for p in experiment.glob("*/runs/*/*/summary.json")}

    import ray

    import cnnforge

    result = cnnforge.tune(SWEEP_DIGITS, [f"train.out_dir={tmp_path}"], quiet=True)
    stdout = capsys.readouterr().out
    assert not ray.is_initialized()  # the Ray it started is shut down again
    assert result.experiment_dir == experiment and result.exit_code == 0
    assert f"continuing experiment {experiment}" in stdout
    for run_dir, (mtime, metrics) in finished.items():  # untouched: neither retrained nor re-tested
        summary = run_dir / "summary.json"
        assert summary.stat().st_mtime_ns == mtime and (run_dir / "metrics.jsonl").read_text() == metrics, run_dir
        assert _run_dirs(run_dir.parents[2]) == [run_dir]

    rows = _results(experiment)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"done"}
    accs = [float(r["val/acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True) and [r["rank"] for r in rows] == [str(i) for i in range(1, 13)]
    assert {(r["model.activation"], float(r["optim.lr"])) for r in rows} == {
        (a, lr) for a in ("relu", "leaky_relu", "elu", "selu") for lr in (0.003, 0.01, 0.03)}
    for row in rows:
        run_dir = Path(row["run_dir"])
        assert _epochs(run_dir) == [1, 2, 3] and row["epochs"] == "3"  # a resumed trial repeats no epoch
        assert (run_dir / "reports" / "metrics.json").exists() and not list(run_dir.glob("reports/*.png"))
        assert (f"{row['trial']}  {row['command']}" in stdout) == (int(row["rank"]) <= 3)  # the best; the CSV has all
    assert (experiment / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"experiment directory: {experiment}" in stdout
    assert [t.trial for t in result.trials] == [r["trial"] for r in rows]
    assert result.best is not None and result.best.trial == rows[0]["trial"]
    assert result.best_recipe == experiment / "best.yaml"

    # the best trial: its replay command names its values, and best.yaml retrains exactly it
    best = rows[0]
    command = shlex.split(best["command"])
    assert command[:3] == ["cnnforge", "run", str(SWEEP_DIGITS)]
    assert f"model.activation={best['model.activation']}" in command and f"optim.lr={best['optim.lr']}" in command
    best_yaml = experiment / "best.yaml"
    recipe = load_recipe(best_yaml)
    assert recipe.tune is None and recipe.model.params["activation"] == best["model.activation"]
    expected = load_recipe(SWEEP_DIGITS, command[3:]).to_dict()
    expected["data"]["root"] = str((ROOT / expected["data"]["root"]).resolve())  # the data the sweep trained on
    assert recipe.to_dict() == {**expected, "tune": None}
    replay = cli("run", str(best_yaml), f"train.out_dir={tmp_path / 'replay'}", env={"OMP_NUM_THREADS": "1"})
    assert replay.returncode == 0, replay.stderr[-3000:]
    [replay_dir] = [p.parent for p in (tmp_path / "replay").rglob("summary.json")]
    replayed = yaml.safe_load((replay_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert replayed["val/acc"] == pytest.approx(float(best["val/acc"]), abs=1e-6)
    # trials skip the PNGs (tune.trial_plots), a replay has them
    assert (replay_dir / "reports" / "curves.png").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three sweeps, each starting Ray: well over the default 15 minutes on 2 loaded cores
def test_failing_trials_are_retried_and_reported_then_fresh_ctrl_c_and_resume(tmp_path: Path,
                                                                             plugin_env: dict[str, str]) -> None:
    """One trial fails once (retried from its Ray checkpoint), one always (reported); the sweep goes on.
    Then ``--fresh`` starts a second experiment, Ctrl-C stops it and the same command finishes it."""
    marker, hold = tmp_path / "failed-once", tmp_path / "hold"
    recipe = _write_recipe(tmp_path / "faults.yaml",
                           model={"name": "faulty_convnet", "marker": str(marker), "hold": str(hold)},
                           tune={"metric": "val/loss", "mode": "min", "grid": {"model.fail": ["once", "always"]},
                                 "max_failures": 1})
    args = ["tune", str(recipe)]
    proc = cli(*args, "--quiet", env=plugin_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr and "injected by the test" in proc.stdout  # in the table only
    [first] = _experiments(tmp_path / "runs", "faults")
    rows = {r["model.fail"]: r for r in _results(first)}
    assert marker.exists()  # the flaky trial did fail ...
    once = rows["once"]  # ... and its retry continued from the epoch-1 checkpoint in the same run directory
    assert once["status"] == "done" and once["epochs"] == "2" and once["rank"] == "1"
    assert _run_dirs(first / once["trial"]) == [Path(once["run_dir"])] and _epochs(Path(once["run_dir"])) == [1, 2]
    always = rows["always"]
    assert always["status"].startswith("error") and "always failing, injected by the test" in always["status"]
    assert len(_run_dirs(first / always["trial"])) == 2  # the first attempt and its one retry
    assert "1 of 2 trials failed" in proc.stdout
    assert load_recipe(first / "best.yaml").model.params == {"fail": "once", "marker": str(marker), "hold": str(hold)}
    first_results = (first / "results.csv").read_text()

    hold.touch()  # the flaky trial of the fresh experiment trains an epoch, then waits until the Ctrl-C
    fresh_run = _start([*args, "--fresh"], tmp_path / "fresh.log", env=plugin_env)
    try:
        _wait_for(lambda: Path(f"{hold}.waiting").exists() or fresh_run.poll() is not None,
                  "the fresh experiment to train an epoch")
        assert fresh_run.poll() is None, (tmp_path / "fresh.log").read_text()[-3000:]
        os.kill(fresh_run.pid, signal.SIGINT)
        assert fresh_run.wait(timeout=600) == 130, (tmp_path / "fresh.log").read_text()[-3000:]
    finally:
        hold.unlink()
        _kill_group(fresh_run)
    log = (tmp_path / "fresh.log").read_text()
    second = _experiments(tmp_path / "runs", "faults")[-1]
    assert second != first and f"starting experiment {second}" in log, log[-3000:]
    assert "interrupted: run the same command again to continue" in log, log[-3000:]
    assert not (second / "results.csv").exists() and (first / "results.csv").read_text() == first_results

    proc = cli(*args, env=plugin_env)  # the same command continues the newest experiment of this recipe
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"continuing experiment {second}" in proc.stdout
    rows = {r["model.fail"]: r for r in _results(second)}
    assert rows["once"]["status"] == "done" and _epochs(Path(rows["once"]["run_dir"])) == [1, 2]
    assert rows["always"]["status"].startswith("error")


@pytest.fixture
def ray_head(tmp_path: Path, plugin_env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """``ray start --head`` on 127.0.0.1 with 2 CPUs and the test plugin on its workers' path.

    Yields its address and the environment a driver needs: Ray checks a token on every connection, and
    only ``--address auto`` finds a local one by itself, so the test makes its own (never ~/.ray's).
    """
    env = {**plugin_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = free_port()
    temp = tempfile.mkdtemp(prefix="cfray", dir="/tmp")  # Ray's socket paths must stay short
    log = tmp_path / "ray-head.log"
    exe = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [exe, "start", "--head", f"--port={port}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}", "--block",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"],
        env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: "Ray runtime started" in log.read_text() or head.poll() is not None, "ray start", 600)
        assert head.poll() is None, log.read_text()[-3000:]
        yield f"127.0.0.1:{port}", env
    finally:
        _kill_group(head)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_sweep_on_a_started_ray_cluster_with_plugins_asha_and_wandb(tmp_path: Path,
                                                                    ray_head: tuple[str, dict[str, str]]) -> None:
    address, env = ray_head
    tokenless = {**env, "RAY_AUTH_TOKEN": "", "RAY_AUTH_MODE": "", "HOME": str(tmp_path)}  # no ~/.ray/auth_token either
    proc = cli("tune", str(SWEEP_DIGITS), "--address", address, f"train.out_dir={tmp_path / 'none'}", env=tokenless)
    assert proc.returncode == 1
    assert f"--address {address}: the Ray cluster requires an authentication token" in one_error_line(proc)
    # Ray alone retries for about 20 s, printing InvalidAuthToken each time (not timed: a loaded machine is slow)
    assert "InvalidAuthToken" not in proc.stdout + proc.stderr
    recipe = _write_recipe(tmp_path / "cluster.yaml", model={"name": "faulty_convnet"},
                           train={"epochs": 3, "checkpoint_every": 1, "out_dir": str(tmp_path / "runs")},
                           tracking={"backend": "wandb", "project": "cnnforge-tests"},
                           tune={"metric": "val/acc", "mode": "max", "grid": {"optim.lr": [0.03, 1.0e-5, 0.01, 3.0e-6]},
                                 "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}})
    proc = cli("tune", str(recipe), "--address", address, "--max-concurrent", "2", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [experiment] = _experiments(tmp_path / "runs", "cluster")
    rows = _results(experiment)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done", "stopped early"}, rows
    assert all(int(r["epochs"]) < 3 for r in rows if r["status"] == "stopped early")  # ASHA cut the weak ones
    done = [r for r in rows if r["status"] == "done"]  # which trials ASHA cuts depends on who reports first
    assert float(done[0]["optim.lr"]) >= 0.01 and done[0]["test/acc"]
    group = f"cluster-{experiment.name}"
    for row in rows:
        run_dir = Path(row["run_dir"])
        manifest = yaml.safe_load((run_dir / "manifest.json").read_text())
        assert "cnnforge-tune-testplugin" in str(manifest["plugins"])  # discovered inside the Ray worker
        assert load_recipe(run_dir / "recipe.yaml").tracking.group == group
        [offline] = (run_dir / "wandb").glob("offline-run-*")  # one wandb run per trial, in its run directory
        if row["status"] == "done":  # Ray ends a stopped trial's process without waiting for wandb to flush
            assert group.encode() in next(offline.glob("*.wandb")).read_bytes()
