"""``cnnforge runs [DIR]``: the run directories under ``runs/`` as a table, newest first (``--json`` for scripts)."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("runs", parents=[common], help="list run directories: status, epochs, best and test metrics",
                       description="List the run directories under DIR (default runs/), newest first; an interrupted "
                                   "run shows the command that continues it.")
    p.add_argument("dir", nargs="?", default="runs", help="folder to search (default: runs)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_runs)


def _runs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnforge.errors import ConfigError
    from cnnforge.rundir.table import as_json, list_runs

    if not Path(args.dir).is_dir():
        raise ConfigError("no such folder", where=args.dir, hint="give the train.out_dir of your runs")
    rows = list_runs(args.dir)
    if args.json:
        print(as_json(rows))
    elif not rows:
        print(f"no run directories under {args.dir}")
    else:
        _print_table(rows)
    return 0


def _print_table(rows: list[Any]) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    from cnnforge.rundir.table import duration

    colours = {"finished": "green", "failed": "red", "interrupted": "yellow"}
    table = Table(box=None, header_style="bold")
    numbers = ("epochs", "best", "test/acc", "test/bal_acc", "test/macro_f1", "duration")
    trials = any(r.trial for r in rows)  # sweep trials: their id and swept values
    for column in ("name", "id", *(("trial",) if trials else ()), "status", *numbers):
        table.add_column(column, no_wrap=True, justify="right" if column in numbers else "left")
    notes = []
    for r in rows:
        epochs = f"{r.epochs}/{r.max_epochs}" if r.max_epochs else str(r.epochs)
        if r.stopped not in (None, "epochs"):
            epochs += f" ({r.stopped})"
        best = f"{r.best_metric} {r.best_value:.4f}" if r.best_value is not None else "-"
        tests = [f"{v:.4f}" if v is not None else "-" for v in (r.test_acc, r.test_balanced_acc, r.test_macro_f1)]
        trial = [" ".join([r.trial or "-", *(f"{k}={v}" for k, v in (r.swept or {}).items())])] if trials else []
        table.add_row(r.name, r.id, *trial, f"[{colours[r.status]}]{r.status}[/]", epochs, best, *tests,
                      duration(r.duration_s))
        if r.resume:
            notes.append(f"{r.name}/{r.id}: {r.resume}")
        elif r.error:
            notes.append(f"{r.name}/{r.id}: {r.error}")
    console = Console(width=None if sys.stdout.isatty() else 240)  # a pipe gets whole lines, not 80 columns
    console.print(table)
    for note in notes:
        console.print(note, highlight=False, markup=False)
