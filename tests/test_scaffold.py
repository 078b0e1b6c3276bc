"""`cnnforge new-plugin`: a distribution that installs, registers its model and trains, as a user would do it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.conftest import cli, one_error_line


def _scaffold(tmp: Path, name: str = "my-nets") -> Path:
    proc = cli("new-plugin", name, "--dir", str(tmp / "work"), cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    assert "pip install -e" in proc.stdout
    return tmp / "work" / "cnnforge-my-nets"


def test_new_plugin_writes_a_distribution_with_the_entry_point(tmp_path: Path) -> None:
    dist = _scaffold(tmp_path)
    files = sorted(p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file())
    assert files == ["README.md", "cnnforge_my_nets/__init__.py", "cnnforge_my_nets/net.py",
                     "cnnforge_my_nets/recipes/digits_my_nets.yaml", "pyproject.toml", "tests/test_cnnforge_my_nets.py"]
    meta = tomllib.loads((dist / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "cnnforge-my-nets"
    assert meta["project"]["entry-points"]["cnnforge.plugins"] == {"my-nets": "cnnforge_my_nets"}
    for path in dist.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")  # every placeholder was filled with valid Python
    assert "$" not in "".join(p.read_text() for p in dist.rglob("*") if p.is_file())
    recipe = (dist / "cnnforge_my_nets" / "recipes" / "digits_my_nets.yaml").read_text()
    assert "name: digits_my_nets\n" in recipe and "model: {name: my_nets" in recipe
    assert meta["tool"]["setuptools"]["package-data"] == {"cnnforge_my_nets": ["recipes/*.yaml"]}


def test_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    dist = _scaffold(tmp_path)
    (dist / "pyproject.toml").write_text("# my edits\n")
    proc = cli("new-plugin", "my-nets", "--dir", str(tmp_path / "work"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "already exists and is not empty" in one_error_line(proc)
    assert (dist / "pyproject.toml").read_text() == "# my edits\n"


@pytest.mark.parametrize("name, complaint", [("convnet", "already registered by cnnforge"),
                                             ("My_Nets", "not a usable plugin name"),
                                             ("cnnforge-", "not a usable plugin name"),
                                             ("class", "Python keyword")])
def test_unusable_names_are_refused(tmp_path: Path, name: str, complaint: str) -> None:
    proc = cli("new-plugin", name, "--dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert complaint in one_error_line(proc)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_scaffolded_plugin_builds_installs_and_trains(tmp_path: Path) -> None:
    """The plugin builds with the setuptools of the environment cnnforge was installed into (the ``dev`` extra
    brings one that builds wheels without ``wheel``) and installs into a folder of its own, so the test needs
    neither the package index nor anything in the base interpreter, and leaves this environment untouched."""
    dist = _scaffold(tmp_path)
    site = tmp_path / "site"
    python_path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": python_path}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    # --check-build-dependencies: a setuptools older than the template's build requirement is named, not a
    # failure deep inside setuptools ("invalid command 'bdist_wheel'")
    run("-m", "pip", "install", "--no-deps", "--no-build-isolation", "--check-build-dependencies", "--quiet",
        "--target", str(site), str(dist))
    listed = run("-m", "cnnforge", "list", "models", "my_nets").stdout
    assert "my_nets" in listed and "cnnforge-my-nets 0.1.0" in listed
    recipes = run("-m", "cnnforge", "list", "recipes", "digits_my_nets").stdout
    assert "digits_my_nets" in recipes and "cnnforge-my-nets" in recipes  # shipped in the installed package
    assert (site / "cnnforge_my_nets" / "recipes" / "digits_my_nets.yaml").is_file()
    run("-m", "cnnforge", "run", "digits_my_nets", "train.epochs=1", f"train.out_dir={tmp_path / 'runs'}")  # by name
    manifest = json.loads(next((tmp_path / "runs").rglob("manifest.json")).read_text())
    assert "cnnforge-my-nets" in json.dumps(manifest["plugins"])
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    assert 0.0 <= summary["test/acc"] <= 1.0
    # the plugin's own tests pass against the installed plugin
    run("-m", "pytest", str(dist), "-q", "-p", "no:cacheprovider", "-k", "not the_recipe_trains")
    # ... and the plugin is absent outside its folder: the user's environment was not touched
    assert "cnnforge-my-nets" not in cli("list", "models", "my_nets").stdout
