"""``cnnforge resume RUN_DIR``: continue an interrupted run from its last checkpoint."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    r = sub.add_parser("resume", parents=[common], help="continue an interrupted run from its last checkpoint")
    r.add_argument("run_dir", help="run directory (holds recipe.yaml and checkpoints/)")
    r.add_argument("--force", action="store_true", help="resume even if the code or recipe changed")
    r.set_defaults(func=_resume)


def _resume(args: argparse.Namespace) -> int:
    from cnnforge.commands.run import report
    from cnnforge.training.run import resume

    return report(resume(args.run_dir, force=args.force, quiet=args.quiet), args.quiet)
