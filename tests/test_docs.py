"""The README and docs/ stay true: links lead somewhere, and every ```bash block marked runnable runs.

A block is marked by an HTML comment on the line before its fence, ``<!-- runnable -->`` (invisible on
GitHub). Marked blocks run with bash in a fresh folder, with ``cnnforge`` being this interpreter's, so
they must stay cheap: the bundled digits, ``list``, ``show``, ``check``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = re.compile(r"^<!-- runnable -->\n```bash\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _blocks() -> list[tuple[str, str]]:
    return [(f"{page.relative_to(ROOT)}:{page.read_text()[:m.start()].count(chr(10)) + 1}", m.group(1))
            for page in PAGES for m in RUNNABLE.finditer(page.read_text())]


def test_the_readme_is_a_front_page() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_every_relative_link_leads_to_a_file() -> None:
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in PAGES for target in LINK.findall(page.read_text())
              if "://" not in target and not (page.parent / target).exists()]
    assert broken == []


def test_runnable_blocks_are_marked_and_run_only_cnnforge() -> None:
    blocks = _blocks()
    assert len(blocks) >= 3, blocks  # the README's main job and glance, the packaged recipes
    commands = [line.split()[0] for _, block in blocks for line in block.splitlines() if line.strip()]
    assert set(commands) == {"cnnforge"}, commands


@pytest.mark.slow
@pytest.mark.parametrize("where,block", _blocks(), ids=[where for where, _ in _blocks()])
def test_a_runnable_block_runs(where: str, block: str, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "cnnforge"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cnnforge "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CNNFORGE_DATA": str(tmp_path / "data")}
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=env, capture_output=True,
                          text=True)  # bounded by pytest-timeout, as every test
    assert done.returncode == 0, f"{where}\n{block}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
