"""Annotated parameter types for model builders, shared by the built-ins and plugins. Light: no torch.

A builder's keyword arguments are its recipe params; annotating them with these types lets the
recipe check reject a bad value (``dropout: 1.5``, ``activation: rleu``) with a key path and a
suggestion before anything heavy runs. Plugins import them too::

    from cnnforge.models.params import Activation, Dropout
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

#: the activations every seed model accepts (seed 002 compares relu, leaky_relu, elu, selu)
Activation = Literal["relu", "leaky_relu", "elu", "selu", "gelu", "silu"]
#: a dropout probability
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
#: a layer width or channel count
Width = Annotated[int, Field(ge=1)]
#: an image size (height, width); builders also receive a plain int from the data
Size = tuple[int, int]
#: ``true`` for the library's pretrained weights, or the path of a weights file
Pretrained = bool | str
#: which parameters transfer learning keeps frozen
Freeze = Literal["backbone", "none"]
