"""Entry-point plugin discovery: group ``cnnforge.plugins``, lazy, once per process.

Like pytest/pluggy, every loaded entry point keeps the distribution it came from, so registries can
record provenance and ``cnnforge list plugins`` can show what was loaded and what failed.
``CNNFORGE_PLUGINS=none`` disables autoload; ``CNNFORGE_PLUGINS=a,b`` loads only those entry-point names.
"""
from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.metadata as md
import os
import signal
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

GROUP = "cnnforge.plugins"
ENV = "CNNFORGE_PLUGINS"
#: the plugins that live in this repository: they load first, so a third-party plugin can never take their names
FIRST_PARTY = ("cnnforge-timm", "cnnforge-torchvision", "cnnforge-example")
#: the modules whose import registers cnnforge's own entries (each light: no torch at import)
BUILTINS = ("cnnforge.builtins", "cnnforge.training.losses", "cnnforge.training.optimizers",
            "cnnforge.training.schedules", "cnnforge.callbacks")


@dataclass
class PluginInfo:
    """One entry point of the group and what happened when it was loaded."""

    name: str
    value: str
    package: str
    version: str
    error: str | None = None


_loading: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("cnnforge_loading", default=None)
_lock = threading.RLock()
_loaded: list[PluginInfo] | None = None


def _cnnforge_version() -> str:
    from cnnforge._version import __version__

    return __version__


@functools.lru_cache(maxsize=1)
def _top_level_owners() -> dict[str, list[str]]:
    return md.packages_distributions()


def distribution_of_module(module: str) -> tuple[str, str]:
    """(distribution, version) that owns ``module``; the plugin being loaded wins when there is one."""
    if module == "cnnforge" or module.startswith("cnnforge."):
        return "cnnforge", _cnnforge_version()
    current = _loading.get()
    if current is not None:
        return current
    top = module.split(".")[0]
    for dist in _top_level_owners().get(top, []):
        try:
            return dist, md.version(dist)
        except md.PackageNotFoundError:
            continue
    return (top or "__main__"), ""


def selected_entry_points(eps: Iterable[md.EntryPoint]) -> list[md.EntryPoint]:
    """The entry points ``CNNFORGE_PLUGINS`` lets in (plugin loading and packaged recipes agree)."""
    eps = list(eps)
    choice = os.environ.get(ENV, "").strip()
    if choice.lower() == "none":
        return []
    if not choice or choice.lower() == "all":
        return eps
    wanted = {w.strip() for w in choice.split(",") if w.strip()}
    return [ep for ep in eps if ep.name in wanted]


def disabled_plugins() -> list[PluginInfo]:
    """Installed entry points that ``CNNFORGE_PLUGINS`` leaves out (shown, never loaded)."""
    eps = list(md.entry_points(group=GROUP))
    chosen = {ep.name for ep in selected_entry_points(eps)}
    return [PluginInfo(ep.name, ep.value, *_distribution(ep)) for ep in sorted(eps, key=lambda ep: ep.name)
            if ep.name not in chosen]


def selection_hint() -> str | None:
    """What ``CNNFORGE_PLUGINS`` hides, for an unknown-name error; None when it hides nothing."""
    hidden = [p.name for p in disabled_plugins()]
    if not hidden:
        return None
    setting = f"{ENV}={os.environ.get(ENV, '').strip()}"
    return f"{setting} is set, so the installed plugins {', '.join(hidden)} are not loaded"


def _distribution(ep: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    return (dist.metadata["Name"], dist.version) if dist is not None else (ep.name, "")
class PluginFailure(Exception):
    """Plugin code raised (``SystemExit`` and a ``KeyboardInterrupt`` of its own included)."""


@contextmanager
def guarded() -> Iterator[None]:
    """Run plugin code so that it cannot end the program: whatever it raises becomes :class:`PluginFailure`.

    Only a real Ctrl-C still interrupts: while the code runs, a SIGINT handler notes that the user
    pressed it, which a ``raise KeyboardInterrupt`` or ``sys.exit()`` inside a plugin never does.
    """
    pressed: list[int] = []
    installed = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    if installed:
        def on_sigint(signum: int, frame: object) -> None:
            pressed.append(signum)
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except Exception:
        raise
    except BaseException as exc:
        if pressed or isinstance(exc, GeneratorExit):
            raise
        raise PluginFailure(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
    finally:
        if installed:  # None: a handler set outside Python; Python's own is the closest to it
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _load_one(ep: md.EntryPoint) -> PluginInfo:
    package, version = _distribution(ep)
    info = PluginInfo(ep.name, ep.value, package, version)
    token = _loading.set((package, version))
    try:
        with guarded():
            obj = ep.load()  # "module" imports it; "module:function" imports then calls it once
            if ep.attr:
                obj()
    except Exception as exc:  # a broken plugin must not take the others, or the program, down
        from cnnforge.errors import CnnforgeError

        detail = exc.one_line() if isinstance(exc, CnnforgeError) else f"{type(exc).__name__}: {exc}"
        info.error = " ".join(detail.removeprefix("PluginFailure: ").split())
        warnings.warn(f"cnnforge plugin {ep.name!r} from {package} {version} failed to load: {info.error}",
                      stacklevel=2)
    finally:
        _loading.reset(token)
    return info


def load_order(eps: list[md.EntryPoint]) -> list[md.EntryPoint]:
    """First-party plugins first, then the others by distribution and name: on a name clash the newcomer loses."""
    def key(ep: md.EntryPoint) -> tuple[bool, str, str]:
        package = _distribution(ep)[0]
        return package not in FIRST_PARTY, package, ep.name

    return sorted(eps, key=key)


def load_plugins() -> list[PluginInfo]:
    """Import the built-ins and every selected entry point once; return what was loaded."""
    global _loaded
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        _loaded = []  # set first: a plugin that looks a name up while loading must not recurse
        # cnnforge's own models, datasets, augmentations, losses, optimizers, schedules and callbacks register
        # on import; by name, so that the bottom layer (registry, plugins) has no static import of the layers above
        for module in BUILTINS:
            importlib.import_module(module)

        _loaded.extend(_load_one(ep) for ep in load_order(selected_entry_points(md.entry_points(group=GROUP))))
        return _loaded


def plugin_distributions() -> dict[str, str]:
    """{distribution: version} of the plugins loaded without error (recorded in run manifests)."""
    return {p.package: p.version for p in load_plugins() if p.error is None}
