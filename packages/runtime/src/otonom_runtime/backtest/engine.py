"""The trading engine: the ensemble over one or many symbols' bars, each symbol trading its
own sleeve (the rules are in ``otonom_runtime.backtest``'s docstring). Nothing here reads or
writes a store.

* ``_Sleeve``: one symbol's cash and units; ``_Sleeve.steps`` is the one body of the
  mark/trade rules, driven either with every decision known up front (no RL analyst) or one
  day at a time (lockstep, the RL analyst's state needs the sleeve's portfolio).
* ``_simulate``: the analysts and the vote (``ensemble.vote_totals`` / ``add_votes`` /
  ``decide``, the one vote) for every symbol, then the sleeves; ``simulate_symbol`` is one
  symbol's public form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import BacktestError
from otonom_runtime.backtest.params import BUST_FLOOR, REBALANCE_THRESHOLD, EngineParams
from otonom_runtime.ensemble import (
    RlAnalyst,
    Signals,
    add_votes,
    decide,
    rl_votes,
    vote_totals,
)
from otonom_schema import (
    PORTFOLIO_COLUMNS,
    STATE_DIM,
    Action,
    PortfolioSnapshot,
    SchemaError,
    columns_in_range,
    validate_states,
)

__all__ = ["SymbolResult", "simulate_symbol"]

_CHUNK: Final = 256  # days of RL states gathered at a time (lockstep simulation)
_HOLD: Final = int(Action.HOLD)
_BUY: Final = int(Action.BUY)
F64 = npt.NDArray[np.float64]
Features = tuple[float, float, float, float]
"""A sleeve's portfolio features at a close: position, leverage, cash_fraction and the raw
days since the last trade (``inf`` before the first)."""


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
        self.closes: list[float] = bars.closes.tolist()
        self.opens: list[float] = bars.opens.tolist()
        self.day: list[int] = bars.dates.astype(np.int64).tolist()
        self.last = len(self.closes) - 1
        self.cap = cap  # per decision day: the risk multiplier x max_leverage
        self.slip = params.slippage_bps / 1e4
        self.comm = params.commission_bps / 1e4
        self.allow_short = params.allow_short
        self.max_leverage = params.max_leverage
        self.cash, self.units = capital, 0.0
        self.floor = capital * BUST_FLOOR
        self.bust = False
        self.last_fill: int | None = None  # day number of the last fill
        self.entry_equity: float | None = None
        self.fills = 0
        self.trade_pnls: list[float] = []
        self.equity = 0.0
        self.exposure = 0.0
        # per decision day: position, leverage, cash_fraction, days_since_last_trade, equity,
        # exposure
        self.out: list[tuple[float, float, float, float, float, float]] = []

    def run(self, actions: list[int], strengths: list[float]) -> None:
        """Every decision day with the decisions known up front (no RL analyst)."""
        next(self.steps(actions, strengths, lockstep=False), None)

    def steps(
        self, actions: list[int], strengths: list[float], *, lockstep: bool
    ) -> Generator[Features, None, None]:
        """The sleeve over its decision days k = 0 .. n-1: mark at the close of day k, then
        trade on day k's decision (``actions[k]``, ``strengths[k]``), filled at the next open.

        ``lockstep``: after marking day k it yields the portfolio ``Features`` the state of
        day k sees; the caller appends day k's decision to ``actions`` / ``strengths`` and
        resumes it (once more after the last day, to finish). Without it, it never yields:
        one ``next()`` runs every day. One loop over locals (no per-bar method calls or
        attribute traffic); ``min()``/``max()`` are spelled out as conditionals (same
        operands, same order: bit-identical, NaN and -0.0 included) because the builtins cost
        ~0.1 us a call here. Longer than 80 lines because it is the per-bar loop: splitting it
        into calls costs what this form saves.
        """
        closes, opens, day, cap = self.closes, self.opens, self.day, self.cap
        first, last, floor = self.first, self.last, self.floor
        max_leverage, slip, comm = self.max_leverage, self.slip, self.comm
        allow_short = self.allow_short
        cash, units, bust = self.cash, self.units, self.bust
        last_fill, entry_equity, fills = self.last_fill, self.entry_equity, self.fills
        trade_pnls = self.trade_pnls
        append = self.out.append
        inf = math.inf
        equity = exposure = 0.0
        for k in range(self.n):
            t = first + k
            # --- mark at the close of day k
            close = closes[t]
            equity = cash + units * close
            if equity <= floor and not bust:
                # wiped out: the sleeve is closed at this close and trades no more
                bust, units, cash = True, 0.0, floor
                equity = floor
            exposure = units * close / equity if equity > 0 else 0.0
            days = inf if last_fill is None else float(day[t] - last_fill)
            position = exposure / max_leverage
            position = position if position > -1.0 else -1.0  # max(-1.0, position)
            position = position if position < 1.0 else 1.0  # min(1.0, position)
            gross = abs(exposure)
            leverage = 4.0 if gross > 4.0 else gross  # min(gross, 4.0)
            cash_fraction = 1.0 - gross
            cash_fraction = cash_fraction if cash_fraction > 0.0 else 0.0  # max(0.0, 1 - gross)
            append((position, leverage, cash_fraction, days, equity, exposure))
            if lockstep:
                yield position, leverage, cash_fraction, days
            # --- trade on day k's decision (the last day's is recorded, never filled)
            if t >= last or bust:
                continue
            action = actions[k]
            if action == _HOLD:
                # keep the position, but never beyond the leverage cap (price moves inflate it)
                target = -max_leverage if -max_leverage > exposure else exposure
                target = max_leverage if max_leverage < target else target
                if target == exposure:
                    continue
            else:
                size = strengths[k] * cap[k]
                target = size if action == _BUY else (-size if allow_short else 0.0)
            if abs(target - exposure) < REBALANCE_THRESHOLD and not (
                target == 0.0 and units != 0.0
            ):
                continue
            # fill at the next open
            price_open = opens[t + 1]
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
            last_fill = day[t + 1]
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
            self.trade_pnls.append(self.out[-1][4] - self.entry_equity)
        n = len(self.out)
        # column by column (a list of tuples into one array costs twice as much)
        out = [np.fromiter(c, dtype=np.float64, count=n) for c in zip(*self.out, strict=True)]
        out = out or [np.zeros(0) for _ in range(6)]
        return SymbolResult(
            symbol=bars.symbol,
            dates=bars.dates[bars.first :],
            actions=np.array(actions, dtype=np.int64),
            strengths=np.array(strengths, dtype=np.float64),
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
    tech = params.tech.signals(states)
    news = params.news.signals(states)
    risk = params.risk.signals(states)
    cap: list[float] = (params.risk.exposure(states) * params.max_leverage).tolist()
    totals, strength_sums = vote_totals([tech, news, risk], params.weights[:3])
    signals: dict[str, Signals | None] = {"tech": tech, "news": news, "risk": risk}
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
            outcome = decide(p.totals, p.strength_sums, params.min_score)
            actions: list[int] = outcome.actions.tolist()
            strengths: list[float] = outcome.strengths.tolist()
            p.sleeve.run(actions, strengths)
            results.append(p.sleeve.result(p.bars, actions, strengths, p.signals, None))
        return results
    if len(rls) != len(symbols):
        raise BacktestError(f"{len(rls)} RL analysts for {len(symbols)} symbols; expected one each")
    return _lockstep(prepared, params, rls)


def _lockstep(
    prepared: Sequence[_Prepared], params: EngineParams, rls: Sequence[RlAnalyst]
) -> list[SymbolResult]:
    """The sleeves with the RL analyst: the state of day k holds that sleeve's portfolio
    after the decisions before k, so the sleeves advance in lockstep, day by day, and the
    policy is called once per day on the states of all symbols (a (n_symbols, 34) batch)
    instead of once per symbol-day; the RL votes are added to the three analysts' totals and
    decided for all symbols of the day at once. Sleeves never interact, so the order changes
    nothing.

    Day k's batch holds the symbols that still have a decision day k: the longest first, so
    they are always a prefix (``j``: a symbol's place in that order). States are gathered
    ``_CHUNK`` days at a time, day-major (days, symbols, 34), in the market features' dtype
    (so validation sees what it always saw).
    """
    n_sym = len(prepared)
    order = sorted(range(n_sym), key=lambda i: -prepared[i].sleeve.n)
    alive = [prepared[i].sleeve.n for i in order]
    n_max = alive[0]
    analysts = [rls[i] for i in order]
    dtype = np.result_type(*(p.bars.market.dtype for p in prepared))
    actions_out: list[list[int]] = [[] for _ in range(n_sym)]
    strengths_out: list[list[float]] = [[] for _ in range(n_sym)]
    acts = [actions_out[i] for i in order]
    strs = [strengths_out[i] for i in order]
    sleeves = [
        prepared[i].sleeve.steps(actions_out[i], strengths_out[i], lockstep=True) for i in order
    ]
    steps: list[Callable[[], Features]] = [s.__next__ for s in sleeves]
    # day-major, by place j: the three analysts' vote totals and strength sums; the RL votes
    totals = np.zeros((n_max, n_sym, 3))
    sums = np.zeros((n_max, n_sym, 3))
    for j, i in enumerate(order):
        totals[: alive[j], j] = prepared[i].totals
        sums[: alive[j], j] = prepared[i].strength_sums
    day_votes: list[tuple[Signals, npt.NDArray[np.bool_]]] = []  # per day, by place j
    w_rl, min_score = params.weights[3], params.min_score
    days_feature: dict[float, float] = {}
    m = n_sym
    for k0 in range(0, n_max, _CHUNK):
        k1 = min(k0 + _CHUNK, n_max)
        chunk = _states(prepared, order, alive, k0, k1, dtype)
        chunk32 = _validated(chunk, alive, k0, k1)
        for k in range(k0, k1):
            while alive[m - 1] <= k:  # the shortest histories have ended
                m -= 1
            portfolio = []
            for step in steps[:m]:
                position, leverage, cash_fraction, days = step()
                feature = days_feature.get(days)
                if feature is None:  # the schema's own normalisation, once per distinct value
                    snapshot = PortfolioSnapshot(days_since_last_trade=days)
                    feature = days_feature[days] = float(snapshot.features()[3])
                portfolio.append((position, leverage, cash_fraction, feature))
            valid = chunk32 is not None and columns_in_range(
                port := np.array(portfolio, dtype=dtype), PORTFOLIO_COLUMNS
            )
            if valid:  # the day's rows, valid: straight to the model (see _validated)
                rows = chunk32[k - k0, :m]  # type: ignore[index]
                rows[:, PORTFOLIO_COLUMNS] = port
            else:  # validated with the rest of the states (SchemaError names the bad row)
                rows = chunk[k - k0, :m]
                rows[:, PORTFOLIO_COLUMNS] = portfolio
            votes, voted = rl_votes(analysts[:m], rows, validated=valid)
            day_totals, day_sums = totals[k, :m], sums[k, :m]
            add_votes(day_totals, day_sums, votes, w_rl)
            day_votes.append((votes, voted))
            outcome = decide(day_totals, day_sums, min_score)
            for a_out, s_out, action, strength in zip(
                acts, strs, outcome.actions.tolist(), outcome.strengths.tolist(), strict=False
            ):
                a_out.append(action)
                s_out.append(strength)
    for sleeve in sleeves:  # the last day's decision: nothing to fill, the sleeve finishes
        next(sleeve, None)
    # the days' votes end to end; symbol j's of day k sit at starts[k] + j
    none = Signals(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
    day_votes = day_votes or [(none, np.zeros(0, dtype=np.bool_))]  # no decision day at all
    sizes = [v[1].shape[0] for v in day_votes]
    starts = np.cumsum([0, *sizes[:-1]])
    fields = ("actions", "strengths", "confidences")
    flat = [np.concatenate([getattr(v[0], f) for v in day_votes]) for f in fields]
    voted_all = np.concatenate([v[1] for v in day_votes])
    results: list[SymbolResult] = [None] * n_sym  # type: ignore[list-item]
    for j, i in enumerate(order):
        p, n = prepared[i], alive[j]
        at = starts[:n] + j
        rl_j = (Signals(*(a[at] for a in flat)), voted_all[at], rls[i].fallbacks)
        results[i] = p.sleeve.result(p.bars, actions_out[i], strengths_out[i], p.signals, rl_j)
    return results


def _validated(
    chunk: npt.NDArray[np.floating], alive: list[int], k0: int, k1: int
) -> npt.NDArray[np.float32] | None:
    """``chunk`` (``_states``: days ``k0 .. k1``) as the model's float32 input when the states
    of every symbol still alive there are valid (``otonom_schema.validate_states``: the market
    columns, with the portfolio columns' neutral values), else None (each day's states are
    then validated whole, so the error names the day's bad row as it always did).

    The day's rows then need only their portfolio columns checked (``columns_in_range``,
    in ``chunk``'s dtype) before they are written in: float32 rounding is the same for the
    chunk's cast here and the row's cast at validation, so the model sees the same bytes.
    """
    live = np.arange(k0, k1)[:, None] < np.array(alive)[None, :]
    try:
        validate_states(chunk[live])
    except SchemaError:
        return None
    return chunk.astype(np.float32)


def _states(
    prepared: Sequence[_Prepared],
    order: list[int],
    alive: list[int],
    k0: int,
    k1: int,
    dtype: np.dtype[np.floating],
) -> npt.NDArray[np.floating]:
    """The market features of decision days ``k0 .. k1`` of every symbol, day-major (days,
    symbols in ``order``, 34), zeros where a history has ended (the portfolio columns are
    filled in day by day)."""
    chunk = np.zeros((k1 - k0, len(order), STATE_DIM), dtype=dtype)
    for j, i in enumerate(order):
        bars = prepared[i].bars
        span = bars.market[bars.first + k0 : bars.first + min(k1, alive[j])]
        chunk[: span.shape[0], j] = span
    return chunk


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
