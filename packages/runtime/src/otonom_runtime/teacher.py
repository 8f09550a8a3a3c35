"""The teacher's rule as one function: what the 3-analyst ensemble decides for any states.

The backtester's teacher (a run with the RL analyst off) decides every day from the market
features alone: the tech, news and risk analysts' signals of the day's state, their weighted
vote (``vote_totals`` with the strategy's first three weights) and ``decide`` at the strategy's
``min_score`` (``otonom_runtime.backtest.engine``: ``_prepare`` and ``_simulate``). So the
ensemble can label any state, including states it never decided on: ``teacher_decisions``
is that rule, on ``EngineParams`` or a strategy (its RL analyst ignored), for an (N, 34) array
of states. On a teacher dataset's states it gives back every stored action, and the stored
strengths to float32 rounding (a dataset keeps the states as float32; the teacher run decided
on their float64 values).

The trainer uses it to label extra training rows (``otonom_trainer.augment``); the error
breakdown uses ``vote_share`` to tell the decisions near the vote threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime.ensemble import Signals, decide, vote_totals

if TYPE_CHECKING:
    from otonom_runtime.backtest.params import EngineParams
    from otonom_runtime.strategy import StrategyConfig

__all__ = ["TEACHER_ANALYSTS", "teacher_decisions", "teacher_params", "teacher_votes", "vote_share"]

TEACHER_ANALYSTS: Final = ("tech", "news", "risk")
"""The analysts that vote in a teacher run (the RL analyst is off)."""


def teacher_params(source: EngineParams | StrategyConfig) -> EngineParams:
    """``source`` itself when it is ``EngineParams``, else the strategy's (``engine_params``)."""
    from otonom_runtime.backtest.params import EngineParams, engine_params

    return source if isinstance(source, EngineParams) else engine_params(source)


def teacher_votes(
    params: EngineParams, states: npt.NDArray[np.floating]
) -> tuple[dict[str, Signals | None], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The teacher's analysts on ``states`` (N, 34): each one's signals (by name, in
    ``TEACHER_ANALYSTS`` order) and their weighted votes (``vote_totals``: (N, 3) totals and
    strength sums), which ``decide`` at ``params.min_score`` turns into the decisions. The
    backtester's engine prepares each symbol with it (and adds the RL analyst's votes to the
    totals when it is on); ``teacher_decisions`` decides them."""
    tech, news, risk = (
        params.tech.signals(states),
        params.news.signals(states),
        params.risk.signals(states),
    )
    totals, strength_sums = vote_totals([tech, news, risk], params.weights[:3])
    return {"tech": tech, "news": news, "risk": risk}, totals, strength_sums


def teacher_decisions(source: EngineParams | StrategyConfig, states: npt.ArrayLike) -> Signals:
    """The ensemble's decisions with the RL analyst off, for ``states`` of shape (N, 34):
    ``Signals`` with the actions (``Action`` values), strengths and confidences, as the
    backtester's teacher run decides them (the analysts read the market features only, so a
    state's portfolio columns change nothing)."""
    params = teacher_params(source)
    _signals, totals, strength_sums = teacher_votes(params, np.asarray(states))
    return decide(totals, strength_sums, params.min_score)


def vote_share(decisions: Signals) -> npt.NDArray[np.float64]:
    """The stronger of BUY and SELL's share of all votes, from ``teacher_decisions``' output
    (its confidence is that share for a BUY or SELL and one minus it for a HOLD): the
    decision flips where it crosses the strategy's ``min_score``."""
    conf = np.asarray(decisions.confidences, dtype=np.float64)
    out: npt.NDArray[np.float64] = np.where(decisions.actions == 0, 1.0 - conf, conf)
    return out
