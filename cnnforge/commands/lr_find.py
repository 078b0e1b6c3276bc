"""``cnnforge lr-find RECIPE``: the learning-rate range test on the recipe's own model, data and optimizer."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "lr-find", parents=[common], help="suggest optim.lr with a learning-rate range test",
        description="Train the recipe's model for up to --steps optimizer steps while the learning rate grows "
                    "exponentially from --start to --end, stop when the smoothed loss diverges, and suggest a "
                    "learning rate two thirds down the longest fall of the loss (fastai's valley). Writes "
                    "lr_find.png and lr_find.json; keeps no weights.")
    p.add_argument("recipe", help="recipe YAML file or packaged recipe name (cnnforge list recipes)")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. data.root=images")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps at most (default 100)")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--out", default=None, help="folder for lr_find.png/json (default <train.out_dir>/<name>/lr_find)")
    p.set_defaults(func=_lr_find)


def _lr_find(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnforge.errors import recipe_source
    from cnnforge.recipe import open_recipe
    from cnnforge.training.assemble import make_accelerator
    from cnnforge.training.lr_finder import RangeTest, check_result, default_out, find_lr, write_outputs

    test = RangeTest(steps=args.steps, start=args.start, end=args.end)
    recipe = open_recipe(args.recipe, args.overrides)
    out = Path(args.out) if args.out else default_out(recipe)

    with recipe_source(recipe.source):
        acc = make_accelerator(recipe.train)
    try:
        result = find_lr(recipe, acc, test)
        if acc.is_main_process:
            _, plot = write_outputs(result, out)
        check_result(result, out, recipe.source)
        if acc.is_main_process:
            if not args.quiet:
                print(f"wrote {plot} and {plot.with_suffix('.json').name}")
            print(result.describe())
    finally:
        acc.end_training()  # destroys the process group of a distributed launch, or ranks abort at exit
    return 0
