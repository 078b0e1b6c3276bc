"""Data, caches and shards under bad or changed input: a cache never serves stale data, a damaged one is
rebuilt, runs remember their data, labels and class names are checked (never coerced), odd formats are
read as their own libraries read them, and ``data split``/``data pack`` never read their own output."""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

import cnnforge
from cnnforge.data.loading import build_splits
from tests.conftest import cli_here, one_error_line
from tests.datafiles import labelled_images, png, write_hf, write_image_folder, write_shards

DIGITS = "recipes/digits_convnet.yaml"


def _splits(data: dict, **sections: object) -> object:
    recipe = cnnforge.load_recipe({"name": "t", "data": {"num_workers": 0, **data}, **sections})
    return build_splits(cnnforge.check_recipe(recipe))


def _pixels(dataset: object) -> bytes:
    return b"".join(dataset[i][0].numpy().tobytes() for i in range(len(dataset)))


def _run(capsys: pytest.CaptureFixture[str], out: Path, *overrides: str):
    return cli_here(capsys, "run", DIGITS, *overrides, "train.epochs=1", f"train.out_dir={out}")


def _refused(proc, code: int, *expect: str) -> str:
    line = one_error_line(proc)
    assert proc.returncode == code, proc.stderr
    for text in expect:
        assert text in line, line
    return line


# ------------------------------------------------------------------------------ the decoded-image cache

def _cached(root: Path, key: str = "mtime") -> object:
    return _splits({"name": "imagefolder", "root": str(root), "image_size": 8, "cache": "disk", "cache_key": key})


def _rewrite_keeping_stat(file: Path, data: bytes) -> None:
    """Replace ``file``'s bytes by as many other bytes, with its old mtime: what ``cp -p`` or ``rsync -a`` does."""
    st = file.stat()
    assert len(data) == st.st_size
    file.write_bytes(data)
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_content_key_sees_a_same_size_file_copied_with_its_timestamps(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "photos", per_class=4, size=8, suffix=".bmp")  # BMP: same size, any pixels
    before = _pixels(_cached(root, "mtime").train)
    for file in sorted(root.rglob("*.bmp")):
        header = 54  # a 24-bit BMP's headers; the rest is pixels
        data = file.read_bytes()
        _rewrite_keeping_stat(file, data[:header] + bytes(255 - b for b in data[header:]))
    assert _pixels(_cached(root, "mtime").train) == before  # size + mtime cannot tell (documented)
    assert _pixels(_cached(root, "content").train) != before


def test_cache_key_covers_labels_and_class_names(tmp_path: Path) -> None:
    root = write_shards(tmp_path / "wds", {"train": 30}, classes=("a", "b", "c"))
    data = {"name": "webdataset", "root": str(root), "image_size": 8, "cache": "disk"}
    assert _splits(data).info.classes == ["a", "b", "c"]
    classes = root / "classes.txt"
    st = classes.stat()
    classes.write_text("x\ny\nz\n")  # a corrected classes.txt
    os.utime(classes, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _splits(data).info.classes == ["x", "y", "z"]


@pytest.mark.parametrize("damage", ["cut-images", "garbled-meta", "labels-gone"])
def test_a_damaged_cache_is_rebuilt_before_the_run_starts(tmp_path: Path, damage: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    root = write_image_folder(tmp_path / "photos", per_class=6, size=8)
    before = _pixels(_cached(root).train)
    folder = next(p for p in (Path(os.environ["CNNFORGE_CACHE"]) / "decoded").iterdir()
                  if p.is_dir() and ".tmp-" not in p.name and json.loads((p / "meta.json").read_text())["source"]
                  == str(root))
    if damage == "cut-images":
        (folder / "images.npy").write_bytes((folder / "images.npy").read_bytes()[:300])
    elif damage == "garbled-meta":
        (folder / "meta.json").write_text('{"classes": [')
    else:
        (folder / "labels.npy").unlink()
    assert _pixels(_cached(root).train) == before
    assert f"{folder}: damaged decoded-image cache" in caplog.text


# ------------------------------------------------------------------------------- runs remember their data

def test_resume_and_eval_refuse_a_changed_split_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    root = write_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=10, size=8)
    proc = _run(capsys, tmp_path / "runs", "data.name=imagefolder", f"data.root={root}", "data.image_size=8",
                "train.checkpoint_every=1")
    assert proc.returncode == 0, proc.stderr
    run = next((tmp_path / "runs").glob("*/*/"))
    assert set(json.loads((run / "manifest.json").read_text())["data_splits"]) == {"train", "val", "test"}
    report = (run / "reports" / "metrics.json").read_bytes()
    write_image_folder(root, classes=("cat", "dog"), per_class=14, size=8, seed=5)  # images added

    _refused(cli_here(capsys, "resume", str(run)), 2, "manifest.json: the train split differs from the run's data",
             "samples now, 12 when the run started", "--force")
    _refused(cli_here(capsys, "eval", str(run)), 2, "the test split differs", "samples now, 4 when")
    forced = cli_here(capsys, "eval", str(run), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "the test split differs from the run's data" in caplog.text and "--force: evaluate anyway" in caplog.text
    assert len(list((run / "reports").glob("test-*-new-data/metrics.json"))) == 1
    assert (run / "reports" / "metrics.json").read_bytes() == report  # the run's own report is kept
    resumed = cli_here(capsys, "resume", str(run), "--force")
    assert resumed.returncode == 0 and "--force: resume anyway" in caplog.text


# ----------------------------------------------------------------------- labels and classes: checked, not coerced

def _parquet(root: Path, labels: list, *, files: int = 1) -> Path:
    import datasets

    images, _ = labelled_images(len(labels), 2, 0)
    (root / "data").mkdir(parents=True)
    table = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in images], "label": labels},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.Value(_dtype(labels))}))
    for k in range(files):
        table.to_parquet(str(root / "data" / f"train-{k:05d}-of-{files:05d}.parquet"))
    return root


