"""The LR finder's plot: loss against learning rate on a log axis, the suggestion marked."""
from __future__ import annotations

import math
from pathlib import Path

from cnnforge.reports.plots import pyplot, save


def lr_find_plot(lrs: list[float], losses: list[float], smoothed: list[float], suggestion: float | None,
                 path: Path) -> Path:
    """Raw and smoothed loss per step of the range test; a finder that saw no finite loss still gets a figure
    that says so, so the user sees what was tried."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(lrs, losses, color="lightgrey", linewidth=1, label="loss")
    ax.plot(lrs, smoothed, linewidth=2, label="smoothed loss")
    if suggestion is not None:
        ax.axvline(suggestion, color="tab:red", linestyle="--", linewidth=1, label=f"suggestion {suggestion:.3g}")
    finite = [v for v in smoothed if math.isfinite(v)]
    if finite:  # the smoothed curve sets the scale; a raw loss far above it is cut off
        ax.set_ylim(min(finite) * 0.95, max(finite) * 1.1)
    else:
        ax.text(0.5, 0.5, "no finite loss", transform=ax.transAxes, ha="center", va="center")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss",
           title=f"LR range test: {len(lrs)} steps" + (f", suggested lr {suggestion:.3g}" if suggestion else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)
