"""Where a policy's remaining errors are: per teacher action, per volatility regime, and near
the teacher's thresholds (issue 14).

``error_breakdown(states, teacher_actions, predicted, teacher)`` groups the rows of a held-out
dataset and counts, per group, its rows and the policy's wrong actions. The groups:

* ``class``: the teacher's action (HOLD, BUY, SELL);
* ``regime``: the state's volatility regime (``regime_low_vol`` / ``regime_normal`` /
  ``regime_high_vol``);
* ``vote``: ``near`` when the stronger of BUY and SELL's share of the votes
  (``otonom_runtime.teacher.vote_share``) is within ``band`` of the strategy's ``min_score``
  (a small change of the state flips the decision), else ``far``;
* ``tech``: ``near`` when the tech analyst's score is within ``band`` of its entry threshold
  (``|score| - entry_threshold``), else ``far``.

A group's error share is its errors over all errors: where the remaining errors are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from otonom_schema import Action, feature_index

if TYPE_CHECKING:
    from otonom_runtime.backtest.params import EngineParams
    from otonom_runtime.strategy import StrategyConfig

__all__ = ["DEFAULT_BAND", "ErrorBreakdown", "ErrorGroup", "error_breakdown"]

DEFAULT_BAND: Final = 0.05
_REGIMES: Final = ("low_vol", "normal", "high_vol")
_REGIME0: Final = feature_index("regime_low_vol")


@dataclass(frozen=True)
class ErrorGroup:
    """One group of rows: its kind (``class``, ``regime``, ``vote``, ``tech``), name, rows,
    the policy's errors among them, its error rate and its share of all errors."""

    kind: str
    name: str
    rows: int
    errors: int
    error_rate: float
    error_share: float


@dataclass(frozen=True)
class ErrorBreakdown:
    """``error_breakdown``'s result: the groups in a fixed order, the totals and the band."""

    groups: tuple[ErrorGroup, ...]
    rows: int
    errors: int
    band: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return {
            "rows": self.rows,
            "errors": self.errors,
            "band": self.band,
            "groups": [g.__dict__ for g in self.groups],
        }

    def markdown(self) -> str:
        """The groups as a markdown table."""
        head = "| group | rows | errors | error rate | share of errors |"
        lines = [head, "|---|---|---|---|---|"]
        for g in self.groups:
            lines.append(
                f"| {g.kind}: {g.name} | {g.rows} | {g.errors} | {g.error_rate:.3f} | "
                f"{g.error_share:.3f} |"
            )
        return "\n".join(lines)


def error_breakdown(
    states: npt.ArrayLike,
    teacher_actions: npt.ArrayLike,
    predicted: npt.ArrayLike,
    teacher: EngineParams | StrategyConfig,
    *,
    band: float = DEFAULT_BAND,
) -> ErrorBreakdown:
    """Group the rows (see the module docstring) and count the policy's errors in each."""
    from otonom_runtime.teacher import teacher_decisions, teacher_params, vote_share

    x = np.asarray(states)
    y = np.asarray(teacher_actions, dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    if x.ndim != 2 or not (len(x) == len(y) == len(p)):
        raise ValueError(
            f"error_breakdown: {x.shape} states, {y.shape} actions, {p.shape} predictions; "
            "expected (N, 34), (N,) and (N,)"
        )
    params = teacher_params(teacher)
    wrong = p != y
    total = int(wrong.sum())
    near_vote = np.abs(vote_share(teacher_decisions(params, x)) - params.min_score) <= band
    tech = np.abs(np.abs(params.tech.score(x)) - params.tech.entry_threshold) <= band
    regime = np.argmax(x[:, _REGIME0 : _REGIME0 + 3], axis=1)
    masks: list[tuple[str, str, npt.NDArray[np.bool_]]] = [
        *(("class", a.name, y == int(a)) for a in Action),
        *(("regime", name, regime == i) for i, name in enumerate(_REGIMES)),
        ("vote", "near", near_vote),
        ("vote", "far", ~near_vote),
        ("tech", "near", tech),
        ("tech", "far", ~tech),
    ]
    groups = []
    for kind, name, mask in masks:
        rows, errors = int(mask.sum()), int((wrong & mask).sum())
        rate = errors / rows if rows else 0.0
        groups.append(ErrorGroup(kind, name, rows, errors, rate, errors / total if total else 0.0))
    return ErrorBreakdown(tuple(groups), len(y), total, band)
