"""Datasets in every on-disk layout cnnforge reads, their splits, and the one-line errors for bad data."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import cnnforge
from cnnforge.data.idx import read_idx
from cnnforge.data.image_folder import list_image_folder
from cnnforge.data.loading import Splits, build_splits
from cnnforge.errors import ConfigError, DataError
from tests.conftest import cli, cli_here, one_error_line
from tests.datafiles import truncate, write_cifar100, write_idx, write_image_folder, write_mnist


def open_splits(data: dict[str, Any], seed: int = 0, **sections: Any) -> Splits:
    recipe = cnnforge.load_recipe({"name": "t", "seed": seed, "data": {"num_workers": 0, **data}, **sections})
    return build_splits(cnnforge.check_recipe(recipe))


def write_recipe(path: Path, data: dict[str, Any], **sections: Any) -> Path:
    path.write_text(yaml.safe_dump({"name": "t", "data": {"num_workers": 0, **data}, **sections}))
    return path


def base_files(ds: Any) -> list[int]:
    return [int(i) for i in ds.indices]


# ------------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx_gz_and_plain(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, n_train=100, n_test=30, gz=gz)
    s = open_splits({"name": "mnist", "root": str(tmp_path), "val_fraction": 0.2})
    assert (s.info.channels, s.info.image_size, s.info.classes) == (1, (28, 28), [str(d) for d in range(10)])
    assert s.info.mean == pytest.approx((0.1307,)) and s.info.std == pytest.approx((0.3081,))
    assert (len(s.train), len(s.val), len(s.test)) == (80, 20, 30)
    image, label = s.test[3]
    assert image.shape == (1, 28, 28) and image.dtype.is_floating_point is False and label == 3


def test_fashion_mnist_has_its_classes(tmp_path: Path) -> None:
    write_mnist(tmp_path, folder="FashionMNIST", gz=False)
    s = open_splits({"name": "fashion_mnist", "root": str(tmp_path)})
    assert s.info.classes[0] == "T-shirt/top" and s.info.classes[9] == "Ankle boot"
    assert s.info.mean == pytest.approx((0.2860,))


def test_idx_round_trip_and_bad_magic(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", array)), array)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a-idx3-ubyte", array)), array)
    zipped = tmp_path / "c-idx3-ubyte"
    zipped.write_bytes(b"PK\x03\x04 a zip file, not IDX")
    with pytest.raises(DataError, match="bad magic") as err:
        read_idx(zipped)
    assert err.value.where == str(zipped)


def test_unpacked_idx_files_win_over_gz(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=50, gz=True)
    write_mnist(tmp_path, n_train=70, gz=False)  # torchvision leaves both after extracting
    assert len(open_splits({"name": "mnist", "root": str(tmp_path), "val_fraction": 0.0}).train) == 70


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_names_the_file(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    bad = truncate(tmp_path / "MNIST" / "raw" / name, 0.6)
    with pytest.raises(DataError) as err:
        open_splits({"name": "mnist", "root": str(tmp_path)})
    assert err.value.where == str(bad)
    assert ("gzip" if gz else "truncated") in err.value.message


def test_mismatched_idx_label_count(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
    with pytest.raises(DataError, match="labels for 120 images"):
        open_splits({"name": "mnist", "root": str(tmp_path)})


# ------------------------------------------------------------------------------------------- CIFAR

def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    write_cifar100(tmp_path, n_train=200, n_test=50)
    fine = open_splits({"name": "cifar100", "root": str(tmp_path), "val_fraction": 0.5})
    assert len(fine.info.classes) == 100 and fine.info.classes[7] == "fine7"
    assert (fine.info.channels, fine.info.image_size) == (3, (32, 32))
    assert (len(fine.train), len(fine.val), len(fine.test)) == (100, 100, 50)
    coarse = open_splits({"name": "cifar100", "root": str(tmp_path), "labels": "coarse"})
    assert len(coarse.info.classes) == 20 and coarse.test[49][1] == 49 // 5


def test_cifar_truncated_pickle_names_the_file(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    bad = truncate(tmp_path / "cifar-100-python" / "train", 0.5)
    with pytest.raises(DataError, match="not a readable dataset pickle") as err:
        open_splits({"name": "cifar100", "root": str(tmp_path)})
    assert err.value.where == str(bad)


def test_cifar10_layout(cifar_root: Path) -> None:
    s = open_splits({"name": "cifar10", "root": str(cifar_root)})
    assert s.info.classes[0] == "airplane" and (len(s.train), len(s.val), len(s.test)) == (180, 20, 60)


def test_unknown_dataset_param_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown parameter") as err:
        open_splits({"name": "cifar100", "root": str(tmp_path), "lables": "coarse"})
    assert "data.lables" in str(err.value) and "labels" in str(err.value)


# ------------------------------------------------------------------------------------------- image folders

def test_imagefolder_stratified_split_is_deterministic(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", per_class=10)
    s = open_splits({"name": "imagefolder", "root": str(root), "split": [0.6, 0.2, 0.2]}, seed=3)
    assert s.info.classes == ["cat", "dog", "frog"] and (s.info.channels, s.info.image_size) == (3, (16, 16))
    assert (len(s.train), len(s.val), len(s.test)) == (18, 6, 6)
    for part, per_class in ((s.train, 6), (s.val, 2), (s.test, 2)):  # stratified: class shares kept
        assert np.bincount(part.labels).tolist() == [per_class] * 3
    assert not set(base_files(s.train)) & set(base_files(s.test))
    again = open_splits({"name": "imagefolder", "root": str(root)}, seed=3)
    other = open_splits({"name": "imagefolder", "root": str(root)}, seed=4)
    assert base_files(again.test) == base_files(s.test) and base_files(other.test) != base_files(s.test)


def test_imagefolder_jpeg_grayscale_and_resize(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "digits", classes=("0", "1"), per_class=6, size=20, suffix=".jpg")
    s = open_splits({"name": "imagefolder", "root": str(root), "grayscale": True, "image_size": [12, 10]})
    assert (s.info.channels, s.info.image_size) == (1, (12, 10))
    assert s.train[0][0].shape == (1, 12, 10)


def test_imagefolder_uses_train_val_test_folders(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", per_class=8)
    write_image_folder(tmp_path / "test", classes=("cat", "frog"), per_class=3, seed=1)
    s = open_splits({"name": "imagefolder", "root": str(tmp_path), "val_fraction": 0.25})
    assert (len(s.train), len(s.val), len(s.test)) == (18, 6, 6)  # val carved from train/, test/ as it is
    assert sorted(set(s.test.labels.tolist())) == [0, 2]  # labels follow train/'s class order
    write_image_folder(tmp_path / "val", classes=("dog",), per_class=2, seed=2)
    s = open_splits({"name": "imagefolder", "root": str(tmp_path)})
    assert (len(s.train), len(s.val), len(s.test)) == (24, 2, 6) and set(s.val.labels.tolist()) == {1}
    (tmp_path / "test").rename(tmp_path / "held_out")  # train/ and val/ only: test carved from train/
    s = open_splits({"name": "imagefolder", "root": str(tmp_path), "split": [0.5, 0.25, 0.25]})
    assert (len(s.train), len(s.val), len(s.test)) == (18, 2, 6) and np.bincount(s.test.labels).tolist() == [2, 2, 2]
    assert s.test.base is s.train.base and not set(base_files(s.train)) & set(base_files(s.test))


def test_imagefolder_test_class_unknown_to_train(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", classes=("cat", "dog"), per_class=4)
    write_image_folder(tmp_path / "test", classes=("cow",), per_class=2)
    with pytest.raises(DataError, match="not one of the training classes") as err:
        open_splits({"name": "imagefolder", "root": str(tmp_path)})
    assert err.value.where == str(tmp_path / "test" / "cow")


def test_imagefolder_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    write_image_folder(tmp_path, classes=("a",), per_class=3, size=16)
    write_image_folder(tmp_path, classes=("b",), per_class=3, size=24)
    with pytest.raises(DataError, match="set data.image_size") as err:
        open_splits({"name": "imagefolder", "root": str(tmp_path)})
    assert err.value.where.endswith(os.path.join("b", "000.png"))
    assert open_splits({"name": "imagefolder", "root": str(tmp_path), "image_size": 16}).info.image_size == (16, 16)


def test_empty_class_folder_and_missing_root(tmp_path: Path) -> None:
    write_image_folder(tmp_path, classes=("a", "b"), per_class=3)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="holds no images") as err:
        open_splits({"name": "imagefolder", "root": str(tmp_path)})
    assert err.value.where == str(tmp_path / "c")
    with pytest.raises(DataError, match="no such folder") as err:
        open_splits({"name": "imagefolder", "root": str(tmp_path / "nope")})
    assert err.value.where == str((tmp_path / "nope").resolve()) and "<class>/<image> folders" in err.value.hint


@pytest.fixture
def folder_with_bad_images(tmp_path: Path) -> Path:
    root = write_image_folder(tmp_path / "imgs", per_class=6, suffix=".jpg")
    truncate(root / "dog" / "002.jpg", 0.4)  # cut short, as an interrupted copy leaves it
    (root / "frog" / "003.jpg").write_bytes(b"\x00not an image at all" * 4)
    return root


def test_corrupt_image_errors_naming_the_file(folder_with_bad_images: Path) -> None:
    with pytest.raises(DataError, match="unreadable image") as err:
        open_splits({"name": "imagefolder", "root": str(folder_with_bad_images)})
    assert err.value.where == str(folder_with_bad_images / "dog" / "002.jpg")
    assert "on_bad_image: skip" in (err.value.hint or "")


def test_on_bad_image_skip_warns_once_with_count(folder_with_bad_images: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="cnnforge"):
        s = open_splits({"name": "imagefolder", "root": str(folder_with_bad_images), "on_bad_image": "skip",
                         "split": [0.5, 0.25, 0.25]})
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "skipped 2 unreadable image(s) of 18" in warnings[0]
    assert len(s.train) + len(s.val) + len(s.test) == 16


def test_bad_on_bad_image_value_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.on_bad_image"):
        open_splits({"name": "imagefolder", "root": str(tmp_path), "on_bad_image": "ignore"})


# ------------------------------------------------------------------------------------------- CLI

def test_data_split_materialises_the_in_memory_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_image_folder(tmp_path / "src", per_class=10)
    proc = cli_here(capsys, "data", "split", str(src), str(tmp_path / "dst"), "--ratios", "0.6", "0.2", "0.2",
                    "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    assert "train 18, val 6, test 6" in proc.stdout
    listing = list_image_folder(src)
    memory = open_splits({"name": "imagefolder", "root": str(src)}, seed=5)
    for name, part in (("train", memory.train), ("val", memory.val), ("test", memory.test)):
        folder = tmp_path / "dst" / name
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
        assert on_disk == sorted(listing.files[i].relative_to(src).as_posix() for i in part.indices), name
    again = cli_here(capsys, "data", "split", str(src), str(tmp_path / "dst"))
    assert again.returncode == 1 and "nothing is overwritten" in one_error_line(again)
    assert len(list((tmp_path / "dst").rglob("*.png"))) == 30
    bad = cli_here(capsys, "data", "split", str(src), str(tmp_path / "dst2"), "--ratios", "0.6", "0.3", "0.3")
    assert bad.returncode == 2 and "--ratios" in one_error_line(bad)


def test_cli_bad_data_is_one_line(tmp_path: Path, folder_with_bad_images: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    write_mnist(tmp_path / "m", gz=True)
    truncate(tmp_path / "m" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", 0.5)
    recipe = write_recipe(tmp_path / "r.yaml", {"name": "mnist", "root": str(tmp_path / "m")})
    proc = cli_here(capsys, "show", str(recipe), "--no-model")  # schema only: the data is not opened
    assert proc.returncode == 0
    proc = cli_here(capsys, "augment", "preview", str(recipe), "--out", str(tmp_path / "p.png"))
    line = one_error_line(proc)
    assert proc.returncode == 1 and "t10k-labels-idx1-ubyte.gz" in line and not (tmp_path / "p.png").exists()
    proc = cli_here(capsys, "augment", "preview", str(recipe), "data.root=" + str(tmp_path / "missing"), "--out",
               str(tmp_path / "p.png"))
    line = one_error_line(proc)
    missing = tmp_path.resolve() / "missing" / "MNIST" / "raw"
    assert proc.returncode == 1 and f"{missing}: no such folder (expected " in line
    assert "t10k-labels-idx1-ubyte" in line and "data.download: true" in line and "torchvision.datasets.MNIST" in line
    recipe = write_recipe(tmp_path / "f.yaml", {"name": "imagefolder", "root": str(folder_with_bad_images)})
    proc = cli_here(capsys, "augment", "preview", str(recipe), "--out", str(tmp_path / "p.png"))
    assert proc.returncode == 1 and "dog/002.jpg: unreadable image" in one_error_line(proc)


def test_download_offline_fails_in_one_line(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", {"name": "mnist", "root": str(tmp_path / "data"), "download": True})
    closed = "http://127.0.0.1:9"  # every request goes to a closed local port: offline, never the network
    env = {"http_proxy": closed, "https_proxy": closed, "HTTP_PROXY": closed, "HTTPS_PROXY": closed,
           "no_proxy": "", "NO_PROXY": ""}
    proc = cli("augment", "preview", str(recipe), "--out", str(tmp_path / "p.png"), env=env)
    line = one_error_line(proc)
    assert proc.returncode == 1 and "download failed" in line and "MNIST" in line


def test_channel_mismatch_caught_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", {"name": "digits"}, model={"name": "convnet", "in_channels": 3},
                          train={"epochs": 1, "out_dir": str(tmp_path / "runs")})
    proc = cli_here(capsys, "run", str(recipe))
    line = one_error_line(proc)
    assert proc.returncode == 2 and "model.in_channels: is 3 but digits images have 1 channel(s)" in line
    assert not (tmp_path / "runs").exists()
