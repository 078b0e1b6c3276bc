"""The PNGs of a run report: training curves, confusion matrices and the gallery of mistakes.

Every figure is sized from its content (number of classes, of images) so that labels stay
readable from 2 to ~100 classes; matplotlib runs on the Agg backend (no display needed).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, whatever backend the environment asks for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG and free it (figures are never shown); a failed write leaves no empty PNG."""
    from cnnforge.atomic_write import save_file_atomic

    try:
        save_file_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    finally:
        pyplot().close(fig)
    return path


def show_image(ax: Any, image: np.ndarray) -> None:
    """A uint8 CHW or HWC image, grey for one channel, without ticks; tiny images stay pixel-sharp."""
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.transpose(image, (1, 2, 0))
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def curves(history: list[dict[str, Any]], path: Path, *, best_epoch: int | None = None) -> Path | None:
    """Train/val loss and accuracy per epoch (seed 004's learning curves); None without history."""
    if not history:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = [row["epoch"] for row in history]
    for ax, (metric, label) in zip(axes, (("loss", "cross-entropy loss"), ("acc", "accuracy")), strict=False):
        for split in ("train", "val"):
            values = [row.get(f"{split}/{metric}", math.nan) for row in history]
            ax.plot(epochs, values, marker="o", markersize=3, label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set(xlabel="epoch", ylabel=label, title=f"{label} per epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, path)


def confusion(matrix: Sequence[Sequence[int]], classes: list[str], path: Path, *, normalize: bool, title: str) -> Path:
    """Confusion matrix with class names on both axes; ``normalize`` divides each true-class row by its size."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(classes)
    side = min(30.0, max(5.5, 0.55 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    annotate = n <= 25
    disp = ConfusionMatrixDisplay(m if normalize else m.astype(np.int64), display_labels=classes)
    disp.plot(ax=ax, cmap="Blues", colorbar=True, include_values=annotate, values_format=".2f" if normalize else "d",
              xticks_rotation=45 if max(map(len, classes), default=1) > 2 else 0)
    if annotate:
        for text in disp.text_.ravel():
            text.set_fontsize(8 if n > 12 else 10)
    font = max(5, min(10, 220 // max(n, 1)))
    ax.tick_params(labelsize=font)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return save(fig, path)


def error_gallery(images: Sequence[np.ndarray], true: Sequence[str], predicted: Sequence[str],
                  confidence: Sequence[float], path: Path, *, title: str) -> Path:
    """Misclassified images with true class, predicted class and the model's confidence (seed 004)."""
    plt = pyplot()
    n = len(images)
    if n == 0:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center", fontsize=12)
        ax.set_title(title)
        return save(fig, path)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.45 * rows + 0.5), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, image, t, p, c in zip(axes.ravel(), images, true, predicted, confidence, strict=False):
        show_image(ax, image)
        ax.set_title(f"true: {_short(t)}\npred: {_short(p)} ({c:.0%})", fontsize=9, color="firebrick")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return save(fig, path)


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
