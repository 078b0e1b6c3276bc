"""Time to 94 %: recipes/cifar_fast.yaml on CIFAR-10, wall-clock training time and test accuracy.

airbench's convention: a fixed schedule, timed from the first training step to the last (data
loading, compilation warm-up and the final evaluation excluded), then the test accuracy. A warm-up
run first fills torch.compile's cache, as airbench does, so the timed runs do not pay compilation.
``reached_94`` says whether the mean test accuracy over the runs is at least 94 %.

It needs a GPU and CIFAR-10 in torchvision's layout under ``--data`` to mean anything. With
``--tiny`` (the test suite) or without CUDA it trains on a few synthetic images with compile off,
to check that the recipe runs; those numbers are not CIFAR-10 results.

    python -m benchmarks.cifar_fast --data /path/to/cifar --runs 5
"""
from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, parser, report, write_cifar

RECIPE = ROOT / "recipes" / "cifar_fast.yaml"
TARGET = 0.94
#: a correctness run on a CPU: small batches, one epoch, no compilation (minutes on a CPU)
CPU_OVERRIDES = ["data.batch_size=32", "data.eval_batch_size=64", "data.num_workers=0", "train.compile=false",
                 "train.epochs=1"]


def train_runs(overrides: list[str], runs: int, warmups: int) -> list[Any]:
    """``warmups`` + ``runs`` trainings of cifar_fast with ``overrides``; the timed runs' results.

    The warm-up runs fill torch.compile's cache, as airbench's do, so the timed runs do not pay compilation.
    """
    import cnnforge

    recipe = cnnforge.load_recipe(RECIPE, overrides)
    return [cnnforge.train(recipe, quiet=True) for _ in range(warmups + runs)][warmups:]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("CNNFORGE_DATA", "data"), help="folder with cifar-10-batches-py/")
    p.add_argument("--runs", type=int, default=None, help="timed runs (default 5 on a GPU, 1 otherwise)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. train.epochs=12")
    args = p.parse_args(argv)
    import torch

    gpu = torch.cuda.is_available() and not args.tiny
    with tempfile.TemporaryDirectory(prefix="cnnforge-fast-") as tmp:
        overrides = [f"train.out_dir={Path(tmp) / 'runs'}"]
        if gpu:
            overrides.append(f"data.root={args.data}")
            runs, warmups = args.runs or 5, 1
        else:  # a correctness run: synthetic images, small batches, no compilation
            root = write_cifar(Path(tmp) / "data", n_train=100 if args.tiny else 1000, n_test=40)
            overrides += [f"data.root={root}", *CPU_OVERRIDES]
            runs, warmups = args.runs or 1, 0
        overrides += args.overrides  # last, so that they win
        results = train_runs(overrides, runs, warmups)
    times = [r["train/time_s"] for r in results]
    accs = [r["test/acc"] for r in results]
    mean_acc = statistics.fmean(accs)
    rows = [{"run": i + 1, "train s": t, "test acc": a} for i, (t, a) in enumerate(zip(times, accs, strict=False))]
    rows.append({"run": "mean", "train s": statistics.fmean(times), "test acc": mean_acc})
    result = {"mode": "CIFAR-10 on a GPU" if gpu else "CPU correctness run on synthetic data", "cifar10": gpu,
              "device": torch.cuda.get_device_name(0) if gpu else "cpu", "runs": runs,
              "overrides": overrides[1:], "train_s": times, "test_acc": accs, "mean_train_s": statistics.fmean(times),
              "mean_test_acc": mean_acc, "reached_94": gpu and mean_acc >= TARGET,
              "time_to_94_s": statistics.fmean(times) if gpu and mean_acc >= TARGET else None,
              "targets": {"mean_test_acc": TARGET, "mean_train_s_h100": 10.0}}
    return report("cifar_fast", rows, result, tiny=args.tiny)


if __name__ == "__main__":
    main()
