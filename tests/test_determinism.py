"""A fixed seed fixes every augmented batch, whatever the number of loader workers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cnnforge
from cnnforge.data.loading import build_splits, make_loader
from cnnforge.data.stratify import stratified_split

AUGMENT = {"train": [{"name": "cifar_standard", "cutout": 8}, {"name": "random_crop", "size": 32, "padding": 4},
                     {"name": "vflip"}, {"name": "gaussian_noise", "p": 0.5}]}


def batches(cifar_root: Path, *, seed: int, workers: int, epochs: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every training batch of ``epochs`` epochs, as the trainer's loader yields them."""
    recipe = cnnforge.check_recipe(cnnforge.load_recipe({
        "name": "det", "seed": seed, "augment": AUGMENT,
        "data": {"name": "cifar10", "root": str(cifar_root), "batch_size": 32, "num_workers": workers}}))
    splits = build_splits(recipe)
    loader = make_loader(splits.train, batch_size=32, shuffle=True, seed=seed, num_workers=workers)
    out = []
    for epoch in range(epochs):
        loader.sampler.use_epoch(epoch)
        out += [(x.clone(), y.clone()) for x, y in loader]
    return out


def same(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v)
                                    for (x, y), (u, v) in zip(a, b, strict=False))


@pytest.fixture(scope="module")
def seed0_inline(cifar_root: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return batches(cifar_root, seed=0, workers=0)


def test_batches_identical_with_0_and_2_workers(cifar_root: Path, seed0_inline: list) -> None:
    assert len(seed0_inline) == 12  # 180 training images, batches of 32, two epochs
    assert same(seed0_inline, batches(cifar_root, seed=0, workers=2))
    assert same(seed0_inline, batches(cifar_root, seed=0, workers=0))  # and across runs


def test_another_seed_gives_other_batches(cifar_root: Path, seed0_inline: list) -> None:
    other = batches(cifar_root, seed=1, workers=2)
    assert not any(torch.equal(x, u) for (x, _), (u, _) in zip(seed0_inline, other, strict=False))


def test_each_epoch_augments_afresh(cifar_root: Path, seed0_inline: list) -> None:
    recipe = cnnforge.check_recipe(cnnforge.load_recipe({
        "name": "det", "augment": AUGMENT, "data": {"name": "cifar10", "root": str(cifar_root), "num_workers": 0}}))
    train = build_splits(recipe).train
    first, again, later = train[(0, 7)][0], train[(0, 7)][0], train[(1, 7)][0]
    original = torch.from_numpy(train.base[int(train.indices[7])][0]).permute(2, 0, 1)
    assert torch.equal(first, again) and not torch.equal(first, later) and not torch.equal(first, original)
    epoch0 = torch.cat([x for x, _ in seed0_inline[:6]])
    epoch1 = torch.cat([x for x, _ in seed0_inline[6:]])
    assert not torch.equal(epoch0, epoch1)  # a new order and new augmentations


def test_split_fixed_by_seed() -> None:
    labels = np.repeat(np.arange(5), 20)
    a, b, c = stratified_split(labels, (0.6, 0.2, 0.2), seed=7)
    assert (len(a), len(b), len(c)) == (60, 20, 20) and np.bincount(labels[c]).tolist() == [4] * 5
    again = stratified_split(labels, (0.6, 0.2, 0.2), seed=7)
    assert all(np.array_equal(x, y) for x, y in zip((a, b, c), again, strict=False))
    assert not np.array_equal(c, stratified_split(labels, (0.6, 0.2, 0.2), seed=8)[2])
