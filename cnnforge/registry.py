"""Name -> builder registries (models, datasets, augmentations, losses, optimizers, schedules, callbacks).

A registry is a plain dict behind four operations (register, get, names, entries). Every entry
remembers which installed distribution registered it, so `cnnforge list` can say where a name
comes from and a name clash can name both packages. Entry-point plugins are loaded on the first
lookup (see :mod:`cnnforge.plugins`), never at import time.
"""
from __future__ import annotations

import fnmatch
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from cnnforge.errors import ConfigError, did_you_mean

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry:
    """One registered builder and where it came from."""

    name: str
    fn: Callable[..., Any]
    package: str  # distribution name, "cnnforge" for built-ins
    version: str
    meta: Mapping[str, Any] = field(default_factory=dict)  # what a dataset declares without its files (shape, classes)

    @property
    def summary(self) -> str:
        """The docstring's first paragraph on one line (a long one wraps in the source)."""
        paragraph = (inspect.getdoc(self.fn) or "").strip().split("\n\n")[0]
        return " ".join(line.strip() for line in paragraph.splitlines())


def _provider_of(fn: Callable[..., Any]) -> tuple[str, str]:
    """The distribution (name, version) whose files define ``fn``."""
    from cnnforge.plugins import distribution_of_module

    return distribution_of_module(getattr(fn, "__module__", "") or "")


