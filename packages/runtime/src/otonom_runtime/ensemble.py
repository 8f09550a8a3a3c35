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

The vote (``aggregate_signals`` for one decision, in the guide's call form or with a list;
``aggregate_signal_arrays`` for many): each analyst adds ``weight x confidence`` to the action
it votes for. BUY or SELL, whichever has
more votes, wins when its share of all votes (HOLD votes included: a confident HOLD dilutes)
reaches ``min_score``; otherwise, and on a BUY/SELL tie, the ensemble HOLDs. An analyst with
nothing to say votes with confidence 0 (the news analyst without any sentiment data), and one
that fails (``None``) is left out. The strength is the vote-weighted mean of the strengths of
the analysts on the winning side.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, overload

import numpy as np
import numpy.typing as npt

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
    "NewsAnalyst",
    "RiskAnalyst",
    "RlAnalyst",
    "RlVote",
    "Signal",
    "SignalLike",
    "Signals",
    "TechAnalyst",
    "add_votes",
    "aggregate_signal_arrays",
    "aggregate_signals",
    "decide",
    "rl_votes",
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
_ACTIONS: Final = np.array([_HOLD, _BUY, _SELL])  # a column per action, in Action's order

RlVote = tuple[int, float, float]
"""An RL analyst's verdict as plain numbers: ``(action, strength, confidence)``."""


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


def _check_weights(weights: Sequence[float], n: int) -> F64:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights have shape {w.shape}; expected ({n},), one per analyst")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights are {w.tolist()}; expected finite numbers >= 0")
    return w


def vote_totals(signals: Sequence[Signals | None], weights: Sequence[float]) -> tuple[F64, F64]:
    """The votes of N states: per action the vote total (sum of weight x confidence) and the
    vote-weighted strength sum, each (N, 3) indexed by ``Action``. ``None`` abstains."""
    w = _check_weights(weights, len(signals))
    present = [(s, wi) for s, wi in zip(signals, w, strict=True) if s is not None]
    if not present:
        raise ValueError("no analyst signals to aggregate")
    n = len(present[0][0])
    totals = np.zeros((n, 3))
    strength_sums = np.zeros((n, 3))
    for sig, wi in present:
        if len(sig) != n:
            raise ValueError(f"signals have {len(sig)} rows; expected {n} like the first analyst")
        add_votes(totals, strength_sums, sig, float(wi))
    return totals, strength_sums


def add_votes(totals: F64, strength_sums: F64, signals: Signals, weight: float) -> None:
    """Add one analyst's votes (weight ``weight``) to ``vote_totals``' two (N, 3) arrays, in
    place: ``weight x confidence`` to the total of the action it votes for, and that times its
    strength to the action's strength sum. The backtester adds the RL analyst's votes this way
    to the other three's totals, one day at a time."""
    # each row's action as a one-hot row: the other two cells get + 0.0 (no change, totals
    # are >= 0); cheaper than fancy indexing on the few rows of a day
    hit = signals.actions[:, None] == _ACTIONS
    vote = weight * signals.confidences
    totals += hit * vote[:, None]
    strength_sums += hit * (vote * signals.strengths)[:, None]


def aggregate_signal_arrays(
    signals: Sequence[Signals | None], weights: Sequence[float], *, min_score: float = 0.0
) -> Signals:
    """The weighted vote for N states at once (see the module docstring for the rule).

    ``signals``: one ``Signals`` per analyst (``None``: that analyst abstains everywhere).
    Returns the ensemble's ``Signals``; its confidence is the winning side's share of all votes
    (for HOLD: one minus the stronger side's share).
    """
    return decide(*vote_totals(signals, weights), min_score)


def decide(totals: F64, strength_sums: F64, min_score: float) -> Signals:
    """The vote's outcome for N states, from ``vote_totals`` (plus ``add_votes``): BUY or
    SELL, whichever has more votes, when its share of all votes (HOLD votes included) reaches
    ``min_score``; HOLD otherwise and on a tie. The strength is the winning side's strength
    sum over its votes, the confidence its share (for HOLD: one minus the stronger side's
    share), both clipped to [0, 1].

    The one spelling of the rule: the backtester calls it on whole histories and, with the
    RL analyst, once per day on that day's symbols, so it is written with few array
    operations (each costs about a microsecond on a short batch).
    """
    hold, buy, sell = totals[:, _HOLD], totals[:, _BUY], totals[:, _SELL]
    votes = hold + buy + sell  # the order of ``sum(axis=1)``: bit-identical, fewer calls
    best = np.maximum(buy, sell)
    # totals are >= 0, so sides that differ have best > 0 (and votes > 0); no votes: share 0
    share = np.divide(best, votes, out=np.zeros(votes.shape), where=votes > 0)
    act = (buy != sell) & (share >= min_score)
    buying = buy > sell
    side_sum = np.where(buying, strength_sums[:, _BUY], strength_sums[:, _SELL])
    strength = np.divide(side_sum, best, out=np.zeros(best.shape), where=act)
    return Signals(
        np.where(act, np.where(buying, _BUY, _SELL), _HOLD),
        np.minimum(np.maximum(strength, 0.0), 1.0),
        np.minimum(np.maximum(np.where(act, share, 1.0 - share), 0.0), 1.0),
    )


