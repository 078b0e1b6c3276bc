"""Recipes shipped inside packages, found by name: ``cnnforge run digits_convnet`` from any folder.

cnnforge's own recipes live in ``cnnforge/recipes/`` (the repository's ``recipes/`` is a link to it, so
there is one copy). A plugin ships recipes the same way: a ``recipes/`` folder of ``*.yaml`` inside the
top-level package its ``cnnforge.plugins`` entry point names. The folders are located without importing
the plugins (``importlib.util.find_spec``), so listing recipes stays as light as ``--help``. A path that
exists always wins over a name, the way ultralytics resolves ``yolo train data=coco8.yaml``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cnnforge.errors import ConfigError, did_you_mean
from cnnforge.plugins import plugin_entry_points, selected_entry_points

SUFFIX = ".yaml"


@dataclass(frozen=True)
class PackagedRecipe:
    """One recipe file inside an installed package."""

    name: str
    package: str
    path: Path

    @property
    def summary(self) -> str:
        """The recipe's first comment line: what it trains, in the author's words."""
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
            if line.strip():
                break
        return ""


def _folder_of(package: str) -> Path | None:
    """``<package>/recipes`` on disk, without importing ``package``."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "recipes"
        if folder.is_dir():
            return folder
    return None


def _sources() -> list[tuple[str, Path]]:
    """(distribution, recipe folder) for cnnforge, then each selected plugin, in entry-point order."""
    sources = [("cnnforge", Path(__file__).parents[1] / "recipes")]
    for ep in sorted(selected_entry_points(plugin_entry_points()), key=lambda ep: ep.name):
        dist = getattr(ep, "dist", None)
        package = dist.metadata["Name"] if dist is not None else ep.name
        folder = _folder_of(ep.module.split(".")[0])
        if folder is not None and all(folder != f for _, f in sources):
            sources.append((package, folder))
    return sources


def packaged_recipes() -> list[PackagedRecipe]:
    """Every packaged recipe, cnnforge's first; a name shipped twice is kept once per package."""
    return [PackagedRecipe(path.stem, package, path)
            for package, folder in _sources() for path in sorted(folder.glob(f"*{SUFFIX}"))]


def find_recipe(name: str) -> PackagedRecipe:
    """The packaged recipe called ``name`` (``.yaml`` optional); an error with close names otherwise."""
    stem = name.removesuffix(SUFFIX)
    recipes = packaged_recipes()
    matches = [r for r in recipes if r.name == stem]
    if len(matches) > 1:
        owners = " and ".join(r.package for r in matches)
        raise ConfigError(f"recipe {stem!r} is shipped by both {owners}", where=name,
                          hint="copy the one you want with `cnnforge recipes copy` and run the file")
    if not matches:
        hint = did_you_mean(stem, [r.name for r in recipes]) or "`cnnforge list recipes` shows the packaged ones"
        raise ConfigError("no such recipe file or packaged recipe", where=name, hint=hint)
    return matches[0]


def resolve_recipe(arg: str | os.PathLike[str]) -> Path:
    """``arg`` as a path when it is a file or looks like one, else the packaged recipe of that name.

    A folder is never a recipe: ``cnnforge run digits_convnet train.out_dir=.`` writes ``./digits_convnet/``,
    and running the same command again must still find the packaged recipe, not that folder.
    """
    path = Path(arg)
    if len(path.parts) == 1 and not path.is_file():
        try:
            return find_recipe(str(arg)).path
        except ConfigError:
            if not path.is_dir():
                raise
    if path.is_dir():
        raise ConfigError("is a folder, not a recipe file", where=str(path),
                          hint="give the recipe's .yaml file, or a packaged recipe's name (`cnnforge list recipes`)")
    if not path.exists() and path.suffix == SUFFIX:  # recipes/x.yaml outside the checkout: the packaged x
        packaged = [r.name for r in packaged_recipes() if r.name == path.stem]
        if packaged:
            raise ConfigError("no such recipe file", where=str(path),
                              hint=f"the packaged recipe of that name runs from any folder as `{path.stem}`")
    return path


def copy_recipe(name: str, dst: str | os.PathLike[str] | None = None) -> Path:
    """Write an editable copy of a packaged recipe; never overwrites (into a folder: ``<folder>/<name>.yaml``)."""
    recipe = find_recipe(name)
    target = Path(dst) if dst is not None else Path(recipe.path.name)
    if target.is_dir():
        target = target / recipe.path.name
    try:
        with open(target, "x", encoding="utf-8") as out, open(recipe.path, encoding="utf-8") as src:
            shutil.copyfileobj(src, out)
    except FileExistsError:
        raise ConfigError("already exists; not overwritten", where=str(target),
                          hint="choose another destination or remove the file") from None
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", where=str(target)) from None
    return target
