"""``cnnforge data split``: write an image folder's stratified train/val/test split out as folders (seed 004)."""
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
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _split(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnforge.data.image_folder import materialise_split

    counts = materialise_split(Path(args.src), Path(args.dst), args.ratios, args.seed, link=args.link)
    if not args.quiet:
        parts = ", ".join(f"{name} {n}" for name, n in counts.items())
        print(f"{args.dst}: {parts} images ({'hard-linked' if args.link else 'copied'}, seed {args.seed})")
    return 0
