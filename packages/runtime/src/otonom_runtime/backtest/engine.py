"""The trading engine: the ensemble over one or many symbols' bars, each symbol trading its
own sleeve (the rules are in ``otonom_runtime.backtest``'s docstring). Nothing here reads or
writes a store.

* ``_Sleeve``: one symbol's cash and units; ``_Sleeve.steps`` is the one body of the
  mark/trade rules, driven either with every decision known up front (no RL analyst) or one
  day at a time (lockstep, the RL analyst's state needs the sleeve's portfolio).
* ``_simulate``: the analysts and the vote (``ensemble.vote_totals``, then
  ``decide_rows``, where the rule is written once) for every symbol, then the sleeves;
  ``simulate_symbol`` is one symbol's public form; with the RL analyst the sleeves advance
  day by day (``lockstep._lockstep``, which decides each day's few symbols by the same
  ``decide_rows``).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Final, cast

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import BacktestError
from otonom_runtime.backtest.lockstep import Board, _lockstep
from otonom_runtime.backtest.params import BUST_FLOOR, REBALANCE_THRESHOLD, EngineParams
from otonom_runtime.ensemble import RlAnalyst, Signals, decide_rows
from otonom_runtime.teacher import teacher_votes
from otonom_schema import Action

__all__ = ["SymbolResult", "simulate_symbol"]

_HOLD: Final = int(Action.HOLD)
_BUY: Final = int(Action.BUY)
F64 = npt.NDArray[np.float64]


@dataclass
class SymbolResult:
    """One symbol's simulation: per decision day (T,) arrays and the trades.

    ``rl_signals``: the RL analyst's vote per day (None with the RL analyst off);
    ``rl_voted``: (T,) bool, False on the days it fell back (its signal there is HOLD with
    strength and confidence 0, and no vote), None with the RL analyst off.
    """

    symbol: str
    dates: npt.NDArray[np.datetime64]
    actions: npt.NDArray[np.int64]
    strengths: F64
    signals: dict[str, Signals | None]
    rl_signals: Signals | None
    rl_voted: npt.NDArray[np.bool_] | None
    position: F64
    leverage: F64
    cash_fraction: F64
    days_since_last_trade: F64
    equity: F64
    exposure: F64
    trade_pnls: list[float]
    fills: int
    fallbacks: int


@dataclass(frozen=True)
class _Bars:
    """One symbol's inputs: its whole history's dates, opens, closes and (N, 34) market
    features; decisions are made on rows ``first ..``."""

    symbol: str
    dates: npt.NDArray[np.datetime64]
    opens: F64
    closes: F64
    market: F64
    first: int


class _Sleeve:
    """One symbol's sleeve while it is simulated, in plain Python floats (numpy scalars cost
    several times more per operation, and the loop is per bar).

    ``steps`` is the only place the rules of marking and trading are written; ``run`` drives
    it with every decision known up front. Every expression is the one the rules in the
    package docstring describe, evaluated in the same order, so the results do not depend on
    how the bars of several sleeves are interleaved.
    """

    __slots__ = (
        "allow_short",
        "bust",
        "cap",
        "cash",
        "closes",
        "comm",
        "day",
        "entry_equity",
        "equity",
        "exposure",
        "fills",
        "first",
        "floor",
        "last",
        "last_fill",
        "max_leverage",
        "n",
        "opens",
        "out",
        "slip",
        "trade_pnls",
        "units",
    )

    def __init__(self, bars: _Bars, params: EngineParams, capital: float, cap: list[float]):
        self.first = bars.first
        self.n = bars.market.shape[0] - bars.first
        self.closes: Sequence[float] = bars.closes.tolist()
        self.opens: Sequence[float] = bars.opens.tolist()
        # day numbers as floats (exact: far below 2**53), so days since a fill is one subtraction
        self.day: Sequence[float] = bars.dates.astype(np.int64).astype(np.float64).tolist()
        self.last = len(self.closes) - 1
        self.cap: Sequence[float] = cap  # per decision day: the risk multiplier x max_leverage
        self.slip = params.slippage_bps / 1e4
        self.comm = params.commission_bps / 1e4
        self.allow_short = params.allow_short
        self.max_leverage = params.max_leverage
        self.cash, self.units = capital, 0.0
        self.floor = capital * BUST_FLOOR
        self.bust = False
        self.last_fill = -math.inf  # day number of the last fill (-inf: none yet)
        self.entry_equity: float | None = None
        self.fills = 0
        self.trade_pnls: list[float] = []
        self.equity = 0.0
        self.exposure = 0.0
        # per decision day, flat (six numbers a day; no tuple per day for the garbage collector
        # to track): position, leverage, cash_fraction, days_since_last_trade, equity, exposure
        self.out: list[float] = []

    def resume(
        self,
        days: Sequence[float],
        opens: Sequence[float],
        closes: Sequence[float],
        cap: Sequence[float],
    ) -> None:
        """Put the sleeve, its cash, units and trades kept, on new bars, every one a decision
        day: ``days`` (day numbers as floats, as ``__init__`` makes them), ``opens``,
        ``closes``, ``cap`` (per day; lists or tuples, read only); its marks start anew
        (``out``, emptied in place). The daemon's paper broker resumes a sleeve where its
        previous tick left it, the bar it last marked first."""
        self.first, self.n, self.last = 0, len(closes), len(closes) - 1
        self.day, self.opens, self.closes, self.cap = days, opens, closes, cap
        self.out.clear()

    def run(self, actions: list[int], strengths: list[float]) -> None:
        """Every decision day with the decisions known up front (no RL analyst)."""
        next(self.steps(actions, strengths), None)

    def steps(
        self,
        actions: list[int],
        strengths: list[float],
        board: Board | None = None,
        place: int = 0,
    ) -> Generator[bool, None, None]:
        """The sleeve over its decision days k = 0 .. n-1: mark at the close of day k, then
        trade on day k's decision (``actions[k]``, ``strengths[k]``), filled at the next open.

        ``board`` (lockstep): after marking day k the sleeve puts that day's portfolio
        columns (``Board``: position, leverage, cash_fraction and the days since the last
        trade normalised by ``Board.days_feature``, once per distinct value) on
        ``board.portfolio`` and yields whether they lie within the schema's bounds
        (``board.bounds``, compared as ``columns_in_range`` compares them in float64); the
        caller, having decided day k into ``board.decided`` (``decide_rows``' flat rows,
        this sleeve's at row ``place``), resumes it (``next()``; the first call starts it),
        and the sleeve appends that decision to ``actions`` / ``strengths`` before trading
        on it; after the last day's decision it finishes (``StopIteration``). Without it, it
        never yields: one ``next()`` runs every day. One loop over locals (no per-bar method
        calls or attribute traffic); ``min()``/``max()`` are spelled out as conditionals
        (same operands, same order: bit-identical, NaN and -0.0 included) because the
        builtins cost ~0.1 us a call here.
        Long because it is the per-bar loop: splitting it into calls costs what this form
        saves.
        """
        # the bars from the first decision day on, indexed by k (the last bar: k == final)
        first = self.first
        closes, opens, day = self.closes, self.opens, self.day
        if first:  # (a resumed sleeve starts at 0: no copies of its few bars)
            closes, opens, day = closes[first:], opens[first:], day[first:]
        cap, final, floor = self.cap, self.last - first, self.floor
        max_leverage, slip, comm = self.max_leverage, self.slip, self.comm
        allow_short, min_leverage = self.allow_short, -self.max_leverage
        cash, units, bust = self.cash, self.units, self.bust
        last_fill, entry_equity, fills = self.last_fill, self.entry_equity, self.fills
        trade_pnls = self.trade_pnls
        append = self.out.extend
        hold, buy = _HOLD, _BUY
        equity = exposure = 0.0
        lockstep = board is not None
        if board is not None:
            put, features, days_feature = board.portfolio.extend, board.features, board.days_feature
            lo0, lo1, lo2, lo3, hi0, hi1, hi2, hi3 = board.bounds
            record_action, record_strength = actions.append, strengths.append
            at = 3 * place  # where the sleeve's decision is in ``board.decided`` (a small int)
        for k in range(self.n):
            # --- mark at the close of day k
            close = closes[k]
            value = units * close
            equity = cash + value
            if equity <= floor and not bust:
                # wiped out: the sleeve is closed at this close and trades no more
                bust, units, cash = True, 0.0, floor
                value = units * close
                equity = floor
            exposure = value / equity if equity > 0 else 0.0
            days = day[k] - last_fill  # inf before the first fill
            position = exposure / max_leverage
            position = position if position > -1.0 else -1.0  # max(-1.0, position)
            position = position if position < 1.0 else 1.0  # min(1.0, position)
            gross = abs(exposure)
            leverage = 4.0 if gross > 4.0 else gross  # min(gross, 4.0)
            cash_fraction = 1.0 - gross
            cash_fraction = cash_fraction if cash_fraction > 0.0 else 0.0  # max(0.0, 1 - gross)
            append((position, leverage, cash_fraction, days, equity, exposure))
            if lockstep:
                try:
                    feature = features[days]
                except KeyError:  # the first day with this value
                    feature = days_feature(days)
                put((position, leverage, cash_fraction, feature))
                # unchained comparisons in an ``if``: each a specialised float compare and
                # jump (a chained one, or one whose value is kept, is not: ~2x the cost)
                if (
                    lo0 <= position
                    and position <= hi0
                    and lo1 <= leverage
                    and leverage <= hi1
                    and lo2 <= cash_fraction
                    and cash_fraction <= hi2
                    and lo3 <= feature
                    and feature <= hi3
                ):
                    yield True
                else:
                    yield False
                decided = board.decided  # type: ignore[union-attr]
                record_action(decided[at])  # type: ignore[arg-type]  # the rows' actions: ints
                record_strength(decided[at + 1])
            # --- trade on day k's decision (the last day's is recorded, never filled)
            if k >= final or bust:
                continue
            action = actions[k]
            if action == hold:
                # keep the position, but never beyond the leverage cap (price moves inflate it)
                target = min_leverage if min_leverage > exposure else exposure
                target = max_leverage if max_leverage < target else target
                if target == exposure:
                    continue
            else:
                size = strengths[k] * cap[k]
                target = size if action == buy else (-size if allow_short else 0.0)
            if abs(target - exposure) < REBALANCE_THRESHOLD and not (
                target == 0.0 and units != 0.0
            ):
                continue
            # fill at the next open
            price_open = opens[k + 1]
            equity_open = cash + units * price_open
            new_units = target * equity_open / price_open
            delta = new_units - units
            if delta == 0.0:
                continue
            price = price_open * (1.0 + slip if delta > 0 else 1.0 - slip)
            cash -= delta * price + abs(delta * price) * comm
            old_units = units
            units = new_units
            fills += 1
            last_fill = day[k + 1]
            equity_after = cash + new_units * price_open
            # A trade runs from opening a side (from flat, or a flip) to leaving it; its pnl is
            # the sleeve's equity change over that span, entry and exit costs included.
            flipped = old_units != 0.0 and (new_units == 0.0 or (new_units > 0) != (old_units > 0))
            if flipped and entry_equity is not None:
                trade_pnls.append(equity_after - entry_equity)
                entry_equity = None
            if new_units != 0.0 and entry_equity is None:
                entry_equity = equity_open if old_units == 0.0 else equity_after
        self.cash, self.units, self.bust = cash, units, bust
        self.last_fill, self.entry_equity, self.fills = last_fill, entry_equity, fills
        self.equity, self.exposure = equity, exposure

    def result(
        self,
        bars: _Bars,
        actions: list[int],
        strengths: list[float],
        signals: dict[str, Signals | None],
        rl: tuple[Signals, npt.NDArray[np.bool_], int] | None,
    ) -> SymbolResult:
        """The finished sleeve as a ``SymbolResult``; ``rl``: the RL analyst's votes, where
        it voted, and its fallbacks (None with the RL analyst off)."""
        if self.entry_equity is not None:  # a trade still open at the end: closed at the last close
            self.trade_pnls.append(self.out[-2] - self.entry_equity)  # the last day's equity
        # fromiter: the same floats as np.array, without its nested-sequence probing
        days = np.fromiter(self.out, dtype=np.float64, count=len(self.out)).reshape(-1, 6)
        out = list(days.T.copy())  # each column contiguous
        return SymbolResult(
            symbol=bars.symbol,
            dates=bars.dates[bars.first :],
            actions=np.fromiter(actions, dtype=np.int64, count=len(actions)),
            strengths=np.fromiter(strengths, dtype=np.float64, count=len(strengths)),
            signals=signals,
            rl_signals=None if rl is None else rl[0],
            rl_voted=None if rl is None else rl[1],
            position=out[0],
            leverage=out[1],
            cash_fraction=out[2],
            days_since_last_trade=out[3],
            equity=out[4],
            exposure=out[5],
            trade_pnls=self.trade_pnls,
            fills=self.fills,
            fallbacks=0 if rl is None else rl[2],
        )


@dataclass
class _Prepared:
    """One symbol ready to simulate: its sleeve, the three analysts' signals and their votes
    (``vote_totals``: (T, 3) totals and strength sums)."""

    bars: _Bars
    sleeve: _Sleeve
    signals: dict[str, Signals | None]
    totals: F64
    strength_sums: F64


def _prepare(bars: _Bars, params: EngineParams, capital: float) -> _Prepared:
    states = bars.market[bars.first :]
    signals, totals, strength_sums = teacher_votes(params, states)
    cap: list[float] = (params.risk.exposure(states) * params.max_leverage).tolist()
    return _Prepared(bars, _Sleeve(bars, params, capital, cap), signals, totals, strength_sums)


def _simulate(
    symbols: Sequence[_Bars],
    params: EngineParams,
    capital: float,
    rls: Sequence[RlAnalyst] | None = None,
) -> list[SymbolResult]:
    """Simulate each symbol's sleeve (see ``simulate_symbol``); ``rls``: one RL analyst per
    symbol, all sharing one policy, or None for the 3-analyst ensemble.

    Without the RL analyst every decision is known up front (the analysts read market features
    only), so each sleeve runs on its own. With it, see ``_lockstep``.
    """
    prepared = [_prepare(bars, params, capital) for bars in symbols]
    if rls is None:
        results = []
        for p in prepared:
            decided = decide_rows(
                p.totals.ravel().tolist(),
                p.strength_sums.ravel().tolist(),
                None,
                0.0,
                params.min_score,
            )
            actions = cast("list[int]", decided[0::3])  # the rows' actions are ints
            strengths = decided[1::3]
            p.sleeve.run(actions, strengths)
            results.append(p.sleeve.result(p.bars, actions, strengths, p.signals, None))
        return results
    if len(rls) != len(symbols):
        raise BacktestError(f"{len(rls)} RL analysts for {len(symbols)} symbols; expected one each")
    return _lockstep(prepared, params, rls)


def simulate_symbol(
    symbol: str,
    dates: npt.NDArray[np.datetime64],
    opens: F64,
    closes: F64,
    market: F64,
    first: int,
    params: EngineParams,
    capital: float,
    rl: RlAnalyst | None = None,
) -> SymbolResult:
    """Run the ensemble on one symbol's bars ``first ..`` (decision days) and trade its sleeve.

    ``market``: the (N, 34) feature matrix of the whole history (``market_feature_matrix``);
    rows before ``first`` are warm-up only. ``rl``: the RL analyst, or None for the 3-analyst
    ensemble (its weight then counts for nothing).
    """
    bars = _Bars(symbol, dates, opens, closes, market, first)
    return _simulate([bars], params, capital, None if rl is None else [rl])[0]
