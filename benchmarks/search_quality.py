"""Search quality: the best val/acc TPE finds with 12 trials, against random search with 12 and a 36-point grid.

The space is a continuous version of ``sweep_digits``: ``optim.lr`` log-uniform in [1e-4, 1e-1] and
``model.dropout`` uniform in [0, 0.6] (ReLU, 3 epochs). The grid covers it with 6 log-spaced learning
rates x 6 dropouts. Each searcher runs once per seed (the recipe's seed: weights, batches and the
searcher's own draws), seeds 0, 1, 2, interleaved; the table gives the best val/acc of each sweep and
the mean over the seeds, with the trials and wall time it cost.

    python -m benchmarks.search_quality            # 3 x (36 + 12 + 12) trials of digits: long on 2 cores
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, parser, report

RECIPE = ROOT / "recipes" / "sweep_digits.yaml"
SPACE = "tune.sample={optim.lr: {loguniform: [1.0e-4, 1.0e-1]}, model.dropout: {uniform: [0.0, 0.6]}}"
GRID = ("tune.grid={optim.lr: [1.0e-4, 3.98e-4, 1.58e-3, 6.31e-3, 2.51e-2, 1.0e-1], "
        "model.dropout: [0.0, 0.12, 0.24, 0.36, 0.48, 0.6]}")
BASE = ["model.activation=relu", "tune.sample={}"]
SEARCHERS = {
    "grid 36": [*BASE, GRID, "tune.search=grid", "tune.num_samples=1"],
    "random 12": [*BASE, "tune.grid={}", SPACE, "tune.search=random", "tune.num_samples=12"],
    "optuna TPE 12": [*BASE, "tune.grid={}", SPACE, "tune.search=optuna", "tune.num_samples=12"],
}
TINY = {
    "grid 36": ["tune.grid={optim.lr: [1.0e-3, 1.0e-2], model.dropout: [0.0]}"],
    "random 12": ["tune.num_samples=2"],
    "optuna TPE 12": ["tune.num_samples=2"],
}


def sweep(overrides: list[str]) -> dict[str, Any]:
    """One fresh sweep: its best val/acc, trial count and wall time."""
    import cnnforge

    with tempfile.TemporaryDirectory(prefix="cnnforge-search-") as tmp:
        start = time.perf_counter()
        result = cnnforge.tune(RECIPE, [f"train.out_dir={Path(tmp) / 'runs'}", *overrides], fresh=True, quiet=True)
        wall = time.perf_counter() - start
    best = result.best
    return {"best": best.value if best is not None else float("nan"), "trials": len(result.trials),
            "failed": sum(t.failed for t in result.trials), "wall_s": wall}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="sweeps per searcher, seeds 0..N-1 (default 3)")
    args = p.parse_args(argv)
    seeds = range(1 if args.tiny else args.seeds)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SEARCHERS}
    for seed in seeds:
        for name, overrides in SEARCHERS.items():
            tiny = ["train.epochs=1", *TINY[name]] if args.tiny else []
            runs[name].append(sweep([f"seed={seed}", *overrides, *tiny]))
            done = " ".join(f"{k} {v:.4g}" for k, v in runs[name][-1].items())
            print(f"PROGRESS {name} seed {seed}: {done}", flush=True)
    rows = [{"searcher": name, **{f"seed {s}": r["best"] for s, r in zip(seeds, rs, strict=True)},
             "mean best val/acc": sum(r["best"] for r in rs) / len(rs), "trials": sum(r["trials"] for r in rs),
             "failed": sum(r["failed"] for r in rs), "wall s": sum(r["wall_s"] for r in rs)}
            for name, rs in runs.items()]
    means = {row["searcher"]: row["mean best val/acc"] for row in rows}
    out = {"recipe": "sweep_digits (continuous lr, dropout)", "seeds": len(seeds), "mean_best_val_acc": means,
           "tpe_minus_random": means["optuna TPE 12"] - means["random 12"],
           "tpe_minus_grid": means["optuna TPE 12"] - means["grid 36"], "runs": runs}
    return report("search_quality", rows, out, tiny=args.tiny)


if __name__ == "__main__":
    main()
