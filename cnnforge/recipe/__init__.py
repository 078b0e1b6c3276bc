"""Recipes: schema, reading (bounded YAML, ``base:``, overrides), packaged recipes by name, and checks.

``open_recipe`` is the one way in for commands and the Python API: it reads and checks, so no caller can
forget the registry checks that the schema alone cannot make.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from cnnforge.recipe.checks import check_recipe
from cnnforge.recipe.loading import load_recipe
from cnnforge.recipe.schema import Recipe


def open_recipe(recipe: str | os.PathLike[str] | Recipe | dict[str, Any], overrides: Iterable[str] = ()) -> Recipe:
    """Read (a path, a packaged recipe's name, a dict or a :class:`Recipe`), apply ``overrides`` and check."""
    return check_recipe(load_recipe(recipe, overrides))


__all__ = ["Recipe", "check_recipe", "load_recipe", "open_recipe"]
