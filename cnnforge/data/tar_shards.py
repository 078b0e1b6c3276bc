"""``webdataset``: tar shards as webdataset's ``ShardWriter`` writes them, read with random access.

A streaming WebDataset pipeline cannot skip to sample ``i``, so resuming mid-epoch and the
``(epoch, index)`` sampler would break. Instead one pass over the tar headers (``tarfile``, as
webdataset reads them) records where every sample's image member lies and reads the
small label members; after that a sample is one ``pread`` of its image bytes. The index pass runs
in the process that opens the dataset; loader workers and ranks reopen the shard files lazily.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cnnforge.data.cache_modes import image_dataset
from cnnforge.data.encoded import BadImagePolicy, CacheKey, CacheMode, ImageSize, integer_labels
from cnnforge.data.fingerprints import files_digest
from cnnforge.data.work_progress import WorkProgress
from cnnforge.errors import DataError
from cnnforge.registry import register_dataset

IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
SPLIT_NAMES = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
_BLOCK = 512


def shard_files(root: str, split: str) -> list[Path] | None:
    """The shards of ``split``: ``<split>-*.tar`` in folder ``root``, or a brace pattern (``{split}`` is filled in).

    A pattern without ``{split}`` is the training pool only; None means the split has no shards.
    """
    import braceexpand

    if "{" in root:
        if "{split}" not in root and split != "train":
            return None
        names = SPLIT_NAMES[split] if "{split}" in root else ("train",)
        for name in names:
            found = [Path(p).expanduser() for p in braceexpand.braceexpand(root.replace("{split}", name))]
            present = [p for p in found if p.is_file()]
            if present and len(present) < len(found):
                missing = next(p for p in found if not p.is_file())
                raise DataError("shard of the brace pattern is missing", where=str(missing))
            if present:
                return present
        return None
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError("no such folder" if not folder.exists() else "is not a folder", where=str(folder))
    for name in SPLIT_NAMES[split]:
        found = sorted(folder.glob(f"{name}-*.tar"))
        if found:
            return found
    return None


def read_classes(root: str, labels: np.ndarray) -> list[str]:
    """Class names from ``classes.txt`` (one per line) or ``dataset.json`` (``{"classes": [...]}``), else 0..K-1."""
    folder = Path(root.split("{")[0]).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    text_file, json_file = folder / "classes.txt", folder / "dataset.json"
    if text_file.is_file():
        return unique_classes([line.strip() for line in text_file.read_text().splitlines() if line.strip()],
                              str(text_file))
    if json_file.is_file():
        try:
            classes = json.loads(json_file.read_text())["classes"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"needs a \"classes\" list ({type(exc).__name__}: {exc})", where=str(json_file)) from None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise DataError(f"\"classes\" must be a list of names, not {type(classes).__name__} {classes!r:.60}",
                            where=str(json_file))
        return unique_classes(classes, str(json_file))
    return [str(k) for k in range(int(labels.max()) + 1 if labels.size else 0)]


def unique_classes(classes: list[str], where: str) -> list[str]:
    """``classes``, refused when a name repeats: two labels would be reported as one class."""
    seen: set[str] = set()
    for name in classes:
        if name in seen:
            raise DataError(f"class name {name!r} appears twice", where=where, hint="each class needs its own name")
        seen.add(name)
    return classes


def _split_name(name: str) -> tuple[str, str]:
    """``dir/key.ext`` -> (key, ext): webdataset's rule, the extension starts at the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return f"{folder}/{stem}" if folder else stem, ext.lower()


