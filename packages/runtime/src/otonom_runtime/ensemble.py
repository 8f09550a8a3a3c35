"""Analysts and the weighted vote that makes the ensemble's decision.

Every analyst reads the same 34-feature states the policy sees (``otonom_schema``), so a policy
trained on the ensemble's decisions can learn them. Each returns, per state, a signal: an
``Action``, a strength in [0, 1] and a confidence in [0, 1].

* ``TechAnalyst``: trend (mean of the newest returns), RSI mean reversion and the MACD
  histogram, combined into a score in [-1, 1]; Bollinger width lowers the confidence.
* ``NewsAnalyst``: weighted news and macro sentiment; DSI is the confidence.
* ``RiskAnalyst``: the price drawdown over the newest returns and the volatility regime. It
  votes SELL when the drawdown is beyond its limit (with full strength in the high-volatility
  regime), otherwise HOLD with a low confidence; ``exposure()`` is the size multiplier the
  backtester applies in the high-volatility regime.
* ``RlAnalyst``: the ONNX policy through the runtime, with a fallback (see its docstring).

The vote (``otonom_runtime.vote``, exported here too: ``aggregate_signals`` for one decision, in
the guide's call form or with a list; ``aggregate_signal_arrays`` for many): each analyst adds
``weight x confidence`` to the action it votes for. BUY or SELL, whichever has more votes,
wins when its share of all votes (HOLD votes included: a confident HOLD dilutes) reaches
``min_score``; otherwise, and on a BUY/SELL tie, the ensemble HOLDs. An analyst with nothing
to say votes with confidence 0 (the news analyst without any sentiment data), and one that
fails (``None``) is left out. The strength is the vote-weighted mean of the strengths of the
analysts on the winning side. The RL analyst votes so as the 4th voter (``RlMode``
``"voter"``); as the sole decider or as a filter on the other three's vote, see
``otonom_runtime.vote``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime.vote import (
    FILTER_VETOES,
    RL_MODES,
    RlMode,
    RlVote,
    Signal,
    SignalLike,
    Signals,
    add_votes,
    aggregate_signal_arrays,
    aggregate_signals,
    decide,
    decide_rows,
    rows_decider,
    vote_totals,
)
from otonom_schema import (
    ANALYSTS,
    Action,
    RlState,
    feature_index,
    log_returns_from_features,
    validate_states,
)

if TYPE_CHECKING:
    from otonom_runtime.policy import RlPolicy

__all__ = [
    "ANALYSTS",
    "FILTER_VETOES",
    "RL_MODES",
    "NewsAnalyst",
    "RiskAnalyst",
    "RlAnalyst",
    "RlMode",
    "RlVote",
    "Signal",
    "SignalLike",
    "Signals",
    "TechAnalyst",
    "add_votes",
    "aggregate_signal_arrays",
    "aggregate_signals",
    "decide",
    "decide_rows",
    "rl_votes",
    "rows_decider",
    "vote_totals",
]

log = logging.getLogger(__name__)


F64 = npt.NDArray[np.float64]
_RET0: Final = feature_index("ret_lag0")  # the newest return; older ones sit to its left
_RSI: Final = feature_index("rsi")
_MACD: Final = feature_index("macd_signal")
_BB: Final = feature_index("bb_width")
_HIGH_VOL: Final = feature_index("regime_high_vol")
_DSI: Final = feature_index("dsi")
_NEWS: Final = feature_index("news_sentiment")
_MACRO: Final = feature_index("macro_sentiment")

_HOLD: Final = int(Action.HOLD)
_BUY: Final = int(Action.BUY)
_SELL: Final = int(Action.SELL)


def _states(states: npt.ArrayLike) -> npt.NDArray[np.floating]:
    arr = np.asarray(states)
    if arr.ndim != 2 or arr.shape[1] != 34:
        raise ValueError(f"states have shape {arr.shape}; expected (N, 34)")
    return arr


def _float64(states: npt.NDArray[Any]) -> F64:
    """``states`` as float64: itself if C-contiguous float64 (``astype``'s copy would have its
    layout, so reductions sum in the same order), else ``astype``'s copy."""
    same = states.dtype == np.float64 and states.flags.c_contiguous
    return states if same else states.astype(np.float64)


