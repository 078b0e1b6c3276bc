"""``data.on_device`` vs the DataLoader path, on this machine's device (a CPU here), for the seed models.

Each seed model trains ``cnnforge.train`` on the same in-memory CIFAR-shaped data twice per round,
once with the training split held on the device (one gather per batch) and once through the
DataLoader (default ``num_workers``: per-sample items, collation, worker processes), interleaved.
Samples/s come from the best epoch of each; the final weights must be ``torch.equal`` (the batches
are the same).

    python -m benchmarks.on_device
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import parser, report, weights_equal, write_cifar

MODELS = ("feedforward", "lenet", "convnet", "vgg_baseline", "vgg_bn")


def recipe(root: Path, out: Path, model: str, on_device: bool, *, epochs: int) -> dict[str, Any]:
    return {"name": f"on-device-{model}", "seed": 0,
            "data": {"name": "cifar10", "root": str(root), "batch_size": 64, "val_fraction": 0.1,
                     "on_device": on_device},
            "model": {"name": model}, "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
            "train": {"epochs": epochs, "checkpoint_every": 0, "plots": False, "out_dir": str(out)},
            "tracking": {"backend": "none"}}


def _train(recipe_data: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Samples/s of the best epoch, and the final weights."""
    from safetensors.torch import load_file

    import cnnforge

    result = cnnforge.train(recipe_data, quiet=True)
    rate = max(row["train/samples_per_s"] for row in result.history)
    return rate, load_file(result.weights)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated seed models")
    args = p.parse_args(argv)

    epochs, repeats = (1, 1) if args.tiny else (2, args.repeats or 2)
    models = MODELS[1:3] if args.tiny else args.models.split(",")
    rows, result = [], {}
    with tempfile.TemporaryDirectory(prefix="cnnforge-on-device-") as tmp:
        root = write_cifar(Path(tmp) / "data", n_train=320 if args.tiny else 5000, n_test=20)
        for model in models:
            rates: dict[bool, list[float]] = {True: [], False: []}
            weights: dict[bool, Any] = {}
            for _ in range(repeats):
                for on in (True, False):
                    rate, weights[on] = _train(recipe(root, Path(tmp) / "runs", model, on, epochs=epochs))
                    rates[on].append(rate)
            on_rate, off_rate = max(rates[True]), max(rates[False])  # the best round
            equal = weights_equal(weights[True], weights[False])
            result[model] = {"on_device": on_rate, "dataloader": off_rate, "speedup": on_rate / off_rate,
                             "weights_equal": equal}
            rows.append({"model": model, "on_device samples/s": on_rate, "DataLoader samples/s": off_rate,
                         "speed-up": on_rate / off_rate, "weights equal": str(equal)})
    return report("on_device", rows, {"models": result, "epochs": epochs, "repeats": repeats}, tiny=args.tiny)


if __name__ == "__main__":
    main()
