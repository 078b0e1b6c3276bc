"""``data.cache: auto | memory | disk | none`` on image folders: same samples in every mode, a disk cache
built once per node and trusted only when complete, bad images skipped and counted in every mode."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cnnforge.data.loading import Splits
from cnnforge.errors import ConfigError, DataError
from tests.conftest import DDP_LAUNCH, ROOT, cli, one_error_line
from tests.datafiles import write_image_folder
from tests.test_datasets import open_splits


def _cache() -> Path:
    return Path(os.environ["CNNFORGE_CACHE"]) / "decoded"


def _built(root: Path) -> list[Path]:
    """The finished cache folders of this test (the cache root is shared by the session)."""
    return sorted(p for p in _cache().glob("*") if p.is_dir() and ".tmp-" not in p.name
                  and json.loads((p / "meta.json").read_text())["source"] == str(root))


def _items(dataset: torch.utils.data.Dataset) -> list[tuple[bytes, int]]:
    return [(image.numpy().tobytes(), label) for image, label in (dataset[i] for i in range(len(dataset)))]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """JPEGs of two sizes: 24x24 and 40x40."""
    root = write_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=8, size=24, suffix=".jpg")
    return write_image_folder(root, classes=("emu",), per_class=8, size=40, suffix=".jpg", seed=1)


def test_every_mode_gives_the_same_samples(photos: Path) -> None:
    data = {"name": "imagefolder", "root": str(photos), "image_size": 16}
    memory = open_splits({**data, "cache": "memory"})
    for mode in ("disk", "none"):
        other = open_splits({**data, "cache": mode})
        assert other.info == memory.info or mode == "none"  # none measures mean/std on a sample at full size
        for split in ("train", "val", "test"):
            assert _items(getattr(other, split)) == _items(getattr(memory, split)), (mode, split)
        assert other.cache["train"]["mode"] == mode
    assert open_splits({**data, "cache": "disk"}).info == memory.info  # statistics kept with the cache


def test_none_decodes_at_full_resolution_for_the_crop(photos: Path) -> None:
    crop = {"train": [{"name": "random_resized_crop", "size": 12}]}
    splits = open_splits({"name": "imagefolder", "root": str(photos), "cache": "none"}, augment=crop)
    shapes = {splits.train.base[i][0].shape for i in range(len(splits.train.base))}
    assert shapes == {(24, 24, 3), (40, 40, 3)}  # the pipeline sees each photo as it is
    assert splits.info.image_size == (12, 12)
    assert {tuple(splits.train[i][0].shape) for i in range(len(splits.train))} == {(3, 12, 12)}
    assert {tuple(splits.val[i][0].shape) for i in range(len(splits.val))} == {(3, 12, 12)}


def test_none_without_a_known_size_is_a_config_error(photos: Path) -> None:
    with pytest.raises(ConfigError, match="input size is unknown") as err:
        open_splits({"name": "imagefolder", "root": str(photos), "cache": "none"})
    assert err.value.where.endswith("data.image_size")


def test_disk_cache_is_built_once_and_a_changed_file_builds_a_new_one(photos: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"name": "imagefolder", "root": str(photos), "image_size": 16, "cache": "disk"}
    first = open_splits(data)
    assert len(_built(photos)) == 1
    with monkeypatch.context() as m:  # a second run decodes nothing
        m.setattr("cnnforge.data.disk_cache.decode_all", lambda *a, **k: pytest.fail("decoded again"))
        assert _items(open_splits(data).train) == _items(first.train)
    changed = photos / "cat" / "000.jpg"
    write_image_folder(photos.parent / "other", classes=("cat",), per_class=1, size=24, suffix=".jpg", seed=7)
    changed.write_bytes((photos.parent / "other" / "cat" / "000.jpg").read_bytes())  # rewritten in place
    again = open_splits(data)
    assert len(_built(photos)) == 2
    pool = [first.train.base[i][0].tobytes() for i in range(len(first.train.base))]
    assert sum(again.train.base[i][0].tobytes() != image for i, image in enumerate(pool)) == 1


def test_listing_follows_added_and_removed_files(photos: Path) -> None:
    data = {"name": "imagefolder", "root": str(photos), "image_size": 16, "cache": "none", "split": [0.5, 0.25, 0.25]}
    def total(splits: Splits) -> int:
        return len(splits.train) + len(splits.val) + len(splits.test)

    assert total(open_splits(data)) == 24
    assert list((Path(os.environ["CNNFORGE_CACHE"]) / "listings").glob("*.npz"))
    (photos / "dog" / "sub").mkdir()
    (photos / "dog" / "sub" / "new.jpg").write_bytes((photos / "dog" / "000.jpg").read_bytes())
    assert total(open_splits(data)) == 25
    (photos / "cat" / "001.jpg").unlink()
    (photos / "cat" / "002.jpg").unlink()
    assert total(open_splits(data)) == 23


def test_auto_says_what_it_chose_and_why(photos: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    data = {"name": "imagefolder", "root": str(photos), "image_size": 16}
    with caplog.at_level("WARNING", logger="cnnforge"):
        assert open_splits(data).cache["train"]["mode"] == "memory"
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(10**15))  # a quarter of RAM per process is now ~nothing
        chose = open_splits(data).cache["train"]
        assert chose["mode"] == "disk" and "free under" in chose["reason"]
        monkeypatch.setattr("shutil.disk_usage", lambda path: SimpleNamespace(free=0))
        assert open_splits(data).cache["train"]["mode"] == "none"
    said = [r.getMessage() for r in caplog.records if "auto chose" in r.getMessage()]
    assert [s.split("auto chose ")[1].split(":")[0] for s in said] == ["memory", "disk", "none"]


@pytest.fixture
def bad_photos(tmp_path: Path) -> Path:
    root = write_image_folder(tmp_path / "imgs", per_class=6, suffix=".jpg")
    (root / "dog" / "002.jpg").write_bytes((root / "dog" / "002.jpg").read_bytes()[:60])
    (root / "frog" / "003.jpg").write_bytes(b"\x00not an image at all" * 4)
    return root


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_skip_reports_the_count_when_decoding_up_front(bad_photos: Path, mode: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    data = {"name": "imagefolder", "root": str(bad_photos), "cache": mode, "on_bad_image": "skip",
            "split": [0.5, 0.25, 0.25]}
    for _ in range(2):  # the second disk run reads the count from the cache
        caplog.clear()
        with caplog.at_level("WARNING", logger="cnnforge"):
            s = open_splits(data)
        said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith(
            f"cnnforge: skipped 2 unreadable image(s) of 18 under {bad_photos} "
            f"(first: {bad_photos / 'dog' / '002.jpg'}: ")
        assert len(s.train) + len(s.val) + len(s.test) == 16
    with pytest.raises(DataError, match="unreadable image") as err:
        open_splits({**data, "on_bad_image": "error"})
    assert err.value.where == str(bad_photos / "dog" / "002.jpg")


def test_skip_without_a_cache_replaces_the_sample_and_counts(bad_photos: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    data = {"name": "imagefolder", "root": str(bad_photos), "cache": "none", "image_size": 16,
            "split": [0.5, 0.25, 0.25]}
    with caplog.at_level("WARNING", logger="cnnforge"):
        s = open_splits({**data, "on_bad_image": "skip"})
        for split in (s.train, s.val, s.test):
            for i in range(len(split)):
                assert split[i][0].shape == (3, 16, 16)
    warned = [r.getMessage() for r in caplog.records if "skipped unreadable image" in r.getMessage()]
    assert {w.split(" (")[0].rsplit(" ", 1)[1] for w in warned} == {str(bad_photos / "dog" / "002.jpg"),
                                                                      str(bad_photos / "frog" / "003.jpg")}
    assert warned[-1].endswith("skipped in this loader process") and str(len(warned)) in warned[-1]


def test_bad_image_in_a_loader_worker_is_one_line(bad_photos: Path, tmp_path: Path) -> None:
    proc = cli("run", str(ROOT / "recipes" / "digits_convnet.yaml"), "data.name=imagefolder", f"data.root={bad_photos}",
               "data.cache=none", "data.image_size=8", "data.num_workers=2", "train.epochs=1",
               f"train.out_dir={tmp_path / 'runs'}")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "unreadable image" in line and ("002.jpg" in line or "003.jpg" in line), line


def test_unusable_cache_folder_is_one_line(photos: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = cli("run", str(ROOT / "recipes" / "digits_convnet.yaml"), "data.name=imagefolder", f"data.root={photos}",
               "data.cache=disk", "data.image_size=8", "train.epochs=1", f"train.out_dir={tmp_path / 'runs'}",
               env={"CNNFORGE_CACHE": str(blocker)})
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert str(blocker) in line and "CNNFORGE_CACHE" in line, line


def test_manifest_records_the_cache_choice(photos: Path, tmp_path: Path) -> None:
    proc = cli("run", str(ROOT / "recipes" / "digits_convnet.yaml"), "data.name=imagefolder", f"data.root={photos}",
               "data.image_size=8", "train.epochs=1", f"train.out_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "auto chose memory" in proc.stderr
    manifest = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    assert manifest["data_cache"]["train"]["mode"] == "memory"
    assert "a quarter of available RAM" in manifest["data_cache"]["train"]["reason"]


# ------------------------------------------------------------------ building the cache: kills and races

BUILDER = """
import sys, time
import cnnforge
from cnnforge.data import encoded
decoded = []
real = encoded.decode_image
def slow(data, grayscale):
    time.sleep(float(sys.argv[2]))
    decoded.append(1)
    return real(data, grayscale)