def _members(path: Path) -> tuple[list[tuple[str, int, int]], dict[str, bytes]]:
    """The (name, data offset, size) of every file in ``path``; a cut, damaged or empty tar is a DataError naming it.

    The standard library's reader resolves what webdataset's own reader (also ``tarfile``) resolves: PAX
    ``path`` records and GNU long names, so a key longer than the ustar name field is the same key here.
    """
    import tarfile

    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            members = [(m.name, m.offset_data, m.size) for m in tar if m.isreg()]
            length = os.fstat(f.fileno()).st_size
            end = max((o + -(-s // _BLOCK) * _BLOCK for _, o, s in members), default=0)
            # a complete tar ends with a zero block; without one the file was cut after its last whole member
            if members and (end + _BLOCK > length or os.pread(f.fileno(), _BLOCK, end) != bytes(_BLOCK)):
                raise DataError("truncated tar shard (it does not end with tar's end-of-archive block)",
                                where=str(path), hint="copy or write the shard again")
            labels = {name: os.pread(f.fileno(), s, o) for name, o, s in members
                      if _split_name(name)[1] in ("cls", "json")}
    except OSError as exc:
        raise DataError(f"cannot read the shard: {exc.strerror or exc}", where=str(path)) from None
    except (tarfile.TarError, ValueError, UnicodeDecodeError) as exc:  # empty, a header cut short, not a tar
        raise DataError(f"not a readable tar shard, truncated or damaged ({type(exc).__name__}: {exc})",
                        where=str(path)) from None
    if not members:
        raise DataError("the shard holds no samples (an empty tar)", where=str(path),
                        hint="remove it, or write the shards again")
    return members, labels


class TarShards:
    """One split's samples in tar shards: random access to each image member's bytes, labels read up front.

    Where each image lies is kept in numpy arrays, not a Python object per sample: forked loader
    workers then share those pages instead of copying them as reference counts change.
    """

    def __init__(self, files: list[Path], classes: list[str] | None = None, root: str = "",
                 content: bool = False) -> None:
        self.files = [str(f) for f in files]
        with WorkProgress(f"indexing {len(files)} shard(s)", len(files)) as progress:
            indexes = []
            for path in files:
                indexes.append(shard_index(path, content))
                progress.advance()
        self._shard = np.concatenate([np.full(len(ix["labels"]), i, dtype=np.int32) for i, ix in enumerate(indexes)])
        self._offset, self._size, self._name, self.labels = (
            np.concatenate([ix[key] for ix in indexes]) for key in ("offsets", "sizes", "names", "labels"))
        self.classes = classes if classes is not None else read_classes(root or str(Path(files[0]).parent), self.labels)
        self._open: dict[int, BinaryIO] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> bytes:
        shard = int(self._shard[index])
        file = self._open.get(shard)
        if file is None:  # opened on first use in each process; a pickled copy (spawned worker) starts with none
            file = self._open[shard] = open(self.files[shard], "rb")  # noqa: SIM115 - held open, closed with self
        return os.pread(file.fileno(), int(self._size[index]), int(self._offset[index]))

    def name(self, index: int) -> str:
        return f"{self.files[int(self._shard[index])]}: {self._name[index].decode()}"

    def fingerprint(self, content: bool = False) -> str:
        stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in self.files]
        return hashlib.sha256(repr(stats).encode()).hexdigest() if not content else files_digest(self.files)

    def sample_ids(self) -> tuple[np.ndarray, ...]:
        names = np.asarray([os.path.basename(f).encode() for f in self.files], dtype=np.bytes_)
        return names[self._shard], self._name, self._size  # shard, member and its size

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}


@register_dataset
def webdataset(*, root: str, split: str, grayscale: bool = False, image_size: ImageSize = None,
               on_bad_image: BadImagePolicy = "error", cache: CacheMode = "auto",
               cache_key: CacheKey = "mtime") -> Any | None:
    """Tar shards ``<split>-*.tar`` in ``root`` (webdataset's ShardWriter layout) or a brace pattern; random access."""
    files = shard_files(root, split)
    if files is None:
        if split != "train":
            return None  # carved from train by data.val_fraction / data.split
        folder = Path(root).expanduser()
        hint = "this is a Hugging Face dataset: use data.name: hf" if (folder / "dataset_dict.json").is_file() or \
            any(folder.glob("**/*.parquet")) else "write them with `cnnforge data pack SRC DST --format webdataset`"
        raise DataError("has no train-*.tar shards", where=str(folder), hint=hint)
    return image_dataset(TarShards(files, root=root, content=cache_key == "content"), cache=cache,
                         image_size=image_size, grayscale=grayscale, on_bad_image=on_bad_image,
                         where=f"{root} ({split})", cache_key=cache_key)


def shard_index(path: Path, content: bool = False) -> dict[str, np.ndarray]:
    """Per sample of one shard: its image member's name, offset and size, and its label.

    Kept under ``$CNNFORGE_CACHE/shard-index/``, keyed by the shard's path, size and mtime (with
    ``content``, by a digest of its bytes): a later run, another rank or a sweep trial loads it instead
    of reading every tar header again.
    """
    from cnnforge.data.disk_cache import cache_root
    from cnnforge.data.listing import _save as save_npz

    st = os.stat(path)
    version = files_digest([str(path)]) if content else f"{st.st_size}\0{st.st_mtime_ns}"
    key = hashlib.sha256(f"{Path(path).resolve()}\0{version}".encode()).hexdigest()[:40]
    file = cache_root() / "shard-index" / f"{key}.npz"
    try:
        with np.load(file, allow_pickle=False) as saved:
            return {k: saved[k] for k in ("names", "offsets", "sizes", "labels")}
    except (OSError, ValueError, KeyError):  # not indexed yet, or an unreadable index: index again
        pass
    names, offsets, sizes, labels = [], [], [], []
    for key, (image, label) in _samples(path).items():
        if image is None:
            raise DataError(f"sample {key!r} has no image member ({'/'.join(IMAGE_MEMBERS)})", where=str(path))
        if label is None:
            raise DataError(f"sample {key!r} has no label member (cls, or json with \"label\")",
                            where=f"{path}: {image[0]}")
        names.append(image[0].encode())
        offsets.append(image[1])
        sizes.append(image[2])
        labels.append(label)
    index = {"names": np.asarray(names, dtype=np.bytes_) if names else np.zeros(0, "S1"),
             "offsets": np.asarray(offsets, dtype=np.int64), "sizes": np.asarray(sizes, dtype=np.int64),
             "labels": np.asarray(labels, dtype=np.int64)}
    save_npz(file, **index)
    return index


def _samples(path: Path) -> dict[str, tuple[tuple[str, int, int] | None, int | None]]:
    """Per sample key of one shard: its image member (name, offset, size) and its label (``cls``, else ``json``'s)."""
    members, label_bytes = _members(path)
    images: dict[str, tuple[str, int, int] | None] = {}
    label_members: dict[str, dict[str, str]] = {}
    for name, offset, size in members:
        key, ext = _split_name(name)
        images.setdefault(key, None)
        if ext in IMAGE_MEMBERS and images[key] is None:
            images[key] = (name, offset, size)
        elif ext in ("cls", "json"):
            label_members.setdefault(key, {})[ext] = name
    return {key: (image, _label(label_bytes, label_members.get(key, {}), path)) for key, image in images.items()}


def _label(label_bytes: dict[str, bytes], members: dict[str, str], path: Path) -> int | None:
    """The integer in the ``cls`` member, else ``json``'s ``label``; None when the sample has neither."""
    ext = "cls" if "cls" in members else "json"
    if ext not in members:
        return None
    data = label_bytes[members[ext]]
    try:
        if ext == "cls":
            return int(data.decode().strip())
        record = json.loads(data)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise DataError(f"label is not an integer ({type(exc).__name__}: {exc})",
                        where=f"{path}: {members[ext]}") from None
    if not isinstance(record, dict) or "label" not in record:
        return None
    value = record["label"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"label {value!r} is not an integer", where=f"{path}: {members[ext]}")
    return int(integer_labels([value], f"{path}: {members[ext]}")[0])
