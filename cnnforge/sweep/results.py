"""A finished sweep as files a person reads: the ranked table (``results.csv``), the best trial as a
recipe ``cnnforge run`` trains (``best.yaml``), the metric against each swept key (``results.png``),
and for every trial the ``cnnforge run`` command that replays it."""
from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnforge import rundir
from cnnforge.atomic_write import save_file_atomic
from cnnforge.recipe import Recipe, load_recipe
from cnnforge.sweep.trial import trial_overrides, trial_run_dir

RESULTS_CSV = "results.csv"
BEST_RECIPE = "best.yaml"
RESULTS_PNG = "results.png"
#: replay commands printed after the table (the best ones); the CSV has all, so a sweep fits one screen
REPLAYS_SHOWN = 3


@dataclass
class TrialRow:
    """One trial: its swept values, the metric at its last reported epoch, and how it ended."""

    trial: str
    params: dict[str, Any]
    value: float | None
    epochs: int
    time_s: float
    status: str  # done | stopped early | error: <first line>
    command: str
    run_dir: Path | None = None
    test_acc: float | None = None
    restarts: int = 0  # times Ray restarted the trial after its process died (tune.max_failures)

    @property
    def failed(self) -> bool:
        return self.status.startswith("error")


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _config(result: Any) -> dict[str, Any]:
    """A trial's swept values. A trial restored after failing before its first report has no
    ``result.config`` (Ray takes it from the last result), only the ``params.json`` Ray wrote when it started."""
    from ray.tune.result import EXPR_PARAM_FILE

    if result.config:
        return dict(result.config)
    params = Path(result.path) / EXPR_PARAM_FILE
    return json.loads(params.read_text()) if params.is_file() else {}


def collect_trials(grid: Any, recipe: Recipe, replay: Sequence[str],
                   restarts: Mapping[str, int] | None = None) -> list[TrialRow]:
    """Every trial of a Ray ``ResultGrid``, best first by ``tune.metric``; failed trials come last. ``restarts``:
    {trial folder: restarts} (:func:`trial_restarts`)."""
    assert recipe.tune is not None
    metric, maximize = recipe.tune.metric, recipe.tune.mode == "max"
    restarts = restarts or {}
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        config = _config(result)
        run_dir = trial_run_dir(Path(result.path))
        finished = run_dir is not None and (run_dir / rundir.SUMMARY).exists()
        summary = rundir.read_json(run_dir / rundir.SUMMARY) if finished else {}
        if result.error is not None:
            status = "error: " + (str(result.error).strip().splitlines() or ["?"])[-1][:200]
        elif finished:
            status = "done"
        else:
            status = "stopped early"  # by ASHA
        rows.append(TrialRow(
            # the trial's own folder (named by its id): after a PBT exploit its last result may carry the donor's id
            trial=Path(result.path).name, params=config,
            value=_finite(metrics.get(metric)), epochs=int(metrics.get("epoch") or 0),
            time_s=round(float(metrics.get("time_total_s") or 0.0), 1), status=status,
            command=shlex.join([*replay, *trial_overrides(config)]), run_dir=run_dir,
            test_acc=_finite(summary.get("test/acc")), restarts=restarts.get(Path(result.path).name, 0)))
    sign = -1.0 if maximize else 1.0
    return sorted(rows, key=lambda r: (r.failed, r.value is None, sign * (r.value or 0.0), r.trial))


def trial_restarts(experiment_path: str | Path) -> dict[str, int]:
    """{trial folder: restarts after a failure}: Tune's (``Trial.num_failures``, from the state Ray saved) and, in a
    DDP trial, Ray Train's restarts of its worker group."""
    from ray.tune import ExperimentAnalysis

    from cnnforge.sweep.ddp_trial import train_restarts

    return {Path(t.path).name: int(t.num_failures) + train_restarts(Path(t.path))
            for t in ExperimentAnalysis(str(experiment_path)).trials if t.path}


def _record_failures(trials: list[TrialRow]) -> None:
    """A trial that failed for good gets ``failed.json`` in its run directory, as a failed run does; a process that
    died (``kill -9``, lost node) could not write it."""
    for t in trials:
        if t.failed and t.run_dir is not None and not (t.run_dir / rundir.FAILED).exists():
            rundir.write_json(t.run_dir / rundir.FAILED, {"error": t.status.removeprefix("error: "),
                                                          "type": "TrialFailed", "restarts": t.restarts})