encoded.decode_image = slow
recipe = {"name": "race", "data": {"name": "imagefolder", "root": sys.argv[1], "cache": "disk", "image_size": 8,
          "num_workers": 0, "batch_size": 16}, "train": {"epochs": 1, "out_dir": sys.argv[3]},
          "tracking": {"backend": "none"}}
if sys.argv[3] == "-":
    from cnnforge.data.image_folder import imagefolder
    imagefolder(root=sys.argv[1], split="train", cache="disk", image_size=8)
else:
    cnnforge.train(recipe, quiet=True)
print("decoded", len(decoded))
"""


def _builder(root: Path, delay: float, out: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(root), str(delay), out], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_a_kill_during_building_leaves_no_cache_a_later_run_trusts(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "imgs", per_class=240, size=12, suffix=".jpg")  # two blocks to decode
    proc = _builder(root, 0.01, "-")
    deadline = time.monotonic() + 120
    while not list(_cache().glob("*.tmp-*/images.npy")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # into the second block: the first is written
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert list(_cache().glob("*.tmp-*")) and not _built(root)  # half a cache, under a name no one reads
    data = {"name": "imagefolder", "root": str(root), "image_size": 8}
    disk, memory = open_splits({**data, "cache": "disk"}), open_splits({**data, "cache": "memory"})
    assert _items(disk.train) == _items(memory.train)
    assert len(_built(root)) == 1 and not list(_cache().glob("*.tmp-*"))


@pytest.mark.slow
def test_two_runs_building_one_cache_at_once_both_train(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "imgs", per_class=30, size=12, suffix=".jpg")
    procs = [_builder(root, 0.03, str(tmp_path / f"runs{i}")) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert sorted(int(out.split("decoded ")[1]) for out, _ in outs) == [0, 90]  # one decoded, the other mapped
    assert len(_built(root)) == 1 and not list(_cache().glob("*.tmp-*"))
    for i in range(2):
        assert list((tmp_path / f"runs{i}").rglob("summary.json"))


# ------------------------------------------------------------------ each DDP rank reads its part

TRACER = """
import os, sys
from pathlib import Path
import cnnforge
from cnnforge.data import listing, loading
out, traced = Path(sys.argv[2]), []
build = loading.build_splits
def build_and_tag(recipe):
    splits = build(recipe)
    for name in ("train", "val", "test"):
        getattr(splits, name).tag = name
    traced.append(True)  # statistics and checks are done: from here on every read is training's
    return splits
