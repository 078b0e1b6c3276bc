"""Speed knobs per seed model: training steps/s with each of cnnforge's switches against plain fp32.

For every seed model at its seed's input size, a training step (forward, loss, backward, SGD step)
on a fixed random batch is timed with:

* ``fp32``: the reference (contiguous NCHW, no autocast, PyTorch's default backend flags);
* ``channels_last``: ``train.channels_last: true`` (NHWC weights and inputs);
* ``bf16``: ``train.precision: bf16`` (autocast to bfloat16);
* ``compile``: ``train.compile: true`` (``nn.Module.compile()``, inductor; compile time reported apart);
* ``no_mkldnn``: ``torch.backends.mkldnn.enabled = False``, to show what the default flag is worth;
* on CUDA also ``cudnn_benchmark`` and ``tf32`` (``torch.backends`` flags cnnforge could turn on).

Each variant goes through ``cnnforge.training.assemble.speed_up``, the code the trainer runs, and
autocasts as Accelerate does for ``train.precision``. Variants are interleaved and the best round counts;
with one CPU thread (the default) rounds are timed in process CPU time, steadier on a shared machine.

    python -m benchmarks.speed_knobs                      # all seed models, eager variants
    python -m benchmarks.speed_knobs --compile            # add torch.compile (minutes on a CPU)
"""
from __future__ import annotations

import contextlib
import time
from typing import Any

from benchmarks.common import best, interleaved, parser, report

#: seed model -> (channels, height, width) of its seed's data
SEED_MODELS = {
    "fcnet": (1, 28, 28), "convnet": (1, 28, 28), "feedforward": (3, 32, 32), "lenet": (3, 32, 32),
    "vgg_baseline": (3, 32, 32), "vgg_bn": (3, 32, 32), "my_first_convnet": (1, 28, 28),
}


@contextlib.contextmanager
def backend_flags(variant: str) -> Any:
    """The ``torch.backends`` state of ``variant``, restored afterwards."""
    import torch

    saved = (torch.backends.mkldnn.enabled, torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.backends.mkldnn.enabled = variant != "no_mkldnn"
    torch.backends.cudnn.benchmark = variant == "cudnn_benchmark"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = variant == "tf32"
    try:
        yield
    finally:
        (torch.backends.mkldnn.enabled, torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved


def make_step(model_name: str, shape: tuple[int, int, int], variant: str, batch_size: int, device: Any) -> Any:
    """A closure running ``steps`` training steps of ``model_name`` with ``variant`` switched on."""
    import torch
    from torch import nn

    import cnnforge
    from cnnforge.training.assemble import speed_up, use_channels_last

    recipe = cnnforge.load_recipe({"name": "knobs", "train": {  # every variant is one switch away from fp32
        "channels_last": variant == "channels_last", "compile": variant == "compile",
        "precision": {"bf16": "bf16", "fp16": "fp16"}.get(variant, "no")}})
    torch.manual_seed(0)
    model = cnnforge.build_model(model_name, num_classes=10, in_channels=shape[0], image_size=shape[1:]).to(device)
    model = speed_up(model, recipe, device)
    memory_format = torch.channels_last if use_channels_last(recipe, model, device) else torch.contiguous_format
    x = torch.randn(batch_size, *shape, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.train.precision)  # what Accelerate autocasts to

    def run(steps: int) -> None:
        with backend_flags(variant):
            for _ in range(steps):
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()

    return run


def measure(names: list[str], variants: list[str], *, batch_size: int, steps: int, repeats: int, device: Any,
            clock: Any = time.perf_counter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Samples/s of every model in ``names`` under every variant (interleaved, best round): table rows and results."""
    rows, result = [], {}
    for name in names:
        runs, compile_s = {}, None
        for variant in variants:
            start = time.perf_counter()
            runs[variant] = make_step(name, SEED_MODELS[name], variant, batch_size, device)
            runs[variant](2)  # warm-up: allocator, oneDNN primitives, and the compilation itself
            if variant == "compile":
                compile_s = time.perf_counter() - start
        times = interleaved({v: (lambda r=r: r(steps)) for v, r in runs.items()}, repeats, clock=clock)
        rate = {v: batch_size * steps / best(t) for v, t in times.items()}
        result[name] = {"samples_per_s": rate, "speedup": {v: r / rate["fp32"] for v, r in rate.items()},
                        "compile_s": compile_s}
        rows += [{"model": name, "variant": v, "samples/s": r, "x fp32": r / rate["fp32"]} for v, r in rate.items()]
    return rows, result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=None, help=f"subset of {', '.join(SEED_MODELS)}")
    p.add_argument("--compile", action="store_true", help="also time train.compile (slow to compile on a CPU)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    names = args.models or (["convnet"] if args.tiny else list(SEED_MODELS))
    variants = ["fp32", "channels_last", "bf16", "no_mkldnn"]
    if device.type == "cuda":
        variants = ["fp32", "channels_last", "bf16", "fp16", "cudnn_benchmark", "tf32"]
    if args.compile:
        variants.append("compile")
    batch_size, steps = (8, 2) if args.tiny else (128, 5)
    repeats = args.repeats or (1 if args.tiny else 5)
    # one CPU thread: count the process's CPU time, not the wall time the neighbours on a shared machine stretch
    clock = time.process_time if device.type == "cpu" and args.threads == 1 else time.perf_counter
    rows, result = measure(names, variants, batch_size=batch_size, steps=steps, repeats=repeats, device=device,
                           clock=clock)
    return report("speed_knobs", rows, {"device": str(device), "batch_size": batch_size, "steps": steps,
                                        "threads": args.threads, "clock": clock.__name__, "models": result},
                  tiny=args.tiny)


if __name__ == "__main__":
    main()
