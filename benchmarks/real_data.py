"""Real data (issue 27): class imbalance, augmentation policies, the LR finder and early stopping on real MNIST.

The real MNIST test set (``shared/data/mnist-t10k``: 10,000 handwritten digits) is split 8,000 train /
2,000 test, stratified, and written as a JPEG folder (``train/<digit>/``, ``test/<digit>/``; cnnforge
carves validation from train). Every run goes through the public API, ``cnnforge.train(recipe,
overrides)``; accuracies are on the 2,000 test images. Sections (all by default):

- ``imbalance``: digits 0-4 whole, 5-9 at 10 % in train (test balanced); test balanced accuracy for
  ``data.balance: none | loss | sampler``, same epochs and seed.
- ``policies``: seed 004's MyFirstConvNet on 2,000 training images, 3 seeds: the existing ops vs
  ``trivial_augment`` vs ``rand_augment`` vs ``trivial_augment`` + ``cutmix``; mean +- standard deviation.
- ``lr_finder``: on ``digits_convnet`` and on MNIST (seed 000's ConvNet): the test accuracy of a run with
  ``optim.lr: auto`` against the best of a 6-value log grid of learning rates, same epochs.
- ``early_stop``: a 60-epoch run on 2,000 images that plateaus, with and without
  ``train.early_stop``: wall time saved and the test accuracy of each.

    python -m benchmarks.real_data lr_finder --data ../shared/data/mnist-t10k

The data folder is ``--data``, else ``$CNNFORGE_MNIST_T10K``, else ``../shared/data/mnist-t10k`` beside the
repository. ``imbalance``, ``policies`` and ``early_stop`` use keys of issue 27's other parts (``data.balance``,
the policy ops, ``augment.batch``, ``train.early_stop``).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, parser, report

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist-t10k"
#: the 6-value log grid of the LR finder's comparison (that of benchmarks/search_quality.py)
LR_GRID = (1.0e-4, 3.98e-4, 1.58e-3, 6.31e-3, 2.51e-2, 1.0e-1)
MNIST = {"name": "real_mnist", "seed": 0,
         "data": {"name": "imagefolder", "root": "", "grayscale": True, "batch_size": 64, "num_workers": 0,
                  "val_fraction": 0.1},
         "model": {"name": "convnet", "activation": "relu"}, "optim": {"name": "adam", "lr": 0.003},
         "schedule": {"name": "cosine"}, "train": {"epochs": 10, "checkpoint_every": 0, "plots": False},
         "tracking": {"backend": "none"}}
POLICIES = {
    "existing ops": ["augment.train=[{name: rotate, limit: 10}, {name: cutout, size: 6}]"],
    "trivial_augment": ["augment.train=[{name: trivial_augment}]"],
    "rand_augment": ["augment.train=[{name: rand_augment}]"],
    "trivial_augment + cutmix": ["augment.train=[{name: trivial_augment}]", "augment.batch=[{name: cutmix}]"],
}


def mnist_t10k(folder: Path) -> tuple[Any, Any]:
    """The 10,000 images (N, 28, 28) and labels of ``folder``'s IDX files."""
    from cnnforge.data.idx import read_idx

    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"real_data: no MNIST test set in {folder} (give --data or $CNNFORGE_MNIST_T10K)")
    return read_idx(folder / "t10k-images-idx3-ubyte.gz"), read_idx(folder / "t10k-labels-idx1-ubyte.gz")


