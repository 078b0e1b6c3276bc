"""airbench's tricks one at a time: test accuracy and time cost of each, on a small fastnet on the digits.

Each variant switches one recipe option on over the same baseline (recipes/cifar_fast.yaml's recipe
in small: fastnet, flip and crop, label smoothing, Nesterov SGD, one-cycle LR), and ``all`` switches
every one on, as cifar_fast does:

* ``lookahead``: ``train.lookahead`` (slow weights written back every 5 steps, from epoch 2);
* ``whiten_init``: ``train.whiten_init`` (the stem from the patch covariance of the training images);
* ``bias_lr_mult``: ``optim.bias_lr_mult: 64`` (biases and BatchNorm shifts);
* ``tta_flip``: ``eval.tta: flip`` (validation and test average the logits of each image and its mirror).

The digits (scikit-learn's 1,797 8x8 images, upscaled to 16x16: fastnet needs 9x9) need no download;
their test split has 360 images, so one image is 0.28 points of accuracy: the mean over ``--seeds``
seeds counts, and differences of a point or less are noise. ``train s`` is the training time
(airbench's convention: the epochs only), ``run s`` the whole run, where the TTA's second forward
pass and the whitening's eigendecomposition show.

    python -m benchmarks.tricks --seeds 5
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import parser, report

VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "lookahead": ["train.lookahead={decay: 0.95, every: 5, start_epoch: 2, power: 3.0}"],
    "whiten_init": ["train.whiten_init=true"],
    "bias_lr_mult": ["optim.bias_lr_mult=64"],
    "tta_flip": ["eval.tta=flip"],
}
VARIANTS["all"] = [override for overrides in VARIANTS.values() for override in overrides]


def recipe(out_dir: Path, *, epochs: int, seed: int) -> dict[str, Any]:
    """cifar_fast in small on the digits: 16x16 grey images, a narrow fastnet whose stem fits grey 2x2 whitening."""
    return {
        "name": "tricks", "seed": seed,
        "data": {"name": "digits", "batch_size": 64, "num_workers": 0},
        "augment": {"train": [{"name": "resize", "size": 16}, {"name": "random_crop", "size": 16, "padding": 2},
                              {"name": "hflip"}]},
        "model": {"name": "fastnet", "stem_width": 8, "widths": [32, 64, 64]},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "onecycle"},
        "train": {"epochs": epochs, "label_smoothing": 0.2, "checkpoint_every": 0, "plots": False,
                  "out_dir": str(out_dir)},
        "tracking": {"backend": "none"},
    }


def run_variant(overrides: list[str], out_dir: Path, *, epochs: int, seed: int) -> dict[str, float]:
    """One run: its test accuracy, training time and whole-run time."""
    import cnnforge

    start = time.perf_counter()
    result = cnnforge.train(recipe(out_dir, epochs=epochs, seed=seed), overrides, quiet=True)
    return {"test_acc": result["test/acc"], "train_s": result["train/time_s"], "run_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None, help="runs per variant (default 5; 1 with --tiny)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 8; 1 with --tiny)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # on a shared machine two threads can wait on each other for most of a small step
    seeds, epochs = args.seeds or (1 if args.tiny else 5), args.epochs or (1 if args.tiny else 8)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="cnnforge-tricks-") as tmp:
        run_variant([], Path(tmp), epochs=1, seed=0)  # imports and first calls (eigh's, too), counted by no one
        for seed in range(seeds):  # interleaved: a busy moment of a shared machine hits every variant alike
            for name, overrides in VARIANTS.items():
                runs[name].append(run_variant(overrides, Path(tmp), epochs=epochs, seed=seed))
    mean = {name: {k: statistics.fmean(r[k] for r in rs) for k in ("test_acc", "train_s", "run_s")}
            for name, rs in runs.items()}
    base = mean["baseline"]
    rows = [{"variant": name, "test acc": m["test_acc"], "acc vs baseline": m["test_acc"] - base["test_acc"],
             "train s": m["train_s"], "x train time": m["train_s"] / base["train_s"], "run s": m["run_s"],
             "x run time": m["run_s"] / base["run_s"]} for name, m in mean.items()]
    result = {"dataset": "digits 16x16", "model": "fastnet stem 8, widths 32/64/64", "seeds": seeds, "epochs": epochs,
              "variants": {name: {"overrides": VARIANTS[name], **mean[name],
                                  "test_acc_per_seed": [r["test_acc"] for r in runs[name]]} for name in VARIANTS}}
    return report("tricks", rows, result, tiny=args.tiny)


if __name__ == "__main__":
    main()
