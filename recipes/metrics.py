"""Classification metrics for emotion recognition: UA, WA, confusion matrix and calibration error.

UA (unweighted average recall) is the mean of the per-class recalls, so a
model cannot score well by favouring the most frequent class; WA is plain
accuracy. Both are computed from one confusion matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel


class ClassificationReport(BaseModel):
    labels: list[str]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    ua: float
    wa: float
    recall: dict[str, float]
    support: dict[str, int]


def confusion_matrix(targets: Sequence[int], predicted: Sequence[int], n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(targets, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def report_from_confusion(matrix: np.ndarray, labels: Sequence[str]) -> ClassificationReport:
    """UA averages recall over the classes that occur (a class absent from the targets has no recall)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    support = matrix.sum(axis=1)
    present = support > 0
    recall = np.divide(np.diag(matrix), support, out=np.zeros(len(labels)), where=present)
    total = int(matrix.sum())
    return ClassificationReport(
        labels=list(labels),
        confusion=matrix.tolist(),
        ua=float(recall[present].mean()) if present.any() else 0.0,
        wa=float(np.trace(matrix) / total) if total else 0.0,
        recall={label: float(r) for label, r, p in zip(labels, recall, present, strict=False) if p},
        support={label: int(s) for label, s in zip(labels, support, strict=False)},
    )


def classification_report(
    targets: Sequence[int], predicted: Sequence[int], labels: Sequence[str]
) -> ClassificationReport:
    return report_from_confusion(confusion_matrix(targets, predicted, len(labels)), labels)


def expected_calibration_error(probs: np.ndarray, targets: Sequence[int], n_bins: int = 15) -> float:
    """ECE over equal-width confidence bins: the gap between confidence and accuracy, weighted by bin size."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(targets)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        members = bins == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)
