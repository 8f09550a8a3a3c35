"""``Signal`` and ``Signals``: an analyst's (or the ensemble's) verdict on one state and on
many (``otonom_runtime.ensemble`` uses and exports both)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from otonom_schema import Action

__all__ = ["Signal", "Signals"]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Signal:
    """One analyst's (or the ensemble's) verdict on one state."""

    action: Action
    strength: float
    confidence: float = 1.0

    def __post_init__(self) -> None:
        for name in ("strength", "confidence"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"signal {name} is {value!r}; expected a number in [0, 1]")
        object.__setattr__(self, "action", Action(self.action))

    def to_dict(self) -> dict[str, float | int]:
        """``{"action": int, "strength": float, "confidence": float}`` (a decision row's JSON)."""
        return {
            "action": int(self.action),
            "strength": float(self.strength),
            "confidence": float(self.confidence),
        }


@dataclass(frozen=True)
class Signals:
    """Signals for N states at once: ``actions`` int64, ``strengths`` and ``confidences``
    float64, each of shape (N,)."""

    actions: npt.NDArray[np.int64]
    strengths: F64
    confidences: F64

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def __getitem__(self, i: int) -> Signal:
        return Signal(
            Action(int(self.actions[i])), float(self.strengths[i]), float(self.confidences[i])
        )

    @classmethod
    def from_scores(cls, score: F64, threshold: float, confidence: F64) -> Signals:
        """BUY where ``score >= threshold``, SELL where ``score <= -threshold``, else HOLD;
        strength ``|score|`` (clipped to [0, 1]) for BUY/SELL and 0 for HOLD."""
        actions = np.full(score.shape[0], int(Action.HOLD), dtype=np.int64)
        actions[score >= threshold] = int(Action.BUY)
        actions[score <= -threshold] = int(Action.SELL)
        strength = np.where(actions == Action.HOLD, 0.0, np.minimum(np.abs(score), 1.0))
        return cls(actions, strength, np.clip(confidence, 0.0, 1.0))
