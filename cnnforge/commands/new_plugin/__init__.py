"""``cnnforge new-plugin NAME``: scaffold a plugin distribution (entry point, model, recipe, tests)."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("new-plugin", parents=[common], help="write a new plugin distribution to start from",
                       description="Write cnnforge-NAME/: a pyproject.toml with the cnnforge.plugins entry point, "
                                   "a registered model, a packaged recipe using it and tests (the layout of "
                                   "plugins/cnnforge-example).")
    p.add_argument("name", help="plugin name, e.g. my-nets (the distribution becomes cnnforge-my-nets)")
    p.add_argument("--dir", default=".", help="folder to create cnnforge-NAME/ in (default: the current folder)")
    p.set_defaults(func=_new_plugin)


def _new_plugin(args: argparse.Namespace) -> int:
    from cnnforge.commands.new_plugin.scaffold import PluginNames, new_plugin

    target, files = new_plugin(args.name, args.dir)
    if not args.quiet:
        names = PluginNames.from_name(args.name)
        print(f"created {target}/ with {len(files)} files; the model is {names.model!r}. Next:")
        print(f"  pip install -e {target}")
        print(f"  cnnforge run {names.recipe}      # its packaged recipe, {names.package}/recipes/{names.recipe}.yaml")
        print(f"  pytest {target}")
    return 0