def write_folder(root: Path, images: Any, labels: Any, split: str) -> None:
    """``root/<split>/<digit>/<i>.jpg`` (Pillow, quality 95)."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / split / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.jpg", quality=95)


def prepare(data: Path, work: Path, n_train: int, n_test: int) -> dict[str, Path]:
    """The JPEG folders of every section: ``full`` (8k/2k), ``skewed`` (5-9 at 10 % in train) and ``small``
    (2k of the train images), all with the same balanced 2k test images."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    images, labels = mnist_t10k(data)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, train_size=n_train, test_size=n_test,
                                                        stratify=labels, random_state=0)
    rng = np.random.default_rng(0)
    keep = np.concatenate([np.flatnonzero(y_train == d) if d < 5 else
                           rng.choice(np.flatnonzero(y_train == d), int(0.1 * (y_train == d).sum()), replace=False)
                           for d in range(10)])
    small, _ = train_test_split(np.arange(len(y_train)), train_size=n_train // 4, stratify=y_train, random_state=0)
    folders = {"full": np.arange(len(y_train)), "skewed": np.sort(keep), "small": np.sort(small)}
    out = {}
    for name, picked in folders.items():
        out[name] = work / name
        write_folder(out[name], x_train[picked], y_train[picked], "train")
        write_folder(out[name], x_test, y_test, "test")
    return out


def run(recipe: Any, overrides: list[str], out: Path) -> dict[str, Any]:
    """One run: its test accuracy, test balanced accuracy (macro recall, from its predictions), wall time and
    summary."""
    import csv

    from sklearn.metrics import balanced_accuracy_score

    import cnnforge

    start = time.perf_counter()
    result = cnnforge.train(recipe, [*overrides, f"train.out_dir={out}"], quiet=True)
    wall = time.perf_counter() - start
    with (result.run_dir / "reports" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    balanced = balanced_accuracy_score([r["true"] for r in rows], [r["predicted"] for r in rows])
    return {"test_acc": result.metrics["test/acc"], "test_balanced_acc": float(balanced), "wall_s": wall,
            "run_dir": str(result.run_dir), "summary": result.metrics}


def mean_spread(values: list[float]) -> str:
    """``mean +- standard deviation`` of ``values`` (``+- 0`` for one value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {spread:.4f}"


def imbalance(folders: dict[str, Path], out: Path, tiny: bool) -> list[dict[str, Any]]:
    """Test balanced accuracy of ``data.balance`` none, loss and sampler on the skewed train split."""
    epochs = 1 if tiny else 10
    rows = []
    for balance in ("none", "loss", "sampler"):
        r = run(MNIST, [f"data.root={folders['skewed']}", f"data.balance={balance}", f"train.epochs={epochs}"],
                out / f"imbalance-{balance}")
        rows.append({"section": "imbalance", "setting": f"balance: {balance}", "test/balanced_acc":
                     r["test_balanced_acc"], "test/acc": r["test_acc"], "wall s": r["wall_s"]})
    return rows


def policies(folders: dict[str, Path], out: Path, tiny: bool) -> list[dict[str, Any]]:
    """MyFirstConvNet on 2k training images with each policy, over 3 seeds: mean +- spread of test accuracy."""
    seeds, epochs = (range(1), 1) if tiny else (range(3), 30)
    base = [f"data.root={folders['small']}", "model={name: my_first_convnet}", "optim={name: sgd, lr: 0.05}",
            f"train.epochs={epochs}"]
    rows = []
    for name, overrides in POLICIES.items():
        accs = [run(MNIST, [*base, *overrides, f"seed={seed}"], out / f"policy-{seed}")["test_acc"] for seed in seeds]
        rows.append({"section": "policies", "setting": name, "test/acc": mean_spread(accs), "runs": accs})
    return rows


def lr_finder(folders: dict[str, Path], out: Path, tiny: bool) -> list[dict[str, Any]]:
    """``optim.lr: auto``'s test accuracy against the best of :data:`LR_GRID`, same epochs, on digits and MNIST."""
    grid = LR_GRID[::5] if tiny else LR_GRID
    cases = {"digits_convnet": (str(ROOT / "recipes" / "digits_convnet.yaml"), ["data.num_workers=0"]),
             "mnist convnet": (MNIST, [f"data.root={folders['full']}"])}
    rows = []
    for name, (recipe, data) in cases.items():
        epochs = ["train.epochs=1"] if tiny else []
        auto = run(recipe, [*data, *epochs, "optim.lr=auto"], out / "lr-auto")
        suggested = _recorded_lr(Path(auto["run_dir"]))
        swept = {lr: run(recipe, [*data, *epochs, f"optim.lr={lr}"], out / "lr-grid")["test_acc"] for lr in grid}
        best_lr = max(swept, key=swept.__getitem__)
        rows.append({"section": "lr_finder", "setting": name, "suggested lr": suggested,
                     "test/acc": auto["test_acc"], "best grid lr": best_lr,
                     "test/acc (best grid)": swept[best_lr],
                     "points behind": 100 * (swept[best_lr] - auto["test_acc"]), "grid": swept})
    return rows


def _recorded_lr(run_dir: Path) -> float:
    """The learning rate ``optim.lr: auto`` chose, as the run's manifest recorded it."""
    import json

    return json.loads((run_dir / "manifest.json").read_text())["lr_find"]["lr"]


def early_stop(folders: dict[str, Path], out: Path, tiny: bool) -> list[dict[str, Any]]:
    """A 60-epoch run on 2k images (it plateaus long before) with and without ``train.early_stop``."""
    base = [f"data.root={folders['small']}", f"train.epochs={2 if tiny else 60}"]
    full = run(MNIST, base, out / "full")
    stopped = run(MNIST, [*base, "train.early_stop={metric: val/acc, patience: 5}"], out / "stopped")
    return [{"section": "early_stop", "setting": name, "epochs": r["summary"]["epochs"], "test/acc": r["test_acc"],
             "wall s": r["wall_s"], "wall saved": 1 - r["wall_s"] / full["wall_s"]}
            for name, r in (("60 epochs", full), ("early_stop patience 5", stopped))]


RUNNERS = {"imbalance": imbalance, "policies": policies, "lr_finder": lr_finder, "early_stop": early_stop}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("sections", nargs="*", default=list(RUNNERS), metavar="SECTION",
                   help=f"which sections to run (default all: {', '.join(RUNNERS)})")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("CNNFORGE_MNIST_T10K", DEFAULT_DATA)),
                   help="folder of t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    args = p.parse_args(argv)
    unknown = sorted(set(args.sections) - set(RUNNERS))
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(RUNNERS)}")
    n_train, n_test = (400, 200) if args.tiny else (8000, 2000)
    with tempfile.TemporaryDirectory(prefix="cnnforge-real-data-") as tmp:
        folders = prepare(args.data, Path(tmp) / "data", n_train, n_test)
        rows = []
        for section in args.sections:
            done = RUNNERS[section](folders, Path(tmp) / "runs", args.tiny)
            for row in done:
                print("PROGRESS " + " ".join(f"{k} {v}" for k, v in row.items() if k != "grid"), flush=True)
            rows.extend(done)
    table_rows = [{k: row.get(k, "") for k in ("section", "setting", "test/acc", "test/balanced_acc", "suggested lr",
                                              "best grid lr", "test/acc (best grid)", "points behind", "epochs",
                                              "wall s", "wall saved")} for row in rows]
    return report("real_data", table_rows, {"sizes": {"train": n_train, "test": n_test}, "rows": rows},
                  tiny=args.tiny)


if __name__ == "__main__":
    main()
