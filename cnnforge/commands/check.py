"""``cnnforge check RECIPE``: validate a recipe without training."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser("check", parents=[common], help="validate a recipe and its data without training",
                       description="Validate a recipe and what a run checks of its data when it starts (the files "
                                   "are there and laid out as the dataset expects, one image decodes, the "
                                   "augmentation fits it), without training.")
    c.add_argument("recipe", help="recipe YAML file or packaged recipe name")
    c.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE")
    c.add_argument("--no-data", action="store_true",
                   help="check the recipe only, not its data (no torch import: data not downloaded yet, editors, CI)")
    c.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from cnnforge.errors import recipe_source
    from cnnforge.recipe import open_recipe
    from cnnforge.recipe.checks import check_family_names

    recipe = open_recipe(args.recipe, args.overrides)
    if not args.no_data:
        from cnnforge.data.probe import check_data  # the data stack: torch, the augmentation library

        check_family_names(recipe)  # timm/ and tv/ names: their libraries load torch too
        with recipe_source(recipe.source):
            check_data(recipe)  # what `run` finds wrong with the data at its start, from one decoded image
    if not args.quiet:
        print(f"{args.recipe}: ok ({recipe.model.name} on {recipe.data.name}, {recipe.train.epochs} epochs)")
    return 0

