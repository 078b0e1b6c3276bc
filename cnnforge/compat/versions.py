"""Which installed version a shim in :mod:`cnnforge.compat` was written for.

A shim that uses a private name asks :func:`supported` once; outside the range it takes the public
path, or raises :func:`unsupported`'s one-line error, which names the package, the installed version
and the range cnnforge knows.
"""
from __future__ import annotations

import functools
import importlib.metadata
import platform

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from cnnforge.errors import CnnforgeError

#: the "distribution" of the standard library (argparse): the interpreter itself
PYTHON = "python"


def installed(dist: str) -> Version:
    """The installed version of distribution ``dist`` (``python``: the interpreter's)."""
    return Version(platform.python_version() if dist == PYTHON else importlib.metadata.version(dist))


@functools.cache
def supported(dist: str, spec: str) -> bool:
    """Whether the installed ``dist`` is inside ``spec`` (``">=2.4,<2.15"``), pre-releases included."""
    return SpecifierSet(spec).contains(installed(dist), prereleases=True)


def unsupported(dist: str, spec: str, what: str) -> CnnforgeError:
    """The one-line error for a feature that needs a private name of ``dist`` outside the range it was written for."""
    return CnnforgeError(f"{what} relies on internals of {dist} {spec}, and {dist} {installed(dist)} is installed",
                         where=dist, hint=f"use {dist}{spec}, or report it to cnnforge")
