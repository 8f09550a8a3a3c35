"""``Signal`` and ``Signals`` (an analyst's or the ensemble's verdict on one state and on many)
and the one vote that makes the ensemble's decision from them (the rule:
``otonom_runtime.ensemble``'s docstring, which exports all of this): ``vote_totals``,
``add_votes`` and ``decide`` on arrays, ``decide_rows`` (the same rule in Python floats, for a
few rows), ``aggregate_signal_arrays`` and ``aggregate_signals``.

The RL analyst's deployment mode (``RlMode``, a strategy's ``ensemble.rl_policy.mode``) is
applied here too, by ``decide_rows`` (``rows_decider`` resolves it once for a run), so every
consumer (the backtester, its lockstep, the learning environment's episode, the daemon's
tick) decides alike:

* ``"voter"`` (the default, the guide's Step 4): the policy's vote is the 4th analyst's,
  added at its weight; the vote decides;
* ``"sole"``: the policy's ``action, strength, confidence`` is the decision;
* ``"filter"``: the three analysts' vote decides (the RL weight counts for nothing) and the
  policy filters it: a BUY or SELL is vetoed (HOLD, strength 0, the policy's confidence) when
  the policy disagrees (``veto``: ``"opposite"``, it votes the other side; ``"differs"``, it
  votes anything else, HOLD included; ``"off"``, never), and with ``size`` a kept BUY/SELL the
  policy votes too has its strength multiplied by the policy's. A HOLD stays a HOLD: the filter
  never opens a trade the ensemble did not.

In every mode a row without an RL vote (the RL analyst fell back: no model, a bad output) is
the three analysts' plain vote, as in ``"voter"``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast, overload

import numpy as np
import numpy.typing as npt

from otonom_schema import Action

__all__ = [
    "FILTER_VETOES",
    "RL_MODES",
    "RlMode",
    "RlVote",
    "Signal",
    "SignalLike",
    "Signals",
    "add_votes",
    "aggregate_signal_arrays",
    "aggregate_signals",
    "decide",
    "decide_rows",
    "rows_decider",
    "vote_totals",
]

F64 = npt.NDArray[np.float64]
_HOLD: Final = int(Action.HOLD)
_BUY: Final = int(Action.BUY)
_SELL: Final = int(Action.SELL)
_ACTIONS: Final = np.array([_HOLD, _BUY, _SELL])  # a column per action, in Action's order

RlVote = tuple[int, float, float]
"""An RL analyst's verdict as plain numbers: ``(action, strength, confidence)``."""

RL_MODES: Final = ("voter", "sole", "filter")
"""How the RL analyst's vote makes the decision (the module docstring; ``RlMode.name``)."""
FILTER_VETOES: Final = ("opposite", "differs", "off")
"""When ``"filter"`` vetoes the ensemble's BUY/SELL (the module docstring; ``RlMode.veto``)."""


@dataclass(frozen=True)
class RlMode:
    """The RL analyst's deployment mode: ``name`` one of ``RL_MODES``; ``veto`` (one of
    ``FILTER_VETOES``) and ``size`` apply to ``"filter"`` only (see the module docstring)."""

    name: str = "voter"
    veto: str = "opposite"
    size: bool = False

    def __post_init__(self) -> None:
        if self.name not in RL_MODES:
            raise ValueError(f"RL mode is {self.name!r}; expected one of {', '.join(RL_MODES)}")
        if self.veto not in FILTER_VETOES:
            raise ValueError(
                f"filter veto is {self.veto!r}; expected one of {', '.join(FILTER_VETOES)}"
            )
        if not isinstance(self.size, bool):
            raise ValueError(f"filter size is {self.size!r}; expected true or false")

    @property
    def voter(self) -> bool:
        """Whether the policy is the 4th voter (its weight counts)."""
        return self.name == "voter"


