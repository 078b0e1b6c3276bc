"""Throwaway distributions for plugin tests: a package plus a ``*.dist-info`` on a temporary path.

Nothing is installed: putting the folder on PYTHONPATH of a subprocess is enough for
``importlib.metadata`` to see the distribution and its ``cnnforge.plugins`` entry points.
"""
from __future__ import annotations

import textwrap
from pathlib import Path


def write_distribution(site: Path, dist: str, version: str, module: str, source: str,
                       entry_point: str | None = None) -> Path:
    """``site/<module>/__init__.py`` with ``source`` and ``site/<dist>-<version>.dist-info``."""
    package = site / module
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    (info / "entry_points.txt").write_text(f"[cnnforge.plugins]\n{dist} = {entry_point or module}\n")
    (info / "RECORD").write_text("")
    return site
