"""``cnnforge show RECIPE``: the resolved recipe and the model summary, without training."""
from __future__ import annotations

import argparse
import sys
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("show", parents=[common], help="print the resolved recipe and the model summary")
    s.add_argument("recipe", help="recipe YAML file or packaged recipe name")
    s.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE")
    s.add_argument("--no-model", action="store_true", help="skip building the model (no torch, no data)")
    s.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from cnnforge.recipe import open_recipe

    recipe = open_recipe(args.recipe, args.overrides)
    sys.stdout.write(recipe.to_yaml())
    if not args.no_model:
        print()
        print(describe_recipe_model(recipe))
    return 0


def describe_recipe_model(recipe: Any) -> str:
    """``describe_model`` for the recipe's model at the dataset's input size, with its class count.

    Without the data files the size and classes come from the dataset's registration, and without
    pretrained weights the model is built without them (neither changes the layer table); both are said.
    """
    from cnnforge.data.loading import build_splits
    from cnnforge.errors import DataError
    from cnnforge.models.summary import describe_model
    from cnnforge.training.assemble import model_for

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


def declared_info(recipe: Any) -> tuple[Any, str] | None:
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
