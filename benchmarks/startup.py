"""Start-up: the commands that only look (help, list, check) against ``python -c "import torch"``.

``cnnforge --help``, ``cnnforge list models`` and ``cnnforge check RECIPE`` must not import torch,
Ray, wandb or albumentations: they answer in the time Python takes to start. Each command runs as a
fresh process (best wall time of the interleaved rounds); ``python -X importtime`` says which heavy
libraries it loaded.

    python -m benchmarks.startup
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, best, interleaved, parser, report

HEAVY = ("torch", "ray", "wandb", "albumentations")
COMMANDS = {
    "cnnforge --help": ["-m", "cnnforge", "--help"],
    "cnnforge list models": ["-m", "cnnforge", "list", "models"],
    "cnnforge check digits_convnet": ["-m", "cnnforge", "check", "recipes/digits_convnet.yaml"],
    "python -c 'import torch'": ["-c", "import torch"],
}


def _env() -> dict[str, str]:
    return {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(ROOT)}


def imported_modules(python_args: list[str], cwd: Path = ROOT) -> set[str]:
    """Top-level packages a ``python ARGS`` process imports, from ``-X importtime``; fails if the command fails."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *python_args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"python {' '.join(python_args)} failed:\n{proc.stderr[-2000:]}")
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.add(name.split(".")[0])
    return names


def heavy_imports(python_args: list[str], cwd: Path = ROOT) -> list[str]:
    return sorted(set(HEAVY) & imported_modules(python_args, cwd))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)

    def runner(python_args: list[str]) -> Any:
        return lambda: subprocess.run([sys.executable, *python_args], cwd=ROOT, env=_env(), capture_output=True,
                                      check=True, timeout=300)

    times = interleaved({name: runner(a) for name, a in COMMANDS.items()}, args.repeats or (1 if args.tiny else 5))
    torch_s = best(times["python -c 'import torch'"])
    rows, result = [], {}
    for name, python_args in COMMANDS.items():
        heavy = heavy_imports(python_args)
        rows.append({"command": name, "best s": best(times[name]), "x import torch": best(times[name]) / torch_s,
                     "heavy imports": ", ".join(heavy) or "none"})
        result[name] = {"seconds": best(times[name]), "vs_import_torch": best(times[name]) / torch_s, "heavy": heavy}
    return report("startup", rows, {"commands": result}, tiny=args.tiny)


if __name__ == "__main__":
    main()
