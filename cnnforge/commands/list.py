"""``cnnforge list KIND [PATTERN]``: what the registries and installed plugins provide."""
from __future__ import annotations

import argparse
import fnmatch
import os
from typing import Any

KINDS = ("models", "datasets", "augmentations", "losses", "optimizers", "schedules", "callbacks", "plugins", "recipes")


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("list", parents=[common],
                       help="registered models, datasets, augmentations, losses, optimizers, schedules, callbacks, "
                            "plugins or packaged recipes")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("pattern", nargs="?", help="glob over names, e.g. 'timm/resnet*'")
    p.add_argument("--all", action="store_true", help="expand name families such as timm/* and tv/*")
    p.set_defaults(func=_list)


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *rows])


def _list(args: argparse.Namespace) -> int:
    from cnnforge import registry

    if args.kind == "plugins":
        return _list_plugins()
    if args.kind == "recipes":
        return _list_recipes(args.pattern)
    entries = registry.REGISTRIES[args.kind].entries(args.pattern, expand=args.all)
    rows = [(e.name, f"{e.package} {e.version}".strip(), e.summary) for e in entries]
    print(_table(rows, ("name", "package", "description")) if rows else f"no {args.kind} match {args.pattern!r}")
    return 0


def _list_plugins() -> int:
    from cnnforge.plugins import ENV, disabled_plugins, load_plugins

    rows = [(p.name, f"{p.package} {p.version}".strip(), p.value, f"FAILED: {p.error}" if p.error else "ok")
            for p in load_plugins()]
    off = f"disabled by {ENV}={os.environ.get(ENV, '').strip()}"
    rows += [(p.name, f"{p.package} {p.version}".strip(), p.value, off) for p in disabled_plugins()]
    print(_table(rows, ("entry point", "package", "value", "status")) if rows else "no plugins installed")
    return 0


def _list_recipes(pattern: str | None) -> int:
    from cnnforge.recipe.catalog import packaged_recipes

    rows = [(r.name, r.package, r.summary) for r in packaged_recipes()
            if not pattern or fnmatch.fnmatch(r.name, pattern)]
    print(_table(rows, ("name", "package", "description")) if rows else f"no recipes match {pattern!r}")
    return 0
