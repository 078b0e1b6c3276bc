"""``hf``: a Hugging Face ``datasets`` folder (``save_to_disk``) or Hub-style parquet files, offline.

Images are read undecoded (``Image(decode=False)``) so cnnforge decodes them like any other file
(same decoder, same ``data.cache`` modes); labels come from the label column without touching an
image. Nothing reaches the Hub: the offline switches are set before ``datasets`` is imported.
Parquet files are converted once into ``datasets``' own cache (``HF_DATASETS_CACHE``), as
``load_dataset`` does, and memory-mapped from there.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from cnnforge.data.cache_modes import image_dataset
from cnnforge.data.encoded import BadImagePolicy, CacheKey, CacheMode, ImageSize, integer_labels
from cnnforge.data.fingerprints import files_digest
from cnnforge.data.tar_shards import SPLIT_NAMES
from cnnforge.errors import ConfigError, DataError
from cnnforge.registry import register_dataset

LABEL_NAMES = ("label", "labels")


def _datasets() -> Any:
    """``datasets``, imported offline and quiet (no Hub access, no progress bars in the run's output)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _parquet_files(folder: Path, split: str) -> list[Path]:
    for name in SPLIT_NAMES[split]:
        for pattern in (f"{name}-*.parquet", f"data/{name}-*.parquet"):
            found = sorted(folder.glob(pattern))
            if found:
                return found
    return []


def _check_parquet(files: list[Path]) -> None:
    """Each file's footer read (no row is), so a damaged file is named before ``datasets`` reads them all."""
    import pyarrow.parquet as pq

    for file in files:
        try:
            pq.read_metadata(file)
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise DataError(f"cannot read the parquet file ({type(exc).__name__}: {exc})".splitlines()[0],
                            where=str(file)) from None


def open_split(root: str, split: str) -> tuple[Any, list[str]] | None:
    """``split`` of the dataset at ``root`` and the files it reads, or None when the dataset has no such split."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError("no such folder" if not folder.exists() else "is not a folder", where=str(folder))
    datasets = _datasets()
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(folder))
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"cannot load the saved dataset ({type(exc).__name__}: {exc})".splitlines()[0],
                            where=str(folder)) from None
        if isinstance(loaded, datasets.DatasetDict):
            name = next((n for n in SPLIT_NAMES[split] if n in loaded), None)
            loaded = loaded[name] if name else None
        elif split != "train":
            return None  # one Dataset: the training pool, val and test carved from it
        return (loaded, [f["filename"] for f in loaded.cache_files]) if loaded is not None else None
    files = _parquet_files(folder, split)
    if files:
        _check_parquet(files)
        try:
            return datasets.Dataset.from_parquet([str(f) for f in files]), [str(f) for f in files]
        except Exception as exc:  # pyarrow and datasets raise many types for a damaged file
            raise DataError(f"cannot read the parquet files ({type(exc).__name__}: {exc})".splitlines()[0],
                            where=", ".join(str(f) for f in files)) from None
    if _parquet_files(folder, "train") or any(_parquet_files(folder, s) for s in ("val", "test")):
        return None
    raise DataError("is not a Hugging Face dataset (no dataset_dict.json or state.json from save_to_disk, "
                    "no <split>-*.parquet or data/<split>-*.parquet files)", where=str(folder))


def _pick_column(features: dict, wanted: str | None, kind: str, tests: tuple[Any, ...], where: str) -> str:
    """``wanted``, else the first column passing the first test that any column passes."""
    if wanted is not None:
        if wanted not in features:
            raise ConfigError(f"column {wanted!r} is not in the dataset (columns: {', '.join(features)})",
                              where=f"data.{kind}_column")
        return wanted
    found = next((name for test in tests for name, feature in features.items() if test(name, feature)), None)
    if found is None:
        raise DataError(f"has no {kind} column (columns: {', '.join(features)})", where=where,
                        hint=f"set data.{kind}_column")
    return found


def _file_named(files: list[str], where: str) -> str:
    """What a label error names: the one file the split reads, else the split."""
    return files[0] if len(files) == 1 else where


class HFImages:
    """One split of a ``datasets`` Dataset: each row's encoded image bytes, its label and the class names."""

    def __init__(self, dataset: Any, files: list[str], *, where: str, image_column: str | None = None,
                 label_column: str | None = None) -> None:
        datasets = _datasets()
        features = dataset.features
        image = _pick_column(features, image_column, "image", (lambda _, f: isinstance(f, datasets.Image),), where)
        if not isinstance(features[image], datasets.Image):
            raise DataError(f"column {image!r} is {features[image]}, not an Image feature", where=where)
        label = _pick_column(features, label_column, "label", (lambda _, f: isinstance(f, datasets.ClassLabel),
                                                               lambda n, _: n in LABEL_NAMES), where)
        self.labels = integer_labels(dataset.select_columns([label]).with_format("numpy")[label],
                                     f"{_file_named(files, where)}: column {label!r}")
        feature = features[label]
        self.classes = list(feature.names) if isinstance(feature, datasets.ClassLabel) \
            else [str(k) for k in range(int(self.labels.max()) + 1 if self.labels.size else 0)]
        self.label_column, self.named = label, isinstance(feature, datasets.ClassLabel)
        self._images = dataset.select_columns([image]).cast_column(image, datasets.Image(decode=False))
        self._column, self._where, self._files = image, where, files

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> bytes:
        record = self._images[int(index)][self._column]
        if record is None:
            raise DataError("row has no image", where=self.name(index))
        if record.get("bytes") is not None:
            return record["bytes"]
        try:
            return Path(record["path"]).read_bytes()
        except (OSError, TypeError) as exc:
            raise DataError(f"image file cannot be read: {exc}", where=self.name(index)) from None

    def name(self, index: int) -> str:
        return f"{self._where}: row {index}"

    def fingerprint(self, content: bool = False) -> str:
        stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in self._files]
        files = files_digest(self._files) if content else stats
        return hashlib.sha256(repr((files, self._column)).encode()).hexdigest()

    def sample_ids(self) -> tuple[np.ndarray, ...]:
        sizes = sum(os.stat(f).st_size for f in self._files)  # rows carry no file of their own: the files' size
        return np.arange(len(self)), np.full(len(self), sizes, dtype=np.int64)