def _clip01(x: float) -> float:
    """``min(max(x, 0.0), 1.0)`` (NaN stays NaN, as with the builtins)."""
    x = 0.0 if x < 0.0 else x
    return 1.0 if x > 1.0 else x


SignalLike = Signal | Action | tuple[Action, float] | tuple[Action, float, npt.ArrayLike] | None
"""What ``aggregate_signals`` takes for one analyst (see its docstring)."""


@overload
def aggregate_signals(
    signals: Sequence[SignalLike], weights: Sequence[float], /, *, min_score: float = 0.0
) -> Signal: ...


@overload
def aggregate_signals(
    *signals: SignalLike | list[SignalLike],
    weights: Sequence[float],
    min_score: float = 0.0,
) -> Signal: ...


def aggregate_signals(
    *signals: Any,
    weights: Sequence[float] | None = None,
    min_score: float = 0.0,
) -> Signal:
    """The weighted vote for one decision, as in the guide's Step 4.

    Two call forms, the same vote:

    * the guide's: one positional argument per analyst, then ``weights=`` by keyword,
      ``aggregate_signals(tech, news, risk, rl_action, weights=[1.0, 1.0, 1.0, 1.0])``;
    * a list: ``aggregate_signals([tech, news, risk, rl], [1.0, 1.0, 1.0, 1.0])`` (``weights``
      positional or keyword).

    Each analyst's signal, in the order of ``weights``, is one of: a ``Signal``; an ``Action``
    alone (strength 1, confidence 1: what the guide passes as ``rl_action`` after
    ``rl_action, rl_strength = policy.predict(state)``); an ``(action, strength)`` pair as
    ``policy.predict(state)`` returns it (confidence 1), which keeps the policy's strength; an
    ``(action, strength, probs)`` triple as ``policy.predict(state, return_probs=True)``
    returns it (confidence = the top probability, as ``RlAnalyst`` votes); or ``None`` (the
    analyst abstains, e.g. the RL fallback). Raises ``TypeError`` without weights and
    ``ValueError`` for a bad signal or weights (see ``vote_totals``).
    """
    if weights is None:
        if len(signals) != 2 or not isinstance(signals[0], (list, tuple)):
            raise TypeError(
                f"aggregate_signals() got {len(signals)} positional argument(s) and no "
                "weights; expected aggregate_signals(tech, news, risk, rl, weights=[...]) or "
                "aggregate_signals([tech, news, risk, rl], [...])"
            )
        signals, weights = tuple(signals[0]), signals[1]
    elif len(signals) == 1 and isinstance(signals[0], list):
        signals = tuple(signals[0])
    arrays: list[Signals | None] = []
    for sig in signals:
        one = _as_signal(sig)
        arrays.append(
            None
            if one is None
            else Signals(
                np.array([int(one.action)], dtype=np.int64),
                np.array([one.strength]),
                np.array([one.confidence]),
            )
        )
    return aggregate_signal_arrays(arrays, weights, min_score=min_score)[0]


def _as_signal(sig: Any) -> Signal | None:
    """One analyst's argument to ``aggregate_signals`` as a ``Signal`` (None: abstains)."""
    if sig is None or isinstance(sig, Signal):
        return sig
    if isinstance(sig, tuple):
        if len(sig) == 2:
            return Signal(Action(sig[0]), float(sig[1]))
        if len(sig) == 3:
            return Signal(Action(sig[0]), float(sig[1]), _clip01(float(np.max(sig[2]))))
        raise ValueError(
            f"a signal tuple has {len(sig)} items; expected (action, strength) or "
            "(action, strength, probs) as policy.predict returns"
        )
    if isinstance(sig, (int, np.integer)) and not isinstance(sig, bool):
        return Signal(Action(int(sig)), 1.0)
    raise ValueError(
        f"a signal is a {type(sig).__name__}; expected a Signal, an Action, (action, strength), "
        "(action, strength, probs) or None"
    )
