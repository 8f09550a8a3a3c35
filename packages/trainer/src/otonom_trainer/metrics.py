"""Classification metrics of the policy's action head: one confusion matrix, one per-class stack.

``confusion_matrix(y_true, y_pred)`` counts (rows = true action, columns = predicted) and
``classification_metrics(cm)`` derives precision, recall, F1 and support per class from it;
``per_class_metrics(cm)`` is the same keyed by action name. Training (the validation split's
metrics in ``TrainingMetrics``) and ``evaluate`` (the exported model on a dataset) both use
these. A ratio whose denominator is zero (a class never predicted, or never present) is 0.0, as
scikit-learn's ``zero_division=0``. Plain numpy: importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from otonom_schema import Action

__all__ = [
    "CLASS_NAMES",
    "ClassMetrics",
    "classification_metrics",
    "confusion_matrix",
    "per_class_metrics",
]

CLASS_NAMES: Final = tuple(a.name for a in Action)
"""``("HOLD", "BUY", "SELL")``: row / column order of every per-class result."""
N_CLASSES: Final = len(CLASS_NAMES)

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ClassMetrics:
    """precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R) (0 when 0/0)
    and support (rows whose true class it is) of one class, or an average of them."""

    precision: float
    recall: float
    f1: float
    support: int


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> I64:
    """The 3x3 confusion matrix, int64: ``cm[t, p]`` counts rows of true ``t`` predicted ``p``.

    Both inputs are (N,) arrays of ``Action`` values (0, 1, 2); ``ValueError`` otherwise.
    """
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must be (N,) arrays alike")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= N_CLASSES):
            raise ValueError(f"{name} must hold Action values 0 (HOLD), 1 (BUY), 2 (SELL)")
    flat = t.astype(np.int64) * N_CLASSES + p.astype(np.int64)
    counts = np.bincount(flat, minlength=N_CLASSES * N_CLASSES)
    return counts.reshape(N_CLASSES, N_CLASSES).astype(np.int64)


def _ratio(num: npt.NDArray[np.float64], den: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_metrics(cm: npt.ArrayLike) -> tuple[ClassMetrics, ...]:
    """Per-class metrics from a square confusion matrix (rows = true, columns = predicted).

    precision = TP / predicted, recall = TP / support, F1 = 2PR / (P + R); 0.0 where the
    denominator is zero.
    """
    m = np.asarray(cm, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix has shape {m.shape}; expected a square matrix")
    tp = np.diag(m)
    support = m.sum(axis=1)
    precision = _ratio(tp, m.sum(axis=0))
    recall = _ratio(tp, support)
    f1 = _ratio(2.0 * precision * recall, precision + recall)
    return tuple(
        ClassMetrics(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i in range(m.shape[0])
    )


def per_class_metrics(cm: npt.ArrayLike) -> dict[str, ClassMetrics]:
    """``classification_metrics`` of a 3x3 matrix keyed by action name (HOLD, BUY, SELL)."""
    m = np.asarray(cm)
    if m.shape != (N_CLASSES, N_CLASSES):
        raise ValueError(f"confusion matrix has shape {m.shape}; expected (3, 3)")
    return dict(zip(CLASS_NAMES, classification_metrics(m), strict=True))