def _window_returns(states: npt.NDArray[np.floating], window: int) -> list[F64]:
    """The newest ``window`` daily log returns of each state (the tanh scaling undone) as
    ``window`` (N,) columns, oldest first. Consecutive days' states hold the same returns a lag
    apart: when every row shows it, each return is decoded once (elementwise: the same values)
    and the columns are views of that one series."""
    lags = states[:, _RET0 - window + 1 : _RET0 + 1]  # (N, window), oldest first
    n = lags.shape[0]
    if n > 1 and window > 1 and np.array_equal(lags[1:, :-1], lags[:-1, 1:]):
        series = log_returns_from_features(np.concatenate([lags[0], lags[1:, -1]]))
        return [series[k : k + n] for k in range(window)]
    return list(log_returns_from_features(lags).T)


@dataclass(frozen=True)
class TechAnalyst:
    """Trend, RSI and MACD rules on the state's technical features.

    Sub-scores in [-1, 1]: trend = clip(mean of the newest ``trend_window`` return features /
    ``trend_threshold``); RSI (mean reversion) = (oversold - rsi) / oversold below
    ``rsi_oversold``, -(rsi - overbought) / (1 - overbought) above ``rsi_overbought``, else 0;
    MACD = clip(macd_signal / ``macd_threshold``). The score is their weighted mean; it acts at
    ``entry_threshold``. Confidence = 1 - Bollinger width feature (wide bands: less sure).
    """

    trend_window: int = 10
    trend_threshold: float = 0.10
    rsi_oversold: float = 0.30
    rsi_overbought: float = 0.70
    macd_threshold: float = 0.10
    trend_weight: float = 1.0
    rsi_weight: float = 0.5
    macd_weight: float = 1.0
    entry_threshold: float = 0.30

    def score(self, states: npt.ArrayLike) -> F64:
        x = _float64(_states(states))
        w = self.trend_window
        trend = np.clip(x[:, _RET0 - w + 1 : _RET0 + 1].mean(axis=1) / self.trend_threshold, -1, 1)
        rsi = x[:, _RSI]
        low, high = self.rsi_oversold, self.rsi_overbought
        rsi_score = np.where(
            rsi < low, (low - rsi) / low, np.where(rsi > high, -(rsi - high) / (1 - high), 0.0)
        )
        macd = x[:, _MACD]
        macd_score = (
            np.clip(macd / self.macd_threshold, -1, 1) if self.macd_threshold > 0 else np.sign(macd)
        )
        total = self.trend_weight + self.rsi_weight + self.macd_weight
        out: F64 = (
            self.trend_weight * trend + self.rsi_weight * rsi_score + self.macd_weight * macd_score
        ) / total
        return out

    def signals(self, states: npt.ArrayLike) -> Signals:
        x = _states(states)
        return Signals.from_scores(
            self.score(x), self.entry_threshold, 1.0 - x[:, _BB].astype(np.float64)
        )


@dataclass(frozen=True)
class NewsAnalyst:
    """Sentiment: score = (news_weight x news + macro_weight x macro) / (sum of weights),
    acting at ``threshold``; confidence = the state's DSI (poor data: less sure), and 0 when
    both sentiment features are exactly 0 (the schema's value for "no score known")."""

    news_weight: float = 0.6
    macro_weight: float = 0.4
    threshold: float = 0.20

    def signals(self, states: npt.ArrayLike) -> Signals:
        x = _float64(_states(states))
        total = self.news_weight + self.macro_weight
        score = (self.news_weight * x[:, _NEWS] + self.macro_weight * x[:, _MACRO]) / total
        known = (x[:, _NEWS] != 0.0) | (x[:, _MACRO] != 0.0)
        return Signals.from_scores(score, self.threshold, np.where(known, x[:, _DSI], 0.0))


