"""The reads of ``otonom monitor`` (``otonom_runtime.monitor``): which run to watch and its
stored decisions in a date window, as columns (one Core select each; no ORM objects)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from otonom_runtime.store.tables import BacktestRun, Decision, Symbol

__all__ = ["latest_complete_run", "monitored_decisions"]

_TEACHERS = ("tech", "news", "risk")
_SIGNAL = ("action", "strength", "confidence")


def latest_complete_run(
    session: Session, strategy_name: str, internal: Sequence[str] = ()
) -> BacktestRun | None:
    """The newest complete backtest run of the strategy named ``strategy_name`` whose purpose
    is none of ``internal`` (``otonom_runtime.backtest.INTERNAL_PURPOSES``), or None."""
    query = (
        select(BacktestRun)
        .where(BacktestRun.strategy_name == strategy_name, BacktestRun.status == "complete")
        .order_by(BacktestRun.id.desc())
    )
    for run in session.scalars(query):
        if str((run.params or {}).get("purpose") or "user") not in internal:
            return run
    return None


def monitored_decisions(
    session: Session,
    run_ids: Sequence[int],
    start: dt.date | None,
    end: dt.date | None,
    symbols: Sequence[str] = (),
    *,
    live_strategy: str | None = None,
) -> dict[str, list[Any]]:
    """The decisions of ``run_ids`` (or, given ``live_strategy``, that strategy's live
    decisions, ``otonom daemon``'s) dated in [``start``, ``end``] (None: open), of
    ``symbols`` (empty: all), ordered by symbol then date: columns ``symbol``, ``date``,
    ``action``, ``strength``, ``position``, ``leverage``, ``cash_fraction``,
    ``days_since_last_trade`` (``math.inf``: never traded), ``rl_action``, ``rl_confidence``,
    each teacher analyst's stored signal (``tech_action``, ``tech_strength``,
    ``tech_confidence``, the same for ``news`` and ``risk``; None: it did not vote), and
    ``rl_on`` (the row's run had the RL analyst on: its ``params["rl_enabled"]``)."""
    cols = (
        Decision.run_id,
        Symbol.name,
        Decision.date,
        Decision.action,
        Decision.strength,
        Decision.position,
        Decision.leverage,
        Decision.cash_fraction,
        Decision.days_since_last_trade,
        Decision.rl_action,
        Decision.rl_confidence,
        *(getattr(Decision, f"{a}_{k}") for a in _TEACHERS for k in _SIGNAL),
    )
    query = (
        select(*cols)
        .join(Symbol, Symbol.id == Decision.symbol_id)
        .where(
            Decision.run_id.in_(list(run_ids))
            if live_strategy is None
            else Decision.live_strategy == live_strategy
        )
        .order_by(Symbol.name, Decision.date, Decision.run_id)
    )
    if start is not None:
        query = query.where(Decision.date >= start)
    if end is not None:
        query = query.where(Decision.date <= end)
    if symbols:
        query = query.where(Symbol.name.in_(list(symbols)))
    names = (
        "run_id", "symbol", "date", "action", "strength", "position", "leverage",
        "cash_fraction", "days_since_last_trade", "rl_action", "rl_confidence",
        *(f"{a}_{k}" for a in _TEACHERS for k in _SIGNAL),
    )  # fmt: skip
    out: dict[str, list[Any]] = {n: [] for n in names}
    for row in session.execute(query):
        for name, value in zip(names, row, strict=True):
            out[name].append(value)
    runs = session.execute(
        select(BacktestRun.id, BacktestRun.params).where(BacktestRun.id.in_(set(out["run_id"])))
    )
    rl_on = {run_id: bool((params or {}).get("rl_enabled")) for run_id, params in runs}
    out["rl_on"] = [rl_on.get(run_id, False) for run_id in out["run_id"]]
    out["days_since_last_trade"] = [
        math.inf if v is None else float(v) for v in out["days_since_last_trade"]
    ]
    return out
