"""Runs: a strategy file -> the inputs read from the store -> the trading engine -> the
decision rows and the run's metrics stored (``run_backtest``, ``BacktestReport``)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from otonom_runtime._errors import BacktestError, PolicyError, StateBuildError
from otonom_runtime.backtest.engine import SymbolResult, _Bars, _simulate
from otonom_runtime.backtest.params import RUN_PURPOSES, EngineParams, engine_params
from otonom_runtime.backtest.records import _RunRecord, _union_dates, _write_decisions
from otonom_runtime.ensemble import RlAnalyst
from otonom_runtime.metrics import (
    FEW_RETURNS_MARK,
    Metrics,
    compute_metrics,
    few_returns_note,
)
from otonom_runtime.store import (
    BacktestRun,
    get_symbols,
    load_history,
    load_macro,
    load_news,
    sentiment_source,
)
from otonom_schema import Action, market_feature_matrix

if TYPE_CHECKING:
    from otonom_runtime.policy import RlPolicy
    from otonom_runtime.strategy import StrategyConfig

__all__ = ["BacktestReport", "run_backtest"]

log = logging.getLogger("otonom_runtime.backtest")
F64 = npt.NDArray[np.float64]
Sources = dict[str, dict[str, str]]
"""Per symbol, the sentiment source it reads: ``{"news": ..., "macro": ...}``."""


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
    package docstring). A request that cannot run (no symbols, ``start`` after ``end``, another
    purpose) raises ``BacktestError`` (a ``ValueError``) and stores nothing.
    """
    import time

    _check_request(symbols, start, end, purpose)
    rl_on = config.rl_enabled if use_rl is None else use_rl
    config, params = _with_rl(config, rl_on, policy)
    clock = time.perf_counter()
    symbol_ids, sources = _symbols(session, config, symbols)  # before the run row
    _check_bars_in_range(session, symbol_ids, start, end)  # a bad request stores nothing
    first_rl = _make_rl(config, policy) if rl_on else None  # loaded once, recorded in the run
    run = _run_row(config, symbols, start, end, sources, purpose, first_rl)
    record = _RunRecord(session, run)
    try:
        capital = params.initial_capital / len(symbols)
        inputs = _load_inputs(session, config, symbols, start, end, sources, progress)
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
        reasons = _fallback_reasons(symbols, first_rl, rls, results)
        _write_decisions(session, record.run_id, [symbol_ids[name] for name in symbols], results)
        summary = _Summary.of(results, capital, params.periods_per_year)
        record.complete(summary.stored(reasons))
    except BaseException as exc:
        record.fail(exc)
        raise
    return BacktestReport(
        run_id=record.run_id,
        strategy=config.name,
        symbols=list(symbols),
        start=start,
        end=end,
        rl_enabled=rl_on,
        metrics=summary.metrics,
        per_symbol=summary.per_symbol,
        action_counts=summary.counts,
        fallbacks=summary.fallbacks,
        fallback_reason="; ".join(reasons) or None,
        dates=summary.dates,
        equity=summary.equity,
        bar_decisions=sum(len(r.actions) for r in results),
        elapsed_s=time.perf_counter() - clock,
    )


def _with_rl(
    config: StrategyConfig, rl_on: bool, policy: RlPolicy | None
) -> tuple[StrategyConfig, EngineParams]:
    """The strategy with the RL analyst switched as asked, and its engine parameters."""
    if not rl_on and config.rl_enabled:
        config = config.with_rl(False)
    elif rl_on and not config.rl_enabled and policy is None:
        config = config.with_rl(True)  # resolves the model path, or StrategyError
    params = engine_params(config)
    if rl_on and not config.rl_enabled:  # a policy handed in for a strategy that has RL off
        params = replace(params, weights=(*params.weights[:3], config.ensemble.analyst_weights.rl))
    return config, params


def _symbols(
    session: Session, config: StrategyConfig, symbols: Sequence[str]
) -> tuple[dict[str, int], Sources]:
    """Each symbol's id (``UnknownSymbolError`` for one not in the store) and the sentiment it
    reads, recorded in the run for dataset generation to read the same."""
    rows = dict(zip(symbols, get_symbols(session, symbols), strict=True))
    sources = {
        name: {
            "news": sentiment_source(row, config.data.news_source),
            "macro": sentiment_source(row, config.data.macro_source),
        }
        for name, row in rows.items()
    }
    return {name: row.id for name, row in rows.items()}, sources


def _run_row(
    config: StrategyConfig,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    sources: Sources,
    purpose: str,
    rl: RlAnalyst | None,
) -> BacktestRun:
    """The run's row, status ``running``, recording how it is made (``rl``: the RL analyst
    as loaded, None with it off)."""
    return BacktestRun(
        strategy_name=config.name,
        strategy_hash=config.file_sha256,
        params={
            "strategy": config.to_dict(),
            "rl_enabled": rl is not None,
            "source": config.source,
            "sentiment_sources": sources,
            "purpose": purpose,
            **_rl_model_params(config, rl),
        },
        start_date=start,
        end_date=end,
        symbols=list(symbols),
        status="running",
    )


def _check_request(symbols: Sequence[str], start: dt.date, end: dt.date, purpose: str) -> None:
    """``BacktestError`` for a request that cannot run, before anything is read or stored."""
    if not symbols:
        raise BacktestError("no symbols given; expected at least one")
    if start > end:
        raise BacktestError(f"start {start} is after end {end}")
    if purpose not in RUN_PURPOSES:
        raise BacktestError(f"purpose is {purpose!r}; expected one of {', '.join(RUN_PURPOSES)}")


