"""Evaluate an exported policy on a dataset, through the runtime that serves it.

``evaluate(model_path, dataset_path)`` loads the ONNX model with
``otonom_runtime.load_rl_policy`` (not the PyTorch checkpoint: what is measured is what runs in
production) and the dataset with ``otonom_schema.load_dataset``, and returns an
``EvaluationReport``: accuracy, per-class precision / recall / F1 / support for HOLD, BUY and
SELL with their macro and support-weighted averages, the 3x3 confusion matrix (rows = true
action, columns = predicted action) and the strength MAE on the rows whose true action is BUY or
SELL. ``EvaluationReport.format()`` lays the classification report out like scikit-learn's
``classification_report``; ``plot_confusion_matrix`` draws the matrix as a PNG.

The metrics are plain numpy; a ratio whose denominator is zero (a class never predicted, or
never present) is 0.0, as scikit-learn's ``zero_division=0``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime import load_rl_policy
from otonom_schema import Action, load_dataset

__all__ = [
    "CLASS_NAMES",
    "ClassMetrics",
    "EvaluationReport",
    "classification_metrics",
    "confusion_matrix",
    "evaluate",
    "plot_confusion_matrix",
]

CLASS_NAMES: Final = tuple(a.name for a in Action)
"""``("HOLD", "BUY", "SELL")``: row / column order of every per-class result."""
_N_CLASSES: Final = len(CLASS_NAMES)
_CHUNK: Final = 65_536  # rows per predict_batch call (bounds the memory of one run)

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall, F1 and support of one class (or an average of them)."""

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
        if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= _N_CLASSES):
            raise ValueError(f"{name} must hold Action values 0 (HOLD), 1 (BUY), 2 (SELL)")
    flat = t.astype(np.int64) * _N_CLASSES + p.astype(np.int64)
    counts = np.bincount(flat, minlength=_N_CLASSES * _N_CLASSES)
    return counts.reshape(_N_CLASSES, _N_CLASSES).astype(np.int64)


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