def _use_train_classes(source: HFImages, root: str) -> None:
    """Labels of a val or test split re-numbered by class name to the train split's ``ClassLabel`` (its own may
    list the names in another order); a name train does not have is refused."""
    found = open_split(root, "train")
    feature = found[0].features.get(source.label_column) if found is not None else None
    train = list(getattr(feature, "names", None) or [])
    if not train or train == source.classes:
        return
    unknown = [name for name in source.classes if name not in train]
    if unknown:
        raise DataError(f"class {unknown[0]!r} of column {source.label_column!r} is not a class of the train split "
                        f"({', '.join(train[:8])}{', ...' if len(train) > 8 else ''})", where=source._where)
    source.labels = np.asarray([train.index(name) for name in source.classes], dtype=np.int64)[source.labels]
    source.classes = train


@register_dataset
def hf(*, root: str, split: str, image_column: str | None = None, label_column: str | None = None,
       grayscale: bool = False, image_size: ImageSize = None, on_bad_image: BadImagePolicy = "error",
       cache: CacheMode = "auto", cache_key: CacheKey = "mtime") -> Any | None:
    """A ``datasets`` save_to_disk folder or ``[data/]<split>-*.parquet`` files; Image and ClassLabel found by type."""
    found = open_split(root, split)
    if found is None:
        if split == "train":
            raise DataError("has no train split", where=str(Path(root).expanduser()))
        return None  # carved from train by data.val_fraction / data.split
    where = f"{root} ({split})"
    source = HFImages(*found, where=where, image_column=image_column, label_column=label_column)
    if split != "train" and source.named:
        _use_train_classes(source, root)
    return image_dataset(source, cache=cache, image_size=image_size, grayscale=grayscale, on_bad_image=on_bad_image,
                         where=where, cache_key=cache_key)
