"""``cnnforge predict RUN_DIR IMAGE...``: class names and probabilities for one's own images (seed 004)."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("predict", parents=[common], help="classify image files with a trained run",
                       description="Classify image files with a run's model and the run's own preprocessing "
                                   "(channels, size, eval augmentations, normalisation).")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--topk", type=int, default=3, help="how many classes to show per image (default 3)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="weights (default: what the run was tested with)")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import sys

    from cnnforge.errors import ConfigError
    from cnnforge.predict import load_predictor

    if args.topk < 1:
        raise ConfigError(f"is {args.topk}; it must be at least 1", where="--topk")
    with contextlib.redirect_stdout(sys.stderr):  # what a plugin prints must never land in the JSON on stdout
        predictions = load_predictor(args.run_dir, checkpoint=args.checkpoint).predict(args.images, topk=args.topk)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
        return 0
    for p in predictions:
        others = ", ".join(f"{name} {prob:.1%}" for name, prob in p.topk[1:])
        print(f"{p.source}: {p.label} ({p.probability:.1%})" + (f"  then {others}" if others else ""))
    return 0
