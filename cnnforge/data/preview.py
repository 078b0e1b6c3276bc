"""``cnnforge augment preview``: originals next to the augmented images training will actually see.

The augmented images come from the training dataset itself, keyed by ``(epoch, index)``, so the
preview shows exactly what epochs 1, 2, 3 ... of a run with this recipe and seed will feed the model.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from cnnforge.atomic_write import save_file_atomic


def pick_samples(labels: np.ndarray, n: int) -> list[int]:
    """``n`` positions taking classes in turn (first image of each class, then the second ...), so every class shows."""
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    picks: list[int] = []
    for rank in range(max(len(p) for p in by_class)):
        for positions in by_class:
            if rank < len(positions) and len(picks) < n:
                picks.append(int(positions[rank]))
    return picks


def describe_spec(spec: Any) -> str:
    """``augment.train`` as one readable line: ``hflip, rotate(limit=20)`` or a pipeline name."""
    if spec is None:
        return "none (no augmentation)"
    if isinstance(spec, str):
        return spec
    return ", ".join(op.name + (f"({', '.join(f'{k}={v}' for k, v in op.params.items())})" if op.params else "")
                     for op in spec)


def _show(ax: Any, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def render_preview(train: Any, classes: list[str], *, title: str, out: Path, n: int = 16, versions: int = 3) -> Path:
    """Write a PNG of ``n`` training images, each followed by its augmentations in epochs 1..``versions``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = pick_samples(train.labels, n)
    group = 1 + versions
    blocks_per_row = max(1, min(len(picks), round(math.sqrt(len(picks) / group))))
    rows = math.ceil(len(picks) / blocks_per_row)
    # a narrow empty column between groups keeps them apart
    ratios = ([1.0] * group + [0.25]) * blocks_per_row
    width = max(6.0, 1.35 * group * blocks_per_row + 0.3)  # wide enough for the title and the legend line
    fig, axes = plt.subplots(rows, len(ratios) - 1, squeeze=False, gridspec_kw={"width_ratios": ratios[:-1]},
                             figsize=(width, 1.45 * rows + 1.4))
    for ax in axes.flat:
        ax.axis("off")
    for k, position in enumerate(picks):
        row, col = divmod(k, blocks_per_row)
        cells = axes[row, col * (group + 1): col * (group + 1) + group]
        original, label = train.base[int(train.indices[position])]
        cells[0].axis("on")
        _show(cells[0], original)
        cells[0].set_title(classes[label], fontsize=9, fontweight="bold")
        for spine in cells[0].spines.values():
            spine.set_edgecolor("tab:green")
            spine.set_linewidth(2)
        for epoch in range(versions):
            image, _ = train[(epoch, position)]
            cells[1 + epoch].axis("on")
            _show(cells[1 + epoch], image.permute(1, 2, 0).numpy())
            cells[1 + epoch].set_title(f"epoch {epoch + 1}", fontsize=8, color="0.3")
    fig.suptitle("\n".join(textwrap.wrap(title, int(width * 10))), fontsize=11)
    legend = (f"green frame: original image; to its right: the augmented versions training sees in epochs 1-{versions} "
              "(same seed, same images)")
    fig.text(0.5, 0.005, "\n".join(textwrap.wrap(legend, int(width * 15))), ha="center", va="bottom", fontsize=8,
             color="0.3")
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    # the format is given, so matplotlib writes exactly ``out`` (it appends ``.png`` to a name without a suffix)
    save_file_atomic(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def _mix_caption(target: Any, classes: list[str]) -> str:
    """The two largest shares of a soft target: ``0.63 cat + 0.37 dog`` (one class when it has it all)."""
    shares, labels = target.topk(2)
    parts = [f"{float(s):.2f} {classes[int(c)]}" for s, c in zip(shares, labels, strict=True) if float(s) >= 0.05]
    return "\n+ ".join(parts)


def render_mix_preview(train: Any, classes: list[str], mix: Any, *, batch_size: int, seed: int, title: str, out: Path,
                       n: int = 8, batches: int = 3) -> Path:
    """Write a PNG of the first ``n`` images of epoch 1's first ``batches`` batches as ``augment.batch`` mixes them.

    Each whole batch is mixed (a sample is paired with the one before it in its batch), in the order a
    one-process run's loader gives them, with that run's draws; the pixels are shown before
    normalisation, which mixing commutes with. Titles give each image's soft target.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from cnnforge.data.loading import EpochSampler

    order = EpochSampler(len(train), shuffle=True, seed=seed).permutation()  # epoch 0, as training's sampler
    rows = [order[b * batch_size:(b + 1) * batch_size] for b in range(batches) if b * batch_size < len(order)]
    cols = min(n, batch_size, len(order))
    fig, axes = plt.subplots(len(rows), cols, squeeze=False, figsize=(max(6.0, 1.5 * cols), 1.9 * len(rows) + 1.0))
    for b, positions in enumerate(rows):
        x = torch.stack([train[(0, int(p))][0] for p in positions]).float()
        mixed, target, _ = mix(x, torch.as_tensor(train.labels[positions]), (0, b, 0))
        name = mix.draw((0, b, 0))[0] or "not mixed"
        for i, ax in enumerate(axes[b]):
            ax.axis("off")
            if i < len(positions):
                ax.axis("on")
                _show(ax, mixed[i].permute(1, 2, 0).clamp(0, 255).numpy())
                ax.set_title(_mix_caption(target[i], classes), fontsize=7)
        axes[b, 0].set_ylabel(f"batch {b + 1}\n{name}", fontsize=9)
    fig.suptitle("\n".join(textwrap.wrap(title, int(max(6.0, 1.5 * cols) * 10))), fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
