"""Augmentation throughput on one CPU core: seed 002's torchvision pipeline vs cnnforge's two modes.

All three produce the same thing, a normalised float batch of 32x32 RGB images augmented with seed
002's ops plus cutout (colour jitter hue/saturation .05, horizontal flip, rotation up to 20 degrees,
an 8-pixel cutout square with p .5):

* ``seed_torchvision``: the seed's per-image PIL ``transforms.Compose`` (ToTensor, Normalize, and
  RandomErasing as the cutout), stacked into a batch, as a torchvision ``CIFAR10`` dataset yields it;
* ``cnnforge_sample``: ``augment.mode: sample``, the recipe's albumentations pipeline run by
  cnnforge's seeded dataset wrapper per uint8 image, collated, then normalised per batch;
* ``cnnforge_batch``: ``augment.mode: batch``, the same ops with per-sample random parameters applied
  to the whole uint8 batch with torch ops (on the GPU when there is one; here on the CPU).

    python -m benchmarks.augment_throughput
"""
from __future__ import annotations

from typing import Any

from benchmarks.common import best, cifar_array, interleaved, parser, report

RECIPE = "recipes/cifar_vgg_bn.yaml"  # its augment.train is seed 002's pipeline plus cutout
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def seed_pipeline() -> Any:
    """Seed 002's train transform; cutout as torchvision's RandomErasing of one 8x8 square (p .5)."""
    from torchvision import transforms as T

    return T.Compose([T.ColorJitter(hue=0.05, saturation=0.05), T.RandomHorizontalFlip(), T.RandomRotation(20),
                      T.ToTensor(), T.Normalize(MEAN, STD),
                      T.RandomErasing(p=0.5, scale=(64 / 1024, 64 / 1024), ratio=(1.0, 1.0), value=0)])


def contenders(images: Any, batch_size: int) -> dict[str, Any]:
    import torch
    from PIL import Image

    import cnnforge.bundled  # noqa: F401  (registers the ops)
    from cnnforge.data.batch_augment import make_batch_augment
    from cnnforge.data.loading import AugmentedDataset
    from cnnforge.data.pipeline import build_pipeline
    from cnnforge.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    labelled = [(image, 0) for image in images]
    n = len(images)
    mean = torch.tensor(MEAN).view(1, -1, 1, 1) * 255
    inv_std = 1 / (torch.tensor(STD).view(1, -1, 1, 1) * 255)
    tv = seed_pipeline()
    dataset = AugmentedDataset(labelled, range(n), build_pipeline(recipe.augment.train, RECIPE).transform, seed=0)
    batch_aug = make_batch_augment(load_recipe(RECIPE, ["augment.mode=batch"]))
    uint8 = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    epoch = [0]

    def seed() -> None:
        for start in range(0, n, batch_size):
            torch.stack([tv(Image.fromarray(images[i])) for i in range(start, min(n, start + batch_size))])

    def sample() -> None:
        epoch[0] += 1
        for start in range(0, n, batch_size):
            x = torch.stack([dataset[(epoch[0], i)][0] for i in range(start, min(n, start + batch_size))])
            (x.float() - mean) * inv_std

    def batch() -> None:
        epoch[0] += 1
        for b, start in enumerate(range(0, n, batch_size)):
            (batch_aug(uint8[start:start + batch_size], (epoch[0], b, 0)) - mean) * inv_std

    return {"seed_torchvision": seed, "cnnforge_sample": sample, "cnnforge_batch": batch}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    import cv2
    import torch

    torch.set_num_threads(1)  # "one CPU core": torch, OpenCV (albumentations) and PIL all single-threaded
    cv2.setNumThreads(1)
    n, batch_size = (64, 32) if args.tiny else (2048, 256)
    images, _ = cifar_array(n)
    import time

    repeats = args.repeats or (1 if args.tiny else 3)
    times = interleaved(contenders(images, batch_size), repeats, clock=time.process_time)
    rate = {name: n / best(t) for name, t in times.items()}
    base = rate["seed_torchvision"]
    rows = [{"pipeline": name, "images/s": r, "x seed": r / base} for name, r in rate.items()]
    result = {"images": n, "batch_size": batch_size, "threads": 1, "clock": "process CPU time", "images_per_s": rate,
              "ratio_sample_vs_seed": rate["cnnforge_sample"] / base,
              "ratio_batch_vs_seed": rate["cnnforge_batch"] / base,
              "targets": {"ratio_sample_vs_seed": 3.0, "ratio_batch_vs_seed": 10.0}}
    return report("augment_throughput", rows, result, tiny=args.tiny)


if __name__ == "__main__":
    main()
