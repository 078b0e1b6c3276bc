"""Sweep overhead: ``cnnforge tune recipes/sweep_digits.yaml`` wall time against the ideal schedule.

The ideal is the sum of the trials' own times (Ray's ``time_total_s`` of each trial: the trainer,
its imports in a fresh Ray worker and its report) spread perfectly over the trials that can run at
once (the local Ray's CPUs / ``resources_per_trial.cpu``, capped by ``tune.max_concurrent``). The
ratio wall / ideal counts everything a user waits for on top: starting Ray and its worker
processes, scheduling, Ray checkpoints, collecting the results and writing the report. Target: at
most 1.25. Starting and stopping a bare local Ray is timed on its own first, to show how much of
the overhead it is.

The sweep runs twice, as shipped (``tune.trial_plots: false``, trials write their numbers but no
PNGs) and with ``tune.trial_plots=true``, to show what the per-trial PNG reports cost. With
``--address`` both run on an already started Ray cluster, which removes Ray's start and stop.

    python -m benchmarks.sweep_overhead
    ray start --head --num-cpus 2 && python -m benchmarks.sweep_overhead --address auto && ray stop
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, parser, report, table

RECIPE = ROOT / "recipes" / "sweep_digits.yaml"
VARIANTS = {"as shipped (no trial PNGs)": [], "tune.trial_plots=true": ["tune.trial_plots=true"]}


def phases(result: Any, start: float, end: float, concurrency: int, busy: float) -> dict[str, float]:
    """Where the wall time went, from the files' times (seconds since the epoch, like ``start`` and ``end``):
    until the experiment folder exists (checks, starting Ray), until the first trial starts (Ray Tune starting
    its worker processes), while trials run, and after the last one (stopping Ray, results). ``idle_slot_s``
    is how long trial slots stood empty while trials ran: scheduling gaps and the last trials' imbalance."""
    # a trial ends with the last file its run writes; Ray's own files are written in batches by the driver
    ran = [t for t in result.trials if t.run_dir is not None]  # a trial that failed at once has no run
    ends = [max(f.stat().st_mtime for f in t.run_dir.rglob("*")) for t in ran]
    first = min(e - t.time_s for e, t in zip(ends, ran, strict=False))
    created = (result.experiment_dir / "sweep.yaml").stat().st_mtime
    running = max(ends) - first
    return {"before_experiment_s": created - start, "until_first_trial_s": first - created, "trials_running_s": running,
            "after_last_trial_s": end - max(ends), "idle_slot_s": running * concurrency - busy}


def sweep(overrides: list[str], address: str | None) -> dict[str, Any]:
    """One fresh sweep of ``RECIPE``: its wall time, the ideal schedule, their ratio and the phases."""
    import cnnforge

    with tempfile.TemporaryDirectory(prefix="cnnforge-sweep-") as tmp:
        recipe = cnnforge.load_recipe(RECIPE, [f"train.out_dir={Path(tmp) / 'runs'}", *overrides])
        start = time.time()
        result = cnnforge.tune(recipe, fresh=True, quiet=True, address=address)
        end = time.time()
        spec = recipe.tune
        assert spec is not None
        slots = math.floor((os.cpu_count() or 1) / spec.resources_per_trial.cpu)
        concurrency = max(1, min(slots, spec.max_concurrent or slots, len(result.trials)))
        busy = sum(t.time_s for t in result.trials)
        split = phases(result, start, end, concurrency, busy)
    wall = end - start
    return {"trials": len(result.trials), "failed": sum(t.failed for t in result.trials), "concurrency": concurrency,
            "sum_trial_s": busy, "ideal_s": busy / concurrency, "wall_s": wall,
            "overhead_ratio": wall * concurrency / busy,
            "phases": split}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--address", default=None,
                   help="a running Ray cluster (auto or HOST:PORT) instead of a new local Ray")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    args = p.parse_args(argv)
    import ray

    start = time.perf_counter()  # what starting and stopping a local Ray alone costs, for the breakdown
    if args.address is None:
        ray.init(include_dashboard=False, logging_level="WARNING")
        ray.shutdown()
    ray_start = time.perf_counter() - start
    tiny = ["tune.grid={model.activation: [relu, elu]}", "train.epochs=1"] if args.tiny else []
    runs = {name: sweep([*tiny, *args.overrides, *extra], args.address) for name, extra in VARIANTS.items()}
    rows = [{"sweep": name, "trials": r["trials"], "at once": r["concurrency"], "sum trial s": r["sum_trial_s"],
             "ideal s": r["ideal_s"], "wall s": r["wall_s"], "wall / ideal": r["overhead_ratio"],
             "wall - bare Ray s": r["wall_s"] - ray_start} for name, r in runs.items()]
    print("\nwhere the wall time went (s)")
    print(table([{"phase": phase.removesuffix("_s").replace("_", " "), **{name: r["phases"][phase] for name,
                                                                          r in runs.items()}}
                 for phase in next(iter(runs.values()))["phases"]]))
    shipped, plots = runs.values()
    out = {"recipe": "sweep_digits", "address": args.address, **shipped, "ray_start_stop_s": ray_start,
           "overhead_ratio_without_ray_start": (shipped["wall_s"] - ray_start) / shipped["ideal_s"],
           "overhead_s": shipped["wall_s"] - shipped["ideal_s"], "with_trial_plots": plots,
           "wall_saved_by_no_trial_plots": 1 - shipped["wall_s"] / plots["wall_s"], "targets": {"overhead_ratio": 1.25}}
    return report("sweep_overhead", rows, out, tiny=args.tiny)


if __name__ == "__main__":
    main()
