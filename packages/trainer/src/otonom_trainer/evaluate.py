"""Evaluate an exported policy on a dataset, through the runtime that serves it.

``evaluate(model_path, dataset_path)`` loads the ONNX model with
``otonom_runtime.load_rl_policy`` (not the PyTorch checkpoint: what is measured is what runs in
production) and the dataset with ``otonom_schema.load_dataset``, and returns an
``EvaluationReport``: accuracy, per-class precision / recall / F1 / support for HOLD, BUY and
SELL with their macro and support-weighted averages, the 3x3 confusion matrix (rows = true
action, columns = predicted action) and the strength MAE on the rows whose true action is BUY or
SELL. ``EvaluationReport.format()`` lays the classification report out like scikit-learn's
``classification_report``; ``plot_confusion_matrix`` draws the matrix as a PNG.

The metrics are ``otonom_trainer.metrics``'s (the stack training uses too) and the plot is
``otonom_trainer.plots``'s; both are re-exported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime import load_rl_policy
from otonom_schema import Action, load_dataset
from otonom_trainer.metrics import (
    CLASS_NAMES,
    ClassMetrics,
    classification_metrics,
    confusion_matrix,
)
from otonom_trainer.plots import plot_confusion_matrix

__all__ = [
    "CLASS_NAMES",
    "ClassMetrics",
    "EvaluationReport",
    "classification_metrics",
    "confusion_matrix",
    "evaluate",
    "plot_confusion_matrix",
]

_CHUNK: Final = 65_536  # rows per predict_batch call (bounds the memory of one run)

I64 = npt.NDArray[np.int64]


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
