"""``cnnforge list``, ``cnnforge check`` and ``cnnforge show``: look without training."""
from __future__ import annotations

import argparse
import fnmatch
import sys
from typing import Any

KINDS = ("models", "datasets", "augmentations", "plugins")


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("list", parents=[common], help="registered models, datasets, augmentations or plugins")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("pattern", nargs="?", help="glob over names, e.g. 'timm/resnet*'")
    p.add_argument("--all", action="store_true", help="expand name families such as timm/* and tv/*")
    p.set_defaults(func=_list)

    c = sub.add_parser("check", parents=[common], help="validate a recipe without training")
    c.add_argument("recipe")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    c.set_defaults(func=_check)

    s = sub.add_parser("show", parents=[common], help="print the resolved recipe and the model summary")
    s.add_argument("recipe")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    s.add_argument("--no-model", action="store_true", help="skip building the model (no torch, no data)")
    s.set_defaults(func=_show)


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *rows])


def _list(args: argparse.Namespace) -> int:
    from cnnforge import registry
    from cnnforge.plugins import load_plugins

    if args.kind == "plugins":
        rows = [(p.name, f"{p.package} {p.version}".strip(), p.value, f"FAILED: {p.error}" if p.error else "ok")
                for p in load_plugins()]
        print(_table(rows, ("entry point", "package", "value", "status")) if rows else "no plugins installed")
        return 0
    reg = registry.REGISTRIES[args.kind]
    entries = reg.entries()
    rows = []
    for e in entries:
        family = e.name.endswith("*")
        names = _expand(e) if family and (args.all or (args.pattern or "").startswith(e.name[:-1])) else [e.name]
        for name in names:
            if args.pattern and not fnmatch.fnmatch(name, args.pattern):
                continue
            rows.append((name, f"{e.package} {e.version}".strip(), e.summary))
    print(_table(rows, ("name", "package", "description")) if rows else f"no {args.kind} match {args.pattern!r}")
    return 0


def _expand(entry: Any) -> list[str]:
    """The names behind a family entry (``timm/*``): its builder lists them when given ``list_names=True``."""
    lister = getattr(entry.fn, "list_names", None)
    if lister is None:
        return [entry.name]
    prefix = entry.name[:-1]
    return [prefix + n for n in lister()]


def _check(args: argparse.Namespace) -> int:
    from cnnforge.recipe import check_recipe, load_recipe

    recipe = check_recipe(load_recipe(args.recipe, args.overrides))
    if not args.quiet:
        print(f"{args.recipe}: ok ({recipe.model.name} on {recipe.data.name}, {recipe.train.epochs} epochs)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from cnnforge.recipe import check_recipe, load_recipe

    recipe = check_recipe(load_recipe(args.recipe, args.overrides))
    sys.stdout.write(recipe.to_yaml())
    if not args.no_model:
        from cnnforge.models.summary import describe_recipe_model

        print()
        print(describe_recipe_model(recipe))
    return 0
