"""docker/ checked statically (no Docker engine here): hadolint's rules that fit in Python, the README's
install commands, every file the images copy, the CUDA version torch was built for, the Ray compose file."""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import ROOT

DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
COMPOSE = DOCKER / "compose.ray.yaml"

# the images copy tests/ but not docker/: `docker run --entrypoint pytest` skips these repository checks
pytestmark = pytest.mark.skipif(not DOCKER.is_dir(), reason="docker/ is not in the image")


@dataclass
class Instruction:
    line: int
    op: str  # FROM, RUN, COPY, ...
    args: str
    ignored: set[str] = field(default_factory=set)  # rules silenced by a `# hadolint ignore=DLxxxx` comment


def parse(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (what the builder executes)."""
    out: list[Instruction] = []
    ignored: set[str] = set()
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and stripped.startswith("#"):
            match = re.match(r"#\s*hadolint\s+ignore=([\w,]+)", stripped)
            ignored |= set(match.group(1).split(",")) if match else set()
            continue
        if not stripped or stripped.startswith("#"):
            continue
        start = start if pending else number
        pending.append(stripped.removesuffix("\\").strip())
        if stripped.endswith("\\"):
            continue
        op, _, args = " ".join(pending).partition(" ")
        out.append(Instruction(start, op.upper(), args.strip(), ignored))
        pending, ignored = [], set()
    return out


def _commands(run: str) -> list[list[str]]:
    """A RUN's shell commands (split on && and ;), each as words."""
    return [shlex.split(part) for part in re.split(r"&&|;", run) if part.strip()]


def _pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    return [words[2:] for i in instructions if i.op == "RUN" for words in _commands(i.args)
            if words[:2] == ["pip", "install"]]


def _readme_install_lines() -> list[list[str]]:
    setup = (ROOT / "README.md").read_text().split("## Set up", 1)[1].split("```", 2)[1]
    return [shlex.split(line.split("#", 1)[0])[2:] for line in setup.splitlines() if line.startswith("pip install")]


def _without_options(words: list[str], *options: str) -> list[str]:
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in options:
            skip = word == "--index-url"
        else:
            out.append(word)
    return out


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request: pytest.FixtureRequest) -> list[Instruction]:
    return parse(request.param)


# ------------------------------------------------------------------------------------ hadolint-style rules

def test_base_image_is_pinned_to_a_tag(dockerfile: list[Instruction]) -> None:  # DL3006, DL3007
    images = [i.args.split()[0] for i in dockerfile if i.op == "FROM"]
    assert images and all(":" in image and not image.endswith(":latest") for image in images), images


def test_no_add_no_maintainer_no_cd(dockerfile: list[Instruction]) -> None:  # DL3020, DL4000, DL3003
    assert not [i for i in dockerfile if i.op in ("ADD", "MAINTAINER")]
    assert not [i.line for i in dockerfile if i.op == "RUN" for words in _commands(i.args) if words[0] == "cd"]


def test_entrypoint_is_cnnforge_in_exec_form(dockerfile: list[Instruction]) -> None:  # DL3025
    for op in ("ENTRYPOINT", "CMD"):
        (last,) = [i for i in dockerfile if i.op == op][-1:]
        json.loads(last.args)  # exec form: signals reach cnnforge, not a shell
    assert json.loads([i for i in dockerfile if i.op == "ENTRYPOINT"][-1].args) == ["cnnforge"]


def test_runs_as_a_non_root_user(dockerfile: list[Instruction]) -> None:  # DL3002
    users = [i.args for i in dockerfile if i.op == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_copy_to_relative_paths_only_after_workdir(dockerfile: list[Instruction]) -> None:  # DL3045
    workdir = False
    for i in dockerfile:
        workdir |= i.op == "WORKDIR"
        if i.op == "COPY" and not i.args.split()[-1].startswith("/"):
            assert workdir, f"line {i.line}: COPY to a relative path before any WORKDIR"


def test_pip_installs_are_pinned_and_leave_no_cache(dockerfile: list[Instruction]) -> None:  # DL3013, DL3042
    installs = _pip_installs(dockerfile)
    assert installs
    for words in installs:
        assert "--no-cache-dir" in words, words
        names = [w for w in _without_options(words, "--no-cache-dir", "--index-url") if not w.startswith("-")]
        editable = {words[k + 1] for k, w in enumerate(words) if w == "-e"}
        for name in set(names) - editable:
            assert "==" in name, f"unpinned: {name}"


def test_apt_installs_are_lean_and_clean_up(dockerfile: list[Instruction]) -> None:  # DL3014, DL3015, DL3009, DL3008
    for i in dockerfile:
        if i.op != "RUN" or "apt-get install" not in i.args:
            continue
        install = next(w for w in _commands(i.args) if w[:2] == ["apt-get", "install"])
        assert "-y" in install and "--no-install-recommends" in install, i.line
        assert "rm -rf /var/lib/apt/lists/*" in i.args, f"line {i.line}: apt lists left in the layer"
        if "DL3008" not in i.ignored:
            assert all("=" in w for w in install[2:] if not w.startswith("-")), f"line {i.line}: unpinned apt packages"


def test_pipes_fail_the_build(dockerfile: list[Instruction]) -> None:  # DL4006
    piped = [i for i in dockerfile if i.op == "RUN" and re.search(r"[^|]\|[^|]", i.args)]
    shell = [i for i in dockerfile if i.op == "SHELL" and "pipefail" in i.args]
    assert not piped or (shell and shell[0].line < piped[0].line)


# ------------------------------------------------------------------------------------ in step with the repository

def _dockerignore() -> list[str]:
    return [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _excluded(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.removeprefix("**/")) or rel.startswith(p + "/")
               for p in patterns)


def test_every_copied_file_exists_and_is_in_the_build_context(dockerfile: list[Instruction]) -> None:
    patterns = _dockerignore()
    for i in dockerfile:
        if i.op != "COPY":
            continue
        for src in [w for w in i.args.split()[:-1] if not w.startswith("--")]:
            assert (ROOT / src).exists(), f"line {i.line}: COPY {src}: no such file in the repository"
            assert not _excluded(src, patterns), f"line {i.line}: COPY {src} is excluded by .dockerignore"


def test_the_images_tests_collect_from_what_the_image_copies(tmp_path: Path) -> None:
    """``docker run --entrypoint pytest cnnforge``: every test module imports from what the Dockerfile copies."""
    import shutil
    import subprocess
    import sys

    patterns = _dockerignore()
    for i in parse(DOCKER / "Dockerfile"):
        words = [w for w in i.args.split() if not w.startswith("--")] if i.op == "COPY" else []
        for src in words[:-1]:
            top = ROOT / src
            files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                if not _excluded(rel, patterns) and not any(_excluded(part, patterns) for part in Path(rel).parts):
                    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, tmp_path / rel)
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]  # 2 on a collection error
    assert "tests collected" in proc.stdout and "error" not in proc.stdout.splitlines()[-1]


