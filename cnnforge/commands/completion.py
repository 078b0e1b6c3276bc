"""``cnnforge completion SHELL``: a tab-completion script for bash, zsh or tcsh.

shtab writes the script from the argparse parser itself, so every command, option and ``choices``
list completes without cnnforge keeping a second description of its CLI, and completing costs the
shell nothing at run time (no Python start per <TAB>). Arguments that name recipes complete YAML
files, run directories and data folders complete directories, images and outputs complete files.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from cnnforge.atomic_write import atomic_write_text
from cnnforge.compat.argparse_internals import parser_actions, subparsers
from cnnforge.errors import CnnforgeError

SHELLS = ("bash", "zsh", "tcsh")

#: argument dests, across all commands, that name recipes, folders or other files
RECIPE_DESTS = {"recipe"}
DIR_DESTS = {"run_dir", "dir", "src", "dst"}
FILE_DESTS = {"out", "image", "images"}

_YAML_BASH = """
_cnnforge_compgen_yaml() {
  compgen -d -- "$1"
  compgen -f -X '!*?.yaml' -- "$1"
  compgen -f -X '!*?.yml' -- "$1"
}
"""
RECIPE_FILE = {"bash": "_cnnforge_compgen_yaml", "zsh": "_files -g '*.(yaml|yml)'", "tcsh": "f:*.{yaml,yml}"}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "completion", parents=[common], help="print a shell tab-completion script",
        description="Print a tab-completion script for SHELL on stdout.",
        epilog="cnnforge completion SHELL --install writes it where the shell finds it; by hand:\n"
               "bash: mkdir -p ~/.local/share/bash-completion/completions && "
               "cnnforge completion bash > ~/.local/share/bash-completion/completions/cnnforge\n"
               "zsh:  cnnforge completion zsh > ~/.zfunc/_cnnforge  (with fpath+=(~/.zfunc) before compinit)\n"
               "tcsh: cnnforge completion tcsh > ~/.cnnforge.completion.csh; echo 'source ~/.cnnforge.completion.csh' "
               ">> ~/.tcshrc",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=SHELLS)
    p.add_argument("--install", action="store_true",
                   help="write the script where the shell looks for it (creating the folders) instead of printing it")
    p.set_defaults(func=_completion)


def install_path(shell: str) -> Path:
    """Where each shell's user set-up finds a completion script (bash-completion's own lookup for bash)."""
    home = Path.home()
    if shell == "bash":
        data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
        base = Path(os.environ.get("BASH_COMPLETION_USER_DIR") or data / "bash-completion")
        return base / "completions" / "cnnforge"
    return home / ".zfunc" / "_cnnforge" if shell == "zsh" else home / ".cnnforge.completion.csh"


#: what the user still has to do once the script is in place
NEXT_STEP = {"bash": "open a new shell (bash-completion loads it on first use)",
             "zsh": "add `fpath+=(~/.zfunc)` before `compinit` in ~/.zshrc and open a new shell",
             "tcsh": "add `source ~/.cnnforge.completion.csh` to ~/.tcshrc"}


def mark_paths(parser: argparse.ArgumentParser, shtab: Any) -> None:
    """Tell shtab which arguments, in every subcommand, complete recipe files or directories."""
    for child in subparsers(parser):
        mark_paths(child, shtab)
    for action in parser_actions(parser):
        if action.dest in RECIPE_DESTS:
            action.complete = RECIPE_FILE  # type: ignore[attr-defined]
        elif action.dest in DIR_DESTS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif action.dest in FILE_DESTS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]


def _completion(args: argparse.Namespace) -> int:
    import shtab

    parser = args.root_parser
    mark_paths(parser, shtab)
    script = shtab.complete(parser, shell=args.shell, preamble={"bash": _YAML_BASH})
    if not args.install:
        sys.stdout.write(script)
        return 0
    path = install_path(args.shell)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, script)
    except OSError as exc:
        raise CnnforgeError(f"cannot write the completion script: {exc.strerror}", where=str(path)) from None
    print(f"wrote {path}; {NEXT_STEP[args.shell]}")
    return 0
