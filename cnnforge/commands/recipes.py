"""``cnnforge recipes copy``: an editable copy of a packaged recipe (``cnnforge list recipes`` lists them)."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("recipes", parents=[common], help="copy a packaged recipe to edit it")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    c = actions.add_parser("copy", parents=[common], help="write NAME's YAML to DST (never overwrites)",
                           description="Write an editable copy of a packaged recipe; an existing file is never "
                                       "replaced.")
    c.add_argument("name", help="packaged recipe name (cnnforge list recipes)")
    c.add_argument("dst", nargs="?", help="file or folder to write (default: ./NAME.yaml)")
    c.set_defaults(func=_copy)


def _copy(args: argparse.Namespace) -> int:
    from cnnforge.recipe.catalog import copy_recipe

    target = copy_recipe(args.name, args.dst)
    if not args.quiet:
        print(f"wrote {target} (run it with: cnnforge run {target})")
    return 0
