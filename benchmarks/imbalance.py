"""Class imbalance and early stopping on real handwritten digits (issue 27 items 1 and 3).

The real MNIST test set (``shared/data/mnist-t10k``: 10,000 28x28 digits) is split 8,000 train /
2,000 test, stratified, and written as a JPEG folder (``train/``, ``test/``), the kind of folder a
practitioner brings; ``data.val_fraction`` carves validation from ``train/``.

* ``imbalance``: classes 0-4 keep all their training images, 5-9 keep 10 % (test stays balanced).
  Seed 000's ConvNet with ``data.balance`` ``none``, ``loss`` and ``sampler``, same epochs and seed:
  test accuracy, balanced accuracy and macro F1.
* ``early stop``: a run of ``--stop-epochs`` epochs at a constant learning rate on the balanced
  split, which plateaus after a few, against the same run with ``train.early_stop`` on ``val/loss``
  (``--patience``): the epochs and wall time each took, and their test accuracy (best weights).

* ``draw cost``: CPU time of an epoch's order for 50,000 skewed labels, the balanced draws against
  the shuffle they replace, and per step of 64 (the draws are made once an epoch, not per step).

``--tiny`` uses a synthetic 28x28 IDX set from the test suite's writers instead of the real digits.

    python -m benchmarks.imbalance [--epochs 8] [--stop-epochs 60] [--mnist DIR]
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, parser, report

MNIST = ROOT.parent / "shared" / "data" / "mnist-t10k"
MINORITY = range(5, 10)  # the classes that keep MINORITY_SHARE of their training images
MINORITY_SHARE = 0.1


def read_digits(folder: Path, tiny: bool, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """The t10k images and labels of ``folder``; with ``tiny`` the test suite's synthetic 28x28 digits."""
    from cnnforge.data.idx import read_idx

    if tiny:
        from tests.datafiles import write_mnist

        folder = write_mnist(tmp / "synthetic", n_test=600) / "MNIST" / "raw"
    images, labels = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    if not images.exists():
        raise SystemExit(f"{folder}: no t10k-images-idx3-ubyte.gz (the real MNIST test set; see --mnist)")
    return read_idx(images), read_idx(labels).astype(np.int64)


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, picks: dict[str, np.ndarray]) -> Path:
    """``root/<split>/<digit>/<i>.jpg`` for the ``picks`` (indices) of each split."""
    from PIL import Image

    for split, indices in picks.items():
        for i in indices:
            folder = root / split / str(labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{i:05d}.jpg", quality=95)
    return root


def folders(images: np.ndarray, labels: np.ndarray, tmp: Path) -> tuple[Path, Path, dict[str, int]]:
    """(balanced folder, skewed folder, training images per class of the skewed one): 80/20 stratified."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    rng = np.random.default_rng(0)
    kept = [i for i in train if labels[i] not in MINORITY or rng.random() < MINORITY_SHARE]
    balanced = write_folder(tmp / "balanced", images, labels, {"train": train, "test": test})
    skewed = write_folder(tmp / "skewed", images, labels, {"train": np.asarray(kept), "test": test})
    counts = np.bincount(labels[kept], minlength=10)
    return balanced, skewed, {str(d): int(c) for d, c in enumerate(counts)}


def recipe(root: Path, out: Path, *, epochs: int, schedule: str) -> dict[str, Any]:
    """Seed 000's ConvNet on a grey 28x28 JPEG folder (decoded once into memory)."""
    return {"name": "real_digits", "seed": 0,
            "data": {"name": "imagefolder", "root": str(root), "grayscale": True, "cache": "memory",
                     "batch_size": 64, "num_workers": 0, "val_fraction": 0.1},
            "model": {"name": "convnet"}, "optim": {"name": "adam", "lr": 0.003}, "schedule": {"name": schedule},
            "train": {"epochs": epochs, "checkpoint_every": 0, "plots": False, "out_dir": str(out)},
            "tracking": {"backend": "none"}}


def run(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """One run: its test metrics, epochs trained, why it ended and its wall time."""
    import cnnforge

    start = time.perf_counter()
    result = cnnforge.train(config, overrides, quiet=True)
    m = result.metrics
    return {"test_acc": m["test/acc"], "test_balanced_acc": m["test/balanced_acc"], "test_macro_f1": m["test/macro_f1"],
            "epochs": m["epochs"], "stopped": m["stopped"], "wall_s": time.perf_counter() - start}


def draw_cost(n: int, rounds: int) -> dict[str, float]:
    """CPU milliseconds of one epoch's order of ``n`` samples: ``data.balance: sampler``'s draws and the shuffle."""
    from cnnforge.data.loading import BalancedSampler, EpochSampler

    shares = np.asarray([0.3, 0.3, 0.2, 0.1, 0.04, 0.02, 0.02, 0.01, 0.005, 0.005])
    labels = np.random.default_rng(0).choice(10, n, p=shares)
    cost = {}
    for name, sampler in (("balanced_ms", BalancedSampler(labels, seed=0)),
                          ("shuffle_ms", EpochSampler(n, shuffle=True, seed=0))):
        sampler.permutation()  # first calls
        start = time.process_time()
        for epoch in range(rounds):
            sampler.use_epoch(epoch)
            sampler.permutation()
        cost[name] = 1e3 * (time.process_time() - start) / rounds
    return {**cost, "samples": n, "balanced_ms_per_step_of_64": cost["balanced_ms"] / (n / 64)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None, help="epochs of each imbalance run (default 8; 1 with --tiny)")
    p.add_argument("--stop-epochs", type=int, default=None, help="epochs of the full run (default 60; 4 with --tiny)")
    p.add_argument("--patience", type=int, default=5, help="train.early_stop.patience (default 5)")
    p.add_argument("--mnist", type=Path, default=MNIST, help=f"folder of the t10k IDX files (default {MNIST})")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # on a shared machine two threads can wait on each other for most of a small step
    epochs, stop_epochs = args.epochs or (1 if args.tiny else 8), args.stop_epochs or (4 if args.tiny else 60)
    patience = min(args.patience, stop_epochs - 2) if args.tiny else args.patience
    with tempfile.TemporaryDirectory(prefix="cnnforge-imbalance-") as tmp:
        balanced, skewed, counts = folders(*read_digits(args.mnist, args.tiny, Path(tmp)), Path(tmp))
        run(recipe(skewed, Path(tmp) / "runs", epochs=1, schedule="none"), [])  # imports and first calls, uncounted
        skew = {balance: run(recipe(skewed, Path(tmp) / "runs", epochs=epochs, schedule="cosine"),
                             [f"data.balance={balance}"]) for balance in ("none", "loss", "sampler")}
        plateau = recipe(balanced, Path(tmp) / "runs", epochs=stop_epochs, schedule="none")
        stop = {"full": run(plateau, []),
                "early_stop": run(plateau, [f"train.early_stop={{metric: val/loss, patience: {patience}}}"])}
    draws = draw_cost(5000 if args.tiny else 50_000, 3 if args.tiny else 20)
    rows = [{"part": "imbalance", "variant": f"balance: {name}", "epochs": r["epochs"], "test acc": r["test_acc"],
             "test balanced acc": r["test_balanced_acc"], "test macro F1": r["test_macro_f1"], "wall s": r["wall_s"]}
            for name, r in skew.items()]
    rows += [{"part": "early stop", "variant": name, "epochs": r["epochs"], "test acc": r["test_acc"],
              "test balanced acc": r["test_balanced_acc"], "test macro F1": r["test_macro_f1"], "wall s": r["wall_s"]}
             for name, r in stop.items()]
    balanced_accs = {name: r["test_balanced_acc"] for name, r in skew.items()}
    gain = max(balanced_accs["loss"], balanced_accs["sampler"]) - balanced_accs["none"]
    result = {"dataset": "synthetic 28x28 digits" if args.tiny else "MNIST t10k, 8k train / 2k test",
              "model": "convnet", "train_counts_skewed": counts, "epochs": epochs, "imbalance": skew,
              "balanced_acc_gain_points": 100 * gain, "stop_epochs": stop_epochs, "patience": patience,
              "early_stop": stop, "wall_time_saved": 1 - stop["early_stop"]["wall_s"] / stop["full"]["wall_s"],
              "test_acc_change_points": 100 * (stop["early_stop"]["test_acc"] - stop["full"]["test_acc"]),
              "draw_cost": draws}
    print(f"draws of an epoch of {draws['samples']}: balanced {draws['balanced_ms']:.2f} ms, shuffle "
          f"{draws['shuffle_ms']:.2f} ms ({draws['balanced_ms_per_step_of_64'] * 1e3:.1f} us a step of 64)")
    return report("imbalance", rows, result, tiny=args.tiny)


if __name__ == "__main__":
    main()
