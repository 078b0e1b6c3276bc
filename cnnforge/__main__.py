"""``python -m cnnforge`` and ``accelerate launch cnnforge ...`` (which runs this file as a script).

Run as a script, Python puts this folder first on ``sys.path``; put its parent there instead so
the package imports absolutely and nothing in here shadows a top-level module.
"""
import os
import sys

if __package__ in (None, ""):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))

from cnnforge.cli import run_program  # noqa: E402

if __name__ == "__main__":
    run_program()
