"""Print cnnforge's import graph between its top-level modules and packages as a Mermaid chart, one box per tier
of the layer contract in pyproject.toml (``python docs/import_graph.py``; docs/design.md embeds its output and
tests/test_design.py checks that the two agree). It uses grimp, the graph builder import-linter itself runs on."""
from __future__ import annotations

import sys
from pathlib import Path

import grimp
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def tiers() -> list[list[str]]:
    """The layer contract's tiers, top first, each a list of module names."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    return [[name.strip() for name in layer.replace("|", ":").split(":")] for layer in config["layers"]]


def edges() -> set[tuple[str, str]]:
    """(importer, imported) between cnnforge's top-level modules, leaving out type-checking imports as the contract
    does."""
    graph = grimp.build_graph("cnnforge", exclude_type_checking_imports=True)
    top = {module.split(".")[1] for module in graph.modules if "." in module}
    return {(a, b) for a in top for b in top if a != b
            and graph.direct_import_exists(importer=f"cnnforge.{a}", imported=f"cnnforge.{b}", as_packages=True)}


def mermaid() -> str:
    lines = ["flowchart TD"]
    for number, names in enumerate(tiers(), start=1):
        lines.append(f"  subgraph tier{number}[\"tier {number}\"]")
        lines.extend(f"    {name}" for name in names)
        lines.append("  end")
    lines.extend(f"  {a} --> {b}" for a, b in sorted(edges()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(mermaid() + "\n")
