"""The sleeves with the RL analyst, advanced day by day in lockstep (``engine._simulate``'s RL
path): the state of day k holds each sleeve's portfolio after the decisions before k, so the
policy runs once per day on all symbols' states.

Each day takes one of two paths, with the same results (tested):

* the bound day (the common case): the day's states are written straight into the policy's
  pre-bound input (``RlPolicy.bound_batch`` / ``predict_bound``), its outputs read as Python
  numbers, and the vote decided by ``ensemble.decide_rows`` (the one vote, in Python
  floats, with the RL votes added as ``add_votes`` adds, or applied as the strategy's RL mode
  says: ``rows_decider``, resolved once a run): a few numpy calls a day instead of some forty;
* the general day: ``rl_votes`` on the day's states, as every day ran before. It runs where
  the bound day cannot be sure of the outcome: no bound policy (none, another kind, analysts
  not sharing one, more than 64 symbols), market states that failed validation (then every
  day: the bad day's whole validation raises the ``SchemaError`` naming its row), a
  portfolio column out of range (``SchemaError`` from the day's whole validation), or an
  output ``predict_bound`` does not accept (the contract's ``PolicyError`` and the fallback
  row by row, or an RL vote outside [0, 1], exactly as before: that day only).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime.ensemble import RlAnalyst, Signals, rl_votes, rows_decider
from otonom_schema import (
    FEATURES,
    PORTFOLIO_COLUMNS,
    RANGE_TOLERANCE,
    STATE_DIM,
    PortfolioSnapshot,
    SchemaError,
    columns_in_range,
    validate_states,
)

if TYPE_CHECKING:
    from otonom_runtime.backtest.engine import SymbolResult, _Prepared
    from otonom_runtime.backtest.params import EngineParams

__all__: list[str] = []

_CHUNK: Final = 256  # days of RL states gathered at a time
_LOW: Final = (
    np.array([f.low for f in FEATURES[PORTFOLIO_COLUMNS]], dtype=np.float64) - RANGE_TOLERANCE
).tolist()
_HIGH: Final = (
    np.array([f.high for f in FEATURES[PORTFOLIO_COLUMNS]], dtype=np.float64) + RANGE_TOLERANCE
).tolist()
"""The portfolio columns' bounds as ``columns_in_range`` compares float64 values with them."""

Sleeve = Generator[bool, None, None]


class Board:
    """What the lockstep shares with its sleeves (``_Sleeve.steps``): the day before's
    decisions (``decide_rows``' flat rows, by place), the day's portfolio columns (four
    numbers a sleeve, by place, cleared each day), the days-since-trade feature of each
    distinct raw value (``days_feature``), and the portfolio columns' bounds (``_LOW``,
    ``_HIGH``)."""

    __slots__ = ("bounds", "decided", "features", "portfolio")

    def __init__(self) -> None:
        self.decided: list[float] = []
        self.portfolio: list[float] = []
        self.features: dict[float, float] = {}
        self.bounds: tuple[float, ...] = (*_LOW, *_HIGH)

    def days_feature(self, days: float) -> float:
        """The schema's normalisation of days since the last trade, once per distinct
        value."""
        feature = self.features[days] = float(
            PortfolioSnapshot(days_since_last_trade=days).features()[3]
        )
        return feature


