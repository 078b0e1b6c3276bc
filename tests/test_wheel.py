"""The distribution as a user gets it: an sdist and a wheel that pass the checkers, a wheel that works from
an empty folder, and a core that runs ``--help``, ``list`` and ``check`` without any extra.

The wheel is installed into a fresh virtualenv that sees this environment's packages (a ``.pth`` line
adds this interpreter's site-packages; ``--system-site-packages`` would reach the base Python's, not this
virtualenv's) with ``pip install --no-deps``: downloading torch, Ray and the rest again would take most
of the suite's time budget. The trade-off: a dependency missing from pyproject.toml
would not show here, so ``pip check`` (every installed distribution's requirements are met, cnnforge's
included) and the core-alone test below, which hides every extra, stand in for a clean install.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, one_error_line

#: modules of the extras (cnnforge.optional_deps.EXTRAS) and what pulls them in indirectly
EXTRA_MODULES = ("ray", "optuna", "wandb", "tensorboard", "timm", "onnx", "onnxruntime")


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=out)
    return out


@pytest.mark.slow
def test_sdist_and_wheel_pass_the_checkers(dist: Path) -> None:
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    _run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=dist)
    _run(Path(sys.executable).parent / "check-wheel-contents", wheel, cwd=dist)
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("cnnforge/recipes/")}
    assert shipped == {p.name for p in (ROOT / "recipes").glob("*.yaml")}
    assert any(n.startswith("cnnforge/commands/new_plugin/templates/plugin/") for n in names)


@pytest.mark.slow
def test_wheel_works_from_an_empty_folder(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)  # pip too comes from this environment
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path,
                        env=env).stdout.strip())
    (purelib / "shared_env.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    wheel = next(dist.glob("*.whl"))
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path, env=env)
    _run(python, "-m", "pip", "check", cwd=tmp_path, env=env)

    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run(python, "-c", "import cnnforge; print(cnnforge.__file__)", cwd=empty, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the wheel, not the checkout
    assert "usage: cnnforge" in _run(python, "-m", "cnnforge", "--help", cwd=empty, env=env).stdout
    _run(bin_dir / "cnnforge", "run", "digits_convnet", "train.epochs=1", "-q", cwd=empty, env=env)
    assert len(list((empty / "runs" / "digits_convnet").glob("*/summary.json"))) == 1
    _run(bin_dir / "cnnforge", "new-plugin", "my-nets", cwd=empty, env=env)
    assert (empty / "cnnforge-my-nets" / "pyproject.toml").is_file()


@pytest.fixture
def core_only(tmp_path: Path) -> dict[str, str]:
    """An environment where every extra's module is absent, as after ``pip install cnnforge`` alone."""
    site = tmp_path / "hide"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({EXTRA_MODULES!r}))\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "CNNFORGE_PLUGINS": "none"}


@pytest.mark.parametrize("args", [("--help",), ("list", "models"), ("list", "recipes"), ("check", "digits_convnet"),
                                  ("check", "sweep_digits"), ("tune", "--help")])
def test_core_alone_helps_lists_and_checks(core_only: dict[str, str], args: tuple[str, ...]) -> None:
    proc = cli(*args, env=core_only)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("args, extra", [
    (("tune", "sweep_digits"), "cnnforge tune: needs ray, which is not installed (pip install 'cnnforge[tune]')"),
    (("run", "digits_convnet", "tracking.backend=wandb"),
     "tracking.backend: needs wandb, which is not installed (pip install 'cnnforge[wandb]')"),
    (("check", "digits_convnet", "tracking.backend=tensorboard"),
     "tracking.backend: needs tensorboard, which is not installed (pip install 'cnnforge[tensorboard]')"),
])
def test_a_missing_extra_is_one_line_naming_it(core_only: dict[str, str], tmp_path: Path, args: tuple[str, ...],
                                               extra: str) -> None:
    proc = cli(*args, f"train.out_dir={tmp_path / 'runs'}", env=core_only)
    assert proc.returncode == 2
    assert one_error_line(proc).endswith(extra)
    assert not (tmp_path / "runs").exists()