def log(line):
    if traced:
        with open(out / f"rank{os.environ['RANK']}-{os.getpid()}.txt", "a") as f:
            f.write(line + "\\n")
getitem, read = loading.AugmentedDataset.__getitem__, listing.FolderImages.read
def traced_getitem(self, key):
    epoch, index = key if isinstance(key, tuple) else ("report", key)  # the report gallery asks by index
    log(f"{self.tag} {epoch} {self.indices[index]}")
    return getitem(self, key)
def traced_read(self, index):
    log(f"read {index}")
    return read(self, index)
loading.build_splits, loading.AugmentedDataset.__getitem__, listing.FolderImages.read = (
    build_and_tag, traced_getitem, traced_read)
cnnforge.train(sys.argv[1], sys.argv[3:], quiet=True)
"""


@pytest.mark.slow
def test_ddp_ranks_decode_only_their_share_and_see_every_sample_once_per_epoch(tmp_path: Path) -> None:
    from collections import Counter

    root = write_image_folder(tmp_path / "imgs", per_class=32, size=12, suffix=".jpg")  # 48 train, 24 val, 24 test
    (tmp_path / "trace").mkdir()
    (tmp_path / "trace.py").write_text(TRACER)
    proc = subprocess.run(
        [*DDP_LAUNCH,
         str(tmp_path / "trace.py"), str(ROOT / "recipes" / "digits_convnet.yaml"), str(tmp_path / "trace"),
         "data.name=imagefolder", f"data.root={root}", "data.cache=none", "data.image_size=8", "data.num_workers=2",
         "data.split=[0.5, 0.25, 0.25]", "data.batch_size=8", "data.eval_batch_size=4", "train.epochs=2",
         f"train.out_dir={tmp_path / 'runs'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks: dict[str, list[list[str]]] = {"0": [], "1": []}
    for file in (tmp_path / "trace").glob("rank*.txt"):
        ranks[file.name[4]] += [line.split() for line in file.read_text().splitlines()]
    for rank, lines in ranks.items():
        samples = [line for line in lines if line[0] != "read"]
        reads = len(lines) - len(samples)  # one decode per sample served, and rank 0 one for the data description
        assert reads - len(samples) == (1 if rank == "0" else 0), rank
        assert Counter(line[1] for line in samples if line[0] == "train") == {"0": 24, "1": 24}, rank  # half of 48
    seen = [line for lines in ranks.values() for line in lines if line[0] == "train"]
    for epoch in ("0", "1"):
        indices = Counter(line[2] for line in seen if line[1] == epoch)
        assert len(indices) == 48 and set(indices.values()) == {1}, epoch  # every sample once across ranks
