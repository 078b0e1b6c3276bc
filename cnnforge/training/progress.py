"""Console progress on the main process: a live rich bar on a terminal, plain lines otherwise.

CI logs and ``| tee`` files get one compact line per epoch and no control characters, and inside a long
epoch a step line every ``CNNFORGE_LOG_EVERY`` seconds (default 30; 0 turns them off), so a log never
stays silent for the ten minutes an epoch can take; a terminal (or a
Jupyter notebook) gets a transient bar with the step, the running loss, it/s and the ETA of the
whole run instead. ``--quiet`` silences both; ``--verbose`` (the ``cnnforge`` logger at DEBUG) adds the other
metrics and timings to the epoch line.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

from cnnforge.rundir.table import format_duration

#: how often the bar reads the running loss; reading it waits for the GPU, so not every step
REFRESH_S = 0.5
#: seconds between the step lines of a log (``CNNFORGE_LOG_EVERY`` overrides; 0: none)
LOG_EVERY_S = 30.0
LOG_EVERY_ENV = "CNNFORGE_LOG_EVERY"

#: metrics of the compact epoch line; --verbose shows every metric of the row
_BRIEF = ("train/loss", "val/loss", "val/acc")


def _format_value(key: str, value: float) -> str:
    if key == "lr":
        return f"{value:.3g}"
    if key.startswith("time/"):
        return f"{value:.2f}s"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def epoch_line(row: dict[str, Any], epochs: int, eta_s: float | None, *, verbose: bool = False) -> str:
    """``epoch 3/15  train/loss 0.4312  val/loss 0.3921  val/acc 0.9123  1234 img/s  eta 0:41``."""
    keys = [k for k in row if k not in ("epoch", "train/samples_per_s")] if verbose else [k for k in _BRIEF if k in row]
    parts = [f"epoch {row['epoch']}/{epochs}"]
    parts += [f"{k} {_format_value(k, row[k])}" for k in keys if isinstance(row[k], (int, float))]
    if "train/samples_per_s" in row:
        parts.append(f"{row['train/samples_per_s']:.0f} img/s")
    if eta_s is not None:
        parts.append(f"eta {format_duration(eta_s)}")
    return "  ".join(parts)


def log_every() -> float:
    """Seconds between a log's step lines, from ``CNNFORGE_LOG_EVERY`` (a malformed value is one line naming it)."""
    import math
    import os

    from cnnforge.errors import ConfigError

    raw = os.environ.get(LOG_EVERY_ENV)
    try:
        value = LOG_EVERY_S if raw is None else float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"must be a number of seconds (0: no step lines), got {raw!r}",
                          where=f"environment variable {LOG_EVERY_ENV}")
    return value


def _interactive() -> bool:
    """A real terminal or a notebook; ``TTY_INTERACTIVE=0`` turns the bar off (rich's switch)."""
    from rich.console import Console

    console = Console()
    return console.is_jupyter or (sys.stdout.isatty() and console.is_interactive)


class Progress:
    """Epoch and step progress of one run; everything is a no-op when ``enabled`` is False."""

    def __init__(self, *, enabled: bool, epochs: int, steps_per_epoch: int, quiet: bool = False,
                 verbose: bool | None = None) -> None:
        self.enabled = enabled and not quiet
        self.verbose = logging.getLogger("cnnforge").isEnabledFor(logging.DEBUG) if verbose is None else verbose
        self.epochs, self.steps = epochs, max(1, steps_per_epoch)
        self.live = self.enabled and _interactive()
        self.log_every = log_every() if self.enabled and not self.live else 0.0
        self._bar: Any = None
        self._task: Any = None
        self._start = self._epoch_start = self._last_refresh = time.perf_counter()
        self._origin: float | None = None  # position (in epochs) when this process started training
        self._epoch = self._first_step = 0

    def _position(self, epoch: int, step: int) -> float:
        return epoch + step / self.steps

    def _eta(self, position: float) -> float | None:
        if self._origin is None or position <= self._origin:
            return None
        elapsed = time.perf_counter() - self._start
        return elapsed / (position - self._origin) * (self.epochs - position)

    def start_epoch(self, epoch: int, first_step: int = 0) -> None:
        """``first_step`` > 0 when a resumed run continues inside an epoch."""
        self._epoch, self._first_step = epoch, first_step
        self._epoch_start = self._last_refresh = time.perf_counter()
        if self._origin is None:
            self._origin = self._position(epoch, first_step)
        if not self.live:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as Bar

        if self._bar is None:
            self._bar = Bar(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} it/s"),
                            TextColumn("eta {task.fields[eta]}"), transient=True)
            self._bar.start()
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task("train", total=self.steps, completed=first_step,
                                        epoch=f"{epoch + 1}/{self.epochs}", loss="…", rate="…", eta="…")

    def due(self, done: int) -> bool:
        """Whether the bar wants a refresh after ``done`` batches: at most every ``REFRESH_S``, and at the epoch's end.

        The caller then reads its device values once and passes them to :meth:`update`; between
        refreshes nothing is read, so the training step never waits for the GPU on the bar's account.
        """
        if self.log_every:  # a log: a step line now and then inside the epoch (its end has the epoch line)
            return done < self.steps and time.perf_counter() - self._last_refresh >= self.log_every
        if not self.live or self._task is None:
            return False
        return done >= self.steps or time.perf_counter() - self._last_refresh >= REFRESH_S

    def update(self, done: int, sums: list[float]) -> None:
        """Show ``done`` batches and the running loss from the epoch's ``sums`` (loss × n, correct, n)."""
        now = self._last_refresh = time.perf_counter()
        fields: dict[str, str] = {"rate": f"{(done - self._first_step) / max(1e-9, now - self._epoch_start):.1f}"}
        if sums[2] > 0:
            fields["loss"] = f"{sums[0] / sums[2]:.4f}"
        eta = self._eta(self._position(self._epoch, done))
        if eta is not None:
            fields["eta"] = format_duration(eta)
        if self._bar is None:
            self.print("  ".join([f"epoch {self._epoch + 1}/{self.epochs}", f"step {done}/{self.steps}",
                                  *([f"loss {fields['loss']}"] if "loss" in fields else []), f"{fields['rate']} it/s",
                                  *([f"eta {fields['eta']}"] if "eta" in fields else [])]))
        else:
            self._bar.update(self._task, completed=done, **fields)

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """Print the epoch's line (above the bar on a terminal)."""
        if self.enabled:
            self.print(epoch_line(row, self.epochs, self._eta(epoch + 1.0), verbose=self.verbose))

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar, self._task = None, None
