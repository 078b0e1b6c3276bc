"""``cnnforge run`` and ``cnnforge resume``."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="train a recipe", description="Train a recipe end to end.")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=0.01")
    p.set_defaults(func=_run)

    r = sub.add_parser("resume", parents=[common], help="continue an interrupted run from its last checkpoint")
    r.add_argument("run_dir", help="run directory (holds recipe.yaml and checkpoints/)")
    r.add_argument("--force", action="store_true", help="resume even if the code or recipe changed")
    r.set_defaults(func=_resume)


def _run(args: argparse.Namespace) -> int:
    from cnnforge.recipe import check_recipe, load_recipe
    from cnnforge.training.run import train

    recipe = check_recipe(load_recipe(args.recipe, args.overrides))
    return _report(train(recipe, quiet=args.quiet), args.quiet)


def _report(result: Any, quiet: bool) -> int:
    if quiet and result.main_process:  # --quiet hides progress, never the result
        print(result.describe())
    return result.exit_code


def _resume(args: argparse.Namespace) -> int:
    from cnnforge.training.run import resume

    return _report(resume(args.run_dir, force=args.force, quiet=args.quiet), args.quiet)
