"""Classification metrics: accuracy and macro-averaged F1 from predicted and true class ids.

Macro-F1 averages the per-class F1 = 2 TP / (2 TP + FP + FN) over the classes, so rare
classes count as much as frequent ones; a class absent from both the predictions and the
truth has no defined F1 and is left out of the average (as scikit-learn's ``labels=None``).
"""

import numpy as np


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; row = true class, column = predicted class."""
    true, pred = np.asarray(true).ravel(), np.asarray(pred).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"{true.shape[0]} true labels but {pred.shape[0]} predictions")
    for name, ids in (("true", true), ("predicted", pred)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name} class ids must be in [0, {num_classes})")
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (true, pred), 1)
    return counts


def classification_metrics(
    true: np.ndarray, pred: np.ndarray, num_classes: int
) -> dict[str, float]:
    """``accuracy``, ``macro_f1`` and ``f1/<id>`` for every class that occurs."""
    counts = confusion_matrix(true, pred, num_classes)
    tp = np.diag(counts).astype(np.float64)
    fp, fn = counts.sum(0) - tp, counts.sum(1) - tp
    present = (tp + fp + fn) > 0
    f1 = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    out = {
        "accuracy": float(tp.sum() / max(counts.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }
    out.update({f"f1/{c}": float(f1[c]) for c in np.flatnonzero(present)})
    return out
