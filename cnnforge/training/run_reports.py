"""The report of one evaluated split, written at the end of every run and by ``cnnforge eval``.

``reports/`` holds ``metrics.json`` (accuracy, per-class precision/recall/F1, macro and weighted
averages, confusion matrix), ``summary.md`` (the same as a page), ``predictions.csv`` (one row per
sample) and the PNGs: ``curves.png``, ``confusion_matrix.png``, ``confusion_matrix_normalized.png``
and ``errors.png`` (the most confident mistakes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnforge import rundir
from cnnforge.reports import plots
from cnnforge.reports.metrics import classification_metrics, predictions_csv, write_metrics

#: how many misclassified images the gallery shows (the most confident mistakes first)
GALLERY_SIZE = 24


def write_run_reports(run_dir: Path, result: Any, info: Any, history: list[dict[str, Any]], split: str = "test", *,
                      checkpoint: str = "best", images: Any = None, out: Path | None = None,
                      plots: bool = True) -> Path:
    """Write the report of ``result`` (an ``EvalResult`` of ``split``) into ``out`` (default ``run_dir/reports``).

    ``images`` is the evaluated dataset (items ``(uint8 CHW tensor, label)`` in the order of
    ``result``); without it the error gallery is skipped. ``checkpoint`` names the weights used.
    ``plots=False`` leaves out the PNGs, which cost more than a short sweep trial's training.
    """
    out = out or run_dir / rundir.REPORTS
    out.mkdir(parents=True, exist_ok=True)
    if images is not None and len(images):
        rundir.save_data_info(run_dir, info, images)
    classes = list(info.classes)
    y_true, y_pred = np.asarray(result.y_true), np.asarray(result.y_pred)
    weights = rundir.weights_file(run_dir, checkpoint)
    metrics = {"run": f"{run_dir.parent.name}/{run_dir.name}", "split": split, "checkpoint": checkpoint,
               "weights": str(weights.relative_to(run_dir)), "loss": float(result.loss),
               **classification_metrics(y_true, y_pred, classes), "classes": classes}
    names = _plots(out, metrics, history, run_dir, images, result, split, checkpoint) if plots else []
    write_metrics(out, metrics, names, predictions_csv(y_true, y_pred, np.asarray(result.probs), classes))
    return out


def _plots(out: Path, metrics: dict[str, Any], history: list[dict[str, Any]], run_dir: Path, images: Any, result: Any,
           split: str, checkpoint: str) -> list[str]:
    """Curves, both confusion matrices and (with ``images``) the error gallery; the names of the PNGs written."""
    classes = metrics["classes"]
    y_true, y_pred = np.asarray(result.y_true), np.asarray(result.y_pred)
    summary = rundir.read_json(run_dir / rundir.SUMMARY) if (run_dir / rundir.SUMMARY).exists() else {}
    pngs = [plots.curves(history, out / "curves.png", best_epoch=summary.get("best/epoch"))]
    title = f"{split} split, {checkpoint} weights"
    pngs.append(plots.confusion(metrics["confusion_matrix"], classes, out / "confusion_matrix.png", normalize=False,
                                title=f"confusion matrix: counts ({title}, accuracy {metrics['accuracy']:.3f})"))
    pngs.append(plots.confusion(metrics["confusion_matrix"], classes, out / "confusion_matrix_normalized.png",
                                normalize=True, title=f"confusion matrix: share of each true class ({title})"))
    if images is not None:
        pngs.append(_gallery(images, y_true, y_pred, np.asarray(result.probs), classes, out / "errors.png",
                             title=f"most confident mistakes ({title}): "
                                    f"{int((y_true != y_pred).sum())} of {len(y_true)}"))
    return [p.name for p in pngs if p is not None]


def _gallery(dataset: Any, y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, classes: list[str], path: Path,
             *, title: str) -> Path:
    wrong = np.flatnonzero(y_true != y_pred)
    confidence = probs[wrong, y_pred[wrong]]
    picks = wrong[np.argsort(-confidence, kind="stable")][:GALLERY_SIZE]
    images = [np.asarray(dataset[int(i)][0]) for i in picks]
    return plots.error_gallery(images, [classes[y_true[i]] for i in picks], [classes[y_pred[i]] for i in picks],
                               [float(probs[i, y_pred[i]]) for i in picks], path, title=title)
