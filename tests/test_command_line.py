"""The command line as a new user meets it: argument order, usage errors, plugin switches and ``show``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, cli_here, one_error_line
from tests.fake_dist import write_distribution

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")


def test_options_and_overrides_come_in_any_order(capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "check", DIGITS, "--verbose", "train.epochs=1", "-q", "optim.lr=0.1")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    proc = cli_here(capsys, "show", "--no-model", DIGITS, "train.epochs=3", "--quiet", "optim.lr=0.5")
    assert proc.returncode == 0, proc.stderr
    assert "epochs: 3" in proc.stdout and "lr: 0.5" in proc.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["run", DIGITS, "--bogus", "train.epochs=1"],
     "cnnforge: error: run: unrecognized arguments: --bogus (see `cnnforge run --help`)"),
    (["--bogus", "list", "plugins"], "cnnforge: error: unrecognized arguments: --bogus (see `cnnforge --help`)"),
    (["check"], "cnnforge: error: check: the following arguments are required: recipe (see `cnnforge check --help`)"),
])
def test_usage_errors_are_one_line_with_one_prefix(capsys: pytest.CaptureFixture[str], args: list[str],
                                                   expected: str) -> None:
    proc = cli_here(capsys, *args)
    assert proc.returncode == 2
    assert one_error_line(proc) == expected


PLUGIN = '''
from cnnforge import register_model
from cnnforge.models.seed_models import convnet


@register_model
def switched_convnet(*, num_classes, in_channels=1, image_size=None, activation="relu"):
    """Seed 000's ConvNet from a plugin."""
    return convnet(num_classes=num_classes, in_channels=in_channels, image_size=image_size, activation=activation)
'''


def test_plugins_disabled_by_the_variable_are_listed_as_such_and_named_in_errors(tmp_path: Path) -> None:
    site = write_distribution(tmp_path / "site", "cnnforge-switched", "0.3", "switched_plugin", PLUGIN)
    path = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    listed = cli("list", "plugins", env={**path, "CNNFORGE_PLUGINS": "none"})
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.startswith("cnnforge-switched ")]
    assert row.split()[1:3] == ["cnnforge-switched", "0.3"] and row.endswith("disabled by CNNFORGE_PLUGINS=none")
    assert "no plugins installed" not in listed.stdout

    unknown = cli("check", DIGITS, "model.name=switched_convnet", env={**path, "CNNFORGE_PLUGINS": "none"})
    assert unknown.returncode == 2
    line = one_error_line(unknown)
    assert "unknown model 'switched_convnet'" in line
    assert "CNNFORGE_PLUGINS=none is set, so the installed plugins" in line and "cnnforge-switched" in line

    loaded = cli("check", DIGITS, "model.name=switched_convnet", env=path)
    assert loaded.returncode == 0, loaded.stderr
    assert "CNNFORGE_PLUGINS" not in cli("check", DIGITS, "model.name=nonexistent_net", env=path).stderr


def test_show_without_the_data_uses_the_dataset_registration_and_says_so(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    proc = cli_here(capsys, "show", str(ROOT / "recipes" / "cifar_vgg_bn.yaml"), f"data.root={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "input 3x32x32" in proc.stdout and "classes: 10" in proc.stdout
    missing = tmp_path.resolve() / "cifar-10-batches-py"
    assert f"note: the data could not be read ({missing}: no such folder" in proc.stdout
    assert "what the cifar10 registration declares: 32x32x3 images, 10 classes" in proc.stdout


def test_show_needs_neither_image_folder_nor_pretrained_weights(capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path) -> None:
    recipe = str(ROOT / "recipes" / "resnet18_transfer.yaml")
    proc = cli_here(capsys, "show", recipe, f"data.root={tmp_path / 'hymenoptera_data'}", "model.num_classes=2",
                    f"model.pretrained={tmp_path / 'absent.pth'}")
    assert proc.returncode == 0, proc.stderr
    assert "input 3x224x224" in proc.stdout  # the registration's 256x256 through the recipe's 224 crop
    assert "256x256x3 images, 2 classes" in proc.stdout
    assert "note: built without the pretrained weights" in proc.stdout
    # without data.image_size the image folder's size is unknown: the missing folder is the error
    proc = cli_here(capsys, "show", recipe, f"data.root={tmp_path / 'absent'}", "data.image_size=null")
    assert proc.returncode == 1 and "absent: no such folder" in one_error_line(proc)
