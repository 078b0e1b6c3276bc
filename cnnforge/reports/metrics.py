"""Classification metrics of one evaluated split: ``metrics.json``, ``summary.md`` and ``predictions.csv``.

The numbers are scikit-learn's (``classification_report``, ``confusion_matrix``), as in seed 004;
this module only fixes their shape on disk so that people and scripts read the same files.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from cnnforge.atomic_write import atomic_write_text

METRICS = "metrics.json"
SUMMARY = "summary.md"
PREDICTIONS = "predictions.csv"


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class precision/recall/F1/support, macro and weighted
    averages, confusion matrix.

    Every class is listed, also those absent from the split (support 0, scores 0), so reports of
    different splits and runs line up row by row; the ``macro`` row averages over all of them.
    ``balanced_accuracy`` and ``macro_f1`` are the run's ``test/balanced_acc`` and ``test/macro_f1``:
    over the classes the split holds (or, for F1, predicts), as scikit-learn's defaults count them
    (``balanced_accuracy_score`` is the macro recall over the classes in ``y_true``; asked as that, it does
    not warn about a class that is only predicted).
    """
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, recall_score

    labels = list(range(len(classes)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=classes, output_dict=True,
                                    zero_division=0)

    def scores(row: dict[str, float]) -> dict[str, float]:
        return {"precision": float(row["precision"]), "recall": float(row["recall"]), "f1": float(row["f1-score"]),
                "support": int(row["support"])}

    return {
        "samples": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "balanced_accuracy": float(recall_score(y_true, y_pred, labels=np.unique(y_true), average="macro",
                                                zero_division=0)) if len(y_true) else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)) if len(y_true) else float("nan"),
        "macro": scores(report["macro avg"]),
        "weighted": scores(report["weighted avg"]),
        "per_class": {name: scores(report[name]) for name in classes},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def top_confusions(matrix: list[list[int]], classes: list[str], n: int = 5) -> list[tuple[str, str, int]]:
    """The ``n`` most frequent (true, predicted, count) mistakes, largest first."""
    m = np.asarray(matrix)
    np.fill_diagonal(m, 0)
    order = np.argsort(m, axis=None)[::-1][:n]
    pairs = [(classes[i], classes[j], int(m[i, j])) for i, j in zip(*np.unravel_index(order, m.shape), strict=False)]
    return [p for p in pairs if p[2] > 0]


def summary_markdown(metrics: dict[str, Any], images: list[str]) -> str:
    """A page a person reads first: headline numbers, the per-class table, the worst confusions, the plots."""
    lines = [f"# {metrics['run']}: {metrics['split']} split", "",
             f"Weights: `{metrics['weights']}` ({metrics['checkpoint']}). Samples: {metrics['samples']}.", "",
             f"**Accuracy {metrics['accuracy']:.4f}**, balanced accuracy {metrics['balanced_accuracy']:.4f}, "
             f"loss {metrics['loss']:.4f}, macro F1 {metrics['macro_f1']:.4f}, "
             f"weighted F1 {metrics['weighted']['f1']:.4f}.", "",
             "| class | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    rows = [*metrics["per_class"].items(), ("**macro avg**", metrics["macro"]), ("**weighted avg**",
                                                                                 metrics["weighted"])]
    lines += [f"| {name} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |" for name,
              r in rows]
    confusions = top_confusions(metrics["confusion_matrix"], list(metrics["per_class"]))
    lines += ["", "## Most frequent mistakes", ""]
    lines += [f"- true **{t}** predicted as **{p}**: {c}" for t, p, c in confusions] or ["- none"]
    lines += ["", "## Plots", ""] + [f"![{Path(name).stem}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def predictions_csv(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, classes: list[str]) -> str:
    """One row per sample, in dataset order: index, true and predicted class, the predicted class's probability."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "true", "predicted", "confidence", "correct"])
    confidence = probs[np.arange(len(y_pred)), y_pred] if len(y_pred) else np.zeros(0)
    for i, (t, p, c) in enumerate(zip(y_true, y_pred, confidence, strict=False)):
        writer.writerow([i, classes[t], classes[p], f"{c:.6f}", int(t == p)])
    return out.getvalue()


def write_metrics(out: Path, metrics: dict[str, Any], images: list[str], predictions: str) -> None:
    """``metrics.json``, ``summary.md`` and ``predictions.csv`` in ``out``, each written atomically."""
    import json

    atomic_write_text(out / METRICS, json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(out / SUMMARY, summary_markdown(metrics, images))
    atomic_write_text(out / PREDICTIONS, predictions)
