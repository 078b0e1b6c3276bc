"""Console progress on the main process: a rich bar on a terminal, one plain line per epoch otherwise."""
from __future__ import annotations

import sys
import time
from typing import Any


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Epoch/step progress with loss, throughput and ETA; silent when ``enabled`` is False."""

    def __init__(self, *, enabled: bool, epochs: int, steps_per_epoch: int, quiet: bool = False) -> None:
        self.enabled = enabled and not quiet
        self.epochs, self.steps = epochs, steps_per_epoch
        self.live = self.enabled and sys.stdout.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._start = self._epoch_start = time.perf_counter()

    def start_epoch(self, epoch: int, first_step: int = 0) -> None:
        self._epoch_start = time.perf_counter()
        if not self.live:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        if self._bar is None:
            self._bar = Bar(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}  {task.fields[rate]} it/s"), TimeRemainingColumn(),
                            transient=True)
            self._bar.start()
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task("train", total=self.steps, completed=first_step,
                                        epoch=f"{epoch + 1}/{self.epochs}", loss="-", rate="-")

    def step(self, done: int, loss: float | None) -> None:
        if self.live and self._task is not None:
            rate = done / max(1e-9, time.perf_counter() - self._epoch_start)
            self._bar.update(self._task, completed=done, loss="-" if loss is None else f"{loss:.4f}", rate=f"{rate:.1f}")

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._start
        eta = elapsed / (epoch + 1) * (self.epochs - epoch - 1)
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        parts += [f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("train/", "val/")) and isinstance(v, float)]
        parts += [f"{row.get('train/samples_per_s', 0):.0f} img/s", f"eta {_fmt_time(eta)}"]
        self.print("  ".join(parts))

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
