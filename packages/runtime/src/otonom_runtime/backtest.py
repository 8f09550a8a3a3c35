"""The backtester: the ensemble over daily bars, every decision stored as a ``Decision`` row.

Rules (each one tested):

* **No look-ahead.** The decision for day t is made at the close of t from the state at t
  (``otonom_schema`` features of bars <= t) and filled at the **open of t+1**. The last day's
  decision is recorded but not filled.
* **Sizing.** BUY targets a long exposure of ``strength x max_leverage x risk exposure``
  (the risk analyst's multiplier, < 1 in the high-volatility regime); SELL the same short
  (flat when ``allow_short`` is false); HOLD keeps the position, cut back to ``max_leverage``
  when price moves have inflated it beyond the cap. A trade happens when the
  target differs from the current exposure by at least ``REBALANCE_THRESHOLD`` of equity (or
  the target is flat and a position is open), so small strength changes do not churn.
* **Costs.** A fill pays slippage (``slippage_bps``: buys fill above the open, sells below)
  and commission (``commission_bps`` of the traded notional).
* **Ruin.** A sleeve whose equity falls to ``BUST_FLOOR`` of its capital is closed and
  stops trading.
* **Sleeves.** Each symbol trades its own sleeve of ``initial_capital / n_symbols``; the
  portfolio is their sum.
* **Portfolio features** seen by the state at t (and stored on the decision row): ``position``
  = exposure / max_leverage (clipped to [-1, 1]), ``leverage`` = |exposure| (clipped to 4),
  ``cash_fraction`` = max(0, 1 - |exposure|), ``days_since_last_trade`` since the last fill
  (``inf`` before the first), where exposure = position value / equity at the close of t.
* **Records.** A run row is written first with status ``running``; decision rows go in
  batched transactions; the run becomes ``complete`` (with its metrics) only at the very end.
  Any exception (Ctrl-C included) marks it ``failed`` with the error, so dataset generation,
  which reads complete runs only, never sees a partial run.
* **Purpose.** ``params["purpose"]`` records who made the run (``RUN_PURPOSES``): ``user``
  (``otonom backtest``, the default), ``pipeline`` / ``walk-forward`` (the teacher backtest of
  ``otonom-train pipeline`` / ``walk-forward``), ``gate`` (the three runs of ``otonom-train
  check``) and ``evaluation`` (the held-out backtests with and without the RL analyst that the
  pipeline and each walk-forward window make to judge a model). ``gate`` and ``evaluation``
  runs are internal (``INTERNAL_PURPOSES``): ``otonom runs list`` marks them and dataset
  generation never takes one as its teacher. A run stored before the field existed is ``user``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import insert
from sqlalchemy.orm import Session

from otonom_runtime._errors import PolicyError, StateBuildError
from otonom_runtime.ensemble import (
    ANALYSTS,
    NewsAnalyst,
    RiskAnalyst,
    RlAnalyst,
    RlVote,
    Signals,
    TechAnalyst,
    decide,
    decide_floats,
    rl_votes,
    vote_totals,
)
from otonom_runtime.metrics import Metrics, compute_metrics
from otonom_runtime.store import (
    SIGNAL_COLUMNS,
    BacktestRun,
    Decision,
    get_symbol,
    load_history,
    load_macro,
    load_news,
    sentiment_source,
)
from otonom_schema import (
    PORTFOLIO_COLUMNS,
    STATE_DIM,
    Action,
    PortfolioSnapshot,
    market_feature_matrix,
)

if TYPE_CHECKING:
    from otonom_runtime.policy import RlPolicy
    from otonom_runtime.strategy import StrategyConfig

__all__ = [
    "BUST_FLOOR",
    "INTERNAL_PURPOSES",
    "REBALANCE_THRESHOLD",
    "RUN_PURPOSES",
    "BacktestReport",
    "EngineParams",
    "SymbolResult",
    "engine_params",
    "run_backtest",
    "simulate_symbol",
]

log = logging.getLogger(__name__)

REBALANCE_THRESHOLD: Final = 0.05
"""Minimum change of exposure (fraction of equity) that makes a trade."""

BUST_FLOOR: Final = 1e-6
"""A sleeve whose equity falls to this fraction of its capital is closed and stops trading
(its equity stays there: the run reports a ~-100 % return instead of negative equity)."""

RUN_PURPOSES: Final = ("user", "pipeline", "walk-forward", "gate", "evaluation")
"""What ``run_backtest(purpose=...)`` accepts; stored as the run's ``params["purpose"]``."""
INTERNAL_PURPOSES: Final = ("gate", "evaluation")
"""Purposes of the runs a command makes to judge a model: never a dataset's teacher."""