@dataclass(frozen=True)
class RiskAnalyst:
    """Drawdown and volatility regime.

    ``drawdown`` = 1 - price / running peak over the newest ``drawdown_window`` returns (at
    most 20: the returns the state holds). Beyond ``max_drawdown`` it votes SELL: strength 1
    and confidence 1 in the high-volatility regime (when ``exit_in_high_vol``), else strength
    and confidence ``min(1, drawdown / (2 x max_drawdown))``. Otherwise it votes HOLD with
    confidence 0.5 (it has no opinion on entries). ``exposure()`` = ``high_vol_exposure`` in
    the high-volatility regime, else 1.
    """

    drawdown_window: int = 20
    max_drawdown: float = 0.15
    high_vol_exposure: float = 0.5
    exit_in_high_vol: bool = True

    def drawdown(self, states: npt.ArrayLike) -> F64:
        """Per state, 1 - exp(path_last - peak): the window's running sum of log returns and its
        running maximum (>= 0), a column at a time over all states, in ``np.cumsum`` /
        ``np.maximum.accumulate``'s order along a row (so the same bits)."""
        window = min(self.drawdown_window, 20)
        columns = _window_returns(_states(states), window)
        path = top = columns[0]  # IndexError for no window, as path[:, -1] gave
        for column in columns[1:]:
            path = path + column
            top = np.maximum(top, path)
        out: F64 = 1.0 - np.exp(path - np.maximum(top, 0.0))
        return out

    def signals(self, states: npt.ArrayLike) -> Signals:
        x = _states(states)
        dd = self.drawdown(x)
        high_vol = x[:, _HIGH_VOL] > 0.5
        breach = dd > self.max_drawdown
        graded = np.minimum(1.0, dd / (2.0 * self.max_drawdown))
        exit_now = breach & high_vol & self.exit_in_high_vol
        actions = np.where(breach, int(Action.SELL), int(Action.HOLD)).astype(np.int64)
        strength = np.where(exit_now, 1.0, np.where(breach, graded, 0.0))
        confidence = np.where(exit_now, 1.0, np.where(breach, graded, 0.5))
        return Signals(actions, strength, confidence)

    def exposure(self, states: npt.ArrayLike) -> F64:
        x = _states(states)
        out: F64 = np.where(x[:, _HIGH_VOL] > 0.5, self.high_vol_exposure, 1.0)
        return out


class RlAnalyst:
    """The ONNX policy as the ensemble's 4th analyst, with a fallback.

    ``signal(state)`` returns the policy's action and strength with its top probability as the
    confidence, or ``None`` when the policy fails (an exception, e.g. the ``PolicyError`` of an
    output that breaks the model's contract, an output outside [0, 1] (never clipped), or no
    policy at all): the ensemble then votes without it. The first failure is logged (once per
    analyst; ``quiet=True``: never, for a caller that reports the failures itself, as the backtester
    does once per run); ``fallbacks`` counts them all and ``last_error`` keeps the newest
    message.
    """

    def __init__(
        self, policy: RlPolicy | None, *, reason: str | None = None, quiet: bool = False
    ) -> None:
        self.policy = policy
        self.fallbacks = 0
        self.last_error: str | None = None if policy is not None else (reason or "no policy")
        self._logged = quiet

    def _fail(self, message: str) -> None:
        self.fallbacks += 1
        self.last_error = message
        if not self._logged:
            self._logged = True
            log.warning("RL analyst failed, the ensemble carries on without it: %s", message)

    def signal(self, state: RlState | npt.ArrayLike) -> Signal | None:
        if self.policy is None:
            self._fail(self.last_error or "no policy")
            return None
        try:
            action, strength, probs = self.policy.predict(state, return_probs=True)
        except Exception as exc:  # any failure of the model must not stop the ensemble
            self._fail(f"{type(exc).__name__}: {exc}")
            return None
        vote = self._vote(int(action), strength, float(np.max(probs)))
        return None if vote is None else Signal(Action(vote[0]), vote[1], vote[2])

    def _vote(self, action: int, strength: float, confidence: float) -> RlVote | None:
        """One prediction as ``(action, strength, confidence)``, or None (a fallback, counted,
        its reason kept) when the output is outside [0, 1] or not finite: never clipped (the
        policy refuses such outputs itself, with a ``PolicyError``; this guards other
        policies)."""
        if not (0.0 <= strength <= 1.0 and 0.0 <= confidence <= 1.0):
            kind = (
                "output outside [0, 1]"
                if math.isfinite(strength) and math.isfinite(confidence)
                else "non-finite output"
            )
            self._fail(
                f"{kind} (strength {strength}, confidence {confidence}; expected both in [0, 1], "
                "never clipped)"
            )
            return None
        return action, strength, confidence


