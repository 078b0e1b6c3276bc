"""A progress bar for long data work (listing, decoding into a cache), shown on the main process only."""
from __future__ import annotations

import os
from typing import Any

#: items (files, images) of work after which the bar appears: short work stays silent
SHOW_FROM = 5000


def is_main_process() -> bool:
    """Rank 0 of a launch (or no launch at all): the one process that prints progress and choices."""
    return os.environ.get("RANK", "0") == "0"


class WorkProgress:
    """``advance`` as work is done; a rich bar appears once ``SHOW_FROM`` items are done and goes when closed."""

    def __init__(self, description: str, total: int | None = None) -> None:
        self.description, self.total, self.done = description, total, 0
        self.bar: Any = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is None and self.done >= SHOW_FROM and is_main_process():
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=self.total)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)

    def __enter__(self) -> WorkProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
