"""``cnnforge data split`` (an image folder's stratified split as folders, seed 004) and ``cnnforge data pack``
(any dataset as WebDataset or Hugging Face shards)."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("data", parents=[common], help="prepare datasets on disk")
    actions = p.add_subparsers(dest="data_action", metavar="ACTION", parser_class=type(p))
    s = actions.add_parser(
        "split", parents=[common], help="split a folder-per-class dataset into train/ val/ test/ folders",
        description="Copy SRC/<class>/* into DST/train, DST/val and DST/test, stratified by class and fixed by "
                    "--seed: the same split `imagefolder` makes in memory for that seed and data.split.")
    s.add_argument("src", help="folder with one sub-folder of images per class")
    s.add_argument("dst", help="new folder to write train/ val/ test/ into (must not exist or be empty)")
    s.add_argument("--ratios", nargs=3, type=float, default=[0.6, 0.2, 0.2], metavar=("TRAIN", "VAL", "TEST"),
                   help="fractions adding up to 1 (default 0.6 0.2 0.2, seed 004)")
    s.add_argument("--seed", type=int, default=0, help="the recipe's seed to match (default 0)")
    s.add_argument("--link", action="store_true", help="hard-link files instead of copying them")
    s.set_defaults(func=_split)
    k = actions.add_parser(
        "pack", parents=[common], help="write a dataset out as WebDataset tar shards or a Hugging Face dataset",
        description="Write SRC (an image folder, or with --recipe the recipe's dataset read from SRC) to the new "
                    "folder DST with its splits and classes: train-000000.tar ... and classes.txt for "
                    "`data.name: webdataset`, a save_to_disk folder for `data.name: hf`. JPEG, PNG and WebP files "
                    "keep their bytes; arrays and other formats are PNG-encoded.")
    k.add_argument("src", help="image folder (a sub-folder per class, or train/ val/ test/), or data.root for --recipe")
    k.add_argument("dst", help="new folder to write (must not exist or be empty)")
    k.add_argument("--format", required=True, choices=["webdataset", "hf"], help="output format")
    k.add_argument("--shard-size", default="256MB", metavar="SIZE", help="largest shard: 64MB, 1GB ... (default 256MB)")
    k.add_argument("--recipe", metavar="R", help="read SRC as this recipe's dataset (data.name and its parameters)")
    k.set_defaults(func=_pack)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _split(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnforge.data.image_folder import materialise_split

    counts = materialise_split(Path(args.src), Path(args.dst), args.ratios, args.seed, link=args.link)
    if not args.quiet:
        parts = ", ".join(f"{name} {n}" for name, n in counts.items())
        print(f"{args.dst}: {parts} images ({'hard-linked' if args.link else 'copied'}, seed {args.seed})")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from pathlib import Path

    from datasets.utils.py_utils import convert_file_size_to_int

    from cnnforge.data.image_folder import check_outside
    from cnnforge.data.pack import folder_sources, pack, recipe_sources
    from cnnforge.errors import ConfigError

    try:
        shard_size = convert_file_size_to_int(args.shard_size)
    except ValueError:
        raise ConfigError(f"is not a size like 64MB or 1GB: {args.shard_size!r}", where="--shard-size") from None
    check_outside(Path(args.src.split("{")[0]).expanduser(), Path(args.dst).expanduser())
    if args.recipe:
        splits, classes = recipe_sources(_pack_recipe(args.recipe, args.src))
    else:
        splits, classes = folder_sources(Path(args.src).expanduser())
    counts = pack(splits, classes, Path(args.dst).expanduser(), args.format, shard_size)
    if not args.quiet:
        parts = ", ".join(f"{name} {n}" for name, n in counts.items())
        print(f"{args.dst}: {parts} samples, {len(classes)} classes ({args.format})")
    return 0


def _pack_recipe(path: str, root: str) -> Any:
    """Recipe ``path`` with its data at ``root``; a dataset that decodes files is opened with ``cache: none``,
    so nothing is decoded and each file's own bytes are written."""
    import inspect

    from cnnforge import registry
    from cnnforge.recipe import check_recipe, load_recipe
    from cnnforge.recipe.loading import recipe_from_dict

    recipe = load_recipe(path)
    data = recipe.to_dict()
    data["data"]["root"] = root  # a value as it is: a path is never parsed as YAML
    if "cache" in inspect.signature(registry.datasets.get(recipe.data.name).fn).parameters:
        data["data"]["cache"] = "none"
    return check_recipe(recipe_from_dict(data, recipe.source))
