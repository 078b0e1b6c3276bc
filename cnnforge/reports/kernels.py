"""Convolution kernels as pictures: a run's learned filters (seed 002) and fixed kernels on an image (seed 000).

Seed 002's ``plot_filters`` shows first-layer filters as colour images (one per filter) or
channel by channel in grey; seed 000 convolves a photo with Sobel kernels to find edges. Both are
here as PNG writers behind ``cnnforge viz filters`` and ``cnnforge viz kernel``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnforge.errors import CnnforgeError, ConfigError, did_you_mean
from cnnforge.reports import plots

#: named kernels; ``sobel`` is the gradient magnitude of both Sobel kernels (seed 000's combined edges)
KERNELS: dict[str, list[list[float]]] = {
    "sobel_x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],  # d/dx: vertical edges (seed 000's sobel_ver)
    "sobel_y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],  # d/dy: horizontal edges (seed 000's sobel_hor)
    "laplace": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "blur": [[1 / 9] * 3] * 3,
}
NAMES = (*KERNELS, "sobel")
MAX_KERNEL = 31
MAX_FILTERS, MAX_CHANNELS = 64, 16  # what one readable grid holds


# --------------------------------------------------------------------------------------------- learned filters
def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` of ``model`` with its name, in registration (= usually forward) order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def resolve_layer(model: nn.Module, layer: int) -> int:
    """The 0-based index of conv layer ``layer`` (negative counts from the last), or a one-line error."""
    convs = conv_layers(model)
    if not convs:
        raise CnnforgeError(f"{type(model).__name__} has no Conv2d layer", where="model")
    if not -len(convs) <= layer < len(convs):
        raise ConfigError(f"is {layer} but the model has {len(convs)} conv layer(s) (0..{len(convs) - 1})",
                          where="--layer")
    return layer % len(convs)


def filter_grid(model: nn.Module, path: Path, *, layer: int = 0, per_channel: bool = False, title: str = "") -> Path:
    """Kernels of conv layer ``layer`` (0 = first) as an image grid.

    A layer reading 3 channels shows each filter as one RGB image (min-max scaled per filter),
    unless ``per_channel``; otherwise every input channel is a grey tile on one shared scale,
    with a colour bar of the weight values.
    """
    convs = conv_layers(model)
    layer = resolve_layer(model, layer)
    name, conv = convs[layer]
    w = conv.weight.detach().float().cpu().numpy()[:MAX_FILTERS]
    shown = f"{len(w)} of {conv.out_channels}" if len(w) < conv.out_channels else f"{len(w)}"
    heading = (f"{title}conv layer {layer + 1} of {len(convs)} ({name}): {shown} filters of "
               f"{w.shape[1]}x{w.shape[2]}x{w.shape[3]}")
    if w.shape[1] == 3 and not per_channel:
        return _rgb_grid(w, path, heading)
    return _grey_grid(w[:, :MAX_CHANNELS], path, heading)


def _grid_shape(n: int) -> tuple[int, int]:
    cols = min(n, max(1, math.ceil(math.sqrt(n * 1.5))))
    return math.ceil(n / cols), cols


def _rgb_grid(w: np.ndarray, path: Path, heading: str) -> Path:
    plt = plots.pyplot()
    rows, cols = _grid_shape(len(w))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 0.4, 1.45 * rows + 0.8), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for i, (ax, f) in enumerate(zip(axes.ravel(), w, strict=False)):
        f = np.transpose(f, (1, 2, 0))
        span = f.max() - f.min()
        ax.imshow((f - f.min()) / span if span > 0 else np.zeros_like(f), interpolation="nearest")
        ax.set_title(f"#{i}", fontsize=8)
    fig.suptitle(f"{heading}\nRGB view, each filter scaled to its own min..max", fontsize=10)
    return plots.save(fig, path)


def _grey_grid(w: np.ndarray, path: Path, heading: str) -> Path:
    plt = plots.pyplot()
    n_filters, n_channels = w.shape[:2]
    limit = float(np.abs(w).max()) or 1.0
    # each filter is a block of its channels side by side; blocks wrap into a near-square figure
    per_row = max(1, min(n_filters, round(math.sqrt(1.5 * n_filters / n_channels))))
    rows, cols = math.ceil(n_filters / per_row), per_row * n_channels
    names = ["R", "G", "B"] if n_channels == 3 else [f"ch {j}" for j in range(n_channels)]
    tile = 1.1 if cols <= 10 else 0.8
    fig, axes = plt.subplots(rows, cols, figsize=(tile * cols + 1.2, tile * rows + 1.1), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    image = None
    for i in range(n_filters):
        for j in range(n_channels):
            ax = axes[i // per_row, (i % per_row) * n_channels + j]
            image = ax.imshow(w[i, j], cmap="gray", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_title(f"#{i}" if n_channels == 1 else f"#{i} {names[j]}", fontsize=7 if cols > 10 else 8)
    what = "" if n_channels == 1 else "each filter: its input channels side by side; "
    fig.suptitle(f"{heading}\n{what}grey: weight value, one scale for all tiles", fontsize=10)
    fig.colorbar(image, ax=axes, shrink=min(0.8, 4.0 / rows + 0.3), label="weight")
    return plots.save(fig, path)


# --------------------------------------------------------------------------------------------- fixed kernels
def parse_kernel(text: str) -> tuple[str, np.ndarray | None]:
    """``(name, matrix)`` for a kernel name or a YAML/JSON list of rows; ``sobel`` has no single matrix."""
    import yaml

    from cnnforge.recipe.bounds import load_yaml

    if text in KERNELS:
        return text, np.asarray(KERNELS[text], dtype=np.float32)
    if text == "sobel":
        return text, None
    hint = did_you_mean(text, NAMES) or f"use one of {', '.join(NAMES)} or rows like [[0,1,0],[1,-4,1],[0,1,0]]"
    try:
        rows = load_yaml(text)  # bounded: a command-line kernel cannot be an alias bomb
        matrix = np.asarray(rows, dtype=np.float32)
    except (yaml.YAMLError, TypeError, ValueError):
        raise ConfigError(f"{text!r} is not a kernel name or a list of rows of numbers", where="--kernel",
                          hint=hint) from None
    if not isinstance(rows, list) or matrix.ndim != 2 or matrix.size == 0:
        raise ConfigError(f"{text!r} is not a kernel name or a list of rows of numbers", where="--kernel", hint=hint)
    if max(matrix.shape) > MAX_KERNEL or not np.isfinite(matrix).all():
        raise ConfigError(f"a kernel must be finite and at most {MAX_KERNEL}x{MAX_KERNEL}, got {matrix.shape}",
                          where="--kernel")
    return "custom", matrix


def convolve(image: np.ndarray, kernel: np.ndarray | None) -> np.ndarray:
    """Grey float image (H, W) convolved as ``torch.nn.functional.conv2d`` does (seed 000), same size out."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]

    def conv(k: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, torch.from_numpy(k)[None, None], padding="same")[0, 0]

    if kernel is None:
        gx = conv(np.asarray(KERNELS["sobel_x"], dtype=np.float32))
        gy = conv(np.asarray(KERNELS["sobel_y"], dtype=np.float32))
        return torch.sqrt(gx**2 + gy**2).numpy()
    return conv(kernel).numpy()