@dataclass(frozen=True)
class EvaluationReport:
    """What ``evaluate`` measured (see the module docstring).

    ``per_class`` is in ``CLASS_NAMES`` order; ``confusion`` is 3x3 int64, rows = true action,
    columns = predicted; ``strength_mae`` is ``None`` when no row's true action is BUY or SELL.
    """

    model_path: Path
    dataset_path: Path
    n: int
    accuracy: float
    per_class: tuple[ClassMetrics, ...]
    macro_avg: ClassMetrics
    weighted_avg: ClassMetrics
    confusion: I64
    strength_mae: float | None
    strength_rows: int

    @classmethod
    def from_predictions(
        cls,
        y_true: npt.ArrayLike,
        y_pred: npt.ArrayLike,
        strength_true: npt.ArrayLike,
        strength_pred: npt.ArrayLike,
        *,
        model_path: str | os.PathLike[str] = "",
        dataset_path: str | os.PathLike[str] = "",
    ) -> EvaluationReport:
        """Compute the report from true and predicted actions and strengths, (N,) each."""
        t = np.asarray(y_true)
        cm = confusion_matrix(t, y_pred)
        n = int(cm.sum())
        if n == 0:
            raise ValueError("no rows to evaluate")
        s_true = np.asarray(strength_true, dtype=np.float64)
        s_pred = np.asarray(strength_pred, dtype=np.float64)
        if s_true.shape != t.shape or s_pred.shape != t.shape:
            raise ValueError(
                f"strengths {s_true.shape} / {s_pred.shape} must have the actions' shape {t.shape}"
            )
        per_class = classification_metrics(cm)
        support = np.array([c.support for c in per_class], dtype=np.float64)
        table = np.array([[c.precision, c.recall, c.f1] for c in per_class], dtype=np.float64)
        macro = table.mean(axis=0)
        weighted = (table * support[:, None]).sum(axis=0) / n
        traded = (t == Action.BUY) | (t == Action.SELL)
        mae = float(np.abs(s_true[traded] - s_pred[traded]).mean()) if traded.any() else None
        return cls(
            model_path=Path(model_path),
            dataset_path=Path(dataset_path),
            n=n,
            accuracy=float(np.trace(cm)) / n,
            per_class=per_class,
            macro_avg=ClassMetrics(float(macro[0]), float(macro[1]), float(macro[2]), n),
            weighted_avg=ClassMetrics(
                float(weighted[0]), float(weighted[1]), float(weighted[2]), n
            ),
            confusion=cm,
            strength_mae=mae,
            strength_rows=int(traded.sum()),
        )

    def classification_report(self, digits: int = 2) -> str:
        """The table of scikit-learn's ``classification_report`` (HOLD, BUY, SELL)."""
        headers = ("precision", "recall", "f1-score", "support")
        width = max(len("weighted avg"), *(len(n) for n in CLASS_NAMES), digits)
        head_fmt = "{:>{width}s} " + " {:>9}" * len(headers)
        row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
        acc_fmt = "{:>{width}s} " + " {:>9}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
        out = head_fmt.format("", *headers, width=width) + "\n\n"
        for name, c in zip(CLASS_NAMES, self.per_class, strict=True):
            out += row_fmt.format(
                name, c.precision, c.recall, c.f1, c.support, width=width, digits=digits
            )
        out += "\n"
        out += acc_fmt.format("accuracy", "", "", self.accuracy, self.n, width=width, digits=digits)
        for name, c in (("macro avg", self.macro_avg), ("weighted avg", self.weighted_avg)):
            out += row_fmt.format(
                name, c.precision, c.recall, c.f1, c.support, width=width, digits=digits
            )
        return out

    def confusion_table(self) -> str:
        """The confusion matrix as text with HOLD/BUY/SELL labels (rows true, columns predicted)."""
        width = max(6, *(len(str(v)) + 2 for v in self.confusion.ravel()))
        corner = "true \\ pred"
        label = max(len(corner), *(len(n) for n in CLASS_NAMES))
        lines = [f"{corner:<{label}}" + "".join(f"{n:>{width}}" for n in CLASS_NAMES)]
        for name, row in zip(CLASS_NAMES, self.confusion, strict=True):
            lines.append(f"{name:<{label}}" + "".join(f"{int(v):>{width}}" for v in row))
        return "\n".join(lines)

    def format(self, digits: int = 2) -> str:
        """The human report: accuracy, the classification report, the confusion matrix."""
        correct = int(np.trace(self.confusion))
        mae = (
            f"{self.strength_mae:.4f} (on {self.strength_rows} BUY/SELL rows)"
            if self.strength_mae is not None
            else "n/a (no BUY/SELL rows)"
        )
        lines = [
            f"Model:    {self.model_path}",
            f"Dataset:  {self.dataset_path} ({self.n} rows)",
            f"Accuracy: {self.accuracy:.4f} ({correct}/{self.n})",
            f"Strength MAE: {mae}",
            "",
            "Classification report:",
            self.classification_report(digits).rstrip("\n"),
            "",
            "Confusion matrix (rows = true action, columns = predicted):",
            self.confusion_table(),
        ]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready python values."""

        def cls_dict(c: ClassMetrics) -> dict[str, Any]:
            return {"precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support}

        return {
            "model_path": str(self.model_path),
            "dataset_path": str(self.dataset_path),
            "n": self.n,
            "accuracy": self.accuracy,
            "per_class": {n: cls_dict(c) for n, c in zip(CLASS_NAMES, self.per_class, strict=True)},
            "macro_avg": cls_dict(self.macro_avg),
            "weighted_avg": cls_dict(self.weighted_avg),
            "confusion_matrix": self.confusion.tolist(),
            "labels": list(CLASS_NAMES),
            "strength_mae": self.strength_mae,
            "strength_rows": self.strength_rows,
        }


def evaluate(
    model_path: str | os.PathLike[str],
    dataset_path: str | os.PathLike[str],
    *,
    device: str = "cpu",
) -> EvaluationReport:
    """Evaluate the ONNX model at ``model_path`` on the dataset at ``dataset_path``.

    ``model_path`` is anything ``load_rl_policy`` accepts (a ``.onnx`` file, a model folder, a
    ``policy_best.pt`` path standing for the ``.onnx`` beside it); ``device`` is passed to it.
    Raises what the loaders raise (``PolicyError``, ``ModelSchemaMismatchError``,
    ``FileNotFoundError``, ``DatasetError``, ``SchemaMismatchError``) and ``ValueError`` for an
    empty dataset.
    """
    policy = load_rl_policy(model_path, device=device)
    dataset = load_dataset(dataset_path)
    n = len(dataset)
    if n == 0:
        raise ValueError(f"dataset {dataset_path} has no rows to evaluate")
    actions = np.empty(n, dtype=np.int64)
    strengths = np.empty(n, dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        actions[start:stop], strengths[start:stop], _ = policy.predict_batch(
            dataset.states[start:stop]
        )
    return EvaluationReport.from_predictions(
        dataset.actions,
        actions,
        dataset.strengths,
        strengths,
        model_path=policy.path,
        dataset_path=dataset_path,
    )


def plot_confusion_matrix(
    cm: npt.ArrayLike,
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str] = CLASS_NAMES,
    title: str = "Confusion matrix",
) -> Path:
    """Draw ``cm`` (rows = true, columns = predicted) as an annotated heat map PNG at ``path``.

    Cells show the count and the share of its row (the recall of that true class). Folders are
    created; returns the path. ``ValueError`` if ``cm`` is not a square matrix of non-negative
    counts matching ``labels``; ``PlotUnavailableError`` without matplotlib.
    """
    m = np.asarray(cm)
    if m.ndim != 2 or m.shape != (len(labels), len(labels)):
        raise ValueError(
            f"confusion matrix has shape {m.shape}; expected ({len(labels)}, {len(labels)}) "
            f"for labels {list(labels)}"
        )
    if m.dtype.kind not in "iu" or (m.size and m.min() < 0):
        raise ValueError("confusion matrix must hold non-negative integer counts")
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros(m.shape, dtype=np.float64), where=rows > 0)
    from otonom_runtime.plots import pyplot

    plt = pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    try:
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
        ticks = np.arange(len(labels))
        ax.set_xticks(ticks, labels=list(labels))
        ax.set_yticks(ticks, labels=list(labels))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                colour = "white" if share[i, j] > 0.5 else "black"
                text = f"{int(m[i, j])}\n{share[i, j]:.0%}"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
