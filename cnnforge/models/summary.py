"""What ``cnnforge show`` prints about a recipe's model: a layer table, parameters and FLOPs.

Everything is measured on one forward pass at the size the model will really see (the dataset's
images after the training pipeline), so flatten sizes, output shapes and FLOPs are the ones of
this recipe, not of the architecture's paper. FLOPs come from ``torch.utils.flop_counter``, which
counts convolutions and matrix products (2 FLOPs per multiply-add), per module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LayerRow:
    """One row of the layer table."""

    name: str
    kind: str
    output: str
    params: int
    flops: int


def _shape(output: Any) -> str:
    import torch

    if isinstance(output, torch.Tensor):
        return "x".join(str(d) for d in output.shape[1:]) or "scalar"
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return _shape(output[0]) + (f" (+{len(output) - 1})" if len(output) > 1 else "")
    return type(output).__name__


def layer_table(model: Any, input_shape: tuple[int, int, int], max_depth: int = 2) -> tuple[list[LayerRow], int]:
    """Rows for the modules at ``max_depth`` (or leaves above it) and the total forward FLOPs of one image.

    The model runs once in eval mode on zeros of ``input_shape`` (C, H, W); its train/eval mode is
    restored afterwards.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    picked = [(name, module) for name, module in model.named_modules()
              if name and (name.count(".") + 1 == max_depth or not any(True for _ in module.children()))
              and name.count(".") + 1 <= max_depth]
    outputs: dict[str, str] = {}
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, _shape(out)))
             for name, module in picked]
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, depth=None)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    rows = [LayerRow(name, type(module).__name__, outputs.get(name, "-"),
                     sum(p.numel() for p in module.parameters()),
                     int(sum(counts.get(f"{root}.{name}", {}).values())))
            for name, module in picked]
    return rows, int(counter.get_total_flops())


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or unit == "T":
            return f"{n:.0f}" if unit == "" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def describe_model(model: Any, input_shape: tuple[int, int, int], title: str = "model:") -> str:
    """The layer table, parameter counts and FLOPs of ``model`` for inputs of ``input_shape`` (C, H, W)."""
    rows, total = layer_table(model, input_shape)
    header = ("layer", "type", "output", "params", "FLOPs")
    cells = [(r.name, r.kind, r.output, f"{r.params:,}" if r.params else "-", _human(r.flops) if r.flops else "-")
             for r in rows]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(c[i].ljust(widths[i]) if i < 2 else c[i].rjust(widths[i]) for i in range(len(header))).rstrip()
             for c in [header, *cells]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shape = "x".join(str(d) for d in input_shape)
    return "\n".join([f"{title} ({type(model).__name__})  input {shape}", *lines,
                      f"parameters: {n:,} ({trainable:,} trainable)",
                      f"FLOPs per image (forward): {_human(total)} ({total:,})"])