def kernel_demo(image_path: str | os.PathLike[str], kernel_text: str, out: Path) -> Path:
    """Input image, kernel and response side by side, as one PNG (seed 000's Sobel demo)."""
    from cnnforge.data.decode import read_image

    image = read_image(image_path, 1)[..., 0].astype(np.float32) / 255.0
    name, kernel = parse_kernel(kernel_text)
    response = convolve(image, kernel)
    signed = kernel is not None and kernel.min() < 0
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1, 0.6, 1.15]})
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"input (grey), {image.shape[1]}x{image.shape[0]}")
    _show_kernel(axes[1], kernel, name)
    shown = np.abs(response) if signed else response
    im = axes[2].imshow(shown, cmap="gray")
    what = "|response|" if signed else "gradient magnitude" if kernel is None else "response"
    axes[2].set_title(f"{what} ({name})")
    fig.colorbar(im, ax=axes[2], shrink=0.85)
    for ax in (axes[0], axes[2]):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{Path(image_path).name} convolved with {name}", fontsize=12)
    fig.tight_layout()
    return plots.save(fig, out)


def _show_kernel(ax: Any, kernel: np.ndarray | None, name: str) -> None:
    if kernel is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "sqrt(sobel_x² + sobel_y²)\n\nsobel_x = [[-1,0,1],[-2,0,2],[-1,0,1]]\n"
                "sobel_y = [[-1,-2,-1],[0,0,0],[1,2,1]]", ha="center", va="center", fontsize=9, wrap=True)
        ax.set_title("kernel: sobel")
        return
    limit = float(np.abs(kernel).max()) or 1.0
    ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
    if kernel.size <= 49:
        for (i, j), v in np.ndenumerate(kernel):
            ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=10 if kernel.shape[0] <= 3 else 7,
                    color="white" if abs(v) > 0.6 * limit else "black")  # legible on the dark ends of the map
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"kernel: {name} ({kernel.shape[0]}x{kernel.shape[1]})")
