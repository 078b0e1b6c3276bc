"""Augmentation policies and CutMix on a small real dataset: test accuracy of the op list vs the policies.

Issue 27's measurement: seed 004's MyFirstConvNet on 2,000 real MNIST training digits (stratified
from the MNIST test set in ``../shared/data/mnist-t10k``, 2,000 other digits as the test split), the
same epochs, optimizer and seeds for every variant:

* ``ops``: the op list a user has without policies (``random_crop`` with 2 pixels of padding, ``rotate`` 10°);
* ``trivial_augment``, ``rand_augment`` (2 ops at magnitude 9): torchvision's policies;
* ``rand_augment+cutmix``: RandAugment and CutMix on half the batches (``augment.batch``).

It prints the mean test accuracy, its spread (standard deviation over ``--seeds`` seeds) and the
difference to ``ops``, and the training time of a run. With ``--tiny`` it trains on a few synthetic
digits (``tests/datafiles.py``) instead, for the test suite.

    python -m benchmarks.augment_policies --seeds 3 --epochs 15
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, parser, report

VARIANTS: dict[str, list[str]] = {
    "ops": ["augment.train=[{name: random_crop, size: 28, padding: 2}, {name: rotate, limit: 10}]"],
    "trivial_augment": ["augment.train=[{name: trivial_augment}]"],
    "rand_augment": ["augment.train=[{name: rand_augment, num_ops: 2, magnitude: 9}]"],
    "rand_augment+cutmix": ["augment.train=[{name: rand_augment, num_ops: 2, magnitude: 9}]",
                            "augment.batch=[{name: cutmix, alpha: 1.0, prob: 0.5}]"],
}
#: where the shared MNIST test set lies beside a checkout (main or a worktree)
MNIST_T10K = [ROOT.parent / "shared/data/mnist-t10k", ROOT.parents[1] / "shared/data/mnist-t10k"]


def write_mnist_subset(source: Path, root: Path, *, train: int, test: int) -> Path:
    """``train`` and ``test`` digits of the MNIST test set in ``source``, stratified, as ``root/MNIST/raw`` IDX
    files (what the ``mnist`` dataset reads)."""
    from sklearn.model_selection import train_test_split

    from cnnforge.data.idx import read_idx
    from tests.datafiles import write_idx

    images = read_idx(source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")
    tr, te = train_test_split(np.arange(len(labels)), train_size=train, test_size=test, stratify=labels,
                              random_state=0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, picks in (("train", tr), ("t10k", te)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[picks])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[picks].astype(np.uint8))
    return root


def recipe(root: Path, out_dir: Path, *, epochs: int, seed: int, workers: int) -> dict[str, Any]:
    """MyFirstConvNet on the subset: Adam with a cosine schedule, batches of 64, a tenth of train for validation."""
    return {
        "name": "policies", "seed": seed,
        "data": {"name": "mnist", "root": str(root), "batch_size": 64, "num_workers": workers, "val_fraction": 0.1},
        "model": {"name": "my_first_convnet"},
        "optim": {"name": "adam", "lr": 0.002},
        "schedule": {"name": "cosine"},
        "train": {"epochs": epochs, "checkpoint_every": 0, "plots": False, "out_dir": str(out_dir)},
        "tracking": {"backend": "none"},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None, help="runs per variant (default 3; 1 with --tiny)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 15; 1 with --tiny)")
    p.add_argument("--workers", type=int, default=2, help="data.num_workers (default 2; 0 on a loaded machine)")
    p.add_argument("--mnist", type=Path, default=next((d for d in MNIST_T10K if d.exists()), None),
                   help="folder of t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (../shared/data/mnist-t10k)")
    args = p.parse_args(argv)
    import torch

    import cnnforge

    torch.set_num_threads(1)  # on a shared machine two threads can wait on each other for most of a small step

    seeds, epochs = args.seeds or (1 if args.tiny else 3), args.epochs or (1 if args.tiny else 15)
    if not args.tiny and args.mnist is None:
        raise SystemExit("no MNIST test set found: pass --mnist DIR (see ../shared/data/README.md)")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="cnnforge-policies-") as tmp:
        if args.tiny:
            from tests.datafiles import write_mnist

            root = write_mnist(Path(tmp) / "data", n_train=100, n_test=40)
        else:
            root = write_mnist_subset(args.mnist, Path(tmp) / "data", train=2000, test=2000)
        for seed in range(seeds):  # interleaved: a busy moment of a shared machine hits every variant alike
            for name, overrides in VARIANTS.items():
                result = cnnforge.train(recipe(root, Path(tmp) / "runs", epochs=epochs, seed=seed,
                                               workers=args.workers), overrides, quiet=True)
                runs[name].append({"test_acc": result["test/acc"], "train_s": result["train/time_s"]})
                print(f"{name} seed {seed}: test acc {result['test/acc']:.4f}", flush=True)
    stats = {name: {"mean": statistics.fmean(r["test_acc"] for r in rs),
                    "std": statistics.stdev([r["test_acc"] for r in rs]) if len(rs) > 1 else 0.0,
                    "train_s": statistics.fmean(r["train_s"] for r in rs),
                    "test_acc_per_seed": [r["test_acc"] for r in rs]} for name, rs in runs.items()}
    rows = [{"variant": name, "test acc": s["mean"], "± std": s["std"], "vs ops": s["mean"] - stats["ops"]["mean"],
             "train s": s["train_s"]} for name, s in stats.items()]
    data = "synthetic MNIST-like digits" if args.tiny else "real MNIST digits (t10k): 2,000 train, 2,000 test"
    result = {"dataset": data, "model": "my_first_convnet", "seeds": seeds, "epochs": epochs,
              "variants": {name: {"overrides": VARIANTS[name], **stats[name]} for name in VARIANTS}}
    return report("augment_policies", rows, result, tiny=args.tiny)


if __name__ == "__main__":
    main()