def test_build_context_leaves_out_runs_data_and_git() -> None:
    for rel in (".git", "runs", "data", "wandb", "cnnforge/__pycache__"):
        assert _excluded(rel, _dockerignore()), rel


def test_install_commands_are_the_readmes(dockerfile: list[Instruction]) -> None:
    readme_torch, readme_project = _readme_install_lines()
    torch_install, project_install = _pip_installs(dockerfile)
    assert _without_options(torch_install, "--no-cache-dir", "--index-url") == readme_torch
    assert _without_options(project_install, "--no-cache-dir") == readme_project
    for k, word in enumerate(readme_project):  # each editable install is a distribution in the repository
        if word == "-e":  # a path, with or without extras: ".[all,dev]"
            path = readme_project[k + 1].split("[", 1)[0]
            assert (ROOT / path / "pyproject.toml").is_file(), readme_project[k + 1]


def test_torch_pin_satisfies_the_project_requirement() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {Requirement(d).name: Requirement(d) for d in project["dependencies"]}
    for path in DOCKERFILES:
        for words in _pip_installs(parse(path)):
            for word in words:
                if "==" in word:
                    name, version = word.split("==")
                    assert deps[name].specifier.contains(version), f"{path.name}: {word} vs {deps[name]}"


def test_cuda_image_matches_the_cuda_torch_was_built_for() -> None:
    import torch

    instructions = parse(DOCKER / "Dockerfile.cuda")
    base = re.match(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-", [i.args for i in instructions if i.op == "FROM"][0])
    assert base, "Dockerfile.cuda must start from an nvidia/cuda:X.Y.Z-... image"
    wheel_index = next(w for words in _pip_installs(instructions) for w in words if "download.pytorch.org" in w)
    assert wheel_index.endswith(f"/cu{base.group(1)}{base.group(2)}"), wheel_index
    pinned = next(w for words in _pip_installs(instructions) for w in words if w.startswith("torch=="))
    if torch.version.cuda is None or torch.__version__.split("+")[0] != pinned.split("==")[1]:
        pytest.skip(f"the installed torch {torch.__version__} is not the pinned CUDA build")
    assert torch.version.cuda == f"{base.group(1)}.{base.group(2)}"


# ------------------------------------------------------------------------------------ the Ray cluster

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_a_head_and_workers_from_the_cnnforge_image(compose: dict) -> None:
    head, worker = compose["services"]["head"], compose["services"]["worker"]
    for node in (head, worker):
        build = node["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
        assert node["image"] == head["image"] and node["entrypoint"] == ["ray"]
        assert node["command"][0] == "start" and "--block" in node["command"]
        assert re.fullmatch(r"\d+(\.\d+)?[gm]b", str(node["shm_size"]))  # Ray's object store needs /dev/shm
    port = next(a.split("=")[1] for a in head["command"] if a.startswith("--port="))
    assert "--head" in head["command"]
    assert f"--address=head:{port}" in worker["command"]
    assert worker["depends_on"]["head"]["condition"] == "service_healthy" and head["healthcheck"]["test"]
    assert worker["deploy"]["replicas"] >= 1


def test_nodes_authenticate_with_a_token_the_user_must_supply(compose: dict) -> None:
    for node in compose["services"].values():
        env = node["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")  # no default secret in the repository
        assert env["WANDB_API_KEY"] == "${WANDB_API_KEY:-}"  # passed through, never written down


def test_every_node_shares_the_runs_and_data_volumes(compose: dict) -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    data_dir = re.search(r"CNNFORGE_DATA=(\S+)", dockerfile).group(1)  # type: ignore[union-attr]
    workdir = [i.args for i in parse(DOCKER / "Dockerfile") if i.op == "WORKDIR"][-1]
    for node in compose["services"].values():
        mounts = dict(v.split(":")[::-1] for v in node["volumes"])
        assert mounts[f"{workdir}/runs"] == "runs" and mounts[data_dir] == "data", mounts
    assert {"runs", "data"} <= set(compose["volumes"])


def test_the_docs_show_the_cluster_commands() -> None:
    readme = (ROOT / "docs" / "distributed.md").read_text()
    assert "docker compose -f docker/compose.ray.yaml up" in readme
    assert re.search(r"exec head cnnforge tune \S+\.yaml --address auto", readme)
    for path in DOCKERFILES:
        assert f"docker build -f docker/{path.name}" in readme
