"""What ``cnnforge show`` prints about a recipe's model: a layer table, parameters and FLOPs.

Everything is measured on one forward pass at the size the model will really see (the dataset's
images after the training pipeline), so flatten sizes, output shapes and FLOPs are the ones of
this recipe, not of the architecture's paper. FLOPs come from ``torch.utils.flop_counter``, which
counts convolutions and matrix products (2 FLOPs per multiply-add), per module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnforge.errors import DataError
from cnnforge.recipe import Recipe


@dataclass(frozen=True)
class LayerRow:
    """One row of the layer table."""

    name: str
    kind: str
    output: str
    params: int
    flops: int


def declared_info(recipe: Recipe) -> tuple[Any, str] | None:
    """DataInfo from the dataset's registration (no files read) and a line saying what it is based on;
    None when the registration does not declare the image shape.

    The image passes through the recipe's training pipeline, so crops and resizes count; a class count the
    registration does not know comes from ``model.num_classes``, or is shown as 2.
    """
    import numpy as np

    from cnnforge.data.loading import DataInfo
    from cnnforge.data.pipeline import resolve_pipelines
    from cnnforge.registry import datasets, declared

    entry = datasets.get(recipe.data.name)
    shape = declared(entry, "shape", recipe.data.params)
    if shape is None:
        return None
    num_classes = declared(entry, "num_classes", recipe.data.params) or recipe.model.params.get("num_classes")
    note = f"{num_classes} classes" if num_classes else "2 classes (unknown without the files; set model.num_classes)"
    pipes = resolve_pipelines(recipe.augment, recipe.source, np.zeros(shape, dtype=np.uint8))
    height, width, channels = pipes.shape
    info = DataInfo([str(i) for i in range(num_classes or 2)], (0.5,) * channels, (0.25,) * channels, channels,
                    (height, width))
    size = "x".join(map(str, shape))
    return info, f"shown for what the {recipe.data.name} registration declares: {size} images, {note}"


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


def describe_recipe_model(recipe: Recipe) -> str:
    """``describe_model`` for the recipe's model at the dataset's input size, with its class count.

    Without the data files the size and classes come from the dataset's registration, and without
    pretrained weights the model is built without them (neither changes the layer table); both are said.
    """
    from cnnforge.data.loading import build_splits
    from cnnforge.training.parts import model_for

    notes = []
    try:
        info = build_splits(recipe).info
        classes = f"{len(info.classes)} ({', '.join(info.classes[:10])}{', ...' if len(info.classes) > 10 else ''})"
    except DataError as exc:
        declared = declared_info(recipe)
        if declared is None:
            raise
        info, based_on = declared
        notes.append(f"note: the data could not be read ({exc.one_line()}); {based_on}")
        classes = str(len(info.classes))
    if recipe.model.params.get("pretrained"):
        recipe = recipe.model_copy(deep=True)
        recipe.model.pretrained = False
        notes.append("note: built without the pretrained weights (they do not change this table)")
    model = model_for(recipe, info)
    text = describe_model(model, (info.channels, *info.image_size), title=f"model: {recipe.model.name}")
    return "\n".join([text, f"classes: {classes}", *notes])
