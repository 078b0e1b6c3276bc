"""Tiny datasets in the on-disk formats cnnforge reads, written by the tests themselves (no downloads)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Class-dependent colour bands plus noise: learnable a little, like the contract check's data."""
    labels = rng.integers(0, 10, n)
    x = rng.integers(0, 80, (n, 3, 32, 32)).astype(np.int32)
    for i, y in enumerate(labels):
        x[i, y % 3, (y // 3) * 8:(y // 3) * 8 + 10, 4:28] += 150
    return np.clip(x, 0, 255).astype(np.uint8).reshape(n, 3072), labels.tolist()


def write_cifar10(root: Path, n_train: int = 200, n_test: int = 60, seed: int = 0, draw: Any = cifar_images) -> Path:
    """``root/cifar-10-batches-py/`` in torchvision's python-pickle layout; ``draw(n, rng)`` makes the images."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    per = max(1, n_train // 5)
    for b in range(1, 6):
        data, labels = draw(per, rng)
        with (d / f"data_batch_{b}").open("wb") as f:
            pickle.dump({b"batch_label": b"train", b"labels": labels, b"data": data}, f)
    data, labels = draw(n_test, rng)
    with (d / "test_batch").open("wb") as f:
        pickle.dump({b"batch_label": b"test", b"labels": labels, b"data": data}, f)
    with (d / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES]}, f)
    return Path(root)


def class_images(labels: np.ndarray, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """(N, size, size, channels) uint8: a bright band whose row and colour depend on the label, plus noise."""
    n = len(labels)
    x = rng.integers(0, 60, (n, size, size, channels)).astype(np.int32)
    band = max(1, size // 5)
    for i, y in enumerate(labels):
        top = (int(y) * band) % max(1, size - band)
        x[i, top:top + band, :, int(y) % channels] += 180
    return np.clip(x, 0, 255).astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file of unsigned bytes (gzipped when ``path`` ends in ``.gz``)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 120, n_test: int = 40, gz: bool = True,
                seed: int = 0) -> Path:
    """``root/<folder>/raw/`` with torchvision's four IDX file names (``.gz`` or plain); 28x28 images."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", class_images(labels, 28, 1, rng)[..., 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels.astype(np.uint8))
    return Path(root)


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    """``root/cifar-100-python/`` (train, test, meta) in torchvision's python-pickle layout."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = np.arange(n) % 100
        data = class_images(fine % 10, 32, 3, rng).transpose(0, 3, 1, 2).reshape(n, 3072)
        with (d / name).open("wb") as f:
            pickle.dump({b"data": data, b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist()}, f)
    with (d / "meta").open("wb") as f:
        pickle.dump({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, f)
    return Path(root)


def write_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "frog"), per_class: int = 10,
                       size: int = 16, suffix: str = ".png", gray: bool = False, seed: int = 0) -> Path:
    """``root/<class>/<i><suffix>`` written with Pillow (JPEG, PNG, BMP ...); returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        images = class_images(np.full(per_class, label), size, 1 if gray else 3, rng)
        for i, image in enumerate(images):
            Image.fromarray(image[..., 0] if gray else image).save(folder / f"{i:03d}{suffix}")
    return Path(root)


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut ``path`` to ``keep`` of its bytes, as an interrupted download or copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def png(image: np.ndarray) -> bytes:
    """``image`` as PNG file bytes (Pillow)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def labelled_images(n: int, classes: int, seed: int, size: int = 8) -> tuple[list[bytes], list[int]]:
    """``n`` PNG-encoded RGB images of ``class_images`` and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    return [png(image) for image in class_images(labels, size, 3, rng)], labels.tolist()


def write_shards(root: Path, splits: dict[str, int], classes: tuple[str, ...] = ("a", "b", "c"), per_shard: int = 25,
                 label: str = "cls") -> Path:
    """``root/<split>-%06d.tar`` by webdataset's own ShardWriter (label in ``cls`` or ``json``), and classes.txt."""
    import webdataset

    Path(root).mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate(splits.items()):
        images, labels = labelled_images(n, len(classes), seed)
        with webdataset.ShardWriter(str(Path(root) / f"{split}-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
            for i, (image, y) in enumerate(zip(images, labels, strict=True)):
                sink.write({"__key__": f"{split}{i:05d}", "png": image, label: y if label == "cls" else {"label": y}})
    (Path(root) / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return Path(root)


def write_hf(root: Path, splits: dict[str, int], classes: tuple[str, ...] = ("a", "b", "c"),
             parquet: bool = False) -> Path:
    """A DatasetDict (Image + ClassLabel) by ``save_to_disk``, or ``data/<split>-*.parquet`` by ``to_parquet``."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(classes))})
    built = {}
    for seed, (split, n) in enumerate(splits.items()):
        images, labels = labelled_images(n, len(classes), seed)
        built[split] = datasets.Dataset.from_dict(
            {"image": [{"bytes": b, "path": None} for b in images], "label": labels}, features=features)
    if parquet:
        for split, ds in built.items():
            (Path(root) / "data").mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(Path(root) / "data" / f"{split}-00000-of-00001.parquet"))
    else:
        datasets.DatasetDict(built).save_to_disk(str(root))
    return Path(root)


def write_shapes(root: Path, counts: dict[str, int], size: int = 16, seed: int = 0) -> Path:
    """``root/<shape>/<i>.png``: grayscale drawings of a ``circle``, ``square`` or ``triangle`` (``counts`` per shape,
    so the folder can be as skewed as a real one), at a random place and scale on a noisy background."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for shape, n in counts.items():
        folder = Path(root) / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = Image.fromarray(rng.integers(0, 60, (size, size), dtype=np.uint8))
            r = rng.uniform(0.25, 0.4) * size
            cx, cy = rng.uniform(r, size - r, 2)
            box = [cx - r, cy - r, cx + r, cy + r]
            draw = ImageDraw.Draw(image)
            if shape == "circle":
                draw.ellipse(box, fill=230)
            elif shape == "square":
                draw.rectangle(box, fill=230)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=230)
            image.save(folder / f"{i:03d}.png")
    return Path(root)
