"""Files written into ``reports/`` at the end of every run: curves and the confusion matrix."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def write_run_reports(run_dir: Path, result: Any, info: Any, history: list[dict[str, Any]], split: str = "test") -> Path:
    """Loss/accuracy curves and the confusion matrix of ``split`` as PNGs under ``run_dir/reports``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    out = run_dir / "reports"
    out.mkdir(exist_ok=True)
    if history:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        epochs = [r["epoch"] for r in history]
        for ax, metric in zip(axes, ("loss", "acc")):
            for split_name in ("train", "val"):
                ax.plot(epochs, [r.get(f"{split_name}/{metric}") for r in history], marker="o", label=split_name)
            ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch")
            ax.legend()
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay.from_predictions(result.y_true, result.y_pred, labels=list(range(len(info.classes))),
                                            display_labels=info.classes, ax=ax, xticks_rotation=45, colorbar=False)
    ax.set_title(f"confusion matrix ({split}, accuracy {result.acc:.3f})")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=120)
    plt.close(fig)
    return out