def _dtype(labels: list) -> str:
    return {bool: "bool", float: "float64", str: "string", int: "int64"}[type(labels[0])]


@pytest.mark.parametrize(("labels", "expect"), [
    ([0.0, 1.0, 1.5, 0.0], "label 1.5 (sample 2) is not a whole number"),
    ([True, False, True, False], "labels are booleans, not integers"),
    (["cat", "dog", "cat", "dog"], "labels are strings, not integers"),
])
def test_parquet_labels_that_are_not_integers_name_file_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   labels: list, expect: str) -> None:
    root = _parquet(tmp_path / "pq", labels)
    proc = _run(capsys, tmp_path / "runs", "data.name=hf", f"data.root={root}", "data.image_size=8")
    _refused(proc, 1, "train-00000-of-00001.parquet: column 'label'", expect)
    assert not (tmp_path / "runs").exists()


def test_whole_float_labels_are_taken(tmp_path: Path) -> None:
    root = _parquet(tmp_path / "pq", [0.0, 1.0] * 6)
    assert list(_splits({"name": "hf", "root": str(root), "image_size": 8}).train.labels) != []


@pytest.mark.parametrize(("value", "expect"), [(1.5, "label 1.5 (sample 0) is not a whole number"),
                                               (True, "label True is not an integer")])
def test_json_labels_in_shards_are_not_coerced(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: object,
                                               expect: str) -> None:
    import webdataset

    root = write_shards(tmp_path / "wds", {"train": 30})
    with webdataset.TarWriter(str(root / "train-000009.tar")) as sink:
        sink.write({"__key__": "odd", "png": labelled_images(1, 2, 0)[0][0], "json": {"label": value}})
    proc = _run(capsys, tmp_path / "runs", "data.name=webdataset", f"data.root={root}", "data.image_size=8")
    _refused(proc, 1, "train-000009.tar: odd.json", expect)


@pytest.mark.parametrize(("file", "text", "expect"), [
    ("dataset.json", '{"classes": "abc"}', "dataset.json: \"classes\" must be a list of names, not str 'abc'"),
    ("classes.txt", "a\nb\na\n", "classes.txt: class name 'a' appears twice"),
])
def test_bad_class_lists_name_their_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, text: str,
                                         expect: str) -> None:
    root = write_shards(tmp_path / "wds", {"train": 30})
    (root / "classes.txt").unlink()
    (root / file).write_text(text)
    _refused(_run(capsys, tmp_path / "runs", "data.name=webdataset", f"data.root={root}", "data.image_size=8"), 1,
             expect)


def test_non_utf8_folder_names_stay_distinct_classes(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "photos", classes=("a", "b"), per_class=4, size=8)
    os.rename(root / "a", os.path.join(os.fsencode(root), b"d\xf6g"))  # Latin-1 bytes: not UTF-8
    os.rename(root / "b", os.path.join(os.fsencode(root), b"d\xfcg"))
    assert _splits({"name": "imagefolder", "root": str(root), "image_size": 8}).info.classes == ["d\\xf6g", "d\\xfcg"]


def test_hf_val_split_is_mapped_to_train_classes_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import datasets

    train = datasets.load_from_disk(str(write_hf(tmp_path / "hf", {"train": 12}, classes=("a", "b", "c"))))["train"]
    images, labels = labelled_images(6, 3, 1)
    for names, expect in ((["c", "a", "b"], None), (["c", "a", "z"], "class 'z' of column 'label'")):
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        val = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in images], "label": labels},
                                         features=features)
        shutil.rmtree(tmp_path / "both", ignore_errors=True)
        datasets.DatasetDict({"train": train, "validation": val}).save_to_disk(str(tmp_path / "both"))
        if expect is None:  # val's label 0 ("c") is train's class 2, and so on
            splits = _splits({"name": "hf", "root": str(tmp_path / "both"), "image_size": 8})
            assert list(splits.val.labels) == [["a", "b", "c"].index(names[y]) for y in labels]
        else:
            _refused(_run(capsys, tmp_path / "runs", "data.name=hf", f"data.root={tmp_path / 'both'}",
                          "data.image_size=8"), 1, "both (val)", expect)


