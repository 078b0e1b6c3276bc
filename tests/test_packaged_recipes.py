"""Recipes by name: cnnforge's and plugins' packaged recipes, from any folder, a path always winning."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, cli_here, one_error_line
from tests.fake_dist import write_distribution

PLUGIN_RECIPE = """\
# Digits with a wider head, shipped by a plugin.
name: plug_digits
base: digits_convnet
train: {epochs: 2}
"""


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder far from the repository, like a user's after ``pip install cnnforge``."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plugin distribution ``plug-recipes`` whose package holds ``recipes/plug_digits.yaml``."""
    site = write_distribution(tmp_path / "site", "plug-recipes", "1.2.0", "plug_recipes", "")
    (site / "plug_recipes" / "recipes").mkdir()
    (site / "plug_recipes" / "recipes" / "plug_digits.yaml").write_text(PLUGIN_RECIPE)
    monkeypatch.syspath_prepend(str(site))
    return site


def test_repository_recipes_folder_is_the_packaged_one() -> None:
    assert (ROOT / "recipes").resolve() == ROOT / "cnnforge" / "recipes"
    assert (ROOT / "recipes" / "digits_convnet.yaml").is_file()


def test_check_show_by_name_from_any_folder(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "check", "digits_convnet", "train.epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert "convnet on digits, 3 epochs" in proc.stdout
    assert cli_here(capsys, "check", "digits_convnet.yaml").returncode == 0
    proc = cli_here(capsys, "show", "cifar_vgg_bn", "--no-model")
    assert proc.returncode == 0 and "name: cifar_vgg_bn" in proc.stdout


def test_a_path_wins_over_a_name(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (elsewhere / "digits_convnet").write_text("base: cifar_vgg_bn\ntrain: {epochs: 7}\n")
    proc = cli_here(capsys, "check", "--no-data", "digits_convnet")  # no CIFAR-10 here: the recipe only
    assert proc.returncode == 0, proc.stderr
    assert "vgg_bn on cifar10, 7 epochs" in proc.stdout


def test_base_by_name(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (elsewhere / "mine.yaml").write_text("base: cifar_vgg_bn\nmodel: {dropout: 0.1}\n")
    proc = cli_here(capsys, "show", "mine.yaml", "--no-model")
    assert proc.returncode == 0, proc.stderr
    assert "name: vgg_bn" in proc.stdout and "dropout: 0.1" in proc.stdout


@pytest.mark.parametrize("args, complaint", [
    (("check", "digits_convnt"), "digits_convnt: no such recipe file or packaged recipe (did you mean digits_convnet"),
    (("run", "nothing_like_it"), "cnnforge list recipes"),
    (("check", "sub/digits_convnet.yaml"), "sub/digits_convnet.yaml: no such recipe file"),
])
def test_unknown_names_and_paths(elsewhere: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                 complaint: str) -> None:
    proc = cli_here(capsys, *args)
    assert proc.returncode == 2
    assert complaint in one_error_line(proc)


def test_unknown_base_name(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (elsewhere / "mine.yaml").write_text("base: cifar_vgg_bm\n")
    line = one_error_line(cli_here(capsys, "check", "mine.yaml"))
    assert "mine.yaml: base: base recipe 'cifar_vgg_bm' not found" in line and "did you mean cifar_vgg_bn" in line


def test_list_recipes_shows_name_package_and_first_comment(plugin_site: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "list", "recipes")
    assert proc.returncode == 0
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in proc.stdout.splitlines()[1:]}
    first_line = "The README's main job: seed 000's ConvNet on scikit-learn's bundled 8x8 digits. Seconds on a CPU."
    assert rows["digits_convnet"] == ["cnnforge", first_line]
    assert rows["plug_digits"] == ["plug-recipes", "Digits with a wider head, shipped by a plugin."]
    # other plugins installed beside the test's own may ship recipes too: count cnnforge's
    assert sum(package == "cnnforge" for package, _ in rows.values()) == len(list((ROOT / "recipes").glob("*.yaml")))
    assert cli_here(capsys, "list", "recipes", "plug_*").stdout.count("\n") == 2  # header and the one match


def test_plugin_recipe_by_name_and_switched_off(plugin_site: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    proc = cli_here(capsys, "check", "plug_digits")
    assert proc.returncode == 0, proc.stderr
    assert "convnet on digits, 2 epochs" in proc.stdout
    monkeypatch.setenv("CNNFORGE_PLUGINS", "none")
    assert "plug_digits" not in cli_here(capsys, "list", "recipes").stdout
    assert cli_here(capsys, "check", "plug_digits").returncode == 2


def test_a_name_shipped_twice_is_an_error_naming_both(plugin_site: Path, elsewhere: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (plugin_site / "plug_recipes" / "recipes" / "digits_convnet.yaml").write_text("name: other\n")
    line = one_error_line(cli_here(capsys, "check", "digits_convnet"))
    assert "recipe 'digits_convnet' is shipped by both cnnforge and plug-recipes" in line


def test_copy_writes_an_editable_copy_and_never_overwrites(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = (ROOT / "recipes" / "sweep_activation_dropout_lr.yaml").read_text()
    assert cli_here(capsys, "recipes", "copy", "sweep_activation_dropout_lr").returncode == 0
    assert (elsewhere / "sweep_activation_dropout_lr.yaml").read_text() == original
    # its `base: cifar_vgg_bn.yaml` is not beside the copy: the packaged recipe of that name is used
    assert cli_here(capsys, "check", "--no-data", "sweep_activation_dropout_lr.yaml").returncode == 0

    (elsewhere / "mine.yaml").write_text("# my edits\n")
    proc = cli_here(capsys, "recipes", "copy", "digits_convnet", "mine.yaml")
    assert proc.returncode == 2
    assert "mine.yaml: already exists; not overwritten" in one_error_line(proc)
    assert (elsewhere / "mine.yaml").read_text() == "# my edits\n"

    (elsewhere / "into").mkdir()
    assert cli_here(capsys, "recipes", "copy", "digits_convnet", "into").returncode == 0
    assert (elsewhere / "into" / "digits_convnet.yaml").is_file()
    assert cli_here(capsys, "recipes", "copy", "digits_convnt").returncode == 2


def test_run_by_name_from_an_empty_folder(tmp_path: Path) -> None:
    proc = cli("run", "digits_convnet", "train.epochs=1", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = next((tmp_path / "runs" / "digits_convnet").glob("*/summary.json"))
    assert 0.0 <= json.loads(summary.read_text())["test/acc"] <= 1.0