def rl_votes(
    analysts: Sequence[RlAnalyst], states: npt.ArrayLike, *, validated: bool = False
) -> tuple[Signals, npt.NDArray[np.bool_]]:
    """``RlAnalyst.signal`` for many states in one model call: row i of ``states`` (N, 34) is
    ``analysts[i]``'s state; all the analysts hold the same policy (or none).

    Returns ``(signals, voted)``: per row the vote as ``Signals`` (action, strength and
    confidence as ``signal`` gives them, in float64) and ``voted`` (N,) bool, False where that
    analyst falls back (its signal there is HOLD with strength and confidence 0, so adding it
    with ``add_votes`` adds nothing); fallbacks are counted and logged by the analyst the row
    belongs to, exactly as ``signal`` does. The states are validated once (by
    ``policy.predict_batch``, or here without a policy): a bad state raises
    ``otonom_schema.SchemaError`` as ``RlState.from_array`` does. A batch that raises is
    retried row by row through ``policy.predict``, so a failure costs only the decisions it
    belongs to. An MLP's answer for a row does not depend on the other rows of its batch, so
    the votes are those of ``signal`` called one state at a time.

    ``validated``: ``states`` is what ``otonom_schema.validate_states`` returns for them
    (checked by the caller), so a policy with ``predict_valid_batch`` is called without
    validating them again.
    """
    n = len(analysts)
    policy = analysts[0].policy if n else None
    if any(a.policy is not policy for a in analysts):
        raise ValueError("rl_votes needs analysts that share one policy")
    predict_batch = None
    if n:
        predict_batch = getattr(policy, "predict_batch", None)
        if validated:
            predict_batch = getattr(policy, "predict_valid_batch", predict_batch)
    if predict_batch is not None:
        try:
            actions, strengths, probs = predict_batch(states)
        except Exception:
            predict_batch = None  # row by row below: each failure is that row's fallback
        else:
            if actions.shape[0] != n:
                raise ValueError(f"{n} analysts for {actions.shape[0]} states; expected one each")
            return _checked_votes(
                analysts,
                actions.astype(np.int64, copy=False),
                strengths.astype(np.float64),
                probs.max(axis=1).astype(np.float64),
            )
    rows = np.asarray(states)
    if rows.ndim != 2 or rows.shape[0] != n:
        raise ValueError(f"states have shape {rows.shape}; expected ({n}, 34), one per analyst")
    voted = np.zeros(n, dtype=np.bool_)
    out = Signals(np.full(n, _HOLD, dtype=np.int64), np.zeros(n), np.zeros(n))
    if policy is None:
        if n:
            validate_states(rows)
        for a in analysts:
            a._fail(a.last_error or "no policy")
        return out, voted
    for i, (a, row) in enumerate(zip(analysts, rows, strict=True)):
        sig = a.signal(RlState.from_array(row))
        if sig is not None:
            voted[i] = True
            out.actions[i], out.strengths[i], out.confidences[i] = (
                int(sig.action),
                sig.strength,
                sig.confidence,
            )
    return out, voted


def _checked_votes(
    analysts: Sequence[RlAnalyst], actions: npt.NDArray[np.int64], strengths: F64, confidences: F64
) -> tuple[Signals, npt.NDArray[np.bool_]]:
    """A batch's outputs as ``rl_votes`` returns them: rows outside [0, 1] (or not finite) are
    that analyst's fallback (``RlAnalyst._vote`` counts and explains each one)."""
    n = actions.shape[0]
    # four reductions (NaN fails them) instead of a mask, which is built only on a failure
    if (
        strengths.min() >= 0.0
        and strengths.max() <= 1.0
        and confidences.min() >= 0.0
        and confidences.max() <= 1.0
    ):
        return Signals(actions, strengths, confidences), np.ones(n, dtype=np.bool_)
    voted = (strengths >= 0.0) & (strengths <= 1.0) & (confidences >= 0.0) & (confidences <= 1.0)
    for i in np.flatnonzero(~voted).tolist():
        analysts[i]._vote(int(actions[i]), float(strengths[i]), float(confidences[i]))
    actions = np.where(voted, actions, _HOLD)
    strengths = np.where(voted, strengths, 0.0)
    confidences = np.where(voted, confidences, 0.0)
    return Signals(actions, strengths, confidences), voted
