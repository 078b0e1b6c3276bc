"""``cnnforge show RECIPE``: the resolved recipe and the model summary, without training."""
from __future__ import annotations

import argparse
import sys
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("show", parents=[common], help="print the resolved recipe and the model summary")
    s.add_argument("recipe", help="recipe YAML file or packaged recipe name")
    s.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE")
    s.add_argument("--no-model", action="store_true", help="skip building the model (no torch, no data)")
    s.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from cnnforge.recipe import check_recipe, load_recipe

    recipe = check_recipe(load_recipe(args.recipe, args.overrides))
    sys.stdout.write(recipe.to_yaml())
    if not args.no_model:
        from cnnforge.models.summary import describe_recipe_model

        print()
        print(describe_recipe_model(recipe))
    return 0
