"""``data.name: webdataset`` and ``data.name: hf`` on files written by those libraries, and ``cnnforge data pack``."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import DDP_LAUNCH, ROOT, cli, cli_here, one_error_line
from tests.datafiles import truncate, write_hf, write_image_folder, write_shards

# parquet files are converted into datasets' cache: keep it out of the user's home
os.environ.setdefault("HF_HOME", str(Path(tempfile.gettempdir()) / f"cnnforge-tests-hf-{os.getuid()}"))

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")


def _run_args(out: Path, name: str, root: Path | str, *extra: str) -> list[str]:
    return ["run", DIGITS, f"data.name={name}", f"data.root={root}", "train.epochs=1", f"train.out_dir={out}",
            "data.num_workers=0", *extra]


def _summary(out: Path) -> dict:
    return json.loads(next(out.rglob("summary.json")).read_text())


# ---------------------------------------------------------------- reading


def test_tar_shards_read_members_with_random_access(tmp_path: Path) -> None:
    from cnnforge.data.tar_shards import TarShards, shard_files

    root = write_shards(tmp_path / "wds", {"train": 60}, per_shard=25, label="json")
    files = shard_files(str(root), "train")
    assert [f.name for f in files] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    shards = TarShards(files, root=str(root))
    assert len(shards) == 60 and shards.classes == ["a", "b", "c"]
    assert shards.labels.tolist() == [i % 3 for i in range(60)]
    assert shards.name(30) == f"{files[1]}: train00030.png"
    again = pickle.loads(pickle.dumps(shards))  # what a loader worker receives: no open file, reopened lazily
    assert again.read(59) == shards.read(59) and shards.read(59)[:8] == b"\x89PNG\r\n\x1a\n"
    before = shards.fingerprint()
    os.utime(files[2], ns=(1, 1))
    assert shards.fingerprint() != before


def test_shard_index_is_reused_until_a_shard_changes(tmp_path: Path) -> None:
    from cnnforge.data.tar_shards import TarShards, shard_files

    root = write_shards(tmp_path / "wds", {"train": 50}, per_shard=25)
    saved = Path(os.environ["CNNFORGE_CACHE"]) / "shard-index"
    first = TarShards(shard_files(str(root), "train"), root=str(root))
    index = {f.name: f.stat().st_mtime_ns for f in saved.iterdir()}
    again = TarShards(shard_files(str(root), "train"), root=str(root))
    assert again.labels.tolist() == first.labels.tolist() and again.read(49) == first.read(49)
    assert {f.name: f.stat().st_mtime_ns for f in saved.iterdir()} == index  # loaded, not written again
    write_shards(tmp_path / "other", {"train": 50}, classes=("x", "y"), per_shard=25)
    (tmp_path / "other" / "train-000001.tar").replace(root / "train-000001.tar")  # rewritten: 2 classes now
    changed = TarShards(shard_files(str(root), "train"), root=str(root))
    assert changed.labels[25:].tolist() == [i % 2 for i in range(25, 50)]


def test_brace_pattern_and_split_placeholder(tmp_path: Path) -> None:
    from cnnforge.data.tar_shards import shard_files

    root = write_shards(tmp_path / "wds", {"train": 50, "validation": 10}, per_shard=25)
    assert len(shard_files(f"{root}/train-{{000000..000001}}.tar", "train")) == 2
    assert shard_files(f"{root}/train-{{000000..000001}}.tar", "val") is None  # carved from train
    assert [f.name for f in shard_files(f"{root}/{{split}}-000000.tar", "val")] == ["validation-000000.tar"]
    with pytest.raises(Exception, match="train-000002.tar: shard of the brace pattern is missing"):
        shard_files(f"{root}/train-{{000000..000002}}.tar", "train")


@pytest.mark.parametrize("parquet", [False, True], ids=["save_to_disk", "parquet"])
def test_hf_reads_undecoded_bytes_labels_and_classes(tmp_path: Path, parquet: bool) -> None:
    from cnnforge.data.hf_datasets import HFImages, open_split

    root = write_hf(tmp_path / "hf", {"train": 30, "validation": 9}, parquet=parquet)
    source = HFImages(*open_split(str(root), "val"), where="hf (val)")
    assert len(source) == 9 and source.classes == ["a", "b", "c"] and source.labels.tolist() == [0, 1, 2] * 3
    assert source.read(4)[:8] == b"\x89PNG\r\n\x1a\n" and source.name(4) == "hf (val): row 4"
    assert open_split(str(root), "test") is None


def test_hf_single_dataset_is_the_training_pool(tmp_path: Path) -> None:
    import datasets

    from cnnforge.data.hf_datasets import HFImages, open_split

    write_hf(tmp_path / "dict", {"train": 12})
    datasets.load_from_disk(str(tmp_path / "dict"))["train"].rename_column("label", "labels").save_to_disk(
        str(tmp_path / "one"))
    source = HFImages(*open_split(str(tmp_path / "one"), "train"), where="one")
    assert len(source) == 12 and source.classes == ["a", "b", "c"]  # ClassLabel found by type, whatever its name
    assert open_split(str(tmp_path / "one"), "val") is None and open_split(str(tmp_path / "one"), "test") is None


# ---------------------------------------------------------------- training through the CLI


@pytest.mark.parametrize("layout", ["webdataset", "webdataset-json", "hf", "parquet"])
def test_train_on_shards_through_the_cli(tmp_path: Path, layout: str) -> None:
    splits = {"train": 90, "test": 30}
    if layout.startswith("webdataset"):
        name, root = "webdataset", write_shards(tmp_path / "d", splits, label="json" if "json" in layout else "cls")
    else:
        name, root = "hf", write_hf(tmp_path / "d", splits, parquet=layout == "parquet")
    proc = cli(*_run_args(tmp_path / "out", name, root, "data.cache=none", "data.image_size=8"))
    assert proc.returncode == 0, proc.stderr
    summary = _summary(tmp_path / "out")
    assert 0.0 <= summary["test/acc"] <= 1.0


def test_pack_then_train_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cnnforge.data.hf_datasets import HFImages, open_split
    from cnnforge.data.tar_shards import TarShards, shard_files

    src = write_image_folder(tmp_path / "folder", per_class=12, size=8, suffix=".jpg")
    packed = cli_here(capsys, "data", "pack", str(src), str(tmp_path / "wds"), "--format", "webdataset",
                      "--shard-size", "4KB")
    assert packed.returncode == 0, packed.stderr
    shards = TarShards(shard_files(str(tmp_path / "wds"), "train"), root=str(tmp_path / "wds"))
    assert len(shard_files(str(tmp_path / "wds"), "train")) > 1  # --shard-size split them
    assert shards.classes == ["cat", "dog", "frog"] and len(shards) == 36
    assert shards.read(13) == (src / "dog" / "001.jpg").read_bytes()  # the original JPEG bytes, not re-encoded

    packed = cli_here(capsys, "data", "pack", "unused", str(tmp_path / "hf"), "--format", "hf", "--recipe", DIGITS)
    assert packed.returncode == 0 and "train 1797 samples, 10 classes" in packed.stdout
    digits = HFImages(*open_split(str(tmp_path / "hf"), "train"), where="digits")
    assert digits.classes == [str(d) for d in range(10)] and len(digits) == 1797

    for name, root in (("webdataset", tmp_path / "wds"), ("hf", tmp_path / "hf")):
        proc = cli_here(capsys, *_run_args(tmp_path / f"out-{name}", name, root))
        assert proc.returncode == 0, proc.stderr
        assert 0.0 <= _summary(tmp_path / f"out-{name}")["test/acc"] <= 1.0

    again = cli_here(capsys, "data", "pack", str(src), str(tmp_path / "wds"), "--format", "hf")
    assert again.returncode == 1 and "nothing is overwritten" in one_error_line(again)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_pack_keeps_the_splits_of_a_split_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cnnforge.data.hf_datasets import HFImages, open_split
    from cnnforge.data.tar_shards import TarShards, shard_files

    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        write_image_folder(tmp_path / "src" / split, per_class=n, size=8)
    for fmt in ("webdataset", "hf"):
        proc = cli_here(capsys, "data", "pack", str(tmp_path / "src"), str(tmp_path / fmt), "--format", fmt)
        assert proc.returncode == 0 and "train 18, val 6, test 9 samples, 3 classes" in proc.stdout
    assert [len(shard_files(str(tmp_path / "webdataset"), s)) for s in ("train", "val", "test")] == [1, 1, 1]
    val = HFImages(*open_split(str(tmp_path / "hf"), "val"), where="val")
    assert len(val) == 6 and val.classes == ["cat", "dog", "frog"] and val.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # an imagefolder recipe (image_size 256) is read without decoding: the files' own bytes are packed
    proc = cli_here(capsys, "data", "pack", str(tmp_path / "src"), str(tmp_path / "by-recipe"), "--format",
                    "webdataset", "--recipe", str(ROOT / "recipes" / "resnet18_transfer.yaml"))
    assert proc.returncode == 0 and "train 18, val 6, test 9 samples" in proc.stdout
    packed = TarShards(shard_files(str(tmp_path / "by-recipe"), "test"), root=str(tmp_path / "by-recipe"))
    assert packed.read(3) == (tmp_path / "src" / "test" / "dog" / "000.png").read_bytes()


# ---------------------------------------------------------------- bad input: one line, the file and member named


def _preview(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, root: Path | str, *extra: str):
    return cli_here(capsys, "augment", "preview", DIGITS, f"data.name={name}", f"data.root={root}", *extra,
                    "--out", str(tmp_path / "p.png"))


def test_truncated_shard_names_the_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_shards(tmp_path / "wds", {"train": 60}, per_shard=25)
    truncate(root / "train-000001.tar", 0.6)
    proc = _preview(capsys, tmp_path, "webdataset", root)
    assert proc.returncode == 1 and "train-000001.tar: truncated tar shard" in one_error_line(proc)


def test_member_without_a_label_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import webdataset

    root = write_shards(tmp_path / "wds", {"train": 30})
    with webdataset.TarWriter(str(root / "train-000009.tar")) as sink:
        sink.write({"__key__": "nolabel", "png": (root / "train-000000.tar").read_bytes()[:10]})
    proc = _preview(capsys, tmp_path, "webdataset", root)
    line = one_error_line(proc)
    assert proc.returncode == 1 and "train-000009.tar: nolabel.png" in line and "no label member" in line


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_corrupt_image_in_a_shard_errors_or_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       caplog: pytest.LogCaptureFixture, cache: str) -> None:
    import webdataset

    root = write_shards(tmp_path / "wds", {"train": 30})
    with webdataset.TarWriter(str(root / "train-000009.tar")) as sink:
        for key in ("broken1", "broken2"):
            sink.write({"__key__": key, "png": b"\x89PNG\r\n\x1a\n not really", "cls": 1})
    proc = _preview(capsys, tmp_path, "webdataset", root, f"data.cache={cache}")
    line = one_error_line(proc)
    assert proc.returncode == 1 and "train-000009.tar: broken1.png: unreadable image" in line
    proc = _preview(capsys, tmp_path, "webdataset", root, f"data.cache={cache}", "data.on_bad_image=skip")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 unreadable image(s) of 32" in caplog.text


def test_parquet_without_an_image_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import datasets

    (tmp_path / "pq").mkdir()
    datasets.Dataset.from_dict({"pixels": [[1, 2], [3, 4]], "label": [0, 1]}).to_parquet(
        str(tmp_path / "pq" / "train-00000.parquet"))
    proc = _preview(capsys, tmp_path, "hf", tmp_path / "pq")
    line = one_error_line(proc)
    assert proc.returncode == 1 and "has no image column (columns: pixels, label)" in line and "image_column" in line
    proc = _preview(capsys, tmp_path, "hf", tmp_path / "pq", "data.image_column=photo")
    assert proc.returncode == 2 and "data.image_column: column 'photo' is not in the dataset" in one_error_line(proc)


def test_folder_of_the_wrong_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_image_folder(tmp_path / "folder", per_class=2)
    proc = _preview(capsys, tmp_path, "hf", folder)
    assert proc.returncode == 1 and "folder: is not a Hugging Face dataset" in one_error_line(proc)
    hf = write_hf(tmp_path / "hf", {"train": 6})
    proc = _preview(capsys, tmp_path, "webdataset", hf)
    line = one_error_line(proc)
    assert proc.returncode == 1 and "hf: has no train-*.tar shards" in line and "data.name: hf" in line
    (tmp_path / "hf" / "dataset_dict.json").write_text("{not json")
    proc = _preview(capsys, tmp_path, "hf", hf)
    assert proc.returncode == 1 and "hf: cannot load the saved dataset" in one_error_line(proc)


def test_no_shards_for_the_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_shards(tmp_path / "wds", {"test": 6})
    proc = _preview(capsys, tmp_path, "webdataset", root)
    assert proc.returncode == 1 and "wds: has no train-*.tar shards" in one_error_line(proc)
    proc = _preview(capsys, tmp_path, "webdataset", tmp_path / "missing")
    assert proc.returncode == 1 and "missing: no such folder" in one_error_line(proc)
    hf = write_hf(tmp_path / "hf", {"test": 6})
    proc = _preview(capsys, tmp_path, "hf", hf)
    assert proc.returncode == 1 and "hf: has no train split" in one_error_line(proc)


def test_pack_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_image_folder(tmp_path / "folder", per_class=2)
    proc = cli_here(capsys, "data", "pack", str(folder), str(tmp_path / "o"), "--format", "hf", "--shard-size", "lots")
    assert proc.returncode == 2 and "--shard-size" in one_error_line(proc)
    proc = cli_here(capsys, "data", "pack", str(tmp_path / "nope"), str(tmp_path / "o"), "--format", "webdataset")
    assert proc.returncode == 1 and "nope: no such folder" in one_error_line(proc)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- DDP: each rank reads its part

EPOCHS_SEEN = """
import json, sys
from cnnforge.data.loading import build_splits, make_loader
from cnnforge.recipe import open_recipe
from cnnforge.training.assemble import make_accelerator
recipe = open_recipe(sys.argv[1], sys.argv[3:])
acc = make_accelerator(recipe.train)
splits = build_splits(recipe)
source, seen = splits.train.base.source, []
read = source.read
source.read = lambda i: seen.append(int(i)) or read(i)  # every image this rank decodes from now on
loader = make_loader(splits.train, batch_size=recipe.data.batch_size, shuffle=True, seed=recipe.seed, num_workers=0)
sampler, loader = loader.sampler, acc.prepare(loader)
epochs = []
for epoch in range(2):
    sampler.use_epoch(epoch)
    seen.clear()
    for _ in loader:
        pass
    epochs.append(list(seen))
with open(f"{sys.argv[2]}/rank{acc.process_index}.json", "w") as f:
    json.dump({"epochs": epochs, "train": splits.train.indices.tolist()}, f)
"""


@pytest.mark.slow
def test_ddp_ranks_read_disjoint_halves_of_the_shards(tmp_path: Path) -> None:
    root = write_shards(tmp_path / "wds", {"train": 400, "test": 40}, per_shard=100)
    script = tmp_path / "seen.py"
    script.write_text(EPOCHS_SEEN)
    proc = subprocess.run([*DDP_LAUNCH, str(script), DIGITS, str(tmp_path), "data.name=webdataset", f"data.root={root}",
                           "data.cache=none", "data.image_size=8", "data.batch_size=30"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    train = sorted(ranks[0]["train"])
    assert len(train) == 360  # 400 less the 10 % carved for val: 12 batches of 30, 6 per rank, no padding
    for epoch in (0, 1):
        mine, theirs = ranks[0]["epochs"][epoch], ranks[1]["epochs"][epoch]
        assert len(mine) == len(theirs) == 180  # each rank decodes its half, never the whole split
        assert sorted(mine + theirs) == train  # every training sample exactly once per epoch
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]  # reshuffled each epoch