_BATCH: Final = 5000
_CHUNK: Final = 256  # days of RL states gathered at a time (lockstep simulation)
_HOLD: Final = int(Action.HOLD)
_BUY: Final = int(Action.BUY)
_SELL: Final = int(Action.SELL)
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class EngineParams:
    """Everything a simulation needs, independent of where it came from (a strategy file)."""

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    min_score: float = 0.5
    tech: TechAnalyst = field(default_factory=TechAnalyst)
    news: NewsAnalyst = field(default_factory=NewsAnalyst)
    risk: RiskAnalyst = field(default_factory=RiskAnalyst)
    initial_capital: float = 10_000.0
    max_leverage: float = 1.0
    allow_short: bool = True
    commission_bps: float = 10.0
    slippage_bps: float = 5.0
    periods_per_year: int = 365


@dataclass
class SymbolResult:
    """One symbol's simulation: per decision day (T,) arrays and the trades."""

    symbol: str
    dates: npt.NDArray[np.datetime64]
    actions: npt.NDArray[np.int64]
    strengths: F64
    signals: dict[str, Signals | None]
    rl_signals: list[RlVote | None]
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

    ``mark(k)`` values the sleeve at the close of decision day k and returns the portfolio
    features the state sees; ``trade(k, action, strength)`` then acts on that day's decision
    (a fill at the next open). Every expression is the one the rules in the module docstring
    describe, evaluated in the same order, so the results do not depend on how the bars of
    several sleeves are interleaved.
    """

    __slots__ = (
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
        "params",
        "slip",
        "trade_pnls",
        "units",
    )

    def __init__(self, bars: _Bars, params: EngineParams, capital: float, cap: list[float]):
        self.params = params
        self.first = bars.first
        self.n = bars.market.shape[0] - bars.first
        self.closes: list[float] = bars.closes.tolist()
        self.opens: list[float] = bars.opens.tolist()
        self.day: list[int] = bars.dates.astype(np.int64).tolist()
        self.last = len(self.closes) - 1
        self.cap = cap  # per decision day: the risk multiplier x max_leverage
        self.slip = params.slippage_bps / 1e4
        self.comm = params.commission_bps / 1e4
        self.cash, self.units = capital, 0.0
        self.floor = capital * BUST_FLOOR
        self.bust = False
        self.last_fill: int | None = None  # day number of the last fill
        self.entry_equity: float | None = None
        self.fills = 0
        self.trade_pnls: list[float] = []
        self.equity = 0.0
        self.exposure = 0.0
        self.max_leverage = params.max_leverage
        # per decision day: position, leverage, cash_fraction, days_since_last_trade, equity,
        # exposure
        self.out: list[tuple[float, float, float, float, float, float]] = []

    def mark(self, k: int) -> tuple[float, float, float, float]:
        # min()/max() spelled out as conditionals (same operands, same order: bit-identical,
        # NaN and -0.0 included) because the builtins cost ~0.1 us a call here
        close = self.closes[self.first + k]
        units = self.units
        equity = self.cash + units * close
        if equity <= self.floor and not self.bust:
            # wiped out: the sleeve is closed at this close and trades no more
            self.bust, self.units, self.cash = True, 0.0, self.floor
            units = 0.0
            equity = self.floor
        exposure = units * close / equity if equity > 0 else 0.0
        last_fill = self.last_fill
        days = math.inf if last_fill is None else float(self.day[self.first + k] - last_fill)
        position = exposure / self.max_leverage
        position = position if position > -1.0 else -1.0  # max(-1.0, position)
        position = position if position < 1.0 else 1.0  # min(1.0, position)
        gross = abs(exposure)
        leverage = 4.0 if gross > 4.0 else gross  # min(gross, 4.0)
        cash_fraction = 1.0 - gross
        cash_fraction = cash_fraction if cash_fraction > 0.0 else 0.0  # max(0.0, 1 - gross)
        self.equity = equity
        self.exposure = exposure
        self.out.append((position, leverage, cash_fraction, days, equity, exposure))
        return position, leverage, cash_fraction, days

    def trade(self, k: int, action: int, strength: float) -> None:
        t = self.first + k
        if t >= self.last or self.bust:
            return
        params = self.params
        exposure = self.exposure
        units = self.units
        if action == _HOLD:
            # keep the position, but never beyond the leverage cap (price moves inflate it)
            cap = self.max_leverage
            target = -cap if -cap > exposure else exposure  # max(exposure, -cap)
            target = cap if cap < target else target  # min(target, cap)
            if target == exposure:
                return
        else:
            size = strength * self.cap[k]
            target = size if action == _BUY else (-size if params.allow_short else 0.0)
        if abs(target - exposure) < REBALANCE_THRESHOLD and not (target == 0.0 and units != 0.0):
            return
        # fill at the next open
        price_open = self.opens[t + 1]
        cash = self.cash
        equity_open = cash + units * price_open
        new_units = target * equity_open / price_open
        delta = new_units - units
        if delta == 0.0:
            return
        price = price_open * (1.0 + self.slip if delta > 0 else 1.0 - self.slip)
        cash -= delta * price + abs(delta * price) * self.comm
        old_units = units
        self.cash, self.units = cash, new_units
        self.fills += 1
        self.last_fill = self.day[t + 1]
        equity_after = cash + new_units * price_open
        # A trade runs from opening a side (from flat, or a flip) to leaving it; its pnl is the
        # sleeve's equity change over that span, entry and exit costs included.
        flipped = old_units != 0.0 and (new_units == 0.0 or (new_units > 0) != (old_units > 0))
        if flipped and self.entry_equity is not None:
            self.trade_pnls.append(equity_after - self.entry_equity)
            self.entry_equity = None
        if new_units != 0.0 and self.entry_equity is None:
            self.entry_equity = equity_open if old_units == 0.0 else equity_after

    def run(self, actions: list[int], strengths: list[float]) -> None:
        """``mark(k)`` then ``trade(k, actions[k], strengths[k])`` for every decision day, as
        one loop over locals: the same expressions in the same order as those two methods
        (bit-identical; a test holds them equal), without their per-call attribute traffic.
        For decisions known up front (no RL analyst); the lockstep RL path steps ``mark``
        and ``trade`` itself."""
        closes, opens, day, cap = self.closes, self.opens, self.day, self.cap
        first, last, floor = self.first, self.last, self.floor
        max_leverage, slip, comm = self.max_leverage, self.slip, self.comm
        allow_short = self.params.allow_short
        cash, units, bust = self.cash, self.units, self.bust
        last_fill, entry_equity, fills = self.last_fill, self.entry_equity, self.fills
        trade_pnls, out = self.trade_pnls, self.out
        append = out.append
        inf = math.inf
        equity = exposure = 0.0
        for k, (action, strength) in enumerate(zip(actions, strengths, strict=True)):
            t = first + k
            # --- mark(k)
            close = closes[t]
            equity = cash + units * close
            if equity <= floor and not bust:
                bust, units, cash = True, 0.0, floor
                equity = floor
            exposure = units * close / equity if equity > 0 else 0.0
            days = inf if last_fill is None else float(day[t] - last_fill)
            position = exposure / max_leverage
            position = position if position > -1.0 else -1.0
            position = position if position < 1.0 else 1.0
            gross = abs(exposure)
            leverage = 4.0 if gross > 4.0 else gross
            cash_fraction = 1.0 - gross
            cash_fraction = cash_fraction if cash_fraction > 0.0 else 0.0
            append((position, leverage, cash_fraction, days, equity, exposure))
            # --- trade(k, action, strength)
            if t >= last or bust:
                continue
            if action == _HOLD:
                target = -max_leverage if -max_leverage > exposure else exposure
                target = max_leverage if max_leverage < target else target
                if target == exposure:
                    continue
            else:
                size = strength * cap[k]
                target = size if action == _BUY else (-size if allow_short else 0.0)
            if abs(target - exposure) < REBALANCE_THRESHOLD and not (
                target == 0.0 and units != 0.0
            ):
                continue
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
        rl_signals: list[RlVote | None],
        fallbacks: int,
    ) -> SymbolResult:
        if self.entry_equity is not None:  # a trade still open at the end: closed at the last close
            self.trade_pnls.append(self.out[-1][4] - self.entry_equity)
        out = np.array(self.out, dtype=np.float64).reshape(-1, 6).T
        return SymbolResult(
            symbol=bars.symbol,
            dates=bars.dates[bars.first :],
            actions=np.array(actions, dtype=np.int64),
            strengths=np.array(strengths, dtype=np.float64),
            signals=signals,
            rl_signals=rl_signals,
            position=out[0].copy(),
            leverage=out[1].copy(),
            cash_fraction=out[2].copy(),
            days_since_last_trade=out[3].copy(),
            equity=out[4].copy(),
            exposure=out[5].copy(),
            trade_pnls=self.trade_pnls,
            fills=self.fills,
            fallbacks=fallbacks,
        )


def _simulate(
    symbols: Sequence[_Bars],
    params: EngineParams,
    capital: float,
    rls: Sequence[RlAnalyst] | None = None,
) -> list[SymbolResult]:
    """Simulate each symbol's sleeve (see ``simulate_symbol``); ``rls``: one RL analyst per
    symbol, all sharing one policy, or None for the 3-analyst ensemble.

    Without the RL analyst every decision is known up front (the analysts read market features
    only), so each sleeve runs on its own. With it, the state of day k holds that sleeve's
    portfolio after the decisions before k, so the sleeves advance in lockstep, day by day, and
    the policy is called once per day on the states of all symbols (a (n_symbols, 34) batch)
    instead of once per symbol-day. Sleeves never interact, so the order changes nothing.
    """
    w = params.weights
    prepared = []
    for bars in symbols:
        states = bars.market[bars.first :]
        tech = params.tech.signals(states)
        news = params.news.signals(states)
        risk = params.risk.signals(states)
        cap: list[float] = (params.risk.exposure(states) * params.max_leverage).tolist()
        totals, strength_sums = vote_totals([tech, news, risk], w[:3])
        signals: dict[str, Signals | None] = {"tech": tech, "news": news, "risk": risk}
        prepared.append((_Sleeve(bars, params, capital, cap), signals, totals, strength_sums))

    if rls is None:
        results = []
        for bars, (sleeve, signals, totals, strength_sums) in zip(symbols, prepared, strict=True):
            outcome = decide(totals, strength_sums, params.min_score)
            actions: list[int] = outcome.actions.tolist()
            strengths: list[float] = outcome.strengths.tolist()
            sleeve.run(actions, strengths)
            results.append(sleeve.result(bars, actions, strengths, signals, [], 0))
        return results

    if len(rls) != len(symbols):
        raise ValueError(f"{len(rls)} RL analysts for {len(symbols)} symbols; expected one each")
    w_rl, min_score = w[3], params.min_score
    n_sym = len(symbols)
    sleeves = [p[0] for p in prepared]
    # per symbol, per day: the three analysts' vote totals and the BUY/SELL strength sums
    hold_votes = [p[2][:, _HOLD].tolist() for p in prepared]
    buy_votes = [p[2][:, _BUY].tolist() for p in prepared]
    sell_votes = [p[2][:, _SELL].tolist() for p in prepared]
    buy_sums = [p[3][:, _BUY].tolist() for p in prepared]
    sell_sums = [p[3][:, _SELL].tolist() for p in prepared]
    actions_out: list[list[int]] = [[] for _ in range(n_sym)]
    strengths_out: list[list[float]] = [[] for _ in range(n_sym)]
    rl_out: list[list[RlVote | None]] = [[] for _ in range(n_sym)]
    # Day k's batch holds the symbols that still have a decision day k: the longest first, so
    # they are always a prefix. States are gathered _CHUNK days at a time, day-major (days,
    # symbols, 34), in the market features' dtype (so validation sees what it always saw).
    order = sorted(range(n_sym), key=lambda i: -sleeves[i].n)
    alive = [sleeves[i].n for i in order]
    n_max = sleeves[order[0]].n
    analysts = [rls[i] for i in order]
    dtype = np.result_type(*(bars.market.dtype for bars in symbols))
    days_feature: dict[float, float] = {}
    for k0 in range(0, n_max, _CHUNK):
        k1 = min(k0 + _CHUNK, n_max)
        chunk = np.zeros((k1 - k0, n_sym, STATE_DIM), dtype=dtype)
        for j, i in enumerate(order):
            bars = symbols[i]
            span = bars.market[bars.first + k0 : bars.first + min(k1, sleeves[i].n)]
            chunk[: span.shape[0], j] = span
        for k in range(k0, k1):
            m = len(alive)
            while alive[m - 1] <= k:  # the shortest histories have ended
                m -= 1
            active = order[:m]
            portfolio = []
            for i in active:
                position, leverage, cash_fraction, days = sleeves[i].mark(k)
                feature = days_feature.get(days)
                if feature is None:  # the schema's own normalisation, once per distinct value
                    snapshot = PortfolioSnapshot(days_since_last_trade=days)
                    feature = days_feature[days] = float(snapshot.features()[3])
                portfolio.append((position, leverage, cash_fraction, feature))
            rows = chunk[k - k0, :m]
            rows[:, PORTFOLIO_COLUMNS] = portfolio
            day_votes = rl_votes(analysts[:m], rows)
            for i, vote in zip(active, day_votes, strict=True):
                hold, buy, sell = hold_votes[i][k], buy_votes[i][k], sell_votes[i][k]
                buy_sum, sell_sum = buy_sums[i][k], sell_sums[i][k]
                if vote is None:
                    rl_out[i].append(None)
                else:
                    action, strength, confidence = vote
                    weight = w_rl * confidence
                    if action == _BUY:
                        buy += weight
                        buy_sum += weight * strength
                    elif action == _SELL:
                        sell += weight
                        sell_sum += weight * strength
                    else:
                        hold += weight
                    rl_out[i].append(vote)
                action, strength, _ = decide_floats(hold, buy, sell, buy_sum, sell_sum, min_score)
                actions_out[i].append(action)
                strengths_out[i].append(strength)
                sleeves[i].trade(k, action, strength)
    return [
        sleeve.result(bars, actions_out[i], strengths_out[i], signals, rl_out[i], rls[i].fallbacks)
        for i, (bars, (sleeve, signals, _, _)) in enumerate(zip(symbols, prepared, strict=True))
    ]


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


# --- runs: strategy -> simulations -> stored decisions and metrics ----------------------------


def engine_params(config: StrategyConfig) -> EngineParams:
    """The simulation parameters of a strategy file (``ensemble.enabled: false``: tech alone)."""
    weights = tuple(float(w) for w in config.weights_array())
    if not config.ensemble.enabled:
        weights = (1.0, 0.0, 0.0, 0.0)
    a = config.analysts
    return EngineParams(
        weights=(weights[0], weights[1], weights[2], weights[3]),
        min_score=config.ensemble.min_score,
        tech=TechAnalyst(
            trend_window=a.tech.trend_window,
            trend_threshold=a.tech.trend_threshold,
            rsi_oversold=a.tech.rsi_oversold,
            rsi_overbought=a.tech.rsi_overbought,
            macd_threshold=a.tech.macd_threshold,
            trend_weight=a.tech.weights.trend,
            rsi_weight=a.tech.weights.rsi,
            macd_weight=a.tech.weights.macd,
            entry_threshold=a.tech.entry_threshold,
        ),
        news=NewsAnalyst(
            news_weight=a.news.news_weight,
            macro_weight=a.news.macro_weight,
            threshold=a.news.threshold,
        ),
        risk=RiskAnalyst(
            drawdown_window=a.risk.drawdown_window,
            max_drawdown=a.risk.max_drawdown,
            high_vol_exposure=a.risk.high_vol_exposure,
            exit_in_high_vol=a.risk.exit_in_high_vol,
        ),
        initial_capital=config.portfolio.initial_capital,
        max_leverage=config.portfolio.max_leverage,
        allow_short=config.portfolio.allow_short,
        commission_bps=config.costs.commission_bps,
        slippage_bps=config.costs.slippage_bps,
        # ``auto``: the placeholder 365 is replaced from the bars' dates by run_backtest
        periods_per_year=config.calendar.resolve([]),
    )


@dataclass
class BacktestReport:
    """What a run produced (its decisions are in the store under ``run_id``)."""

    run_id: int
    strategy: str
    symbols: list[str]
    start: dt.date
    end: dt.date
    rl_enabled: bool
    metrics: Metrics
    per_symbol: dict[str, Metrics]
    action_counts: dict[str, dict[str, int]]
    fallbacks: int
    fallback_reason: str | None
    dates: npt.NDArray[np.datetime64]
    equity: F64
    bar_decisions: int
    elapsed_s: float

    def summary(self) -> str:
        """A plain-text summary table (what ``otonom backtest`` prints)."""
        m = self.metrics
        lines = [
            f"run {self.run_id}: {self.strategy} on {', '.join(self.symbols)} "
            f"{self.start.isoformat()} .. {self.end.isoformat()} "
            f"(RL analyst {'on' if self.rl_enabled else 'off'})",
            f"  bar-decisions {self.bar_decisions} in {self.elapsed_s:.2f} s",
            "",
            "Action distribution:",
        ]
        total = self.action_counts["all"]
        n = sum(total.values()) or 1
        for name, count in total.items():
            lines.append(f"  {name}: {count} ({100.0 * count / n:.1f}%)")
        lines.append("")
        rows = [
            ("total return", f"{m.total_return:+.2%}"),
            ("CAGR", f"{m.cagr:+.2%}"),
            ("Sharpe", "-" if m.sharpe is None else f"{m.sharpe:.2f}"),
            ("Sortino", "-" if m.sortino is None else f"{m.sortino:.2f}"),
            ("max drawdown", f"{m.max_drawdown:.2%}"),
            ("trades", str(m.n_trades)),
            ("win rate", "-" if m.win_rate is None else f"{m.win_rate:.1%}"),
            ("exposure", f"{m.exposure:.1%}"),
            ("turnover (per year)", f"{m.turnover:.1f}"),
            ("RL fallbacks", str(self.fallbacks)),
        ]
        width = max(len(k) for k, _ in rows)
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        if self.fallback_reason:
            lines.append(f"  RL analyst fell back: {self.fallback_reason}")
        return "\n".join(lines)


def _make_rl(config: StrategyConfig, policy: RlPolicy | None) -> RlAnalyst:
    if policy is not None:
        return RlAnalyst(policy)
    from otonom_runtime.policy import load_rl_policy

    rl_cfg = config.ensemble.rl_policy
    target = rl_cfg.model_file or rl_cfg.model_path
    try:
        if target is None:
            raise PolicyError("ensemble.rl_policy.model_path is not set")
        # one thread: the backtest calls the model once per day on a handful of states
        loaded = load_rl_policy(target, device=rl_cfg.device, threads=1)
        if loaded.degenerate_reason:
            log.warning(
                "RL model %s is marked degenerate at training: %s",
                loaded.path,
                loaded.degenerate_reason,
            )
        return RlAnalyst(loaded)
    except (PolicyError, OSError, ValueError) as exc:
        log.warning("RL analyst disabled for this run, the ensemble carries on without it: %s", exc)
        return RlAnalyst(None, reason=f"{type(exc).__name__}: {exc}")


_DECISION_COLUMNS: Final = (
    "run_id",
    "symbol_id",
    "date",
    "action",
    "strength",
    "position",
    "leverage",
    "cash_fraction",
    "days_since_last_trade",
    "equity",
    *SIGNAL_COLUMNS,
)
_RL_COLUMNS: Final = SIGNAL_COLUMNS[-3:]
_NO_RL_COLUMNS: Final = _DECISION_COLUMNS[: -len(_RL_COLUMNS)]


def _signal_columns(r: SymbolResult, rl: bool) -> list[list[Any]]:
    """The signal columns of one symbol's decision rows, column by column: action, strength,
    confidence per analyst (python ints and floats), None where it did not vote; ``rl``: with
    the RL analyst's three (else those are left out)."""
    n = len(r.actions)
    missing: list[Any] = [None] * n
    columns: list[list[Any]] = []
    for name in ANALYSTS[:3]:
        sig = r.signals.get(name)
        if sig is None:
            columns += [missing, missing, missing]
        else:
            columns += [sig.actions.tolist(), sig.strengths.tolist(), sig.confidences.tolist()]
    if rl:
        votes = r.rl_signals or [None] * n
        none = (None, None, None)
        columns += [list(c) for c in zip(*(none if v is None else v for v in votes), strict=True)]
    return columns