VOTER: Final = RlMode()


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

    def to_list(self) -> list[Signal]:
        """``[self[i] for i in range(len(self))]``, the arrays read once."""
        return [
            Signal(a, s, c)  # the action made an Action by Signal itself
            for a, s, c in zip(
                self.actions.tolist(),
                self.strengths.tolist(),
                self.confidences.tolist(),
                strict=True,
            )
        ]

    @classmethod
    def from_scores(cls, score: F64, threshold: float, confidence: F64) -> Signals:
        """BUY where ``score >= threshold``, SELL where ``score <= -threshold``, else HOLD;
        strength ``|score|`` (clipped to [0, 1]) for BUY/SELL and 0 for HOLD."""
        actions = np.full(score.shape[0], int(Action.HOLD), dtype=np.int64)
        actions[score >= threshold] = int(Action.BUY)
        actions[score <= -threshold] = int(Action.SELL)
        strength = np.where(actions == Action.HOLD, 0.0, np.minimum(np.abs(score), 1.0))
        return cls(actions, strength, np.clip(confidence, 0.0, 1.0))


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

    The array form of ``decide_rows``, where the rule is written (once: the backtester decides
    whole histories and, with the RL analyst, each day's few symbols with it).
    """
    n = totals.shape[0]
    if totals.shape != (n, 3) or strength_sums.shape != (n, 3):
        raise ValueError(
            f"totals {totals.shape} and strength sums {strength_sums.shape}; expected (N, 3) each"
        )
    rows = decide_rows(
        totals.ravel().tolist(), strength_sums.ravel().tolist(), None, 0.0, min_score
    )
    return Signals(
        np.array(rows[0::3], dtype=np.int64),
        np.array(rows[1::3], dtype=np.float64),
        np.array(rows[2::3], dtype=np.float64),
    )


def decide_rows(
    totals: Sequence[float],
    strength_sums: Sequence[float],
    votes: Sequence[float | None] | None,
    weight: float,
    min_score: float,
    mode: RlMode = VOTER,
) -> list[float]:
    """The ensemble's vote for a few or many states, in plain Python floats: the rule is
    written here once (``decide`` is its array form). Row i's ``totals`` and
    ``strength_sums`` (``vote_totals``' two (N, 3) arrays flattened row by row,
    ``ravel().tolist()``: three numbers a row, by ``Action``), plus row i's vote in ``votes``
    (one more analyst's ``action, strength, confidence``, flat like the totals: three numbers
    a row, added at ``weight`` as ``add_votes`` adds; an action of None: that row gets no
    vote; ``votes`` None: no row does), decided: BUY or SELL, whichever has more votes, when
    its share of all votes reaches ``min_score``, else HOLD (see ``decide``). Returns per row
    the ensemble's ``action, strength, confidence``, flat (three numbers a row; the action an
    ``int``): no tuple per row for the garbage collector to track.

    NaN totals propagate as ``np.maximum`` propagates them and no votes give a share of 0.
    The backtester's lockstep decides ten-odd symbols a day with it (an array form costs ~25
    numpy calls a day there); whole histories take ~0.3 us a row.

    ``mode``: the RL analyst's deployment mode (``RlMode``; the module docstring): the vote
    above is ``"voter"``'s; ``"sole"`` and ``"filter"`` make the decision of a row with a vote
    from that row's three-analyst vote and its RL vote (``weight`` unused).
    """
    if mode.name != "voter" and votes is not None:
        return _moded_rows(mode, totals, strength_sums, votes, min_score)
    n = len(totals)
    if not (n == len(strength_sums) and n % 3 == 0 and (votes is None or len(votes) == n)):
        raise _shape_error(totals, strength_sums, votes)
    out: list[float] = []
    put = out.extend
    hold_action, buy_action, sell_action = _HOLD, _BUY, _SELL
    t, s = iter(totals), iter(strength_sums)
    v: Iterator[float | None] = itertools.repeat(None) if votes is None else iter(votes)
    # one zip, nine numbers a row: nested zips cost a tuple each a row
    rows = zip(t, t, t, s, s, s, v, v, v, strict=False)  # ``v`` may repeat None forever
    for hold, buy, sell, _, buy_sum, sell_sum, voted, vote_strength, vote_confidence in rows:
        if voted is not None:  # add_votes: + weight x confidence to the action voted for
            weighed = weight * vote_confidence
            if voted == buy_action:
                buy += weighed
                buy_sum += weighed * vote_strength
            elif voted == sell_action:
                sell += weighed
                sell_sum += weighed * vote_strength
            elif voted == hold_action:
                hold += weighed
        # decide
        total = hold + buy + sell
        best = buy if buy >= sell or buy != buy else sell  # np.maximum: NaN propagates
        share = best / total if total > 0 else 0.0
        if buy != sell and share >= min_score:
            buying = buy > sell
            action = buy_action if buying else sell_action
            strength = (buy_sum if buying else sell_sum) / best
            confidence = share
        else:
            action, strength, confidence = hold_action, 0.0, 1.0 - share
        strength = 0.0 if strength < 0.0 else strength  # np.maximum(x, 0.0): NaN stays
        confidence = 0.0 if confidence < 0.0 else confidence
        put(
            (
                action,
                1.0 if strength > 1.0 else strength,
                1.0 if confidence > 1.0 else confidence,
            )
        )
    return out


def _shape_error(
    totals: Sequence[float], strength_sums: Sequence[float], votes: Sequence[float | None] | None
) -> ValueError:
    given = "no" if votes is None else len(votes)
    return ValueError(
        f"{len(totals)} totals, {len(strength_sums)} strength sums and {given} vote numbers; "
        "expected three of each a row (no votes: None)"
    )


RowsDecider = Callable[
    [Sequence[float], Sequence[float], Sequence[float | None] | None, float, float], list[float]
]
"""``decide_rows`` with its mode bound: ``(totals, strength_sums, votes, weight, min_score)``."""


def rows_decider(mode: RlMode) -> RowsDecider:
    """``decide_rows`` in ``mode``, resolved once (a run's lockstep calls it every day):
    ``"voter"`` gets ``decide_rows`` itself, so its path is the one it always was."""
    if mode.voter:
        return decide_rows
    return functools.partial(decide_rows, mode=mode)


def _moded_rows(
    mode: RlMode,
    totals: Sequence[float],
    strength_sums: Sequence[float],
    votes: Sequence[float | None],
    min_score: float,
) -> list[float]:
    """``decide_rows`` in ``"sole"`` or ``"filter"`` mode: each row's three-analyst vote,
    then, where the row has an RL vote, that vote as the decision (``"sole"``) or as the
    filter of the row's decision (``"filter"``; see the module docstring)."""
    if len(votes) != len(totals):
        raise _shape_error(totals, strength_sums, votes)
    out = decide_rows(totals, strength_sums, None, 0.0, min_score)
    sole, hold = mode.name == "sole", _HOLD
    veto, size = mode.veto, mode.size
    for at in range(0, len(out), 3):
        voted = votes[at]
        if voted is None:  # fell back: the three analysts' vote
            continue
        # a row with an action has its strength and confidence (decide_rows' votes)
        strength, confidence = cast("float", votes[at + 1]), cast("float", votes[at + 2])
        action = int(voted)
        if sole:
            out[at : at + 3] = (action, strength, confidence)
            continue
        decided = out[at]
        if decided == hold or action == decided:
            if size and action == decided:
                out[at + 1] = _clip01(out[at + 1] * strength)
            continue
        if veto == "differs" or (veto == "opposite" and action != hold):
            out[at : at + 3] = (hold, 0.0, confidence)
    return out


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
