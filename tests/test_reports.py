"""Run reports, ``cnnforge eval``, ``embed`` and ``viz``: the files a person opens after a run."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch import nn

import cnnforge
from cnnforge.data.loading import build_splits
from tests.conftest import ROOT, cli, cli_here, copy_run, one_error_line

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
PNGS = ("curves.png", "confusion_matrix.png", "confusion_matrix_normalized.png", "errors.png")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, digits_run: Path) -> Path:
    return copy_run(digits_run, tmp_path_factory.mktemp("runs"))  # eval, embed and viz write into the run


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _png_size(path: Path) -> tuple[int, int]:
    image = imread(path)
    assert image.ndim == 3 and image.std() > 0.01, f"{path} is blank"
    return image.shape[1], image.shape[0]


def test_every_run_ends_with_a_report(run_dir: Path) -> None:
    from sklearn.metrics import f1_score, precision_score

    reports = run_dir / "reports"
    metrics = json.loads((reports / "metrics.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    test = build_splits(cnnforge.load_recipe(run_dir / "recipe.yaml")).test
    assert metrics["split"] == "test" and metrics["checkpoint"] == summary["test/weights"] == "best"
    assert metrics["samples"] == summary["test/samples"] == len(test)
    assert metrics["accuracy"] == pytest.approx(summary["test/acc"])
    assert metrics["loss"] == pytest.approx(summary["test/loss"])
    assert list(metrics["per_class"]) == metrics["classes"] == [str(d) for d in range(10)]
    assert sum(r["support"] for r in metrics["per_class"].values()) == len(test)
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == len(test)
    assert np.trace(matrix) / len(test) == pytest.approx(metrics["accuracy"])

    # per-sample predictions in dataset order; every number above follows from them
    rows = _rows(reports / "predictions.csv")
    y_true = [int(r["true"]) for r in rows]
    y_pred = [int(r["predicted"]) for r in rows]
    assert y_true == test.labels.tolist()
    assert np.asarray(matrix).sum(axis=1).tolist() == np.bincount(y_true, minlength=10).tolist()
    assert metrics["macro"]["f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["weighted"]["precision"] == pytest.approx(
        precision_score(y_true, y_pred, average="weighted", zero_division=0))
    assert metrics["per_class"]["3"]["recall"] == pytest.approx(matrix[3, 3] / matrix[3].sum())

    page = (reports / "summary.md").read_text()
    assert f"**Accuracy {metrics['accuracy']:.4f}**" in page and "| **macro avg** |" in page
    for png in PNGS:
        assert f"]({png})" in page
        width, height = _png_size(reports / png)
        assert 300 < width < 4000 and 150 < height < 4000, (png, width, height)
    assert (run_dir / "data_info.json").exists()


def test_eval_reproduces_the_run_report_and_keeps_it(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = run_dir / "reports"
    before = (reports / "metrics.json").read_text()
    proc = cli("eval", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert f"report: {reports}" in proc.stdout
    assert (reports / "metrics.json").read_text() == before  # same weights, same data, same numbers

    proc = cli_here(capsys, "eval", str(run_dir), "--split", "val", "--checkpoint", "last")
    assert proc.returncode == 0, proc.stderr
    other = json.loads((reports / "val-last" / "metrics.json").read_text())
    val = build_splits(cnnforge.load_recipe(run_dir / "recipe.yaml")).val
    assert (other["split"], other["checkpoint"], other["weights"]) == ("val", "last", "model.safetensors")
    assert other["samples"] == len(val)
    assert (reports / "metrics.json").read_text() == before  # the run's own report is never replaced
    for png in PNGS:
        assert (reports / "val-last" / png).exists()


def test_plots_false_writes_the_numbers_and_eval_adds_the_pngs(tmp_path: Path) -> None:
    result = cnnforge.train(DIGITS, ["train.epochs=1", "data.num_workers=0", "train.plots=false",
                                     f"train.out_dir={tmp_path}"], quiet=True)
    reports = result.run_dir / "reports"
    assert {p.name for p in reports.iterdir()} == {"metrics.json", "summary.md", "predictions.csv"}
    assert ".png)" not in (reports / "summary.md").read_text()
    proc = cli("eval", str(result.run_dir))
    assert proc.returncode == 0, proc.stderr
    assert all((reports / png).exists() for png in PNGS)


def test_eval_failures_are_one_line(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "eval", str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in one_error_line(proc)
    proc = cli_here(capsys, "eval", str(run_dir), "--split", "holdout")
    assert proc.returncode == 2 and "--split" in one_error_line(proc)

    copy = tmp_path / "no_best"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("best.safetensors", "reports"))
    proc = cli_here(capsys, "eval", str(copy), "--checkpoint", "best")
    assert proc.returncode == 1
    assert "kept no best weights (use --checkpoint last)" in one_error_line(proc)
    proc = cli_here(capsys, "eval", str(copy))  # without best weights the default is the final ones
    assert proc.returncode == 0, proc.stderr
    assert json.loads((copy / "reports" / "metrics.json").read_text())["checkpoint"] == "last"


def test_embed_plots_penultimate_features(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli("embed", str(run_dir), "--method", "pca", "--n", "120")
    assert proc.returncode == 0, proc.stderr
    png = run_dir / "reports" / "embedding_pca.png"
    assert f"embedding plot: {png}" in proc.stdout
    assert f"embedding data: {png.with_suffix('.npz')}" in proc.stdout
    assert "PCA of 120 samples x 16 dimensions: done in" in proc.stdout  # progress, plain when not a terminal
    _png_size(png)
    saved = np.load(run_dir / "reports" / "embedding_pca.npz")
    assert saved["features"].shape == (120, 16)  # ConvNet.embed: 16 channels x 1 x 1 after three pools of 8x8
    assert set(saved["labels"].tolist()) <= set(range(10)) and list(saved["classes"]) == [str(d) for d in range(10)]
    assert saved["coords"].shape == (120, 2)

    proc = cli_here(capsys, "embed", str(run_dir), "--method", "tsne", "--n", "120")
    assert proc.returncode == 0, proc.stderr
    assert "t-SNE of 120 samples x 16 dimensions ..." in proc.stdout
    tsne = np.load(run_dir / "reports" / "embedding_tsne.npz")
    assert not np.allclose(tsne["coords"], np.load(run_dir / "reports" / "embedding_pca.npz")["coords"])  # both kept
    proc = cli_here(capsys, "embed", str(run_dir), "--method", "tsne", "--n", "60", "--split", "val", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "t-SNE" not in proc.stdout
    _png_size(run_dir / "reports" / "val-best" / "embedding_tsne.png")
    proc = cli_here(capsys, "embed", str(run_dir), "--n", "2")
    assert proc.returncode == 2 and "--n" in one_error_line(proc)


def test_penultimate_hooks_models_without_embed() -> None:
    from cnnforge.reports.embedding import penultimate

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x = torch.randn(4, 3, 2, 2)
    with penultimate(model) as features:
        got = features(x)
    assert torch.allclose(got, model[2](model[1](model[0](x))))
    assert not model[3]._forward_pre_hooks  # the hook is gone afterwards
    with pytest.raises(cnnforge.CnnforgeError, match="no embed"):
        with penultimate(nn.Sequential(nn.Conv2d(1, 2, 3))):
            pass


def test_viz_filters(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli("viz", "filters", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    _png_size(run_dir / "reports" / "filters_layer0.png")
    proc = cli_here(capsys, "viz", "filters", str(run_dir), "--layer", "-1")
    assert proc.returncode == 0, proc.stderr
    assert f"filters: {run_dir / 'reports' / 'filters_layer2.png'}" in proc.stdout  # the last of 3, by its index
    assert not (run_dir / "reports" / "filters_layer-1.png").exists()
    proc = cli_here(capsys, "viz", "filters", str(run_dir), "--layer", "7")
    assert proc.returncode == 2
    assert "--layer: is 7 but the model has 3 conv layer(s)" in one_error_line(proc)


def test_filter_grids_of_rgb_layers(tmp_path: Path) -> None:
    from cnnforge.reports.kernels import filter_grid

    model = nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU(), nn.Conv2d(12, 4, 5))
    rgb = _png_size(filter_grid(model, tmp_path / "rgb.png"))
    per_channel = _png_size(filter_grid(model, tmp_path / "channels.png", per_channel=True))
    assert per_channel[0] * per_channel[1] > rgb[0] * rgb[1]  # R, G, B tiles of each filter against one RGB tile
    _png_size(filter_grid(model, tmp_path / "last.png", layer=-1))


def _edge_image(path: Path) -> Path:
    import cv2

    image = np.zeros((24, 24), np.uint8)
    image[:, 12:] = 200  # one vertical edge
    cv2.imwrite(str(path), image)
    return path


def test_fixed_kernels_find_edges() -> None:
    from cnnforge.reports.kernels import convolve, parse_kernel

    image = np.zeros((10, 10), np.float32)
    image[:, 5:] = 1.0
    _, sobel_x = parse_kernel("sobel_x")
    gx = convolve(image, sobel_x)
    assert np.abs(gx[2:-2, 4:6]).min() == 4.0 and np.abs(gx[2:-2, :3]).max() == 0  # only at the edge
    _, sobel_y = parse_kernel("sobel_y")
    assert np.abs(convolve(image, sobel_y)[2:-2]).max() == 0  # no horizontal edge
    name, custom = parse_kernel("[[0, 1, 0], [1, -4, 1], [0, 1, 0]]")
    assert name == "custom" and custom.shape == (3, 3)
    assert np.allclose(convolve(image, None)[2:-2, 4:6], 4.0)  # sobel: gradient magnitude


def test_viz_kernel_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _edge_image(tmp_path / "edge.png")
    proc = cli("viz", "kernel", str(image), "--kernel", "sobel_x", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _png_size(tmp_path / "edge_sobel_x.png")
    proc = cli_here(capsys, "viz", "kernel", str(image), "--kernel", "[[1,2,1],[2,4,2],[1,2,1]]", "--out",
                    str(tmp_path / "b.png"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b.png").exists()

    proc = cli_here(capsys, "viz", "kernel", str(image), "--kernel", "sobelx")
    assert proc.returncode == 2 and "did you mean sobel_x" in one_error_line(proc)
    proc = cli_here(capsys, "viz", "kernel", str(image), "--kernel", "[[1, 2], [3]]")
    assert proc.returncode == 2 and "--kernel" in one_error_line(proc)
    (tmp_path / "notes.png").write_text("not an image")
    proc = cli_here(capsys, "viz", "kernel", str(tmp_path / "notes.png"), "--kernel", "blur", "--out",
                    str(tmp_path / "notes_blur.png"))
    assert proc.returncode == 1 and "not a readable image" in one_error_line(proc)
    proc = cli_here(capsys, "viz", "kernel", str(image), "--kernel", "blur", "--out", str(image))
    assert proc.returncode == 2 and "overwrite the input" in one_error_line(proc)


def test_confusion_plot_scales_to_many_long_class_names(tmp_path: Path) -> None:
    from cnnforge.reports import plots

    classes = [f"class_with_long_name_{i}" for i in range(60)]
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 5, size=(60, 60))
    width, height = _png_size(plots.confusion(matrix, classes, tmp_path / "cm.png", normalize=True, title="many"))
    assert width < 4500 and height < 4500