def _decision_rows(
    run_id: int, symbol_id: int, r: SymbolResult, sqlite: bool, rl: bool
) -> list[Any]:
    """One symbol's decision rows as tuples in ``_DECISION_COLUMNS`` order (``rl`` False:
    without the RL columns, ``_NO_RL_COLUMNS``); on SQLite exactly what the ORM types store
    (dates as ISO text, ``inf`` days as NULL)."""
    n = len(r.actions)
    days: list[float | None] = r.days_since_last_trade.tolist()
    if sqlite:
        days = [None if d == math.inf else d for d in days]
        dates: list[Any] = np.datetime_as_string(r.dates.astype("datetime64[D]"), unit="D").tolist()
    else:
        dates = r.dates.astype("datetime64[D]").tolist()
    return list(
        zip(
            [run_id] * n,
            [symbol_id] * n,
            dates,
            r.actions.tolist(),
            r.strengths.tolist(),
            r.position.tolist(),
            r.leverage.tolist(),
            r.cash_fraction.tolist(),
            days,
            r.equity.tolist(),
            *_signal_columns(r, rl),
            strict=True,
        )
    )


def _write_decisions(
    session: Session, run_id: int, symbol_ids: Sequence[int], results: Sequence[SymbolResult]
) -> None:
    """Store the decisions of every symbol (in the order given), a commit after each
    ``_BATCH`` rows.

    SQLite goes through the driver's ``executemany`` with pre-formatted rows (see
    ``_decision_rows``); other databases take the Core insert with SQLAlchemy's own type
    handling. When the RL analyst voted on no decision of the run (off, or failed to load), its
    columns are left out of the INSERT and hold their default, NULL: the driver binds each
    ``None`` through its adapter lookup, which costs about 15 times a float's bind.
    """
    sqlite = session.connection().dialect.name == "sqlite"
    rl = any(v is not None for r in results for v in r.rl_signals)
    columns = _DECISION_COLUMNS if rl else _NO_RL_COLUMNS
    pending: list[Any] = []
    for symbol_id, r in zip(symbol_ids, results, strict=True):
        pending += _decision_rows(run_id, symbol_id, r, sqlite, rl)
        while len(pending) >= _BATCH:
            _insert_decisions(session, pending[:_BATCH], sqlite, columns)
            del pending[:_BATCH]
    if pending:
        _insert_decisions(session, pending, sqlite, columns)


