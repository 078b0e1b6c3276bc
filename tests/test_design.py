"""The rules of docs/design.md that import-linter does not check: sizes, cycles, module names, the drawn graph."""
from __future__ import annotations

import ast
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cnnforge"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_readable_in_one_sitting(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 400, f"{path} has {len(text.splitlines())} lines"
    for fn in _functions(ast.parse(text)):
        length = fn.end_lineno - fn.lineno + 1
        assert length <= 50, f"{path}:{fn.lineno} {fn.name} has {length} lines"


def test_no_runtime_import_cycle() -> None:
    graph = grimp.build_graph("cnnforge", exclude_type_checking_imports=True)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == 1:
                cycle = path[path.index(imported):] + [imported] if imported in path else [module, imported]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph.modules):
        if module not in state:
            visit(module, [module])


def test_no_top_level_module_shadows_another_library() -> None:
    """`accelerate launch cnnforge` puts cnnforge/ first on sys.path: a `logging.py` there would shadow the real one."""
    taken = set(sys.stdlib_module_names) | set(md.packages_distributions())
    ours = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert not sorted(ours & taken - {"__init__", "__main__"})


def test_the_drawn_import_graph_is_the_code_s() -> None:
    drawn = (ROOT / "docs" / "design.md").read_text(encoding="utf-8").split("```mermaid\n", 1)[1].split("```", 1)[0]
    now = subprocess.run([sys.executable, str(ROOT / "docs" / "import_graph.py")], capture_output=True, text=True,
                         check=True).stdout
    assert drawn == now, "docs/design.md's graph is stale: paste the output of python docs/import_graph.py"