def report_results(experiment: Path, recipe: Recipe, trials: list[TrialRow]) -> Path | None:
    """Write results.csv, best.yaml and results.png into ``experiment``, print the table; the best.yaml path."""
    import pandas as pd

    assert recipe.tune is not None
    metric = recipe.tune.metric
    keys = recipe.tune.swept_keys()
    _record_failures(trials)
    table = pd.DataFrame([{"rank": i + 1, "trial": t.trial, **{k: t.params.get(k) for k in keys}, metric: t.value,
                           "epochs": t.epochs, "time_s": t.time_s, "restarts": t.restarts, "status": t.status,
                           "test/acc": t.test_acc,
                           "run_dir": str(t.run_dir or ""), "command": t.command} for i, t in enumerate(trials)])
    table.to_csv(experiment / RESULTS_CSV, index=False)
    print()
    print(table.drop(columns=["test/acc", "run_dir", "command"]).to_string(index=False, na_rep="-",
                                                                           float_format="{:.4g}".format))
    succeeded = [t for t in trials if not t.failed]
    if succeeded:
        print(f"\nreplay a trial with (every trial's command is in the command column of {RESULTS_CSV}):")
    for t in succeeded[:REPLAYS_SHOWN]:
        print(f"  {t.trial}  {t.command}")
    best = _write_best(experiment, recipe, trials)
    if best is not None:
        print(f"\nbest: trial {trials[0].trial} with {metric} {trials[0].value:.4g}; "
              f"train it with: cnnforge run {best}")
    errors = sum(t.failed for t in trials)
    if errors:
        print(f"{errors} of {len(trials)} trials failed (see the status column and each trial's error.txt)")
    if any(t.value is not None for t in trials):
        plot_metric(experiment / RESULTS_PNG, recipe, trials)
        print(f"plot: {experiment / RESULTS_PNG}")
    print(f"results: {experiment / RESULTS_CSV}")
    print(f"experiment directory: {experiment}")
    return best


def _write_best(experiment: Path, recipe: Recipe, trials: list[TrialRow]) -> Path | None:
    """The best trial as a complete recipe without the ``tune:`` section: ``cnnforge run best.yaml`` trains it."""
    top = trials[0] if trials else None
    if top is None or top.value is None or top.failed:
        return None
    best = load_recipe(recipe, trial_overrides(top.params))
    best.tune = None
    path = experiment / BEST_RECIPE
    header = (f"# best trial {top.trial} of {experiment}: {recipe.tune.metric if recipe.tune else ''} {top.value:.6g}\n"
              f"# train it with: cnnforge run {path}\n")
    path.write_text(header + best.to_yaml())
    return path


def plot_metric(path: Path, recipe: Recipe, trials: list[TrialRow]) -> None:
    """One panel per swept key: every trial's metric at its value (hollow: stopped early), the mean per value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert recipe.tune is not None
    spec = recipe.tune
    keys = spec.swept_keys()
    scored = [t for t in trials if t.value is not None and not t.failed]
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    for ax, key in zip(axes.flat, keys, strict=False):
        _panel(ax, key, spec, scored)
    for ax in axes[:, 0]:
        ax.set_ylabel(spec.metric)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels(), strict=False)}
    fig.legend(handles.values(), handles.keys(), loc="upper right", fontsize=8)
    fig.suptitle(f"{recipe.name}: {spec.metric} ({spec.mode}) of {len(scored)} trials by swept value")
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    save_file_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _panel(ax: Any, key: str, spec: Any, scored: list[TrialRow]) -> None:
    """The panel of one swept ``key``: a sampled range or a key PBT mutated on its own axis (its final values),
    grid or choice values one column each."""
    import numpy as np

    sample = spec.sample.get(key)
    mutated = spec.scheduler.name == "pbt" and key in spec.mutations()
    if mutated or (sample is not None and sample.choice is None):  # the values themselves
        _dots(ax, [t.params[key] for t in scored], scored)
        if (sample or spec.mutations()[key]).loguniform is not None:
            ax.set_xscale("log")
    else:  # grid or choice values: one column each, points spread a little so they do not hide each other
        values = list(spec.grid.get(key) or (sample.choice if sample else []))
        labels = [str(v) for v in values]
        for i, value in enumerate(values):
            group = [t for t in scored if t.params.get(key) == value]
            if group:
                _dots(ax, i + np.linspace(-0.12, 0.12, len(group)) * (len(group) > 1), group)
                mean = sum(t.value for t in group) / len(group)  # type: ignore[misc]
                ax.plot([i - 0.3, i + 0.3], [mean, mean], color="tab:red", linewidth=2, label="mean")
        ax.set_xticks(range(len(values)), labels, rotation=30 if max(map(len, labels), default=0) > 6 else 0)
        ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_xlabel(key)
    ax.grid(alpha=0.3)


def _dots(ax: Any, xs: Any, group: list[TrialRow]) -> None:
    import numpy as np

    xs = np.asarray(xs)
    for label, filled in (("done", True), ("stopped early", False)):
        pick = np.array([(t.status == "done") == filled for t in group], dtype=bool)
        if pick.any():
            ax.scatter(xs[pick], [t.value for t, p in zip(group, pick, strict=False) if p], s=24, alpha=0.7,
                       label=label, facecolors="tab:blue" if filled else "none", edgecolors="tab:blue")
