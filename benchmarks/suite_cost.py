"""What the test suite costs, in CPU seconds: per test, per file, and one CLI call in a new interpreter vs in-process.

Wall time on a shared 2-core machine measures the neighbours; CPU seconds (the test process and every
child it waited for) measure the work, and on N idle cores the suite's wall time is about its CPU
seconds / N. Two measurements:

1. ``cnnforge show digits_convnet`` (it builds the model, so torch is imported) as the tests' ``cli``
   runs it (a new interpreter) against ``cnnforge.cli.main`` in the test process (``cli_here``),
   interleaved, CPU seconds each;
2. a pytest selection (default: the quick loop, ``-m "not slow"``) run with this module as a plugin,
   which records each test's CPU seconds (setup, call, teardown; under ``-n`` per worker), then the
   costliest tests and files and the total.

    python -m benchmarks.suite_cost                          # the quick loop
    python -m benchmarks.suite_cost -- -m slow tests/test_kill_resume.py   # any pytest arguments after --
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import ROOT, best, interleaved, parser, report

#: where the plugin, inside pytest, writes each test's CPU seconds (set by :func:`run_suite`)
OUT_ENV = "CNNFORGE_SUITE_COST_OUT"
RECIPE = "recipes/digits_convnet.yaml"


def cpu_seconds() -> float:
    """CPU seconds of this process and of every child process it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ------------------------------------------------------------------------------ the pytest plugin
_START = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_START] = cpu_seconds()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    if call.when == "teardown" and _START in item.stash:  # travels to the xdist controller with the report
        outcome.get_result().user_properties.append(("cpu_s", cpu_seconds() - item.stash[_START]))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    cost = dict(report.user_properties).get("cpu_s")
    if report.when == "teardown" and cost is not None and os.environ.get(OUT_ENV):
        with open(os.environ[OUT_ENV], "a") as f:
            f.write(json.dumps({"test": report.nodeid, "cpu_s": cost}) + "\n")


# ------------------------------------------------------------------------------ the measurements
def cli_call_cost(repeats: int) -> dict[str, float]:
    """Best CPU seconds of one ``show`` through a new interpreter and through ``cnnforge.cli.main``."""
    from cnnforge.cli import main

    script = str(Path(sys.executable).parent / "cnnforge")
    times = interleaved({
        "subprocess": lambda: subprocess.run([script, "show", RECIPE], cwd=ROOT, capture_output=True, check=True),
        "in_process": lambda: _quietly(main, ["show", RECIPE]),
    }, repeats, clock=cpu_seconds)
    return {name: best(t) for name, t in times.items()}


def _quietly(fn: Any, *args: Any) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        fn(*args)


def run_suite(pytest_args: list[str]) -> list[dict[str, Any]]:
    """Each test's CPU seconds for ``pytest PYTEST_ARGS`` (run from the repository root)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "costs.jsonl"
        env = {**os.environ, OUT_ENV: str(out), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
            "PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "benchmarks.suite_cost",
                        *pytest_args], cwd=ROOT, env=env, check=False)
        return [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []


def by_file(costs: list[dict[str, Any]]) -> dict[str, float]:
    """CPU seconds per test file, costliest first."""
    files: dict[str, float] = defaultdict(float)
    for row in costs:
        files[row["test"].split("::")[0]] += row["cpu_s"]
    return dict(sorted(files.items(), key=lambda kv: -kv[1]))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=30, help="how many of the costliest tests to list")
    p.add_argument("pytest_args", nargs="*", help="pytest arguments (after --); default: -m 'not slow'")
    args = p.parse_args()
    tiny = args.tiny
    calls = cli_call_cost(args.repeats or (1 if tiny else 3))
    selection = args.pytest_args or (["tests/test_step_log.py"] if tiny else ["-m", "not slow"])
    costs = sorted(run_suite(selection), key=lambda r: -r["cpu_s"])
    total = sum(r["cpu_s"] for r in costs)
    rows = [{"test": r["test"][:110], "cpu_s": r["cpu_s"]} for r in costs[:args.top]]
    rows += [{"test": f"[file] {name}", "cpu_s": s} for name, s in list(by_file(costs).items())[:args.top]]
    rows.append({"test": f"[total] {len(costs)} tests", "cpu_s": total})
    report("suite_cost", rows, {
        "selection": selection, "tests": len(costs), "cpu_s": total, "wall_s_on_2_idle_cores": total / 2,
        "cli_call_cpu_s": calls, "cli_call_ratio": calls["subprocess"] / calls["in_process"],
        "files": by_file(costs)}, tiny=tiny)


if __name__ == "__main__":
    main()
