"""The reads of offline dataset generation (``otonom_trainer.dataset``): backtest runs, their
decisions as columns, and the bars a run's states read.

Typed readers, so the trainer holds no SQL and names no table. The wide reads (decisions,
bars) take ``otonom_runtime.store.raw``'s fast path: rows streamed into one float64 array,
dates as day numbers, the text read as the fallback; the same tables, filters and order as
the trainer's own SQL had (the bench's SQL-read floor, ``bench/dataset.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import Date, Integer, String, TextClause, bindparam, select, text
from sqlalchemy.orm import Session

from otonom_runtime.store.raw import _date_column, _day_array, _read, fetch_raw
from otonom_runtime.store.tables import BacktestRun, Bar, Decision, Symbol
from otonom_schema import MarketHistory

__all__ = [
    "DecisionColumns",
    "RunInfo",
    "bar_range",
    "bar_span",
    "list_runs",
    "load_bar_window",
    "load_decisions",
    "run_params",
    "synthetic_flags",
]


@dataclass(frozen=True)
class RunInfo:
    """One backtest run as dataset generation judges it (``params``: the run's own, {} when
    it stored none)."""

    id: int
    strategy_name: str
    strategy_hash: str
    symbols: tuple[str, ...]
    start: dt.date
    end: dt.date
    status: str
    error: str | None
    params: Mapping[str, Any]


@dataclass(frozen=True)
class DecisionColumns:
    """A run's decisions for one symbol, oldest first, one array element per decision.

    ``days_since_last_trade``: ``math.inf`` = never traded (stored as NULL), as the
    ``Decision`` attribute reads it.
    """

    dates: npt.NDArray[np.datetime64]
    actions: npt.NDArray[np.int64]
    strengths: npt.NDArray[np.float64]
    position: npt.NDArray[np.float64]
    leverage: npt.NDArray[np.float64]
    cash_fraction: npt.NDArray[np.float64]
    days_since_last_trade: npt.NDArray[np.float64]


def list_runs(session: Session) -> list[RunInfo]:
    """Every backtest run, newest first (``created_at``, then id)."""
    stmt = select(
        BacktestRun.id,
        BacktestRun.strategy_name,
        BacktestRun.strategy_hash,
        BacktestRun.symbols,
        BacktestRun.start_date,
        BacktestRun.end_date,
        BacktestRun.status,
        BacktestRun.error,
        BacktestRun.params,
    ).order_by(BacktestRun.created_at.desc(), BacktestRun.id.desc())
    return [
        RunInfo(
            id=int(r[0]),
            strategy_name=str(r[1]),
            strategy_hash=str(r[2]),
            symbols=tuple(r[3] or ()),
            start=r[4],
            end=r[5],
            status=str(r[6]),
            error=r[7],
            params=dict(r[8] or {}),
        )
        for r in session.execute(stmt).all()
    ]


def run_params(session: Session, ids: Collection[int]) -> dict[int, dict[str, Any] | None]:
    """{run id: its stored ``params``} for the runs ``ids`` (missing ids are left out)."""
    rows = session.execute(
        select(BacktestRun.id, BacktestRun.params).where(BacktestRun.id.in_(sorted(ids)))
    ).all()
    return {int(run_id): params for run_id, params in rows}


def synthetic_flags(session: Session, names: Collection[str]) -> dict[str, bool]:
    """{symbol: whether it is synthetic} for the symbols ``names`` held by the store."""
    rows = session.execute(
        select(Symbol.name, Symbol.is_synthetic).where(Symbol.name.in_(list(names)))
    ).all()
    return {str(name): bool(synthetic) for name, synthetic in rows}


_BAR_RANGE: Final = text(
    f"SELECT MIN(b.date), MAX(b.date) FROM {Bar.__tablename__} b "
    f"JOIN {Symbol.__tablename__} s ON b.symbol_id = s.id "
    "WHERE s.name = :symbol AND b.date >= :start AND b.date <= :end"
).bindparams(
    bindparam("symbol", type_=String), bindparam("start", type_=Date), bindparam("end", type_=Date)
)
_BAR_SPAN: Final = text(
    f"SELECT COUNT(*), MIN(b.date), MAX(b.date) FROM {Bar.__tablename__} b "
    f"JOIN {Symbol.__tablename__} s ON b.symbol_id = s.id "
    "WHERE s.name = :symbol AND b.date <= :end"
).bindparams(bindparam("symbol", type_=String), bindparam("end", type_=Date))


def bar_range(
    session: Session, symbol: str, start: dt.date, end: dt.date
) -> tuple[dt.date, dt.date] | None:
    """The first and the last bar date of ``symbol`` in ``start .. end``; None when it has no
    bar there (or is not in the store). Through the driver (``fetch_raw``: called per symbol,
    where SQLAlchemy's statement layer would cost three times the query)."""
    lo, hi = fetch_raw(session, _BAR_RANGE, {"symbol": symbol, "start": start, "end": end})[0]
    if lo is None:
        return None
    return _date_value(lo, session), _date_value(hi, session)


def bar_span(
    session: Session, symbol: str, end: dt.date
) -> tuple[int, dt.date | None, dt.date | None]:
    """(count, first date, last date) of the bars of ``symbol`` dated <= ``end`` (for
    messages; the dates None when there is none)."""
    count, lo, hi = fetch_raw(session, _BAR_SPAN, {"symbol": symbol, "end": end})[0]
    if not count:
        return 0, None, None
    return int(count), _date_value(lo, session), _date_value(hi, session)


def _date_value(value: Any, session: Session) -> dt.date:
    """One date as the driver returned it, as ``datetime.date`` (``_day_array``'s rules)."""
    out: dt.date = _day_array([value], session)[0].item()
    return out


@functools.cache
def _decisions_stmt(dialect: str | None) -> TextClause:
    """The decisions of one run for one symbol in a date range, oldest first; ``dialect`` as
    for ``otonom_runtime.store.readers._history_stmt``. Only the columns the rows need."""
    return text(
        f"SELECT {_date_column('d.date', dialect)}, d.action, d.strength, d.position, "
        "d.leverage, d.cash_fraction, d.days_since_last_trade "
        f"FROM {Decision.__tablename__} d JOIN {Symbol.__tablename__} s ON d.symbol_id = s.id "
        "WHERE d.run_id = :run_id AND s.name = :symbol AND d.date >= :start AND d.date <= :end "
        "ORDER BY d.date"
    ).bindparams(
        bindparam("run_id", type_=Integer),
        bindparam("symbol", type_=String),
        bindparam("start", type_=Date),
        bindparam("end", type_=Date),
    )


def load_decisions(
    session: Session, run_id: int, symbol: str, start: dt.date, end: dt.date
) -> DecisionColumns | None:
    """The decisions of run ``run_id`` for ``symbol`` dated ``start .. end``, oldest first;
    None when there is none. One query (``otonom_runtime.store.raw._read``)."""
    values = {"run_id": run_id, "symbol": symbol, "start": start, "end": end}
    read = _read(session, _decisions_stmt, values, 7)
    if read is None:
        return None
    dates, (actions, strengths, position, leverage, cash, days) = read
    days = days.copy()
    days[np.isnan(days)] = np.inf  # NULL: never traded
    return DecisionColumns(
        dates=dates,
        actions=actions.astype(np.int64),
        strengths=strengths,
        position=position,
        leverage=leverage,
        cash_fraction=cash,
        days_since_last_trade=days,
    )


@functools.cache
def _bar_window_stmt(dialect: str | None) -> TextClause:
    """The bars of a symbol from the ``:back``-th bar before ``:first`` (or the oldest, if
    there are fewer) to ``:end`` (the subquery walks the unique index)."""
    return text(
        f"SELECT {_date_column('b.date', dialect)}, b.open, b.high, b.low, b.close, b.volume "
        f"FROM {Bar.__tablename__} b JOIN {Symbol.__tablename__} s ON b.symbol_id = s.id "
        "WHERE s.name = :symbol AND b.date <= :end AND b.date >= COALESCE("
        "(SELECT MIN(w.date) FROM ("
        f"SELECT p.date FROM {Bar.__tablename__} p JOIN {Symbol.__tablename__} ps "
        "ON p.symbol_id = ps.id WHERE ps.name = :symbol AND p.date < :first "
        "ORDER BY p.date DESC LIMIT :back) w), :first) "
        "ORDER BY b.date"
    ).bindparams(
        bindparam("symbol", type_=String),
        bindparam("first", type_=Date),
        bindparam("end", type_=Date),
        bindparam("back", type_=Integer),
    )


def load_bar_window(
    session: Session, symbol: str, first: dt.date, end: dt.date, back: int
) -> MarketHistory | None:
    """The bars of ``symbol`` dated <= ``end`` from the ``back``-th bar before ``first`` on
    (all that states from ``first`` on read when ``back`` is ``LOOKBACK - 1``); None when there
    is none. One query, as ``load_decisions``."""
    values = {"symbol": symbol, "first": first, "end": end, "back": back}
    read = _read(session, _bar_window_stmt, values, 6)
    if read is None:
        return None
    dates, (open_, high, low, close, volume) = read
    return MarketHistory(
        dates=dates, open=open_, high=high, low=low, close=close, volume=volume, symbol=symbol
    )
