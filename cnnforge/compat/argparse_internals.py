"""The actions of an argparse parser, which argparse keeps in a private list.

argparse has no public way to walk a parser's arguments; shell completion (``cnnforge completion``)
walks them to tell shtab which ones complete recipe files, folders or files.
"""
from __future__ import annotations

import argparse

from cnnforge.compat.versions import PYTHON, supported, unsupported

#: the Pythons whose argparse keeps ``_actions`` (3.10 to 3.14 read)
ARGPARSE = ">=3.10,<3.15"


def parser_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every argument of ``parser``, in the order they were added (subcommands are one action)."""
    if not supported(PYTHON, ARGPARSE):
        raise unsupported(PYTHON, ARGPARSE, "listing a command's arguments")
    return list(parser._actions)


def subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of ``parser``'s subcommands, each once (an alias maps to the same parser)."""
    return [child for action in parser_actions(parser) if action.nargs == argparse.PARSER
            for child in dict.fromkeys(action.choices.values())]  # type: ignore[union-attr]
