"""One error type for everything a user can get wrong, printed by the CLI as one line.

The CLI turns a :class:`CnnforgeError` into ``cnnforge: error: <where>: <message>`` and exits with
its ``exit_code``; anything else is a bug and keeps its traceback under ``--debug``.
"""
from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator

#: Exit codes shared by the CLI and the tests.
EXIT_CONFIG = 2  # bad configuration or usage
EXIT_FAILURE = 1  # data, I/O and other runtime failures
EXIT_NAN = 3  # training stopped on a non-finite loss
#: stopped by train.signals (SIGTERM, SIGUSR1) after writing a checkpoint; the same command continues it
#: (sysexits' EX_TEMPFAIL: "a temporary failure; the user is invited to retry")
EXIT_PREEMPTED = 75


class CnnforgeError(Exception):
    """A user-facing failure: ``where`` names the file, key path or package at fault."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split())  # never more than one line


class ConfigError(CnnforgeError):
    """Bad recipe, override, registry name or command-line usage (exit code 2)."""

    exit_code = EXIT_CONFIG


class DataError(CnnforgeError):
    """Missing, truncated or corrupt data on disk (exit code 1)."""


class NonFiniteLossError(CnnforgeError):
    """Training met a NaN/inf loss with ``train.on_nan: stop`` (exit code 3)."""

    exit_code = EXIT_NAN


@contextlib.contextmanager
def recipe_source(source: str) -> Iterator[None]:
    """Name the recipe file once, for every ConfigError raised inside at a key path (``optim.head_lr``).

    Factories take their recipe section and know only the key; the caller, which holds the recipe,
    wraps them in this so the user still reads ``<file>: optim.head_lr: ...``.
    """
    try:
        yield
    except ConfigError as exc:
        if exc.where is None or exc.where.startswith(f"{source}:"):
            raise
        raise type(exc)(exc.message, where=f"{source}: {exc.where}", hint=exc.hint) from None


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str | None:
    """A 'did you mean ...?' hint listing the closest choices, or None when nothing is close."""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=n, cutoff=0.6)
    return f"did you mean {', '.join(close)}?" if close else None
