"""The light-step case of ``benchmarks/trainer_overhead.py``: LeNet at batch 64, where framework cost shows.

A LeNet step on 32x32 images takes a few milliseconds on a CPU (well under one on a GPU), so what a
trainer adds per step (wrappers, metric bookkeeping, data plumbing, host syncs) is visible here,
where ``vgg_bn``'s heavy step hides it. Three contenders do the same work: train ``epochs`` epochs in
the same order, evaluate the validation split after each and the test split at the end.

* **plain**: the loop a user writes (uint8 tensors in memory, indexed in the epoch's order);
* **cnnforge**: ``cnnforge.train`` with its default progress output and metrics, report PNGs off;
* **lightning**: PyTorch Lightning's ``Trainer`` (only if ``lightning`` is installed; it is not a
  dependency of cnnforge) with a batch-sampled in-memory loader, its fastest natural data path.

Each contender runs for 1 and for E epochs in every round, in process CPU time with one torch
thread (on a machine shared with others, wall time measures the neighbours): the difference gives
the marginal cost of an epoch and the rest the fixed cost of a run, as in issue 19's measurement.
cnnforge's per-step overhead is its marginal epoch minus the plain loop's, divided by the steps per
epoch (validation and the epoch's files included: an upper bound), and beside it the difference of
the training loops' median epoch wall times. :func:`host_cost` measures the same with a model that
costs nothing, where the trainer's own work per step is most of the step.
"""
from __future__ import annotations

import time
from statistics import median
from typing import Any

from cnnforge.registry import register_callback, register_model

#: the near-free model of :func:`host_cost`, registered when this module is imported
PROBE = "bench_probe"


@register_model(PROBE)
def probe(*, num_classes: int, in_channels: int = 3, image_size: Any = None) -> Any:
    """Average-pool to 4x4, one linear layer: a step that costs almost nothing but the trainer's own work."""
    from torch import nn

    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(in_channels * 16, num_classes))


#: the epoch-level callback of ``--callback``, registered when this module is imported
EPOCH_PROBE = "bench_epoch_probe"


@register_callback(EPOCH_PROBE)
def epoch_probe() -> Any:
    """Reads every epoch's metrics and changes nothing: what an epoch-level callback costs the steps around it."""
    from cnnforge.training.callbacks import Callback

    class EpochProbe(Callback):
        def on_epoch_end(self, ctx: Any, metrics: dict[str, Any]) -> None:
            self.last = dict(metrics)

    return EpochProbe()


def recipe(root: Any, out_dir: Any, *, tiny: bool, epochs: int, callback: bool = False) -> dict[str, Any]:
    """LeNet on in-memory CIFAR-shaped data, no augmentation or schedule (the plain loop has neither); ``callback``
    adds :data:`EPOCH_PROBE` (only cnnforge runs callbacks; the plain loop and Lightning ignore the key)."""
    return {
        "callbacks": [{"name": EPOCH_PROBE}] if callback else [],
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


def _rounds(by_epochs: dict[int, list[dict[str, Any]]], epochs: int) -> list[dict[str, float]]:
    """Per round: the marginal CPU time of an epoch and the fixed CPU time of a run (from the round's 1-epoch and
    ``epochs``-epoch runs), the CPU and wall time of the longer run and the median of its epochs' wall times."""
    out = []
    for one, many in zip(by_epochs[1], by_epochs[epochs], strict=True):
        epoch = (many["cpu_s"] - one["cpu_s"]) / (epochs - 1)
        out.append({"epoch_cpu_s": epoch, "fixed_cpu_s": one["cpu_s"] - epoch, "cpu_s": many["cpu_s"],
                    "epoch_s": median(many["epoch_s"]), "wall_s": many["wall_s"]})
    return out


def summarise(runs: dict[str, dict[int, list[dict[str, Any]]]], steps: int, epochs: int) -> dict[str, Any]:
    """Each contender's times (medians over rounds), cnnforge's overhead per step and per run, and the ratios.

    Differences and ratios are taken within a round, whose runs follow each other within seconds,
    then the median over rounds: this VM's speed drifts by 5-10 % over a minute, more than the gap
    being measured, and a difference of two per-contender bests mostly measures which one was lucky.
    """
    rounds = {name: _rounds(by_epochs, epochs) for name, by_epochs in runs.items()}
    out: dict[str, Any] = {name: {key: median(r[key] for r in rs) for key in rs[0]} for name, rs in rounds.items()}

    def paired(fn: Any, other: str = "plain") -> float:
        return median(fn(ours, theirs) for ours, theirs in zip(rounds["cnnforge"], rounds[other], strict=True))

    out["overhead_ms_per_step"] = paired(lambda c, p: (c["epoch_cpu_s"] - p["epoch_cpu_s"]) / steps * 1000)
    out["overhead_ms_per_step_wall"] = paired(lambda c, p: (c["epoch_s"] - p["epoch_s"]) / steps * 1000)
    out["fixed_cost_extra_s"] = paired(lambda c, p: c["fixed_cpu_s"] - p["fixed_cpu_s"])
    out["end_to_end_vs_plain"] = paired(lambda c, p: p["cpu_s"] / c["cpu_s"])
    if "lightning" in out:
        out["end_to_end_vs_lightning"] = paired(lambda c, lit: lit["cpu_s"] / c["cpu_s"], "lightning")
    out["rounds"] = rounds
    return out


def host_cost(recipe_data: dict[str, Any], rounds: int) -> list[float]:
    """cnnforge's per-step cost over the plain loop in ms, per round, with a model that costs almost nothing
    (:func:`probe`): the difference of the two loops' median epoch wall times over the steps per epoch.

    What a trainer adds per step is host work (Python, small launches); with LeNet's 5 ms step on a
    CPU it sits inside the run-to-run noise, here it is most of the step. On a GPU, where the host
    only queues kernels, this is the number that decides whether a small CNN waits for its trainer.
    """
    data = {**recipe_data, "model": {"name": PROBE}}
    plain(data), cnnforge_run(data)  # warm-up
    diffs = []
    for _ in range(rounds):
        theirs, ours = plain(data), cnnforge_run(data)
        diffs.append((median(ours["epoch_s"]) - median(theirs["epoch_s"])) / theirs["steps"] * 1000)
    return diffs