def _insert_decisions(
    session: Session, rows: list[Any], sqlite: bool, columns: Sequence[str]
) -> None:
    """Insert and commit one batch of ``_decision_rows`` rows, which hold ``columns``."""
    conn = session.connection()
    if sqlite:
        sql = (
            f"INSERT INTO {Decision.__tablename__} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})"
        )
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()
    else:
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        conn.execute(insert(Decision), records)
    session.commit()


def _portfolio_curve(
    results: list[SymbolResult], capital: float
) -> tuple[npt.NDArray[np.datetime64], F64, F64]:
    """All sleeves on the union of their dates (equity carried forward): dates, equity,
    exposure (the equity-weighted sum of the sleeves' exposures)."""
    dates = np.unique(np.concatenate([r.dates for r in results]))
    equity = np.zeros(dates.shape[0])
    exposure_value = np.zeros(dates.shape[0])
    for r in results:
        pos = np.searchsorted(r.dates, dates, side="right") - 1
        known = pos >= 0
        sleeve = np.where(known, r.equity[np.maximum(pos, 0)], capital)
        equity += sleeve
        exposure_value += np.where(known, r.exposure[np.maximum(pos, 0)], 0.0) * sleeve
    return dates, equity, exposure_value / equity


def _check_bars_in_range(
    session: Session, symbol_ids: dict[str, int], start: dt.date, end: dt.date
) -> None:
    """``StateBuildError`` unless every symbol has at least 2 bars in ``start .. end`` (the
    metrics need two points of the equity curve)."""
    from sqlalchemy import case, func, select

    from otonom_runtime.store import Bar

    in_range = func.sum(case((Bar.date.between(start, end), 1), else_=0))
    for name, symbol_id in symbol_ids.items():
        first, last, n = session.execute(
            select(func.min(Bar.date), func.max(Bar.date), in_range).where(
                Bar.symbol_id == symbol_id
            )
        ).one()
        if (n or 0) < 2:  # SUM is NULL when the symbol has no bars at all
            held = f"its bars run {first} .. {last}" if first is not None else "it has no bars"
            raise StateBuildError(
                f"{name!r} has {'only 1 bar' if n == 1 else 'no bar'} in {start.isoformat()} .. "
                f"{end.isoformat()}; {held}"
                + ("; a backtest needs at least 2 bars" if n == 1 else "")
            )


