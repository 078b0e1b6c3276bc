"""``cnnforge run RECIPE [KEY=VALUE...]``: train a recipe end to end."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="train a recipe", description="Train a recipe end to end.")
    p.add_argument("recipe", help="recipe YAML file or packaged recipe name (cnnforge list recipes)")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=0.01")
    p.add_argument("--run-dir", metavar="DIR",
                   help="train in DIR (train.run_dir): a new run if DIR is absent or empty, else continue its run of "
                        "this recipe, or say it has finished; the same command after a requeue")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cnnforge.recipe import open_recipe
    from cnnforge.training.run import train

    recipe = open_recipe(args.recipe, args.overrides)
    if args.run_dir is not None:  # a path, never parsed as YAML
        recipe.train.run_dir = args.run_dir
    return report(train(recipe, quiet=args.quiet), args.quiet)


def report(result: Any, quiet: bool) -> int:
    """The exit code of a finished run (``cnnforge run`` and ``resume``); ``--quiet`` still prints its result."""
    if quiet and result.main_process and result.exit_code == 0:  # --quiet hides progress, never the result
        print(result.describe())
    return result.exit_code