class Registry:
    """Builders of one kind (``models``, ``datasets``, ``losses`` ...).

    ``context`` names the keyword arguments cnnforge passes to every builder of the kind itself (a
    model's class count, a dataset's root ...); a builder receives those it declares, and the recipe
    checks, the JSON Schema and the loaders all ask the registry for them.
    """

    def __init__(self, kind: str, context: tuple[str, ...] = ()) -> None:
        self.kind, self.context = kind, context
        self.noun = kind.removesuffix("es") if kind.endswith("sses") else kind[:-1]  # "loss", "model"
        self._entries: dict[str, Entry] = {}
        self._prefixes: dict[str, Entry] = {}  # "timm/" -> resolver for open-ended name families

    def register(self, name: str, fn: Callable[..., Any], *, prefix: bool = False,
                 meta: Mapping[str, Any] | None = None) -> None:
        """Add ``fn`` under ``name``; re-registering from the same module (a reload) replaces it.

        With ``prefix=True`` the entry serves every ``name<anything>`` (bridges such as ``timm/``):
        it is then called with the rest of the name as its first positional argument. Such a family's
        builder may carry ``fn.list_names()`` (the names, for ``cnnforge list``) and ``fn.check_name(rest)``
        (a ValueError saying what is wrong with the name: :meth:`check_name`).
        """
        package, version = _provider_of(fn)
        table = self._prefixes if prefix else self._entries
        old = table.get(name)
        if old is not None and (old.package != package or old.fn.__module__ != fn.__module__) and old.fn is not fn:
            raise ConfigError(
                f"{self.noun} {name!r} is registered twice: by {old.package} {old.version} "
                f"({old.fn.__module__}) and by {package} {version} ({fn.__module__})",
                where=f"cnnforge.plugins/{package}",
            )
        table[name] = Entry(name, fn, package, version, dict(meta or {}))

    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name is a ConfigError listing close matches."""
        from cnnforge.plugins import load_plugins, selection_hint

        load_plugins()
        if name in self._entries:
            return self._entries[name]
        family = self._family(name)
        if family is not None:  # a bridge builder gets the rest of the name ("resnet18" of "timm/resnet18") first
            return Entry(name, functools.partial(family.fn, name[len(family.name):]), family.package, family.version)
        hint = did_you_mean(name, list(self._entries) + [p + "*" for p in self._prefixes])
        hints = [hint or f"see `cnnforge list {self.kind}`", selection_hint()]
        raise ConfigError(f"unknown {self.noun} {name!r}", hint="; ".join(h for h in hints if h))

    def check_name(self, name: str) -> None:
        """``get``, and a name family's own verdict on the name (``fn.check_name``: ``timm/resnt18`` is refused).

        A family asks its library (timm, torchvision), which imports torch: ``get`` leaves this to the callers
        that may import it (``cnnforge check`` with its data probe, the sweep driver), so the light recipe checks
        stay light."""
        self.get(name)
        family = None if name in self._entries else self._family(name)
        check = getattr(family.fn, "check_name", None) if family is not None else None
        if family is None or check is None:
            return
        try:
            check(name[len(family.name):])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _family(self, name: str) -> Entry | None:
        """The name family (its entry is named by its prefix) that serves ``name``."""
        return next((e for p, e in self._prefixes.items() if name.startswith(p) and len(name) > len(p)), None)

    def names(self) -> list[str]:
        from cnnforge.plugins import load_plugins

        load_plugins()
        return sorted(self._entries) + sorted(p + "*" for p in self._prefixes)

    def entries(self, pattern: str | None = None, *, expand: bool = False) -> list[Entry]:
        """Entries whose names match the glob ``pattern`` (all without one), like timm's ``list_models(filter)``.

        A name family (``timm/*``) is one entry unless ``expand`` is set or the pattern reaches into
        it (``timm/resnet*``); then its builder lists the names (``fn.list_names()``).
        """
        from cnnforge.plugins import load_plugins

        load_plugins()
        families = [Entry(p + "*", e.fn, e.package, e.version) for p, e in self._prefixes.items()]
        rows = [*self._entries.values(), *families]
        listed = [row for e in sorted(rows, key=lambda e: e.name) for row in _expand(e, pattern, expand)]
        return [e for e in listed if pattern is None or fnmatch.fnmatchcase(e.name, pattern)]

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except ConfigError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def decorator(self, name_or_fn: Any = None, *, prefix: bool = False, meta: Mapping[str, Any] | None = None) -> Any:
        """``@register_x``, ``@register_x("name")`` and ``@register_x(name="name")`` all work."""
        if callable(name_or_fn):
            self.register(name_or_fn.__name__, name_or_fn, prefix=prefix)
            return name_or_fn

        def wrap(fn: F) -> F:
            self.register(name_or_fn or fn.__name__, fn, prefix=prefix, meta=meta)
            return fn

        return wrap


def _expand(entry: Entry, pattern: str | None, expand: bool) -> list[Entry]:
    """A family entry (``timm/*``) as the names its builder lists (in its order), when asked for; else itself."""
    lister = getattr(entry.fn, "list_names", None)
    prefix = entry.name[:-1]
    if not entry.name.endswith("*") or lister is None or not (expand or (pattern or "").startswith(prefix)):
        return [entry]
    return [Entry(prefix + name, entry.fn, entry.package, entry.version) for name in lister()]


models = Registry("models", context=("num_classes", "in_channels", "image_size"))
datasets = Registry("datasets", context=("root", "split", "download"))
augmentations = Registry("augmentations")
losses = Registry("losses", context=("weight", "label_smoothing"))
optimizers = Registry("optimizers", context=("params", "lr", "weight_decay"))
schedules = Registry("schedules", context=("optimizer", "epochs", "steps_per_epoch"))
callbacks = Registry("callbacks")
REGISTRIES = {"models": models, "datasets": datasets, "augmentations": augmentations, "losses": losses,
              "optimizers": optimizers, "schedules": schedules, "callbacks": callbacks}


@overload
def register_model(name_or_fn: F) -> F: ...
@overload
def register_model(name_or_fn: str | None = None, *, prefix: bool = False) -> Callable[[F], F]: ...
def register_model(name_or_fn: Any = None, *, prefix: bool = False) -> Any:
    """Register a model builder ``fn(*, num_classes, in_channels, **params) -> nn.Module``."""
    return models.decorator(name_or_fn, prefix=prefix)


#: a dataset's image shape (H, W, C) or class count, or a function of its recipe params giving it (None: unknown)
Declared = tuple[int, int, int] | int | Callable[..., Any] | None


@overload
def register_dataset(name_or_fn: F) -> F: ...
@overload
def register_dataset(name_or_fn: str | None = None, *, prefix: bool = False, shape: Declared = None,
                     num_classes: Declared = None) -> Callable[[F], F]: ...
def register_dataset(name_or_fn: Any = None, *, prefix: bool = False, shape: Declared = None,
                     num_classes: Declared = None) -> Any:
    """Register a dataset factory ``fn(*, root, split, **params) -> Dataset`` of (HxWxC uint8, label).

    ``shape`` (H, W, C) and ``num_classes``, or functions of the dataset's params returning them, let
    ``cnnforge show`` describe a model when the files are not there.
    """
    return datasets.decorator(name_or_fn, prefix=prefix, meta={"shape": shape, "num_classes": num_classes})


def declared(entry: Entry, key: str, params: Mapping[str, Any]) -> Any:
    """What a dataset's registration declares for ``key`` given the recipe's params (None: not declared)."""
    value = entry.meta.get(key)
    return value(**params) if callable(value) else value


@overload
def register_augmentation(name_or_fn: F) -> F: ...
@overload
def register_augmentation(name_or_fn: str | None = None, *, prefix: bool = False) -> Callable[[F], F]: ...
def register_augmentation(name_or_fn: Any = None, *, prefix: bool = False) -> Any:
    """Register an augmentation ``fn(**params)`` returning an albumentations transform."""
    return augmentations.decorator(name_or_fn, prefix=prefix)


@overload
def register_loss(name_or_fn: F) -> F: ...
@overload
def register_loss(name_or_fn: str | None = None, *, prefix: bool = False) -> Callable[[F], F]: ...
def register_loss(name_or_fn: Any = None, *, prefix: bool = False) -> Any:
    """Register a loss ``fn(*, weight=None, label_smoothing=0.0, **params)`` returning ``loss(logits, target)``.

    ``weight`` is a float tensor of per-class weights on the device (or None); ``target`` is either class
    indices (N,) or class probabilities (N, C) (mixup, cutmix, distillation): a loss must take both.
    """
    return losses.decorator(name_or_fn, prefix=prefix)


@overload
def register_optimizer(name_or_fn: F) -> F: ...
@overload
def register_optimizer(name_or_fn: str | None = None, *, prefix: bool = False) -> Callable[[F], F]: ...
def register_optimizer(name_or_fn: Any = None, *, prefix: bool = False) -> Any:
    """Register an optimizer ``fn(params, *, lr, weight_decay, **params) -> torch.optim.Optimizer``.

    ``params`` are cnnforge's parameter groups (``optim.head_lr``, ``optim.bias_lr_mult``), each of which
    may carry its own ``lr`` and ``weight_decay``: pass them to the optimizer as they are.
    """
    return optimizers.decorator(name_or_fn, prefix=prefix)


@overload
def register_schedule(name_or_fn: F) -> F: ...
@overload
def register_schedule(name_or_fn: str | None = None, *, prefix: bool = False) -> Callable[[F], F]: ...
def register_schedule(name_or_fn: Any = None, *, prefix: bool = False) -> Any:
    """Register an LR schedule ``fn(optimizer, *, epochs, steps_per_epoch, **params)`` returning a torch
    ``LRScheduler`` that the trainer steps after every optimizer step (so a mid-epoch resume is exact)."""
    return schedules.decorator(name_or_fn, prefix=prefix)


@overload
def register_callback(name_or_fn: F) -> F: ...
@overload
def register_callback(name_or_fn: str | None = None, *, prefix: bool = False) -> Callable[[F], F]: ...
def register_callback(name_or_fn: Any = None, *, prefix: bool = False) -> Any:
    """Register a callback: a ``cnnforge.training.callbacks.Callback`` subclass (or a function returning one)
    whose keyword arguments are the recipe's ``callbacks: [{name, ...}]`` params."""
    return callbacks.decorator(name_or_fn, prefix=prefix)


def signature_target(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What holds a builder's parameters and their type hints: a class's ``__init__``, a partial's function."""
    fn = fn.func if isinstance(fn, functools.partial) else fn
    return fn.__init__ if isinstance(fn, type) else fn


def builder_kwargs(entry: Entry, params: dict[str, Any], *, context: dict[str, Any], where: str,
                   known: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword arguments for a builder: validated recipe ``params`` plus the ``context`` it declares.

    Params are checked against the builder's signature and type hints with pydantic, so a typo or a
    wrong type is a ConfigError at ``where.<param>`` before anything heavy (torch, data) is touched.
    The context (num_classes, in_channels, image_size, root, split ...) is passed only when declared.
    ``known`` are the section's own keys (``optim.head_lr``), offered with the builder's params when a key is mistyped.
    """
    sig = inspect.signature(entry.fn)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    accepted = {n: p for n, p in sig.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    options = [n for n in accepted if n not in context]
    for key in params:
        if key not in accepted and not takes_any:
            hint = did_you_mean(key, [*options, *known]) or f"{entry.name} accepts: {', '.join(options) or 'no params'}"
            raise ConfigError(f"unknown parameter of {entry.name!r}", where=f"{where}.{key}", hint=hint)
    for key, param in accepted.items():
        if param.default is param.empty and key not in params and key not in context:
            raise ConfigError(f"required parameter of {entry.name!r} is missing", where=f"{where}.{key}")
    checked = _validate_types(entry, {k: v for k, v in params.items() if k in accepted}, accepted, where)
    kwargs = {k: v for k, v in context.items() if takes_any or k in accepted}
    kwargs.update(params)
    kwargs.update(checked)
    return kwargs


def call_builder(entry: Entry, kwargs: dict[str, Any], *, where: str) -> Any:
    """Call ``entry`` with ``kwargs``; a failure inside it names the package that registered it.

    Builders say "cannot" (an image too small, a file missing) with ValueError, which becomes a
    configuration error; anything else is reported as a failure of the providing package.
    """
    from cnnforge.errors import CnnforgeError
    from cnnforge.plugins import PluginFailure, guarded

    try:
        with guarded():  # a builder calling sys.exit() must not end the program with its exit code
            return entry.fn(**kwargs)
    except CnnforgeError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc), where=f"{where} ({entry.name} from {entry.package})") from None
    except PluginFailure as exc:
        raise CnnforgeError(f"{entry.name!r} failed: {exc}",
                            where=f"{where} ({entry.package} {entry.version})") from exc
    except Exception as exc:
        raise CnnforgeError(f"{entry.name!r} failed: {type(exc).__name__}: {exc}",
                            where=f"{where} ({entry.package} {entry.version})") from exc


def _validate_types(entry: Entry, params: dict[str, Any], accepted: dict[str, inspect.Parameter],
                    where: str) -> dict[str, Any]:
    import typing

    from pydantic import ConfigDict, ValidationError, create_model

    try:
        hints = typing.get_type_hints(signature_target(entry.fn), include_extras=True)
    except Exception:  # unresolvable annotations: nothing to check against
        return params
    fields = {k: (hints[k], ...) for k in params if k in hints}
    if not fields:
        return params
    model = create_model(f"{entry.name}_params", __config__=ConfigDict(arbitrary_types_allowed=True), **fields)
    try:
        validated = model(**{k: params[k] for k in fields})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(err["msg"], where=f"{where}.{key}", hint=_choice_hint(err,
                                                                                params.get(err["loc"][0]))) from None
    return {**params, **{k: getattr(validated, k) for k in fields}}


def _choice_hint(err: dict[str, Any], value: Any) -> str | None:
    expected = (err.get("ctx") or {}).get("expected", "")
    choices = [c.strip(" '") for c in str(expected).replace(" or ", ",").split(",") if c.strip(" '")]
    return did_you_mean(str(value), choices) if choices and isinstance(value, str) else None


__all__ = [
    "Entry", "Registry", "models", "datasets", "augmentations", "REGISTRIES",
    "losses", "optimizers", "schedules", "callbacks", "register_model", "register_dataset", "register_augmentation",
    "register_loss", "register_optimizer", "register_schedule", "register_callback", "builder_kwargs",
    "call_builder", "declared", "signature_target",
]
