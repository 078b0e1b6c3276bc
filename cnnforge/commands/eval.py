"""``cnnforge eval RUN_DIR``: metrics and report PNGs of a run's weights on a split (DDP-aware)."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("eval", parents=[common], help="evaluate a run: metrics.json, summary.md and plots",
                       description="Evaluate a run's weights on a split and write its report. Under "
                                   "`accelerate launch` every process evaluates a shard; metrics count each sample "
                                   "once.")
    p.add_argument("run_dir", help="run directory (holds recipe.yaml and the weights)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"), help="split to evaluate (default test)")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="best validation weights or the final ones (default: what the run was tested with)")
    p.add_argument("--force", action="store_true",
                   help="use the split even if it differs from the run's data (into a report folder of its own)")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from cnnforge.evaluation import evaluate_run

    out, numbers = evaluate_run(args.run_dir, split=args.split, checkpoint=args.checkpoint,
                                force=args.force)
    if numbers["main_process"]:
        print(f"{numbers['split']}: accuracy {numbers['accuracy']:.4f}  loss {numbers['loss']:.4f}  "
              f"{numbers['samples']} samples  ({numbers['checkpoint']} weights, {numbers['world_size']} process(es))")
        print(f"report: {out}")
    return 0
