"""The light-step case of ``benchmarks/trainer_overhead.py``: LeNet at batch 64, where framework cost shows.

A LeNet step on 32x32 images takes a few milliseconds on a CPU (well under one on a GPU), so what a
trainer adds per step (wrappers, metric bookkeeping, data plumbing, host syncs) is visible here,
where ``vgg_bn``'s heavy step hides it. Three contenders do the same work: train ``epochs`` epochs in
the same order, evaluate the validation split after each and the test split at the end.

* **plain**: the loop a user writes (uint8 tensors in memory, indexed in the epoch's order);
* **cnnforge**: ``cnnforge.train`` with its default progress output and metrics, report PNGs off;
* **lightning**: PyTorch Lightning's ``Trainer`` (only if ``lightning`` is installed; it is not a
  dependency of cnnforge) with a batch-sampled in-memory loader, its fastest natural data path.

Each contender runs for 1 and for E epochs, in process CPU time with one torch thread (on a machine
shared with others, wall time measures the neighbours): the difference gives the marginal cost of
an epoch and the rest the fixed cost of a run, as in issue 19's measurement. cnnforge's per-step
overhead is its marginal epoch minus the plain loop's, divided by the steps per epoch; the best
epoch's wall time is reported beside it.
"""
from __future__ import annotations

import time
from typing import Any

from benchmarks.common import best


def recipe(root: Any, out_dir: Any, *, tiny: bool, epochs: int) -> dict[str, Any]:
    """LeNet on in-memory CIFAR-shaped data, no augmentation or schedule (the plain loop has neither)."""
    return {
        "name": "light", "seed": 0,
        "data": {"name": "cifar10", "root": str(root), "batch_size": 64, "eval_batch_size": 500, "num_workers": 0,
                 "val_fraction": 0.1},
        "model": {"name": "lenet"},
        "optim": {"name": "sgd", "lr": 0.02, "momentum": 0.9},
        "schedule": {"name": "none"},
        "train": {"epochs": epochs, "checkpoint_every": 0, "out_dir": str(out_dir), "plots": False,
                  "channels_last": False},
        "tracking": {"backend": "none"},
    }


def arrays(ds: Any) -> tuple[Any, Any]:
    import torch

    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.as_tensor(ds.labels)


def synced_clock(device: Any) -> float:
    """``time.perf_counter`` once ``device`` has finished its queue (CUDA runs asynchronously to the host)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def plain(recipe_data: dict[str, Any]) -> dict[str, Any]:
    """Train, validate every epoch, test at the end; epoch times cover the training batches only. On the device
    cnnforge trains on (CUDA when there is one), data held there, autocast to bf16 as ``train.precision`` says."""
    import torch
    from torch import nn

    import cnnforge
    from cnnforge.data.loading import EpochSampler, build_splits

    wall = time.perf_counter()
    rec = cnnforge.load_recipe(recipe_data)
    torch.manual_seed(rec.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16}.get(rec.train.precision)
    splits = build_splits(rec)
    (images, labels), val, test = (tuple(t.to(device) for t in arrays(split))
                                   for split in (splits.train, splits.val, splits.test))
    info = splits.info
    model = cnnforge.build_model(rec.model.name, num_classes=len(info.classes), in_channels=info.channels,
                                 image_size=info.image_size).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=rec.optim.lr, momentum=rec.optim.momentum, fused=True)
    criterion = nn.CrossEntropyLoss()
    mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(info.std, device=device).view(1, -1, 1, 1) * 255.0)

    def accuracy(x: Any, y: Any) -> float:
        model.eval()
        with torch.no_grad():
            hits = sum(int((model((b - mean) * inv_std).argmax(1) == t).sum())
                       for b, t in zip(x.float().split(500), y.split(500), strict=True))
        return hits / len(y)

    order, times = EpochSampler(len(labels), shuffle=True, seed=rec.seed), []
    for epoch in range(rec.train.epochs):
        order.use_epoch(epoch)
        model.train()
        start = synced_clock(device)
        for index in torch.from_numpy(order.permutation()).to(device).split(rec.data.batch_size):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = criterion(model((images[index].float() - mean) * inv_std), labels[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        times.append(synced_clock(device) - start)
        accuracy(*val)
    accuracy(*test)
    return {"epoch_s": times, "wall_s": time.perf_counter() - wall, "steps": -(-len(labels) // rec.data.batch_size),
            "samples": len(labels), "weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}


def cnnforge_run(recipe_data: dict[str, Any]) -> dict[str, Any]:
    from safetensors.torch import load_file

    import cnnforge

    wall = time.perf_counter()
    result = cnnforge.train(recipe_data, quiet=False)
    wall = time.perf_counter() - wall
    return {"epoch_s": [row["time/epoch_s"] for row in result.history], "wall_s": wall,
            "weights": load_file(result.weights)}


def lightning_run(recipe_data: dict[str, Any]) -> dict[str, Any] | None:
    """The same work under Lightning's Trainer; None when lightning is not installed."""
    try:
        from benchmarks.lightning_contender import run
    except ImportError:
        return None
    return run(recipe_data)


def timed(fn: Any, recipe_data: dict[str, Any]) -> dict[str, Any] | None:
    """``fn(recipe_data)`` with the process CPU time it took (one torch thread: what the work costs)."""
    cpu = time.process_time()
    run = fn(recipe_data)
    return None if run is None else {**run, "cpu_s": time.process_time() - cpu}


def summarise(runs: dict[str, dict[int, list[dict[str, Any]]]], steps: int, epochs: int) -> dict[str, Any]:
    """Per contender: the marginal CPU time of an epoch and the fixed CPU time of a run, from its 1-epoch and
    ``epochs``-epoch runs (best round of each), and the best epoch's wall time; cnnforge's overhead and ratios."""
    out: dict[str, Any] = {}
    for name, by_epochs in runs.items():
        one, many = best([r["cpu_s"] for r in by_epochs[1]]), best([r["cpu_s"] for r in by_epochs[epochs]])
        epoch = (many - one) / (epochs - 1)
        out[name] = {"epoch_cpu_s": epoch, "fixed_cpu_s": one - epoch, "cpu_s": many,
                     "best_epoch_s": best([t for r in by_epochs[epochs] for t in r["epoch_s"]]),
                     "wall_s": best([r["wall_s"] for r in by_epochs[epochs]])}
    plain, ours = out["plain"], out["cnnforge"]
    out["overhead_ms_per_step"] = (ours["epoch_cpu_s"] - plain["epoch_cpu_s"]) / steps * 1000
    out["overhead_ms_per_step_wall"] = (ours["best_epoch_s"] - plain["best_epoch_s"]) / steps * 1000
    out["fixed_cost_extra_s"] = ours["fixed_cpu_s"] - plain["fixed_cpu_s"]
    out["end_to_end_vs_plain"] = plain["cpu_s"] / ours["cpu_s"]
    if "lightning" in out:
        out["end_to_end_vs_lightning"] = out["lightning"]["cpu_s"] / ours["cpu_s"]
    return out