def _warn_unread(config: StrategyConfig, unread: dict[str, list[str]], end: dt.date) -> None:
    """Warn when a sentiment source the strategy names holds nothing for some symbols (a typo
    in ``data.news_source`` / ``data.macro_source`` would otherwise read as neutral 0)."""
    named = {"news": config.data.news_source, "macro": config.data.macro_source}
    for kind, names in unread.items():
        if names and named[kind] is not None:
            log.warning(
                "the strategy's data.%s_source is %r, but the store holds no %s sentiment of "
                "that source for %s (up to %s): the %s sentiment feature is 0 there",
                kind,
                named[kind],
                kind,
                ", ".join(names),
                end.isoformat(),
                kind,
            )


def run_backtest(
    session: Session,
    config: StrategyConfig,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    use_rl: bool | None = None,
    policy: RlPolicy | None = None,
    progress: bool = False,
    purpose: str = "user",
) -> BacktestReport:
    """Backtest ``config`` on ``symbols`` over ``start .. end`` and store every decision.

    ``use_rl``: None follows the strategy file; False switches the 4th analyst off (``--no-rl``);
    True needs a model (``policy`` or the file's ``ensemble.rl_policy``). A model that fails to
    load or to predict is a fallback, not an error: the ensemble carries on without it and the
    report counts and explains it. The session is committed as the run goes (run row, decision
    batches, final status); on any exception the run is marked ``failed`` and the exception
    re-raised. ``purpose``: one of ``RUN_PURPOSES``, stored as ``params["purpose"]`` (see the
    module docstring; ``ValueError`` for another value).
    """
    import time

    from tqdm import tqdm

    if not symbols:
        raise ValueError("no symbols given; expected at least one")
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    if purpose not in RUN_PURPOSES:
        raise ValueError(f"purpose is {purpose!r}; expected one of {', '.join(RUN_PURPOSES)}")
    rl_on = config.rl_enabled if use_rl is None else use_rl
    if not rl_on and config.rl_enabled:
        config = config.with_rl(False)
    elif rl_on and not config.rl_enabled and policy is None:
        config = config.with_rl(True)  # resolves the model path, or StrategyError
    params = engine_params(config)
    if rl_on and not config.rl_enabled:  # a policy handed in for a strategy that has RL off
        params = replace(params, weights=(*params.weights[:3], config.ensemble.analyst_weights.rl))
    clock = time.perf_counter()
    rows = {name: get_symbol(session, name) for name in symbols}  # before the run row
    symbol_ids = {name: row.id for name, row in rows.items()}
    # the sentiment each symbol reads, recorded for dataset generation to read the same
    sources = {
        name: {
            "news": sentiment_source(row, config.data.news_source),
            "macro": sentiment_source(row, config.data.macro_source),
        }
        for name, row in rows.items()
    }
    _check_bars_in_range(session, symbol_ids, start, end)  # a bad request stores nothing
    run = BacktestRun(
        strategy_name=config.name,
        strategy_hash=config.file_sha256,
        params={
            "strategy": config.to_dict(),
            "rl_enabled": rl_on,
            "source": config.source,
            "sentiment_sources": sources,
            "purpose": purpose,
        },
        start_date=start,
        end_date=end,
        symbols=list(symbols),
        status="running",
    )
    session.add(run)
    session.commit()
    run_id = run.id
    try:
        capital = params.initial_capital / len(symbols)
        macros = {  # market-wide: read once per source
            source: load_macro(session, source=source, end=end)
            for source in sorted({s["macro"] for s in sources.values()})
        }
        first_rl = _make_rl(config, policy) if rl_on else None  # the model is loaded once
        inputs: list[_Bars] = []
        unread = {"macro": [name for name in symbols if macros[sources[name]["macro"]] is None]}
        unread["news"] = []
        for name in tqdm(symbols, desc="backtest", unit="symbol", disable=not progress):
            history = load_history(session, name, end=end)
            day_numbers = history.dates.astype(np.int64)
            first = int(np.searchsorted(day_numbers, np.datetime64(start, "D").astype(np.int64)))
            if first >= len(history):
                raise StateBuildError(
                    f"{name!r} has no bar in {start.isoformat()} .. {end.isoformat()}; its bars "
                    f"end on {history.dates[-1]}"
                )
            news = load_news(session, name, source=sources[name]["news"], end=end)
            if news is None:
                unread["news"].append(name)
            market = market_feature_matrix(history, news, macros[sources[name]["macro"]])
            inputs.append(_Bars(name, history.dates, history.open, history.close, market, first))
        _warn_unread(config, unread, end)
        # one analyst per symbol, quiet: a failure is logged once per run, here (a model that
        # failed to load: already by _make_rl)
        rls = (
            [RlAnalyst(first_rl.policy, reason=first_rl.last_error, quiet=True) for _ in symbols]
            if first_rl is not None
            else None
        )
        if not isinstance(config.calendar.periods_per_year, int):  # auto: from the bars
            ppy = config.calendar.resolve(np.concatenate([b.dates for b in inputs]))
            params = replace(params, periods_per_year=ppy)
        results = _simulate(inputs, params, capital, rls)
        reasons = [
            f"{name}: {rl.last_error}"
            for name, rl in zip(symbols, rls or [], strict=False)
            if rl.last_error and rl.fallbacks
        ]
        if first_rl is not None and first_rl.policy is not None and reasons:
            failing = [name for name, rl in zip(symbols, rls or [], strict=False) if rl.fallbacks]
            log.warning(
                "RL analyst failed on %d of %d decisions (%s), the ensemble carried on without "
                "it there: %s",
                sum(rl.fallbacks for rl in rls or []),
                sum(len(r.actions) for r in results),
                ", ".join(failing),
                "; ".join(reasons),
            )
        _write_decisions(session, run_id, [symbol_ids[name] for name in symbols], results)

        dates, equity, exposure = _portfolio_curve(results, capital)
        trades = [p for r in results for p in r.trade_pnls]
        fallbacks = sum(r.fallbacks for r in results)
        metrics = compute_metrics(
            equity, exposure, trades, params.periods_per_year, fallbacks=fallbacks
        )
        per_symbol = {
            r.symbol: compute_metrics(
                r.equity, r.exposure, r.trade_pnls, params.periods_per_year, fallbacks=r.fallbacks
            )
            for r in results
        }
        counts: dict[str, dict[str, int]] = {}
        for r in results:
            c = np.bincount(r.actions, minlength=3)
            counts[r.symbol] = {a.name: int(c[a]) for a in Action}
        counts["all"] = {a.name: sum(counts[r.symbol][a.name] for r in results) for a in Action}
        stored = session.get(BacktestRun, run_id)
        assert stored is not None
        stored.status = "complete"
        stored.finished_at = dt.datetime.now(dt.timezone.utc)
        stored.metrics = {
            "portfolio": metrics.to_dict(),
            "symbols": {k: v.to_dict() for k, v in per_symbol.items()},
            "action_counts": counts,
            "fallbacks": fallbacks,
            # why the RL analyst fell back (per symbol, its newest error), for `runs show`
            "fallback_reason": "; ".join(reasons)[:2000] or None,
        }
        session.commit()
    except BaseException as exc:
        session.rollback()
        failed = session.get(BacktestRun, run_id)
        if failed is not None:
            failed.status = "failed"
            failed.finished_at = dt.datetime.now(dt.timezone.utc)
            failed.error = f"{type(exc).__name__}: {exc}"[:2000]
            session.commit()
        raise
    return BacktestReport(
        run_id=run_id,
        strategy=config.name,
        symbols=list(symbols),
        start=start,
        end=end,
        rl_enabled=rl_on,
        metrics=metrics,
        per_symbol=per_symbol,
        action_counts=counts,
        fallbacks=fallbacks,
        fallback_reason="; ".join(reasons) or None,
        dates=dates,
        equity=equity,
        bar_decisions=sum(len(r.actions) for r in results),
        elapsed_s=time.perf_counter() - clock,
    )
