"""cnnforge-example: a template plugin with one model, dataset, augmentation, loss and callback.

cnnforge imports this module through the ``cnnforge.plugins`` entry point (see pyproject.toml)
the first time a recipe or command looks a name up, so it must stay light: the decorated
functions are only *registered* here; torch and albumentations are imported inside them, when a
recipe actually uses them. Each function's annotated keyword arguments are its recipe params,
checked before training starts; its docstring's first line is what ``cnnforge list`` shows.
Raise ValueError for "this cannot work with these settings": cnnforge reports it as one line
naming the recipe key and this package.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

import cnnforge
from cnnforge.models.params import Activation, Dropout, Size, Width

__version__ = "0.1.0"

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


@cnnforge.register_model
def example_gap_net(*, num_classes: int, in_channels: int, image_size: Size | None = None, width: Width = 16,
                    depth: Annotated[int, Field(ge=1, le=6)] = 2, activation: Activation = "relu",
                    dropout: Dropout = 0.0) -> Any:
    """All-convolutional net with global average pooling (seed 003): any input size, few parameters."""
    from cnnforge_example.net import GapNet

    if image_size is not None:
        side = min(image_size) if isinstance(image_size, tuple) else image_size
        if side < 2**depth:
            raise ValueError(f"example_gap_net with depth {depth} halves the image {depth} times; "
                             f"{side}-pixel images need depth <= {max(side.bit_length() - 1, 0)}")
    return GapNet(num_classes, in_channels, width=width, depth=depth, activation=activation, dropout=dropout)


@cnnforge.register_dataset
def example_shapes(*, split: str, size: Annotated[int, Field(ge=8, le=256)] = 16,
                   samples: Annotated[int, Field(ge=3)] = 600) -> Any:
    """Circles, squares and triangles drawn on the fly: a dataset without files, for demos and tests."""
    from cnnforge_example.shapes import ShapesDataset

    if split == "val":
        return None  # cnnforge carves validation from train (data.val_fraction), stratified
    return ShapesDataset(samples if split == "train" else max(3, samples // 4), size=size,
                         seed={"train": 0, "test": 1}[split])


@cnnforge.register_augmentation
def example_jitter(*, shift: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1,
                   degrees: Annotated[float, Field(ge=0.0, le=180.0)] = 15.0, p: Probability = 0.5) -> Any:
    """Shift by up to ``shift`` of the size and rotate by up to ``degrees``: shapes keep their class."""
    import albumentations as A  # cnnforge sets NO_ALBUMENTATIONS_UPDATE before calling augmentations

    return A.Affine(translate_percent=(-shift, shift), rotate=(-degrees, degrees), fill=0, p=p)


@cnnforge.register_loss
def example_poly1(*, weight: Any = None, label_smoothing: float = 0.0,
                  epsilon: Annotated[float, Field(ge=-1.0)] = 1.0) -> Any:
    """Poly-1 loss (Leng et al. 2022): cross-entropy plus epsilon * (1 - p_target)."""
    import functools

    from cnnforge_example.training import poly1_loss

    return functools.partial(poly1_loss, epsilon=epsilon, weight=weight, label_smoothing=label_smoothing)


@cnnforge.register_callback
def example_stop_at_accuracy(*, target: Probability = 0.99) -> Any:
    """Stop training once val/acc reaches target; logs example/gap, how far it still is."""
    from cnnforge_example.training import StopAtAccuracy

    return StopAtAccuracy(target)
