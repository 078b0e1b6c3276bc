"""Does the loader starve the model? Data wait as a share of step time for recipes/cifar_vgg_bn.yaml.

The flagship recipe as it is (its albumentations pipeline, its default ``num_workers``, torch's
default threads) on synthetic CIFAR-10-sized data. The trainer measures, per epoch, the time spent
waiting for the next batch (``time/data_wait_s``) within the epoch's training time
(``time/epoch_s``); the target is a wait under 5 %. The first epoch also pays for starting the
worker processes, so the last epoch is the steady state reported. Part of the wait is fixed per
epoch (a ``DataLoader`` restarts its workers' prefetching each epoch: the first batch waits), so
the share depends on the epoch's length; 12,000 images (10,800 for training) keep it closer to
CIFAR-10's 45,000 than a toy set would (``--train-images`` changes it).

    python -m benchmarks.data_wait
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, parser, report, write_cifar

RECIPE = ROOT / "recipes" / "cifar_vgg_bn.yaml"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--train-images", type=int, default=12000, help="synthetic CIFAR training images (default 12000)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. data.num_workers=0")
    args = p.parse_args(argv)
    import cnnforge

    with tempfile.TemporaryDirectory(prefix="cnnforge-wait-") as tmp:
        root = write_cifar(Path(tmp) / "data", n_train=200 if args.tiny else args.train_images, n_test=20)
        recipe = cnnforge.load_recipe(RECIPE, [f"data.root={root}", f"train.out_dir={Path(tmp) / 'runs'}",
                                               f"train.epochs={1 if args.tiny else 2}", *args.overrides])
        history = cnnforge.train(recipe, quiet=True).history
    rows = [{"epoch": h["epoch"], "epoch s": h["time/epoch_s"], "data wait s": h["time/data_wait_s"],
             "wait share": h["time/data_wait_s"] / h["time/epoch_s"], "samples/s": h["train/samples_per_s"]}
            for h in history]
    last = rows[-1]
    result = {"recipe": "cifar_vgg_bn", "images": 200 if args.tiny else args.train_images,
              "num_workers": recipe.data.num_workers, "batch_size": recipe.data.batch_size,
              "epochs": rows, "data_wait_fraction": last["wait share"],
              "targets": {"data_wait_fraction": 0.05}}
    return report("data_wait", rows, result, tiny=args.tiny)


if __name__ == "__main__":
    main()
