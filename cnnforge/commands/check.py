"""``cnnforge check RECIPE``: validate a recipe without training."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser("check", parents=[common], help="validate a recipe without training")
    c.add_argument("recipe", help="recipe YAML file or packaged recipe name")
    c.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE")
    c.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from cnnforge.recipe import open_recipe

    recipe = open_recipe(args.recipe, args.overrides)
    if not args.quiet:
        print(f"{args.recipe}: ok ({recipe.model.name} on {recipe.data.name}, {recipe.train.epochs} epochs)")
    return 0

