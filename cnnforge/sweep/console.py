"""What ``cnnforge tune`` prints while trials run: cnnforge's own compact progress instead of Ray's trial tables.

On a terminal one live line is rewritten in place::

    trials 5/12 done, 2 running, 5 pending, 0 failed | 0:12 eta 0:09 | best val/acc 0.9611 (model.activation=elu ...)

Elsewhere (CI logs, ``| tee``) every finished trial prints one line with the same counts, so the whole
sweep of ``recipes/sweep_digits.yaml`` fits a screen. The ETA is for the whole sweep: the work still to do
(trials not finished, running ones counted by the epochs they reported) at the pace of this session.

Ray Tune reports to :class:`ConsoleCallback`, which holds no state of its own: Ray pickles the callbacks
into the experiment and a rerun restores that copy, so the callback forwards to whatever console the
driver installed with :func:`showing` for this ``fit``. Nothing here depends on the searcher or scheduler.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback

from cnnforge.rundir.table import format_duration

#: console modes: a live line (terminal), a line per finished trial (logs), nothing (--quiet)
MODES = ("live", "lines", "off")
REFRESH_S = 0.5

_active: SweepConsole | None = None


@contextlib.contextmanager
def showing(console: SweepConsole) -> Iterator[SweepConsole]:
    """Route Ray's trial events to ``console`` while the block runs (one ``Tuner.fit``)."""
    global _active
    _active = console
    try:
        yield console
    finally:
        _active = None
        console.close()


class ConsoleCallback(Callback):
    """Ray Tune's events, forwarded to the console of the running ``fit`` (see the module docstring)."""

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        if _active is not None and total_num_samples:
            _active.total = int(total_num_samples)  # Ray's count, whatever the searcher

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if _active is not None:
            _active.started()

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        if _active is not None:
            _active.result(trial, result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if _active is not None:
            _active.finished(trial, trials, error=None)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if _active is not None:
            _active.finished(trial, trials, error=_error_line(trial))

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if _active is not None:
            _active.tick(trials)


def _error_line(trial: Any) -> str:
    """The last line of the trial's ``error.txt`` (the exception), or ``failed`` when Ray wrote none."""
    path = Path(str(getattr(trial, "path", "") or ""), "error.txt")
    lines = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return lines[-1][:120] if lines else "failed"


class SweepConsole:
    """Counts, best trial and ETA of a sweep of ``total`` trials, printed as ``mode`` says."""

    def __init__(self, *, metric: str, mode: str, keys: Sequence[str], total: int, epochs: int,
                 console: str = "lines", stream: TextIO | None = None) -> None:
        self.metric, self.maximize, self.keys = metric, mode == "max", list(keys)
        self.total, self.epochs, self.mode = total, epochs, console
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()
        self.first_start: float | None = None
        self.values: dict[str, tuple[float, dict[str, Any]]] = {}  # trial id -> (last metric, config)
        self.progress: dict[str, float] = {}  # running trial id -> share of its epochs reported
        self.done_before: int | None = None  # trials finished by earlier sessions of a continued sweep
        self.counts = {"done": 0, "running": 0, "pending": total, "failed": 0}
        self.ended: dict[str, bool] = {}  # trial id -> failed; Ray updates a trial's status after the callbacks
        self._drawn = 0.0

    # ------------------------------------------------------------------------------------------ events
    def started(self) -> None:
        self.first_start = self.first_start or time.monotonic()

    def result(self, trial: Any, result: dict[str, Any]) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)):
            self.values[trial.trial_id] = (float(value), dict(trial.config))
        epochs = trial.config.get("train.epochs", self.epochs)
        self.progress[trial.trial_id] = min(1.0, float(result.get("epoch", 0)) / max(1, epochs))

    def finished(self, trial: Any, trials: list[Any], error: str | None) -> None:
        self.progress.pop(trial.trial_id, None)
        self.ended[trial.trial_id] = error is not None
        if error is not None:
            self.values.pop(trial.trial_id, None)
        self._count(trials)
        if self.mode == "lines":
            what = f"failed: {error}" if error else self._value_text(trial.trial_id)
            self._write(f"{self.counts['done'] + self.counts['failed']:>{len(str(self.total))}}/{self.total} "
                        f"{trial.trial_id} {what}  {_params(trial.config, self.keys)} | {self._best_text()} | "
                        f"{self._time_text()}\n")
        else:
            self.tick(trials, force=True)

    def tick(self, trials: list[Any], force: bool = False) -> None:
        """Redraw the live line (at most every REFRESH_S) from Ray's current trial list."""
        self._count(trials)
        if self.mode != "live" or (not force and time.monotonic() - self._drawn < REFRESH_S):
            return
        self._drawn = time.monotonic()
        c = self.counts
        line = (f"trials {c['done']}/{self.total} done, {c['running']} running, {c['pending']} pending, "
                f"{c['failed']} failed | {self._time_text()} | {self._best_text()}")  # a narrow terminal cuts the end
        width = shutil.get_terminal_size().columns - 1
        self._write(f"\r\x1b[K{line[:width]}")

    def close(self) -> None:
        """End the live line so what follows starts on a fresh one."""
        if self.mode == "live" and self._drawn:
            self._write("\n")

    # ------------------------------------------------------------------------------------------ text
    def _count(self, trials: list[Any]) -> None:
        status = [("ERROR" if self.ended[t.trial_id] else "TERMINATED") if t.trial_id in self.ended else str(t.status)
                  for t in trials]
        done, failed = status.count("TERMINATED"), status.count("ERROR")
        running = status.count("RUNNING") + status.count("PAUSED")
        if self.done_before is None:
            self.done_before = done + failed - len(self.ended)
        self.counts = {"done": done, "running": running, "failed": failed,
                       "pending": max(0, self.total - done - failed - running)}

    def best(self) -> tuple[float, dict[str, Any]] | None:
        """(metric, config) of the best trial so far (its last reported value)."""
        pick = max if self.maximize else min
        return pick(self.values.values(), key=lambda v: v[0], default=None)

    def eta_s(self) -> float | None:
        """Seconds until the whole sweep ends at this session's pace; None before any work is measured."""
        if self.first_start is None:
            return None
        finished = self.counts["done"] + self.counts["failed"]
        partial = sum(self.progress.values())
        work = finished - (self.done_before or 0) + partial
        if work <= 0:
            return None
        return (time.monotonic() - self.first_start) * (self.total - finished - partial) / work

    def _value_text(self, trial_id: str) -> str:
        value = self.values.get(trial_id)
        return f"{self.metric} {value[0]:.4f}" if value else f"{self.metric} -"

    def _best_text(self) -> str:
        best = self.best()
        return f"best {self.metric} {best[0]:.4f} ({_params(best[1], self.keys)})" if best else f"best {self.metric} -"

    def _time_text(self) -> str:
        eta = self.eta_s()
        return f"{format_duration(time.monotonic() - self.t0)} eta {'-' if eta is None else format_duration(eta)}"

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _params(config: dict[str, Any], keys: Sequence[str]) -> str:
    """``model.activation=elu optim.lr=0.01``: the swept values of a trial, numbers in short form."""
    return " ".join(f"{k}={config[k]:.4g}" if isinstance(config.get(k), float) else f"{k}={config.get(k)}"
                    for k in keys if k in config)


def console_mode(quiet: bool, verbose: bool, stream: TextIO) -> str:
    """``off`` with --quiet, a line per trial with --verbose (Ray's tables) or in logs, else the live line."""
    if quiet:
        return "off"
    return "live" if stream.isatty() and not verbose else "lines"
