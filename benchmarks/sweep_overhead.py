"""Sweep overhead: ``cnnforge tune recipes/sweep_digits.yaml`` wall time against the ideal schedule.

The ideal is the sum of the trials' own training times (Ray's ``time_total_s`` of each trial) spread
perfectly over the trials that can run at once (the local Ray's CPUs / ``resources_per_trial.cpu``,
capped by ``tune.max_concurrent``). The ratio wall / ideal counts everything a user waits for on top:
starting Ray and its worker processes, scheduling, Ray checkpoints, collecting the results and
writing the report. Target: at most 1.25. Starting and stopping a bare local Ray is timed on its own
first, to show how much of the overhead it is.

    python -m benchmarks.sweep_overhead
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, parser, report

RECIPE = ROOT / "recipes" / "sweep_digits.yaml"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    args = p.parse_args(argv)
    import ray

    import cnnforge

    start = time.perf_counter()  # what starting and stopping a local Ray alone costs, for the breakdown
    ray.init(include_dashboard=False, logging_level="WARNING")
    ray.shutdown()
    ray_start = time.perf_counter() - start
    tiny = ["tune.grid={model.activation: [relu, elu]}", "train.epochs=1"] if args.tiny else []
    with tempfile.TemporaryDirectory(prefix="cnnforge-sweep-") as tmp:
        overrides = [f"train.out_dir={Path(tmp) / 'runs'}", *tiny, *args.overrides]
        recipe = cnnforge.load_recipe(RECIPE, overrides)
        start = time.perf_counter()
        result = cnnforge.tune(recipe, fresh=True, quiet=True)
        wall = time.perf_counter() - start
    spec = recipe.tune
    assert spec is not None
    trials = result.trials
    slots = math.floor((os.cpu_count() or 1) / spec.resources_per_trial.cpu)
    concurrency = max(1, min(slots, spec.max_concurrent or slots, len(trials)))
    busy = sum(t.time_s for t in trials)
    ideal = busy / concurrency
    rows = [{"trial": t.trial, "params": " ".join(f"{k}={v}" for k, v in t.params.items()), "train s": t.time_s,
             "status": t.status} for t in trials]
    rows.append({"trial": "sweep", "params": f"{len(trials)} trials, {concurrency} at once", "train s": wall,
                 "status": f"wall / ideal {wall / ideal:.3f}"})
    out = {"recipe": "sweep_digits", "trials": len(trials), "failed": sum(t.status.startswith("error") for t in trials),
           "concurrency": concurrency, "wall_s": wall, "ray_start_stop_s": ray_start, "sum_trial_s": busy,
           "ideal_s": ideal, "overhead_ratio_without_ray_start": (wall - ray_start) / ideal,
           "overhead_ratio": wall / ideal, "targets": {"overhead_ratio": 1.25}}
    return report("sweep_overhead", rows, out, tiny=args.tiny)


if __name__ == "__main__":
    main()