def test_pack_refuses_a_class_name_classes_txt_cannot_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_image_folder(tmp_path / "photos", classes=("a", "b"), per_class=3, size=8)
    os.rename(root / "b", root / "b\nc")
    proc = cli_here(capsys, "data", "pack", str(root), str(tmp_path / "out"), "--format", "webdataset")
    _refused(proc, 1, "class name 'b\\nc' cannot be written as a line of classes.txt")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ formats

def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path: Path) -> None:
    import cv2

    from cnnforge.data.decode import read_image

    levels = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), levels)
    assert read_image(tmp_path / "deep.png", 1)[..., 0].tolist() == [[0, 1, 128, 255]]


def test_shard_keys_longer_than_the_ustar_name_field(tmp_path: Path) -> None:
    import webdataset

    root = tmp_path / "wds"
    root.mkdir()
    images, labels = labelled_images(6, 2, 0)
    with tarfile.open(root / "train-000000.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            for ext, data in (("png", image), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"{'long-folder-name/' * 8}sample{i:03d}.{ext}")  # 140 characters
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (root / "classes.txt").write_text("a\nb\n")
    theirs = [int(s["cls"]) for s in webdataset.WebDataset(str(root / "train-000000.tar"), shardshuffle=False)]
    ours = _splits({"name": "webdataset", "root": str(root), "image_size": 8, "split": [0.5, 0.25, 0.25]})
    assert theirs == labels and len(ours.train.base) == len(theirs)
    assert sorted(ours.train.base.labels) == sorted(theirs)


def test_an_empty_shard_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_shards(tmp_path / "wds", {"train": 30})
    with tarfile.open(root / "train-000007.tar", "w"):
        pass
    _refused(_run(capsys, tmp_path / "runs", "data.name=webdataset", f"data.root={root}", "data.image_size=8"), 1,
             "train-000007.tar: the shard holds no samples")


def test_a_damaged_parquet_file_is_the_one_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _parquet(tmp_path / "pq", [0, 1] * 4, files=3)
    second = root / "data" / "train-00001-of-00003.parquet"
    second.write_bytes(second.read_bytes()[:-40])  # the footer cut off
    _refused(_run(capsys, tmp_path / "runs", "data.name=hf", f"data.root={root}", "data.image_size=8"), 1,
             "train-00001-of-00003.parquet: cannot read the parquet file")


@pytest.mark.parametrize("name", ["webdataset", "hf"])
def test_image_size_bounds_apply_to_every_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  name: str) -> None:
    proc = _run(capsys, tmp_path / "runs", f"data.name={name}", f"data.root={tmp_path}", "data.image_size=9000")
    _refused(proc, 2, "data.image_size")


def test_an_image_over_the_side_limit_is_refused_at_the_start(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = write_image_folder(tmp_path / "photos", classes=("a", "b"), per_class=4, size=8)
    (root / "b" / "wide.png").write_bytes(png(np.zeros((2, 9000), dtype=np.uint8)))
    proc = _run(capsys, tmp_path / "runs", "data.name=imagefolder", f"data.root={root}", "data.cache=memory")
    _refused(proc, 1, "wide.png: unreadable image: is 2x9000; cnnforge reads images with sides up to 8192")
    assert not (tmp_path / "runs").exists()


# -------------------------------------------------------------------------------------- data split, data pack

@pytest.mark.parametrize("action", ["split", "pack"])
def test_split_and_pack_refuse_a_destination_inside_the_source(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               action: str) -> None:
    root = write_image_folder(tmp_path / "photos", classes=("a", "b"), per_class=3, size=8)
    extra = ["--format", "webdataset"] if action == "pack" else []
    proc = cli_here(capsys, "data", action, str(root), str(root / "a" / "out"), *extra)
    _refused(proc, 1, "out: is inside the source folder")
    assert sorted(p.name for p in root.iterdir()) == ["a", "b"]


def test_pack_takes_its_source_as_a_path_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_image_folder(tmp_path / "[x]: y", classes=("a", "b"), per_class=3, size=8)
    recipe = tmp_path / "folder.yaml"
    recipe.write_text("name: folder\ndata: {name: imagefolder, image_size: 8}\n")
    proc = cli_here(capsys, "data", "pack", str(root), str(tmp_path / "out"), "--format", "webdataset", "--recipe",
                    str(recipe), "-q")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "out").glob("train-*.tar"))) == 1
