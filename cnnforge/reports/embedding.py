"""Penultimate-layer embeddings of a run, projected to 2-D with t-SNE or PCA (seed 000).

A model that has ``embed(x)`` (the seed networks: seed 000's ``get_embedding``) is asked
directly; any other model gives the input of its last ``nn.Linear`` (the classifier), caught
with a forward pre-hook, so timm and torchvision models work without changes.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnforge.errors import CnnforgeError
from cnnforge.reports import plots

METHODS = ("tsne", "pca")


@contextlib.contextmanager
def penultimate(model: nn.Module) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """A function ``x -> (N, D) features`` for ``model``; the hook (if one is needed) is removed on exit."""
    embed = getattr(model, "embed", None)
    if callable(embed):
        yield lambda x: embed(x).flatten(1)
        return
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CnnforgeError(f"{type(model).__name__} has no embed() method and no final nn.Linear layer to hook",
                            where="model")
    seen: list[torch.Tensor] = []
    handle = linears[-1].register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0]))

    def features(x: torch.Tensor) -> torch.Tensor:
        seen.clear()
        model(x)
        return seen[-1].flatten(1)

    try:
        yield features
    finally:
        handle.remove()


def project(features: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, list[str]]:
    """(N, 2) coordinates and the two axis labels; t-SNE's perplexity shrinks for small samples."""
    n = len(features)
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        coords = pca.fit_transform(features)
        return coords, [f"PC {i + 1} ({share:.0%} of variance)" for i,
                        share in enumerate(pca.explained_variance_ratio_)]
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))  # seed 000 uses 30; it must stay below n
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    return coords, ["t-SNE 1", "t-SNE 2"]


def scatter(coords: np.ndarray, labels: np.ndarray, classes: list[str], axes: list[str], path: Path, *,
            title: str) -> Path:
    """Points coloured by true class, with a legend of class names beside the plot."""
    plt = plots.pyplot()
    k = len(classes)
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20" if k <= 20 else "turbo")
    fig, ax = plt.subplots(figsize=(9, 7))
    size = 14 if len(coords) <= 2000 else 6
    for c, name in enumerate(classes):
        mask = labels == c
        if mask.any():
            color = cmap(c) if k <= 20 else cmap(c / max(1, k - 1))
            ax.scatter(coords[mask, 0], coords[mask, 1], s=size, color=color, label=name, alpha=0.8, linewidths=0)
    ax.set(xlabel=axes[0], ylabel=axes[1], title=title)
    ax.grid(alpha=0.2)
    ax.legend(title="true class", loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=2,
              ncols=1 if k <= 25 else 2, fontsize=9 if k <= 25 else 7)
    return plots.save(fig, path)
