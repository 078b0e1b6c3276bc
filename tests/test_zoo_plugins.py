"""The first-party plugins as a user meets them: listed with their package, found by entry point, light to
list, their models trained from recipes, their errors naming the plugin."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, one_error_line
from tests.datafiles import write_image_folder

EXAMPLE_RECIPE = "plugins/cnnforge-example/cnnforge_example/recipes/shapes_gap_net.yaml"


def _rows(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in stdout.splitlines()[1:] if line.strip()}


#: this repository's plugins only: a plugin the user installed beside them (a scaffolded one) adds rows
FIRST_PARTY = {"CNNFORGE_PLUGINS": "example,timm,torchvision"}


def test_list_models_shows_the_families_and_the_example_with_their_packages() -> None:
    proc = cli("list", "models", env=FIRST_PARTY)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert rows["timm/*"][1] == "cnnforge-timm" and rows["tv/*"][1] == "cnnforge-torchvision"
    assert rows["example_gap_net"][1] == "cnnforge-example"
    assert rows["vgg_bn"][1] == "cnnforge"
    assert len(rows) < 40, "name families must not be expanded without a pattern or --all"


def test_patterns_and_all_expand_the_families() -> None:
    timm_rows = _rows(cli("list", "models", "timm/resnet1*").stdout)
    assert "timm/resnet18" in timm_rows and "timm/resnet101" in timm_rows
    assert all(name.startswith("timm/resnet1") for name in timm_rows)
    everything = _rows(cli("list", "models", "--all").stdout)
    assert len(everything) > 1000 and "timm/convnext_tiny" in everything and "convnet" in everything
    tv_rows = [name for name in everything if name.startswith("tv/")]
    assert {"tv/resnet18", "tv/vgg16_bn", "tv/vit_b_16", "tv/efficientnet_b0"} <= set(tv_rows)
    assert not any("fasterrcnn" in name or "deeplab" in name for name in tv_rows)  # classification models only


@pytest.mark.parametrize("args", [("list", "models"), ("check", "--no-data", "recipes/resnet18_transfer.yaml"),
                                  ("check", "--no-data", EXAMPLE_RECIPE, "model.name=timm/resnet18")])
def test_listing_and_checking_import_no_model_library(args: tuple[str, ...]) -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "cnnforge", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "timm", "torchvision", "albumentations"}


def test_recipe_naming_plugin_components_runs_without_importing_the_plugin(tmp_path: Path) -> None:
    """The recipe names a model, a dataset and an augmentation of cnnforge-example; only the entry point finds them."""
    proc = cli("run", EXAMPLE_RECIPE, "data.samples=60", "train.epochs=1", f"train.out_dir={tmp_path}", "-q")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    assert "cnnforge-example" in json.dumps(manifest)
    assert "cnnforge_example" not in Path(ROOT / EXAMPLE_RECIPE).read_text()  # nothing imports it by name


def test_an_error_inside_a_plugin_names_its_package(tmp_path: Path) -> None:
    proc = cli("run", EXAMPLE_RECIPE, "model.depth=5", f"train.out_dir={tmp_path}")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "model (example_gap_net from cnnforge-example)" in line and "need depth <= 4" in line


def test_plugins_can_be_switched_off(tmp_path: Path) -> None:
    proc = cli("check", EXAMPLE_RECIPE, env={"CNNFORGE_PLUGINS": "none"})
    assert proc.returncode == 2
    assert "unknown model 'example_gap_net'" in one_error_line(proc)
    proc = cli("check", "recipes/digits_convnet.yaml", "model={name: tv/resnet18}",
               env={"CNNFORGE_PLUGINS": "torchvision"})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("model", ["timm/mobilenetv3_small_050", "tv/mobilenet_v3_small"])
def test_bridge_models_train_from_a_recipe(model: str, tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "data", per_class=8, size=16)
    proc = cli("run", "recipes/digits_convnet.yaml", "data={name: imagefolder, num_workers: 0, batch_size: 16}",
               f"data.root={folder}", f"model={{name: {model}}}", "train.epochs=1", "train.checkpoint_every=0",
               f"train.out_dir={tmp_path / 'runs'}", "-q")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    assert 0.0 <= summary["test/acc"] <= 1.0


def test_an_unknown_bridge_name_suggests_close_ones(tmp_path: Path) -> None:
    proc = cli("run", "recipes/digits_convnet.yaml", "model={name: timm/resnet_18}", f"train.out_dir={tmp_path}")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "timm has no model 'resnet_18'" in line and "did you mean" in line and "resnet18" in line


@pytest.mark.parametrize(("override", "expected"), [
    ("model.name=timm/resnt18", "model.name: timm has no model 'resnt18' (did you mean resnet18"),
    ("model.name=tv/resnt18", "model.name: torchvision has no classification model 'resnt18' (did you mean resnet18"),
    ("optim.name=timm/lamm", "optim.name: timm has no optimizer 'lamm' (did you mean lamb"),
    ("schedule.name=timm/cosin", "schedule.name: timm scheduler 'cosin' is not one cnnforge can step (did you mean "
                                 "cosine?)"),
])
def test_check_refuses_a_misspelt_bridge_name_before_anything_is_built(override: str, expected: str) -> None:
    """The bridges tell the registry which names they have: `check` refuses what `run` would, in one line naming
    the key and the closest names (`check --no-data` imports no model library, so it cannot ask them)."""
    proc = cli("check", "digits_convnet", override)
    assert proc.returncode == 2
    assert expected in one_error_line(proc)


def test_check_accepts_a_bridge_name_with_a_pretrained_tag() -> None:
    proc = cli("check", "digits_convnet", "model.name=timm/resnet18.a1_in1k", "optim.name=timm/lamb")
    assert proc.returncode == 0, proc.stderr


def test_tune_refuses_a_misspelt_bridge_name_before_ray_starts(tmp_path: Path) -> None:
    proc = cli("tune", "recipes/sweep_activation_dropout_lr.yaml", "optim.name=timm/lamm",
               f"train.out_dir={tmp_path / 'sweeps'}")
    assert proc.returncode == 2
    assert "optim.name: timm has no optimizer 'lamm' (did you mean lamb" in one_error_line(proc)
    assert not (tmp_path / "sweeps").exists()
