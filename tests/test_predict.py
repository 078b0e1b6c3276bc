"""``cnnforge predict``, ``cnnforge.load_predictor`` and ``cnnforge export``: a run used on one's own images."""
from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import cnnforge
from cnnforge.data.loading import build_splits
from tests.conftest import ROOT, cli, cli_here, copy_run, one_error_line

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, digits_run: Path) -> Path:
    return copy_run(digits_run, tmp_path_factory.mktemp("runs"))  # exports are written into the run


@pytest.fixture(scope="module")
def test_images(run_dir: Path) -> tuple[np.ndarray, list[dict[str, str]]]:
    """The raw test images of the run (uint8 8x8) and the run's own predictions for them."""
    test = build_splits(cnnforge.load_recipe(run_dir / "recipe.yaml")).test
    images = np.stack([test.base[int(i)][0] for i in test.indices])
    with (run_dir / "reports" / "predictions.csv").open() as f:
        return images, list(csv.DictReader(f))


def test_predictor_sees_what_evaluation_saw(run_dir: Path, test_images: tuple[np.ndarray, list[dict[str,
                                                                                                    str]]]) -> None:
    images, rows = test_images
    predictor = cnnforge.load_predictor(run_dir)
    assert predictor.classes == [str(d) for d in range(10)] and predictor.checkpoint == "best"
    probs = predictor.probabilities(images)
    assert probs.shape == (len(rows), 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert [str(p) for p in probs.argmax(1)] == [r["predicted"] for r in rows]
    confidence = probs[np.arange(len(rows)), probs.argmax(1)]
    assert np.allclose(confidence, [float(r["confidence"]) for r in rows], atol=2e-6)
    assert predictor(images[0]) == rows[0]["predicted"]  # seed 004's infer_image: the class name


def test_predictor_accepts_other_image_forms(run_dir: Path, test_images: tuple[np.ndarray, list[dict[str,
                                                                                                     str]]]) -> None:
    images, _ = test_images
    predictor = cnnforge.load_predictor(run_dir, checkpoint="last", device="cpu")
    base = predictor.probabilities(images[:4])
    # float HxW in [0, 1]
    assert np.allclose(predictor.probabilities(list(images[:4, :, :, 0] / 255.0)), base, atol=1e-6)
    assert np.allclose(predictor.probabilities(images[:4, :, :, 0]), base, atol=1e-6)  # an NxHxW uint8 stack
    assert np.allclose(predictor.probabilities(images[:3, :, :, 0]), base[:3], atol=1e-6)  # N = 3 is not read as RGB
    rgb = np.repeat(images[:4], 3, axis=-1)
    assert np.allclose(predictor.probabilities(rgb), base, atol=1e-6)  # RGB of a grey image is that grey image
    big = cv2.resize(images[0], (64, 64), interpolation=cv2.INTER_NEAREST)
    assert predictor.predict(big, topk=10)[0].topk[0][0] in predictor.classes  # resized to the run's 8x8
    top = predictor.predict(images[0], topk=3)[0]
    assert len(top.topk) == 3 and top.topk[0] == (top.label, top.probability)
    assert [p for _, p in top.topk] == sorted((p for _, p in top.topk), reverse=True)
    with pytest.raises(cnnforge.DataError, match="HxW, HxWx1 or HxWx3"):
        predictor.probabilities(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(cnnforge.DataError, match="uint8, or float in"):
        predictor.probabilities(np.full((8, 8), 7.0))


def test_predict_cli(run_dir: Path, test_images: tuple[np.ndarray, list[dict[str, str]]], tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    images, rows = test_images
    files = []
    for i in range(3):
        files.append(tmp_path / f"digit{i}.png")
        cv2.imwrite(str(files[-1]), images[i])
    proc = cli("predict", str(run_dir), *map(str, files), "--json", "--topk", "2")
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)
    assert [a["image"] for a in answers] == [str(f) for f in files]
    assert [a["label"] for a in answers] == [r["predicted"] for r in rows[:3]]
    assert [len(a["topk"]) for a in answers] == [2, 2, 2]
    assert answers[0]["probability"] == pytest.approx(float(rows[0]["confidence"]), abs=1e-5)

    proc = cli_here(capsys, "predict", str(run_dir), str(files[0]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{files[0]}: {rows[0]['predicted']} (") and "then" in proc.stdout


def test_predict_failures_are_one_line(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((8, 8), np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    for bad, message in (("broken.jpg", "not a readable image"), ("empty.png", "not a readable image"),
                         ("missing.png", "no such image file"), (".", "is a directory")):
        proc = cli_here(capsys, "predict", str(run_dir), str(good), str(tmp_path / bad))
        assert proc.returncode == 1, proc.stderr
        line = one_error_line(proc)
        assert message in line and str(tmp_path / bad) in line
        assert proc.stdout == ""  # nothing is printed for the good image either
    proc = cli_here(capsys, "predict", str(tmp_path), str(good))
    assert proc.returncode == 2 and "not a run directory" in one_error_line(proc)
    proc = cli_here(capsys, "predict", str(run_dir), str(good), "--topk", "0")
    assert proc.returncode == 2 and "--topk" in one_error_line(proc)


_LOAD_TORCHSCRIPT = """
import json, sys, numpy as np, torch
extra = {"cnnforge.json": ""}
model = torch.jit.load(sys.argv[1], _extra_files=extra)
images = torch.from_numpy(np.load(sys.argv[2]))
meta = json.loads(extra["cnnforge.json"])
print(json.dumps({"logits": model(images).tolist(), "float_logits": model(images.float()).tolist(),
                  "classes": meta["classes"], "cnnforge_imported": "cnnforge" in sys.modules}))
"""


def _predict_logits(run_dir: Path, images: np.ndarray) -> np.ndarray:
    """The logits behind ``cnnforge predict``: the predictor's preprocessing, normalisation and model."""
    predictor = cnnforge.load_predictor(run_dir, device="cpu")
    with torch.no_grad():
        batch = torch.stack([predictor.preprocess(image) for image in images])
        return predictor.model(predictor.normalise(batch)).numpy()


def _predict_labels(run_dir: Path, images: np.ndarray, folder: Path) -> list[str]:
    """The class names ``cnnforge predict --json`` gives for ``images`` written as PNG files."""
    files = []
    for i, image in enumerate(images):
        files.append(str(folder / f"image{i}.png"))
        cv2.imwrite(files[-1], image)
    proc = cli("predict", str(run_dir), *files, "--json", "--topk", "1")
    assert proc.returncode == 0, proc.stderr
    return [answer["label"] for answer in json.loads(proc.stdout)]


def test_export_torchscript_runs_without_cnnforge(run_dir: Path, test_images: tuple[np.ndarray, list[dict[str, str]]],
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, _ = test_images
    proc = cli("export", str(run_dir), "--format", "torchscript")
    assert proc.returncode == 0, proc.stderr
    exported = run_dir / "export" / "digits_convnet-best.pt"
    sidecar = json.loads(exported.with_name(exported.name + ".json").read_text())
    assert sidecar["image_size"] == [8, 8] and sidecar["channels"] == 1 and sidecar["classes"][0] == "0"

    batch = tmp_path / "batch.npy"
    np.save(batch, np.ascontiguousarray(images[:16].transpose(0, 3, 1, 2)))  # raw uint8 NCHW
    out = subprocess.run([sys.executable, "-c", _LOAD_TORCHSCRIPT, str(exported), str(batch)], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["cnnforge_imported"] is False and answer["classes"] == sidecar["classes"]
    expected = _predict_logits(run_dir, images[:16])
    assert np.abs(np.array(answer["logits"]) - expected).max() < 1e-4
    assert np.abs(np.array(answer["float_logits"]) - expected).max() < 1e-4  # 0..255 floats give the same
    labels = [answer["classes"][i] for i in np.argmax(answer["logits"], 1)]
    assert labels == _predict_labels(run_dir, images[:16], tmp_path)

    proc = cli_here(capsys, "export", str(run_dir), "--format", "torchscript")
    assert proc.returncode == 1 and "already exists (use --force" in one_error_line(proc)
    proc = cli_here(capsys, "export", str(run_dir), "--format", "torchscript", "--force")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("dtype, onnx_type", [("uint8", "tensor(uint8)"), ("float32", "tensor(float)")])
def test_export_onnx_runs_in_onnx_runtime(run_dir: Path, test_images: tuple[np.ndarray, list[dict[str, str]]],
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str], dtype: str,
                                          onnx_type: str) -> None:
    import onnxruntime

    images, _ = test_images
    target = tmp_path / f"digits-{dtype}.onnx"
    proc = cli_here(capsys, "export", str(run_dir), "--format", "onnx", "--dtype", dtype, "--out", str(target))
    assert proc.returncode == 0, proc.stderr
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (pixels,), (logits,) = session.get_inputs(), session.get_outputs()
    assert (pixels.name, pixels.type, pixels.shape) == ("pixels", onnx_type, ["batch", 1, 8, 8])
    assert logits.name == "logits" and logits.shape == ["batch", 10]
    meta = session.get_modelmeta().custom_metadata_map  # the model's metadata_props
    assert json.loads(meta["classes"]) == [str(d) for d in range(10)] and json.loads(meta["image_size"]) == [8, 8]
    assert meta["format"] == "onnx" and meta["checkpoint"] == "best" and dtype in meta["input"]
    assert json.loads((tmp_path / f"digits-{dtype}.onnx.json").read_text())["classes"] == json.loads(meta["classes"])

    batch = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(dtype)  # raw pixels, N x C x H x W
    got = session.run(None, {"pixels": batch})[0]
    expected = _predict_logits(run_dir, images)
    assert got.shape == (len(images), 10) and np.abs(got - expected).max() < 1e-4
    assert np.abs(session.run(None, {"pixels": batch[:1]})[0] - expected[:1]).max() < 1e-4  # any batch size
    assert [str(i) for i in got[:16].argmax(1)] == _predict_labels(run_dir, images[:16], tmp_path)


def test_export_dtype_is_for_onnx_only(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "export", str(run_dir), "--format", "torchscript", "--dtype", "float32")
    assert proc.returncode == 2 and "--dtype: applies to --format onnx only" in one_error_line(proc)


def test_export_onnx_without_the_extra_names_it(run_dir: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # what an install without cnnforge[onnx] looks like
    proc = cli_here(capsys, "export", str(run_dir), "--format", "onnx")
    assert proc.returncode == 2
    assert one_error_line(proc) == ("cnnforge: error: cnnforge export --format onnx: needs onnx, which is not "
                                    "installed (pip install 'cnnforge[onnx]')")
    assert not (run_dir / "export" / "digits_convnet-best.onnx").exists()


def test_export_safetensors_carries_weights_and_preprocessing(run_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    target = tmp_path / "digits.safetensors"
    proc = cli_here(capsys, "export", str(run_dir), "--format", "safetensors", "--checkpoint", "last", "--out",
                    str(target))
    assert proc.returncode == 0, proc.stderr
    final = load_file(run_dir / "model.safetensors")
    exported = load_file(target)
    assert exported.keys() == final.keys() and all(torch.equal(exported[k], final[k]) for k in final)
    with safe_open(str(target), "pt") as f:
        meta = json.loads(f.metadata()["cnnforge"])
    assert meta["checkpoint"] == "last" and meta["model"]["name"] == "convnet" and len(meta["mean"]) == 1
    assert json.loads((tmp_path / "digits.safetensors.json").read_text()) == meta
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (target, tmp_path / "digits.safetensors.json",
                                                                 run_dir / "model.safetensors")}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)  # safetensors alone would leave 0600


def test_predictor_follows_eval_pipelines_that_resize(tmp_path: Path) -> None:
    """Training crops 8x8 digits to 16x16; evaluation resizes to 20 and centre-crops 16: so must predict."""
    run = cnnforge.train(DIGITS, ["train.epochs=1", "data.num_workers=0", f"train.out_dir={tmp_path}",
                                  "augment.train=[{name: random_resized_crop, size: 16, scale: [0.5, 1.0]}]",
                                  "augment.eval=[{name: resize, size: 20}, {name: center_crop, size: 16}]"],
                         quiet=True).run_dir
    predictor = cnnforge.load_predictor(run)
    assert predictor.info.image_size == (16, 16) and predictor.stored_shape == (8, 8, 1)
    test = build_splits(cnnforge.load_recipe(run / "recipe.yaml")).test
    images = np.stack([test.base[int(i)][0] for i in test.indices])
    with (run / "reports" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    probs = predictor.probabilities(images)
    assert [str(p) for p in probs.argmax(1)] == [r["predicted"] for r in rows]
    assert np.allclose(probs.max(1), [float(r["confidence"]) for r in rows], atol=2e-6)
    big = np.kron(images[0, :, :, 0], np.ones((4, 4), np.uint8))  # the same digit at 32x32
    assert np.allclose(predictor.probabilities(big), probs[:1], atol=1e-6)  # brought back to the stored 8x8 first


def test_predictor_of_an_unfinished_run(run_dir: Path, test_images: tuple[np.ndarray, list[dict[str, str]]],
                                        tmp_path: Path) -> None:
    """Before the run ends there are no final weights and no data_info.json: the newest checkpoint and the data
    serve."""
    images, _ = test_images
    copy = tmp_path / "unfinished"
    drop = {run_dir / "model.safetensors", run_dir / "data_info.json", run_dir / "checkpoints" / "best.safetensors",
            run_dir / "reports", run_dir / "export"}
    shutil.copytree(run_dir, copy, ignore=lambda folder, names: [n for n in names if Path(folder) / n in drop])
    predictor = cnnforge.load_predictor(copy)
    assert predictor.checkpoint == "last" and predictor.stored_shape == (8, 8, 1)
    final = cnnforge.load_predictor(run_dir, checkpoint="last")  # the last checkpoint holds the final weights
    assert np.allclose(predictor.probabilities(images[:8]), final.probabilities(images[:8]), atol=1e-6)
    with pytest.raises(cnnforge.CnnforgeError, match="kept no best weights"):
        cnnforge.load_predictor(copy, checkpoint="best")