def _load_inputs(
    session: Session,
    config: StrategyConfig,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    sources: Sources,
    progress: bool,
) -> list[_Bars]:
    """Every symbol's bars and market features, the decision days from ``start``; warns of a
    named sentiment source that holds nothing (``_warn_unread``)."""
    from tqdm import tqdm

    macros = {  # market-wide: read once per source
        source: load_macro(session, source=source, end=end)
        for source in sorted({s["macro"] for s in sources.values()})
    }
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
    return inputs


def _fallback_reasons(
    symbols: Sequence[str],
    first_rl: RlAnalyst | None,
    rls: Sequence[RlAnalyst] | None,
    results: Sequence[SymbolResult],
) -> list[str]:
    """Why the RL analyst fell back, per symbol where it did (its newest error); logged once
    for the run when a loaded model failed to predict."""
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
    return reasons


@dataclass(frozen=True)
class _Summary:
    """A finished simulation's figures: the portfolio curve, its metrics, each symbol's, and
    the action counts (per symbol and ``all``)."""

    dates: npt.NDArray[np.datetime64]
    equity: F64
    metrics: Metrics
    per_symbol: dict[str, Metrics]
    counts: dict[str, dict[str, int]]
    fallbacks: int

    @classmethod
    def of(cls, results: Sequence[SymbolResult], capital: float, ppy: int) -> _Summary:
        dates, equity, exposure = _portfolio_curve(list(results), capital)
        trades = [p for r in results for p in r.trade_pnls]
        fallbacks = sum(r.fallbacks for r in results)
        metrics = compute_metrics(equity, exposure, trades, ppy, fallbacks=fallbacks)
        per_symbol = {
            r.symbol: compute_metrics(
                r.equity, r.exposure, r.trade_pnls, ppy, fallbacks=r.fallbacks
            )
            for r in results
        }
        counts: dict[str, dict[str, int]] = {}
        for r in results:
            c = np.bincount(r.actions, minlength=3)
            counts[r.symbol] = {a.name: int(c[a]) for a in Action}
        counts["all"] = {a.name: sum(counts[r.symbol][a.name] for r in results) for a in Action}
        return cls(dates, equity, metrics, per_symbol, counts, fallbacks)

    def stored(self, reasons: Sequence[str]) -> dict[str, Any]:
        """The run row's ``metrics``."""
        return {
            "portfolio": self.metrics.to_dict(),
            "symbols": {k: v.to_dict() for k, v in self.per_symbol.items()},
            "action_counts": self.counts,
            "fallbacks": self.fallbacks,
            # why the RL analyst fell back (per symbol, its newest error), for `runs show`
            "fallback_reason": "; ".join(reasons)[:2000] or None,
        }


def _portfolio_curve(
    results: list[SymbolResult], capital: float
) -> tuple[npt.NDArray[np.datetime64], F64, F64]:
    """All sleeves on the union of their dates (equity carried forward): dates, equity,
    exposure (the equity-weighted sum of the sleeves' exposures)."""
    dates = _union_dates(results)
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
    from otonom_runtime.store import bar_spans, symbols_with_bars

    ids = list(symbol_ids.values())
    if symbols_with_bars(session, ids, start, end) == len(set(ids)):
        return  # every symbol has 2 bars or more in range; the full query only names a failure
    found = bar_spans(session, ids, start, end)
    for name, symbol_id in symbol_ids.items():
        first, last, n = found.get(symbol_id, (None, None, 0))
        if n < 2:
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
        note = few_returns_note(m.n_bars, m.periods_per_year)
        q = FEW_RETURNS_MARK if note else ""
        rows = [
            ("total return", f"{m.total_return:+.2%}"),
            ("CAGR", f"{m.cagr:+.2%}{q}"),
            ("Sharpe", "-" if m.sharpe is None else f"{m.sharpe:.2f}{q}"),
            ("Sortino", "-" if m.sortino is None else f"{m.sortino:.2f}{q}"),
            ("max drawdown", f"{m.max_drawdown:.2%}"),
            ("trades", str(m.n_trades)),
            ("win rate", "-" if m.win_rate is None else f"{m.win_rate:.1%}"),
            ("exposure", f"{m.exposure:.1%}"),
            ("turnover (per year)", f"{m.turnover:.1f}{q}"),
            ("RL fallbacks", str(self.fallbacks)),
        ]
        width = max(len(k) for k, _ in rows)
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        if note:
            lines.append(f"  {note}")
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


def _rl_model_params(config: StrategyConfig, rl: RlAnalyst | None) -> dict[str, str | None]:
    """The run's ``rl_model_file`` (the model file served, or the one that failed to load) and
    ``rl_model_sha256`` (the verified hash of the bytes served; None when none was: RL off,
    or the model did not load)."""
    if rl is None:
        return {"rl_model_file": None, "rl_model_sha256": None}
    if rl.policy is not None:  # a policy handed in may be any object with predict()
        path, sha = getattr(rl.policy, "path", None), getattr(rl.policy, "sha256", None)
        return {
            "rl_model_file": None if path is None else str(path),
            "rl_model_sha256": sha if isinstance(sha, str) else None,
        }
    target = config.ensemble.rl_policy.model_file or config.ensemble.rl_policy.model_path
    return {"rl_model_file": None if target is None else str(target), "rl_model_sha256": None}
