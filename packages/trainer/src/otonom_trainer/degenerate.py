"""Degenerate models: a policy that learned the teacher's commonest answer, not the teacher.

Measured on the validation split at the end of training (``BehaviorCloningTrainer``), stored in
the run's metrics (``metadata.json`` and the ONNX model's ``otonom.metrics``, which the runtime
reads: ``RlPolicy.degenerate_reason``), and checked again by the production gate's "not
degenerate" item. A model is **degenerate** when either rule holds:

* **one action**: it predicts one action on >= ``ONE_ACTION_SHARE`` (95 %) of the validation
  rows while the teacher's share of that action there is below ``TEACHER_SHARE_LIMIT`` (90 %)
  (a teacher that itself says HOLD on 97 % of the days may be imitated by a model that does);
* **no better than the majority**: its validation accuracy is below the majority baseline +
  ``MIN_GAIN`` (2 points). The majority baseline is the accuracy, on the validation rows, of
  always predicting the train split's most common action.

Plain numpy; this module does not import torch.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_schema import Action

__all__ = [
    "MIN_GAIN",
    "ONE_ACTION_SHARE",
    "TEACHER_SHARE_LIMIT",
    "degenerate_mark",
    "majority_baseline",
    "validation_stats",
]

ONE_ACTION_SHARE: Final = 0.95
"""A model predicting one action on at least this share of the validation rows ..."""
TEACHER_SHARE_LIMIT: Final = 0.90
"""... while the teacher's share of that action is below this, is degenerate."""
MIN_GAIN: Final = 0.02
"""A model whose validation accuracy is below the majority baseline + this is degenerate."""

_NAMES: Final = tuple(a.name for a in Action)


def majority_baseline(
    train_actions: npt.ArrayLike, val_actions: npt.ArrayLike
) -> tuple[int, float]:
    """``(action, accuracy)``: the train split's most common action (the lowest action on a
    tie) and the accuracy of always predicting it on the validation rows (nan with none)."""
    train = np.asarray(train_actions, dtype=np.int64)
    val = np.asarray(val_actions, dtype=np.int64)
    if train.size == 0:
        raise ValueError("no train rows; expected at least one to find the majority action")
    action = int(np.bincount(train, minlength=len(_NAMES)).argmax())
    accuracy = float((val == action).mean()) if val.size else float("nan")
    return action, accuracy


def validation_stats(confusion: npt.ArrayLike, majority_action: int) -> dict[str, Any] | None:
    """What the rules read from a validation confusion matrix (``[true][predicted]`` counts,
    3x3) given the train split's most common action: ``majority_baseline_acc``,
    ``val_action_acc``, ``top_prediction`` (the action predicted most), ``top_prediction_share``
    and ``teacher_share`` (the teacher's share of that action); None with no validation row."""
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.shape != (len(_NAMES), len(_NAMES)):
        raise ValueError(f"confusion matrix has shape {cm.shape}; expected (3, 3)")
    if not 0 <= majority_action < len(_NAMES):
        raise ValueError(f"majority_action is {majority_action}; expected 0, 1 or 2")
    n = int(cm.sum())
    if n == 0:
        return None
    predicted = cm.sum(axis=0)
    top = int(predicted.argmax())
    return {
        "majority_baseline_acc": float(cm[majority_action].sum()) / n,
        "val_action_acc": float(np.trace(cm)) / n,
        "top_prediction": _NAMES[top],
        "top_prediction_share": float(predicted[top]) / n,
        "teacher_share": float(cm[top].sum()) / n,
    }


def degenerate_mark(confusion: npt.ArrayLike, majority_action: int) -> dict[str, Any] | None:
    """The mark for a model whose validation confusion matrix is ``confusion``
    (``[true][predicted]`` counts, 3x3) and whose train split's most common action is
    ``majority_action``: None when neither rule holds (or there are no validation rows), else
    ``{"reason": one line naming each rule that holds and its numbers, "rules": ["one action"
    and/or "below majority baseline"]}`` plus the numbers of ``validation_stats``."""
    stats = validation_stats(confusion, majority_action)
    if stats is None:
        return None
    accuracy, baseline = stats["val_action_acc"], stats["majority_baseline_acc"]
    top = _NAMES.index(stats["top_prediction"])
    top_share, teacher_share = stats["top_prediction_share"], stats["teacher_share"]
    reasons: list[str] = []
    rules: list[str] = []
    if top_share >= ONE_ACTION_SHARE and teacher_share < TEACHER_SHARE_LIMIT:
        rules.append("one action")
        reasons.append(
            f"predicts {_NAMES[top]} on {top_share:.1%} of the validation rows (>= "
            f"{ONE_ACTION_SHARE:.0%}) while the teacher's share of {_NAMES[top]} there is "
            f"{teacher_share:.1%} (< {TEACHER_SHARE_LIMIT:.0%})"
        )
    if accuracy < baseline + MIN_GAIN:
        rules.append("below majority baseline")
        reasons.append(
            f"validation accuracy {accuracy:.3f} is below the majority baseline {baseline:.3f} "
            f"(always {_NAMES[majority_action]}) + {100 * MIN_GAIN:.0f} points"
        )
    if not rules:
        return None
    return {"reason": "; ".join(reasons), "rules": rules, **stats}
