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
"""

from __future__ import annotations

import datetime as dt
import json
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
    NewsAnalyst,
    RiskAnalyst,
    RlAnalyst,
    Signals,
    TechAnalyst,
    decide,
    decide_one,
    vote_totals,
)
from otonom_runtime.metrics import Metrics, compute_metrics
from otonom_runtime.store import (
    BacktestRun,
    Decision,
    get_symbol,
    load_history,
    load_macro,
    load_news,
)
from otonom_schema import (
    PORTFOLIO_COLUMNS,
    Action,
    PortfolioSnapshot,
    RlState,
    market_feature_matrix,
)

if TYPE_CHECKING:
    from otonom_runtime.policy import RlPolicy
    from otonom_runtime.strategy import StrategyConfig

__all__ = [
    "BUST_FLOOR",
    "REBALANCE_THRESHOLD",
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

_BATCH: Final = 5000
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
    rl_signals: list[dict[str, float | int] | None]
    position: F64
    leverage: F64
    cash_fraction: F64
    days_since_last_trade: F64
    equity: F64
    exposure: F64
    trade_pnls: list[float]
    fills: int
    fallbacks: int


def _portfolio_features(
    exposure: float, max_leverage: float, days: float
) -> tuple[float, float, float, float]:
    position = min(1.0, max(-1.0, exposure / max_leverage))
    leverage = min(abs(exposure), 4.0)
    cash = max(0.0, 1.0 - abs(exposure))
    return position, leverage, cash, days


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
    states = market[first:]
    n_days = states.shape[0]
    tech = params.tech.signals(states)
    news = params.news.signals(states)
    risk = params.risk.signals(states)
    exposure_cap = params.risk.exposure(states) * params.max_leverage
    totals, strength_sums = vote_totals([tech, news, risk], params.weights[:3])
    if rl is None:
        outcome = decide(totals, strength_sums, params.min_score)
        actions = outcome.actions
        strengths = outcome.strengths
    else:
        actions = np.zeros(n_days, dtype=np.int64)
        strengths = np.zeros(n_days)
    rl_signals: list[dict[str, float | int] | None] = []
    w_rl = params.weights[3]

    slip = params.slippage_bps / 1e4
    comm = params.commission_bps / 1e4
    cash, units = capital, 0.0
    last_fill: int | None = None  # day number of the last fill
    day_numbers = dates.astype(np.int64)
    position = np.empty(n_days)
    leverage = np.empty(n_days)
    cash_fraction = np.empty(n_days)
    days_since = np.empty(n_days)
    equity_curve = np.empty(n_days)
    exposure_path = np.empty(n_days)
    trade_pnls: list[float] = []
    entry_equity: float | None = None
    fills = 0
    last = closes.shape[0] - 1

    bust = False
    floor = capital * BUST_FLOOR
    for k in range(n_days):
        t = first + k
        equity = cash + units * closes[t]
        if equity <= floor and not bust:
            # wiped out: the sleeve is closed at this close and trades no more
            bust, units, cash = True, 0.0, floor
            equity = floor
        exposure = units * closes[t] / equity if equity > 0 else 0.0
        days = math.inf if last_fill is None else float(day_numbers[t] - last_fill)
        pos_f, lev_f, cash_f, days_f = _portfolio_features(exposure, params.max_leverage, days)
        position[k], leverage[k], cash_fraction[k], days_since[k] = pos_f, lev_f, cash_f, days_f
        equity_curve[k] = equity
        exposure_path[k] = exposure

        if rl is not None:
            state = states[k].copy()
            state[PORTFOLIO_COLUMNS] = PortfolioSnapshot(pos_f, lev_f, cash_f, days_f).features()
            signal = rl.signal(RlState.from_array(state))
            row_totals = totals[k].tolist()
            row_sums = strength_sums[k].tolist()
            if signal is not None:
                vote = w_rl * signal.confidence
                row_totals[int(signal.action)] += vote
                row_sums[int(signal.action)] += vote * signal.strength
            rl_signals.append(signal.to_dict() if signal is not None else None)
            one = decide_one(row_totals, row_sums, params.min_score)
            actions[k] = int(one.action)
            strengths[k] = one.strength

        if t >= last or bust:
            continue
        action = int(actions[k])
        if action == Action.HOLD:
            # keep the position, but never beyond the leverage cap (price moves inflate it)
            target = min(max(exposure, -params.max_leverage), params.max_leverage)
            if target == exposure:
                continue
        else:
            size = float(strengths[k]) * float(exposure_cap[k])
            target = size if action == Action.BUY else (-size if params.allow_short else 0.0)
        if abs(target - exposure) < REBALANCE_THRESHOLD and not (target == 0.0 and units != 0.0):
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
        old_units, units = units, new_units
        fills += 1
        last_fill = int(day_numbers[t + 1])
        equity_after = cash + units * price_open
        # A trade runs from opening a side (from flat, or a flip) to leaving it; its pnl is the
        # sleeve's equity change over that span, entry and exit costs included.
        flipped = old_units != 0.0 and (units == 0.0 or (units > 0) != (old_units > 0))
        if flipped and entry_equity is not None:
            trade_pnls.append(equity_after - entry_equity)
            entry_equity = None
        if units != 0.0 and entry_equity is None:
            entry_equity = equity_open if old_units == 0.0 else equity_after

    if entry_equity is not None:  # a trade still open at the end is closed at the last close
        trade_pnls.append(float(equity_curve[-1]) - entry_equity)

    return SymbolResult(
        symbol=symbol,
        dates=dates[first:],
        actions=actions,
        strengths=strengths,
        signals={"tech": tech, "news": news, "risk": risk},
        rl_signals=rl_signals,
        position=position,
        leverage=leverage,
        cash_fraction=cash_fraction,
        days_since_last_trade=days_since,
        equity=equity_curve,
        exposure=exposure_path,
        trade_pnls=trade_pnls,
        fills=fills,
        fallbacks=rl.fallbacks if rl is not None else 0,
    )


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
        periods_per_year=config.calendar.periods_per_year,
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
        return RlAnalyst(load_rl_policy(target, device=rl_cfg.device))
    except (PolicyError, OSError, ValueError) as exc:
        log.warning("RL analyst disabled for this run, the ensemble carries on without it: %s", exc)
        return RlAnalyst(None, reason=f"{type(exc).__name__}: {exc}")


def _signals_json(r: SymbolResult) -> list[str]:
    """Each decision's ``signals`` as JSON text, formatted directly (json.dumps per row costs
    more than the whole simulation). Floats print with ``repr``: finite by construction, so
    valid JSON; the RL signal is ``null`` when the RL analyst was off or fell back."""
    parts: list[list[str]] = []
    for name, sig in r.signals.items():
        if sig is None:
            continue
        parts.append(
            [
                f'"{name}":{{"action":{a},"strength":{st!r},"confidence":{c!r}}}'
                for a, st, c in zip(
                    sig.actions.tolist(),
                    sig.strengths.tolist(),
                    sig.confidences.tolist(),
                    strict=True,
                )
            ]
        )
    rl = [
        "null" if x is None else json.dumps(x, separators=(",", ":"))
        for x in (r.rl_signals or [None] * len(r.actions))
    ]
    return [
        "{" + ",".join(cols) + f',"rl":{rl_json}}}'
        for *cols, rl_json in zip(*parts, rl, strict=True)
    ]


_DECISION_COLUMNS: Final = (
    "run_id",
    "symbol_id",
    "date",
    "action",
    "strength",
    "signals",
    "position",
    "leverage",
    "cash_fraction",
    "days_since_last_trade",
    "equity",
)


def _write_decisions(session: Session, run_id: int, symbol_id: int, r: SymbolResult) -> None:
    """Store one symbol's decisions in batches of ``_BATCH`` rows, a commit after each.

    SQLite goes through the driver's ``executemany`` with pre-formatted rows (dates as ISO
    text, signals as JSON text, ``inf`` days as NULL: exactly what the ORM types store); other
    databases take the Core insert with SQLAlchemy's own type handling.
    """
    n = len(r.actions)
    days = [None if math.isinf(d) else d for d in r.days_since_last_trade.tolist()]
    signals = _signals_json(r)
    conn = session.connection()
    sqlite = conn.dialect.name == "sqlite"
    dates: list[Any] = r.dates.astype("datetime64[D]").tolist()
    if sqlite:
        dates = [d.isoformat() for d in dates]
    columns = list(
        zip(
            [run_id] * n,
            [symbol_id] * n,
            dates,
            r.actions.tolist(),
            r.strengths.tolist(),
            signals,
            r.position.tolist(),
            r.leverage.tolist(),
            r.cash_fraction.tolist(),
            days,
            r.equity.tolist(),
            strict=True,
        )
    )
    for i in range(0, n, _BATCH):
        chunk = columns[i : i + _BATCH]
        if sqlite:
            sql = (
                f"INSERT INTO {Decision.__tablename__} ({', '.join(_DECISION_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_DECISION_COLUMNS))})"
            )
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.executemany(sql, chunk)
            finally:
                cursor.close()
        else:
            rows = [dict(zip(_DECISION_COLUMNS, row, strict=True)) for row in chunk]
            for row in rows:
                row["signals"] = json.loads(row["signals"])
                if row["days_since_last_trade"] is None:
                    row["days_since_last_trade"] = math.inf
            conn.execute(insert(Decision), rows)
        session.commit()
        conn = session.connection()


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
) -> BacktestReport:
    """Backtest ``config`` on ``symbols`` over ``start .. end`` and store every decision.

    ``use_rl``: None follows the strategy file; False switches the 4th analyst off (``--no-rl``);
    True needs a model (``policy`` or the file's ``ensemble.rl_policy``). A model that fails to
    load or to predict is a fallback, not an error: the ensemble carries on without it and the
    report counts and explains it. The session is committed as the run goes (run row, decision
    batches, final status); on any exception the run is marked ``failed`` and the exception
    re-raised.
    """
    import time

    from tqdm import tqdm

    if not symbols:
        raise ValueError("no symbols given; expected at least one")
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    rl_on = config.rl_enabled if use_rl is None else use_rl
    if not rl_on and config.rl_enabled:
        config = config.with_rl(False)
    elif rl_on and not config.rl_enabled and policy is None:
        config = config.with_rl(True)  # resolves the model path, or StrategyError
    params = engine_params(config)
    if rl_on and not config.rl_enabled:  # a policy handed in for a strategy that has RL off
        params = replace(params, weights=(*params.weights[:3], config.ensemble.analyst_weights.rl))
    clock = time.perf_counter()
    symbol_ids = {name: get_symbol(session, name).id for name in symbols}  # before the run row
    run = BacktestRun(
        strategy_name=config.name,
        strategy_hash=config.file_sha256,
        params={"strategy": config.to_dict(), "rl_enabled": rl_on, "source": config.source},
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
        macro = load_macro(session, end=end)  # market-wide: read once
        first_rl = _make_rl(config, policy) if rl_on else None  # the model is loaded once
        results: list[SymbolResult] = []
        reasons: list[str] = []
        for name in tqdm(symbols, desc="backtest", unit="symbol", disable=not progress):
            history = load_history(session, name, end=end)
            day_numbers = history.dates.astype(np.int64)
            first = int(np.searchsorted(day_numbers, np.datetime64(start, "D").astype(np.int64)))
            if first >= len(history):
                raise StateBuildError(
                    f"{name!r} has no bar in {start.isoformat()} .. {end.isoformat()}; its bars "
                    f"end on {history.dates[-1]}"
                )
            news = load_news(session, name, end=end)
            market = market_feature_matrix(history, news, macro)
            rl = RlAnalyst(first_rl.policy, reason=first_rl.last_error) if first_rl else None
            result = simulate_symbol(
                name,
                history.dates,
                history.open,
                history.close,
                market,
                first,
                params,
                capital,
                rl,
            )
            if rl is not None and rl.last_error and rl.fallbacks:
                reasons.append(f"{name}: {rl.last_error}")
            _write_decisions(session, run_id, symbol_ids[name], result)
            results.append(result)

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
