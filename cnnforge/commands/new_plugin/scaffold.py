"""A new plugin distribution, written from the templates in ``templates/plugin`` beside this module.

The templates are ordinary files with ``$placeholders`` (:class:`string.Template`), and in their paths
``__package__`` becomes the import package and ``__model__`` the model's name, so what a new plugin looks
like can be read and changed without reading this code. The result has the same layout as
``plugins/cnnforge-example``: the recipe ships inside the package (``<package>/recipes/``), so once the
plugin is installed ``cnnforge run digits_<model>`` finds it by name from any folder.
"""
from __future__ import annotations

import keyword
import re
import string
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from cnnforge.errors import ConfigError

TEMPLATE_SUFFIX = ".tmpl"
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*$")


@dataclass(frozen=True)
class PluginNames:
    """Every name a plugin needs, derived from the one the user typed (``mynets`` or ``cnnforge-mynets``)."""

    dist: str  # cnnforge-mynets: the distribution, and the folder it is written to
    package: str  # cnnforge_mynets: the import package the entry point names
    short: str  # mynets: the entry-point name
    model: str  # mynets: the registered model (and its builder function)
    class_name: str  # Mynets: the nn.Module
    cnnforge_version: str

    @property
    def recipe(self) -> str:
        """The packaged recipe's name (its file's stem), ``<dataset>_<model>`` like cnnforge's own."""
        return f"digits_{self.model}"

    def path(self, template: str) -> str:
        """A template's relative path with its path placeholders filled."""
        return template.replace("__package__", self.package).replace("__model__", self.model)

    @classmethod
    def from_name(cls, name: str) -> PluginNames:
        from cnnforge._version import __version__

        short = name.removeprefix("cnnforge-").removeprefix("cnnforge_")
        if not _NAME.match(short):
            raise ConfigError(f"{name!r} is not a usable plugin name", where="new-plugin NAME",
                              hint="lower-case letters and digits, words joined by - or _, e.g. my-nets")
        model = short.replace("-", "_")
        if keyword.iskeyword(model):
            raise ConfigError(f"{model!r} is a Python keyword and cannot name the model's builder",
                              where="new-plugin NAME")
        return cls(dist=f"cnnforge-{short}", package=f"cnnforge_{model}", short=short, model=model,
                   class_name="".join(part.capitalize() for part in model.split("_")), cnnforge_version=__version__)


def _templates() -> list[tuple[str, str]]:
    """(relative path with placeholders, text) of every template file."""
    root = resources.files(__package__) / "templates" / "plugin"
    out: list[tuple[str, str]] = []

    def walk(node: object, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):  # type: ignore[attr-defined]
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(TEMPLATE_SUFFIX):
                out.append((prefix + child.name.removesuffix(TEMPLATE_SUFFIX), child.read_text(encoding="utf-8")))

    walk(root, "")
    return out


def new_plugin(name: str, parent: str | Path = ".") -> tuple[Path, list[Path]]:
    """Write the distribution for ``name`` into ``parent/<dist>``; returns (its folder, the files written).

    Refuses a name a registered model already has (installing the plugin would then fail on the
    clash) and an existing non-empty folder (cnnforge never overwrites a user's files).
    """
    from cnnforge import registry

    names = PluginNames.from_name(name)
    if names.model in registry.models.names():
        owner = registry.models.get(names.model).package
        raise ConfigError(f"a model {names.model!r} is already registered by {owner}", where="new-plugin NAME",
                          hint="choose another name")
    target = Path(parent) / names.dist
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError("already exists and is not empty; nothing was written", where=str(target),
                          hint="choose another --dir or NAME")
    values = {**asdict(names), "recipe": names.recipe}
    written = []
    for rel, text in _templates():
        path = target / names.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(string.Template(text).substitute(values), encoding="utf-8")
        written.append(path)
    return target, written