def _lockstep(
    prepared: Sequence[_Prepared], params: EngineParams, rls: Sequence[RlAnalyst]
) -> list[SymbolResult]:
    """The sleeves with the RL analyst: the state of day k holds that sleeve's portfolio
    after the decisions before k, so the sleeves advance in lockstep, day by day, and the
    policy is called once per day on the states of all symbols (a (n_symbols, 34) batch)
    instead of once per symbol-day; the RL votes are added to the three analysts' totals and
    decided for all symbols of the day at once, in the strategy's RL mode (see the module
    docstring for the day's two paths). Sleeves never interact, so the order changes nothing.

    Day k's batch holds the symbols that still have a decision day k: the longest first, so
    they are always a prefix (``j``: a symbol's place in that order). States are gathered
    ``_CHUNK`` days at a time, day-major (days, symbols, 34), in the market features' dtype
    (so validation sees what it always saw), validated once per symbol (``_validated``).
    Long because it is the day loop: its state (sleeves, chunk, slot) lives in locals.
    """
    n_sym = len(prepared)
    order = sorted(range(n_sym), key=lambda i: -prepared[i].sleeve.n)
    alive = [prepared[i].sleeve.n for i in order]
    n_max = alive[0]
    analysts = [rls[i] for i in order]
    dtype = np.result_type(*(p.bars.market.dtype for p in prepared))
    actions_out: list[list[int]] = [[] for _ in range(n_sym)]
    strengths_out: list[list[float]] = [[] for _ in range(n_sym)]
    board = Board()
    sleeves = [
        prepared[i].sleeve.steps(actions_out[i], strengths_out[i], board, j)
        for j, i in enumerate(order)
    ]
    # day-major, by place j: the three analysts' vote totals and strength sums
    totals = np.zeros((n_max, n_sym, 3))
    sums = np.zeros((n_max, n_sym, 3))
    for j, i in enumerate(order):
        totals[: alive[j], j] = prepared[i].totals
        sums[: alive[j], j] = prepared[i].strength_sums
    policy = _bound_policy(analysts, dtype)
    # per day, by place j, end to end: the RL votes, flat (action, strength, confidence of
    # each; no tuple kept per vote for the garbage collector to track)
    rl: list[float] = []
    keep = rl.extend
    fell_back: list[int] = []  # which votes (their index, not their place in ``rl``) fell back
    sizes: list[int] = []
    w_rl, min_score = params.weights[3], params.min_score
    decide_rows = rows_decider(params.rl_mode)  # the RL mode, resolved once
    # each symbol's decision days' market states, by place j, validated once
    markets = [prepared[i].bars.market[prepared[i].bars.first :] for i in order]
    valid = _validated(markets, dtype)
    buffer = np.empty((min(_CHUNK, n_max), n_sym, STATE_DIM), dtype=np.float32)
    m, width = n_sym, 3 * n_sym
    live, slot, inputs, port, columns, pack = _batch(sleeves, m, policy)
    portfolio, clear = board.portfolio, board.portfolio.clear
    for k0 in range(0, n_max, _CHUNK):
        k1 = min(k0 + _CHUNK, n_max)
        chunk32 = _states(markets, k0, k1, buffer) if valid else None
        # flat: nested lists (one per row) would feed the garbage collector thousands of
        # objects a chunk, and its full passes cost more than the lists save
        chunk_totals, chunk_sums = totals[k0:k1].ravel().tolist(), sums[k0:k1].ravel().tolist()
        for k in range(k0, k1):
            if alive[m - 1] <= k:  # the shortest histories have ended
                ended = m
                while alive[m - 1] <= k:
                    m -= 1
                _finish(sleeves[m:ended])
                live, slot, inputs, port, columns, pack = _batch(sleeves, m, policy)
            clear()
            in_range = True
            for sleeve in live:  # each sleeve's step; a loop costs less than map(next, ...)
                if not next(sleeve):
                    in_range = False
            votes: list[float] | None = None
            if slot is not None and chunk32 is not None and in_range:  # the bound day
                inputs[:] = chunk32[k - k0, :m]
                pack(columns, 0, *portfolio)
                port[...] = columns
                votes = policy.predict_bound(slot)
            if votes is not None:
                keep(votes)
                day_votes: list[float] | list[float | None] = votes
            else:  # the general day
                raw, ok = _general_day(analysts[:m], markets, chunk32, k, k0, portfolio, dtype)
                fell_back += [len(rl) // 3 + j for j, o in enumerate(ok) if not o]
                keep(raw)
                day_votes = [None if not ok[i // 3] else v for i, v in enumerate(raw)]
            sizes.append(m)
            at = (k - k0) * width
            board.decided = decide_rows(
                chunk_totals[at : at + 3 * m],
                chunk_sums[at : at + 3 * m],
                day_votes,
                w_rl,
                min_score,
            )
    _finish(sleeves[:m])  # the last day's decisions: nothing to fill
    return _results(prepared, order, alive, rls, actions_out, strengths_out, rl, fell_back, sizes)


def _bound_policy(analysts: Sequence[RlAnalyst], dtype: np.dtype[Any]) -> Any:
    """The analysts' shared policy when the bound day may run it (it has ``bound_batch`` and
    ``predict_bound``, and the states are float64, whose portfolio columns the sleeves
    check as ``columns_in_range`` does), else None: every day is a general day."""
    policy = analysts[0].policy if analysts else None
    if (
        policy is None
        or dtype != np.float64
        or any(a.policy is not policy for a in analysts)  # rl_votes refuses them each day
        or not hasattr(policy, "bound_batch")
        or not hasattr(policy, "predict_bound")
    ):
        return None
    return policy


def _batch(sleeves: list[Sleeve], m: int, policy: Any) -> tuple[Any, ...]:
    """The day's first ``m`` sleeves and, with a bound policy, its slot for ``m`` states,
    that slot's input, the input's portfolio columns and a float32 (m, 4) array with the
    ``pack_into`` that writes ``4 m`` numbers into it (None: no bound day).

    ``struct``'s float32 is the C cast numpy's is (the same bits); it refuses only numbers
    beyond float32's range, which the bound day never writes (its columns are in the
    schema's bounds). It writes the day's numbers at a third of what ``numpy`` takes to
    convert the list."""
    slot = None if policy is None else policy.bound_batch(m)
    if slot is None:
        return sleeves[:m], None, None, None, None, None
    pack = struct.Struct(f"{4 * m}f").pack_into
    columns = np.empty((m, 4), dtype=np.float32)
    return sleeves[:m], slot, slot.state, slot.state[:, PORTFOLIO_COLUMNS], columns, pack


def _finish(sleeves: Sequence[Sleeve]) -> None:
    """Each sleeve records its last day's decision (nothing to fill) and finishes."""
    for sleeve in sleeves:
        try:
            next(sleeve)
        except StopIteration:
            continue
        raise AssertionError("a sleeve went on past its last day")  # pragma: no cover


def _general_day(
    analysts: Sequence[RlAnalyst],
    markets: Sequence[npt.NDArray[np.floating]],
    chunk32: npt.NDArray[np.float32] | None,
    k: int,
    k0: int,
    portfolio: list[float],
    dtype: np.dtype[Any],
) -> tuple[list[float], list[bool]]:
    """Day ``k``'s RL votes through ``rl_votes``, flat (three numbers a row), and where they voted
    (False: that analyst fell back): the day's rows from ``chunk32`` (``_states`` from day
    ``k0``) when they are valid, else from ``markets`` in ``dtype``, validated whole
    (``SchemaError`` names the bad row). ``portfolio``: the board's, four numbers a
    row."""
    m = len(analysts)
    port = np.array(portfolio, dtype=dtype).reshape(m, len(_LOW))
    valid = chunk32 is not None and columns_in_range(port, PORTFOLIO_COLUMNS)
    if valid:  # the day's rows, valid: straight to the model
        rows = chunk32[k - k0, :m]  # type: ignore[index]
    else:
        rows = np.array([market[k] for market in markets[:m]], dtype=dtype)
    rows[:, PORTFOLIO_COLUMNS] = port
    votes, voted = rl_votes(analysts, rows, validated=valid)
    fields = (votes.actions.tolist(), votes.strengths.tolist(), votes.confidences.tolist())
    return list(itertools.chain.from_iterable(zip(*fields, strict=True))), voted.tolist()


def _results(
    prepared: Sequence[_Prepared],
    order: list[int],
    alive: list[int],
    rls: Sequence[RlAnalyst],
    actions_out: list[list[int]],
    strengths_out: list[list[float]],
    rl: list[float],
    fell_back: list[int],
    sizes: list[int],
) -> list[SymbolResult]:
    """The finished sleeves as ``SymbolResult``s, each with its RL votes: ``rl`` holds those
    of the days end to end (three numbers a vote), day k's ``sizes[k]`` votes by place, so
    symbol j's vote of day k is vote ``starts[k] + j``; ``fell_back``: the votes where the
    analyst did not vote."""
    # the flat numbers in one array (actions 0 .. 2 are exact as floats)
    votes = np.fromiter(rl, dtype=np.float64, count=len(rl)).reshape(-1, 3)
    flat = (votes[:, 0].astype(np.int64), votes[:, 1], votes[:, 2])
    voted_all = np.ones(votes.shape[0], dtype=np.bool_)
    voted_all[fell_back] = False
    starts = np.cumsum([0, *sizes[:-1]])
    results: list[SymbolResult] = [None] * len(order)  # type: ignore[list-item]
    for j, i in enumerate(order):
        p, n = prepared[i], alive[j]
        at = starts[:n] + j
        rl_j = (Signals(*(a[at] for a in flat)), voted_all[at], rls[i].fallbacks)
        results[i] = p.sleeve.result(p.bars, actions_out[i], strengths_out[i], p.signals, rl_j)
    return results


def _validated(markets: Sequence[npt.NDArray[np.floating]], dtype: np.dtype[Any]) -> bool:
    """Whether every symbol's decision days' market states (in ``dtype``, the day's batch's)
    are valid (``otonom_schema.validate_states``: the market columns, with the portfolio
    columns' neutral values); if not, each day's states are validated whole, so the error
    names the bad day's row as it always did.

    Valid rows then need only their portfolio columns checked (``columns_in_range``, in
    ``dtype``) before they are written in: float32 rounding is the same for ``_states``' cast
    and the row's cast at validation, so the model sees the same bytes. The float32 copy
    ``validate_states`` returns is dropped at once (ten symbols' kept would be ~5 MB of fresh
    pages a run; ``_states`` casts a chunk at a time into one buffer).
    """
    try:
        for market in markets:
            validate_states(market.astype(dtype, copy=False))
    except SchemaError:
        return False
    return True


def _states(
    markets: Sequence[npt.NDArray[np.floating]], k0: int, k1: int, buffer: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """The market states (``_validated``) of decision days ``k0 .. k1`` of every symbol, as
    float32, day-major (days, symbols by place, 34), written into ``buffer`` (rows where a
    history has ended are left as they were: the day's batch never holds them; the
    portfolio columns are filled in day by day)."""
    chunk = buffer[: k1 - k0]
    for j, market in enumerate(markets):
        span = market[k0:k1]
        chunk[: span.shape[0], j] = span
    return chunk
