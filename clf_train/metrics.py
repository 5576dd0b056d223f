"""Classification metrics of one split, as written to ``metrics.json``.

Pure Python on integer label ids: no sklearn. Precision/recall/F1 of a class with no
predicted (or no true) examples are 0.0, as sklearn's ``zero_division=0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["classification_metrics", "confusion_matrix", "metrics_from_confusion"]


def classification_metrics(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    labels: Sequence[str],
    *,
    loss: float | None,
) -> dict[str, Any]:
    """Metrics of one split.

    Returns ``{"n", "accuracy" (fraction), "loss" (mean cross-entropy), "per_class"
    {label: {precision, recall, f1, support}}, "macro_f1", "confusion_matrix" {"labels",
    "matrix"}}``; matrix rows are true labels, columns predicted labels, in ``labels`` order.
    ``accuracy`` and ``macro_f1`` are None for an empty split.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, len(labels)), labels, loss=loss)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], k: int) -> list[list[int]]:
    """``k x k`` counts: rows true label ids, columns predicted label ids."""
    matrix = [[0] * k for _ in range(k)]
    for t, p in zip(y_true, y_pred, strict=True):
        matrix[t][p] += 1
    return matrix


def metrics_from_confusion(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], *, loss: float | None
) -> dict[str, Any]:
    """:func:`classification_metrics` from the confusion counts alone.

    Counts add up across shards, so a multi-process evaluation sums its ranks' matrices and
    calls this: every example counts exactly once.
    """
    k = len(labels)
    if len(matrix) != k or any(len(row) != k for row in matrix):
        raise ValueError(f"the confusion matrix must be {k} x {k} for {k} labels")
    matrix = [[int(c) for c in row] for row in matrix]
    n = sum(map(sum, matrix))
    correct = sum(matrix[i][i] for i in range(k))
    per_class: dict[str, dict[str, float | int]] = {}
    for i, name in enumerate(labels):
        tp = matrix[i][i]
        predicted = sum(matrix[r][i] for r in range(k))
        support = sum(matrix[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }
    return {
        "n": n,
        "accuracy": correct / n if n else None,
        "loss": loss,
        "per_class": per_class,
        "macro_f1": sum(c["f1"] for c in per_class.values()) / k if n else None,
        "confusion_matrix": {"labels": list(labels), "matrix": matrix},
    }
