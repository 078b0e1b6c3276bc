"""``cnnforge augment preview``: see what the training augmentation does before a long run starts."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("augment", parents=[common], help="inspect a recipe's augmentation")
    actions = p.add_subparsers(dest="augment_action", metavar="ACTION", parser_class=type(p))
    v = actions.add_parser(
        "preview", parents=[common], help="write a PNG grid of training images and their augmentations",
        description="Write a grid of N training images, each followed by the augmented versions the first "
                    "epochs of a run with this recipe and seed will see; with augment.batch, a second grid "
                    "(OUT-batch.png) of the first batches as mixup/cutmix mix them, with their soft targets.")
    v.add_argument("recipe", help="recipe YAML file")
    v.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. augment.train=cifar_standard")
    v.add_argument("--out", required=True, help="PNG file to write")
    v.add_argument("--n", type=int, default=16, help="training images to show (default 16, classes taken in turn)")
    v.add_argument("--epochs", type=int, default=3, help="augmented versions per image (default 3)")
    v.set_defaults(func=_preview)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _preview(args: argparse.Namespace) -> int:
    from cnnforge.errors import ConfigError

    for flag, value in (("--n", args.n), ("--epochs", args.epochs)):
        if value < 1:
            raise ConfigError(f"must be at least 1, got {value}", where=flag)
    out = Path(args.out)
    if out.suffix.lower() != ".png" or out.is_dir():
        raise ConfigError(f"{args.out!r} is not a PNG file name", where="--out", hint="give a path ending in .png")
    from cnnforge.data.loading import build_splits
    from cnnforge.data.preview import describe_spec, render_preview
    from cnnforge.recipe import load_recipe, open_recipe

    recipe = open_recipe(args.recipe, args.overrides)
    title = (f"{recipe.name} ({recipe.data.name}, seed {recipe.seed}): "
             f"augment.train = {describe_spec(recipe.augment.train)}")
    if recipe.augment.mode == "batch":  # the batched ops run in the trainer; show their per-sample twins
        recipe = load_recipe(recipe, ["augment.mode=sample"])
        title += " (augment.mode: batch, shown with the per-sample ops of the same names)"
    splits = build_splits(recipe)
    outs = [render_preview(splits.train, splits.info.classes, title=title, out=out, n=args.n, versions=args.epochs)]
    if recipe.augment.batch:  # the mixing of each whole batch, in a second PNG beside the first
        outs.append(_mix_preview(recipe, splits, out, args.n))
    if not args.quiet:
        print("\n".join(f"wrote {out}" for out in outs))
    return 0


def _mix_preview(recipe: Any, splits: Any, out: Path, n: int) -> Path:
    from cnnforge.data.batch_mix import make_batch_mix
    from cnnforge.data.preview import render_mix_preview

    ops = ", ".join(f"{name}(alpha={alpha:g}, prob={prob:g})" for op in recipe.augment.batch
                    for name, alpha, prob in op.draws())
    title = f"{recipe.name} (seed {recipe.seed}): augment.batch = {ops}, first batches of epoch 1"
    return render_mix_preview(splits.train, splits.info.classes, make_batch_mix(recipe, len(splits.info.classes)),
                              batch_size=recipe.data.batch_size, seed=recipe.seed, title=title,
                              out=out.with_name(f"{out.stem}-batch{out.suffix}"), n=n)
