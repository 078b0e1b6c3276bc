"""What ``cnnforge show`` prints about a recipe's model at the dataset's input size."""
from __future__ import annotations

from typing import Any

from cnnforge.recipe import Recipe


def recipe_model(recipe: Recipe) -> tuple[Any, Any]:
    """(model, DataInfo) for ``recipe``: the dataset is opened for its shape, classes and channels."""
    from cnnforge.data.loading import build_splits
    from cnnforge.training.setup import model_for

    info = build_splits(recipe).info
    return model_for(recipe, info), info


def describe_recipe_model(recipe: Recipe) -> str:
    model, info = recipe_model(recipe)
    n = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shape = f"{info.channels}x{info.image_size[0]}x{info.image_size[1]}"
    return f"model: {recipe.model.name}  input {shape}  classes {len(info.classes)}\nparameters: {n:,} ({trainable:,} trainable)"
