"""``cnnforge tune``: a recipe's ``tune:`` sweep with Ray Tune, here or on a Ray cluster."""
from __future__ import annotations

import argparse
from typing import Any


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tune", parents=[common], help="sweep a recipe's tune: section with Ray Tune",
                       description="Run the grid/samples of a recipe's tune: section as Ray Tune trials. Rerunning "
                                   "the same command continues an interrupted sweep without repeating finished trials.")
    p.add_argument("recipe", help="recipe YAML file or packaged recipe name, with a tune: section")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.epochs=5")
    p.add_argument("--address", metavar="auto|HOST:PORT",
                   help="run on this Ray cluster (started with `ray start --head`); default: Ray on this machine")
    p.add_argument("--max-concurrent", type=_positive, metavar="N",
                   help="at most N trials at once (default tune.max_concurrent)")
    p.add_argument("--fresh", action="store_true", help="start a new experiment instead of continuing the last one")
    p.set_defaults(func=_tune)


def _tune(args: argparse.Namespace) -> int:
    from cnnforge.sweep import tune

    result = tune(args.recipe, args.overrides, address=args.address, max_concurrent=args.max_concurrent,
                  fresh=args.fresh, quiet=args.quiet, verbose=args.verbose)
    return result.exit_code
