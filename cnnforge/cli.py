"""The ``cnnforge`` command: one small module per command group under :mod:`cnnforge.commands`.

Nothing heavy is imported here: each command imports torch, Ray or wandb inside its handler, so
``cnnforge --help`` and ``cnnforge list`` start fast. Every user error ends as one line on stderr,
``cnnforge: error: <where>: <what> (<hint>)``, with exit code 2 for configuration and usage, 1
otherwise; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from cnnforge.errors import EXIT_CONFIG, EXIT_FAILURE, CnnforgeError, ConfigError
from cnnforge.launcher_env import check_launcher_env, env_int
from cnnforge.training.progress import log_every

PROG = "cnnforge"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that takes options and ``KEY=VALUE`` overrides in any order and reports usage errors as
    cnnforge's one line with exit code 2.

    A command's parser parses intermixed (``cnnforge run R --quiet train.epochs=1``); the top-level parser
    cannot (argparse refuses intermixed parsing with subcommands) and does not need to.
    """

    _intermixing = False
    _has_commands = False

    def add_subparsers(self, **kwargs: Any) -> Any:
        self._has_commands = True
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing or self._has_commands:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back here twice
        try:
            namespace, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        if extras:  # here, where the command is known; an unknown option also strands the overrides after it
            self.error(f"unrecognized arguments: {' '.join([e for e in extras if e.startswith('-')] or extras)}")
        return namespace, extras

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix(PROG).strip()
        where = f"{command}: " if command else ""
        sys.stderr.write(f"{PROG}: error: {where}{message} (see `{self.prog} --help`)\n")
        sys.exit(EXIT_CONFIG)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="only errors and the result")
    group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="more detail")
    return common


def build_parser() -> ArgumentParser:
    from cnnforge._version import __version__
    from cnnforge.commands import COMMANDS

    common = _common()
    parser = ArgumentParser(prog=PROG, parents=[common], description="Train image classifiers from YAML recipes.",
                            epilog="Recipes take dotted overrides: cnnforge run R.yaml optim.lr=0.01 train.epochs=2")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name in COMMANDS:
        importlib.import_module(f"cnnforge.commands.{name}").add(sub, common)
    parser.set_defaults(root_parser=parser)  # `completion` describes the whole tree without importing this module
    return parser


def _quiet_dependencies() -> None:
    """Silence warnings users cannot act on (ours and real problems still show)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for pattern in (".*does not have many workers.*", ".*pin_memory.*no accelerator.*",
                    ".*TypedStorage is deprecated.*",
                    ".*ShardedTensor.*", ".*Pydantic.*", ".*torch.distributed.reduce_op.*"):
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning,
                            module=r"(timm|torchvision|accelerate|ray|albumentations)")
    # --verbose turns the root logger to DEBUG for cnnforge's messages, not for every library's internals
    for name in ("accelerate", "matplotlib", "PIL", "urllib3", "filelock", "fsspec", "git", "wandb", "asyncio", "h5py"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("debug", "quiet", "verbose"):
        setattr(args, flag, getattr(args, flag, False))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    _quiet_dependencies()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    try:
        check_launcher_env()
        log_every()  # CNNFORGE_LOG_EVERY: named before a run directory exists
        return int(args.func(args) or 0)
    except CnnforgeError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"{PROG}: error: {exc.one_line()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:  # `cnnforge list models | head`: the reader is gone, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit must not fail
        return 141
    except Exception as exc:
        if args.debug:
            raise
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        sys.stderr.write(f"{PROG}: error: internal error: {text} (run with --debug for the traceback)\n")
        return EXIT_FAILURE


def run_program(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``cnnforge`` command and ``python -m cnnforge``: :func:`main`, then the end of the process.

    A rank of a distributed launch (``WORLD_SIZE`` > 1) ends without the interpreter's teardown. With
    torch 2.14's gloo, a process group's worker thread can still be releasing the tensors of the last
    collective while the interpreter finalizes; it then cannot take the GIL and aborts the rank
    (SIGABRT, "terminate called without an active exception") after a run that finished, and the
    launcher reports a failure. A plain torch DDP script does the same in about one launch in five on
    a loaded machine. By this point every file of the run is written and closed and the trackers are
    finished; what is left (garbage, buffered output, logging) is settled here first.
    """
    code = main(argv)
    try:
        distributed = env_int("WORLD_SIZE", 1) > 1
    except ConfigError:  # main has reported it
        distributed = False
    if distributed:
        import gc

        gc.collect()  # DataLoader workers and other resources held in reference cycles shut down now
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
