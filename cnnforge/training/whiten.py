"""``train.whiten_init``: the first conv initialised as a patch-whitening filter bank (airbench, after Page 2018).

The covariance of every ``kh x kw`` patch of a bounded sample of normalised training images (the
first ``samples`` of the training split, as the model sees them) is eigendecomposed; each eigenvector
scaled by ``1 / sqrt(eigenvalue + eps)`` is a filter whose outputs over the patches have unit
variance and are uncorrelated with the others. The layer holds those filters and their negatives
(``2 x channels x kh x kw`` outputs, fastnet's stem on RGB), so the GELU after it passes both signs.
The weights are then frozen unless ``freeze: false``; the bias is zeroed and still learns.

The sample, the float64 arithmetic on the CPU and ``eigh`` make the result the same on every rank
and in a resumed run (whose checkpoint weights replace it anyway).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnforge.data.loading import DataInfo
from cnnforge.data.normalize import Normalize
from cnnforge.errors import ConfigError
from cnnforge.recipe.tricks import WhitenConfig


def first_layer(model: nn.Module) -> nn.Module | None:
    """The first module (in definition order) that holds parameters of its own."""
    return next((m for m in model.modules() if any(True for _ in m.parameters(recurse=False))), None)


def sample_images(train: Any, n: int, info: DataInfo) -> torch.Tensor:
    """The first ``n`` training images, normalised as the trainer normalises them, in float64 NCHW."""
    x = torch.stack([train[i][0] for i in range(min(n, len(train)))])
    return Normalize.from_info(info)(x).double()


def patch_whitening(images: torch.Tensor, kernel: tuple[int, int], eps: float) -> torch.Tensor:
    """Whitening filters for the ``kernel``-sized patches of ``images`` and their negatives, largest eigenvalue first:
    shape (2 * C * kh * kw, C, kh, kw)."""
    dim = images.shape[1] * kernel[0] * kernel[1]
    covariance, count = torch.zeros(dim, dim, dtype=torch.float64), 0
    for chunk in images.split(256):  # bounded memory: a chunk's patches, not the whole sample's
        patches = F.unfold(chunk, kernel).transpose(1, 2).reshape(-1, dim)
        covariance += patches.T @ patches
        count += len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance / max(1, count))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # rows are eigenvectors
    filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).reshape(dim, -1, *kernel)
    return torch.cat((filters, -filters))


def whiten_first_conv(model: nn.Module, train: Any, info: DataInfo, config: WhitenConfig) -> None:
    """Initialise ``model``'s first layer from ``train``; a layer that cannot hold the filters is a ConfigError."""
    layer = first_layer(model)
    if not isinstance(layer, nn.Conv2d) or layer.groups != 1 or \
            layer.out_channels != 2 * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]:
        need = "2 x input channels x kernel height x kernel width outputs (fastnet's stem: stem_width 24 for RGB, 8 " \
               "for grey images)"
        found = repr(layer) if isinstance(layer, nn.Conv2d) else type(layer).__name__  # one line, whatever the layer
        raise ConfigError(f"needs the model's first layer to be a Conv2d with {need}; it is {found}",
                          where="train.whiten_init")
    filters = patch_whitening(sample_images(train, config.samples, info), tuple(layer.kernel_size), config.eps)
    with torch.no_grad():
        layer.weight.copy_(filters.to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.zero_()
    if config.freeze:
        layer.weight.requires_grad_(False)
