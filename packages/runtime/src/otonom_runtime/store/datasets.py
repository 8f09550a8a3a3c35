"""The reads of offline dataset generation (``otonom_trainer.dataset``): backtest runs, their
decisions as columns, and the bars a run's states read.

Typed readers, so the trainer holds no SQL and names no table. The same tables, filters and
order as the trainer's own SQL had (the bench's SQL-read floor, ``bench/dataset.py``).

The wide reads (decisions, bars) are read as the store's readers read: on SQLite first
``otonom_runtime.store.raw._dated`` (the numbers streamed, the dates as one text), else
``raw._read``; news and macro through ``load_news`` / ``load_macro`` themselves.
``load_symbol_reads`` reads one symbol's decisions, bars and news at once, so that on SQLite
the decisions' and news' dates come from the bars' date text (``raw._days_of``), and the
bars' from an earlier symbol's (``SharedDates``), where found there; its results are the
three readers'.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import Date, Integer, String, TextClause, bindparam, select, text
from sqlalchemy.orm import Session

from otonom_runtime.store.raw import (
    _DATES,
    _autoflush,
    _dated_raw,
    _dated_text,
    _day_array,
    _days_of,
    _read_rows,
    fetch_raw,
)
from otonom_runtime.store.readers import _news_query, load_news
from otonom_runtime.store.tables import (
    BacktestRun,
    Bar,
    Decision,
    Symbol,
)
from otonom_schema import LOOKBACK, MATHS_PARAMS, MarketHistory, SentimentSeries

__all__ = [
    "DecisionColumns",
    "RunInfo",
    "SharedDates",
    "SymbolReads",
    "bar_range",
    "bar_span",
    "list_runs",
    "load_bar_window",
    "load_decision_equity",
    "load_decisions",
    "load_state_bars",
    "load_symbol_reads",
    "mapped_reads",
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


_IN_RANGE: Final = (
    f"FROM {Bar.__tablename__} b JOIN {Symbol.__tablename__} s ON b.symbol_id = s.id "
    "WHERE s.name = :symbol AND b.date >= :start AND b.date <= :end"
)
# MIN and MAX each in its own subquery: one index probe each (in one SELECT, SQLite walks
# every bar of the range)
_BAR_RANGE: Final = text(
    f"SELECT (SELECT MIN(b.date) {_IN_RANGE}), (SELECT MAX(b.date) {_IN_RANGE})"
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


_DECISION_NUMBERS: Final = (
    "d.action, d.strength, d.position, d.leverage, d.cash_fraction, d.days_since_last_trade"
)
_BAR_NUMBERS: Final = "b.open, b.high, b.low, b.close, b.volume"


@functools.cache
def _decisions_query(columns: str, order: bool = True) -> TextClause:
    """``SELECT columns`` of the decisions of one run for one symbol in a date range (oldest
    first when ``order``)."""
    return text(
        f"SELECT {columns} "
        f"FROM {Decision.__tablename__} d JOIN {Symbol.__tablename__} s ON d.symbol_id = s.id "
        "WHERE d.run_id = :run_id AND s.name = :symbol AND d.date >= :start AND d.date <= :end"
        + (" ORDER BY d.date" if order else "")
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
    None when there is none. One query (SQLite: two, ``_dated``; else
    ``otonom_runtime.store.raw._read``)."""
    values = {"run_id": run_id, "symbol": symbol, "start": start, "end": end}
    read = _read_rows(session, _decisions_query, "d.date", _DECISION_NUMBERS, values)
    if read is None:
        return None
    return _decision_columns(*read)


def load_decision_equity(
    session: Session, run_id: int, symbol: str, start: dt.date, end: dt.date
) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.float64]] | None:
    """The dates and stored equity (the sleeve's, marked at each decision day's close, before
    that decision is filled) of run ``run_id``'s decisions for ``symbol`` dated ``start ..
    end``, oldest first; None when there is none (the rewards of ``otonom_trainer.rewards``)."""
    values = {"run_id": run_id, "symbol": symbol, "start": start, "end": end}
    read = _read_rows(session, _decisions_query, "d.date", "d.equity", values)
    return None if read is None else (read[0], read[1][0])


def _decision_columns(
    dates: npt.NDArray[np.datetime64], numbers: list[npt.NDArray[np.float64]]
) -> DecisionColumns:
    """``load_decisions``' result from the dates and the six number columns it read."""
    actions, strengths, position, leverage, cash, days = numbers
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
def _bar_window_query(columns: str, order: bool = True) -> TextClause:
    """``SELECT columns`` of the bars of a symbol from the ``:back``-th bar before ``:first``
    (or the oldest, if there are fewer) to ``:end`` (the subquery walks the unique index);
    oldest first when ``order``."""
    return text(
        f"SELECT {columns} "
        f"FROM {Bar.__tablename__} b JOIN {Symbol.__tablename__} s ON b.symbol_id = s.id "
        "WHERE s.name = :symbol AND b.date <= :end AND b.date >= COALESCE("
        "(SELECT MIN(w.date) FROM ("
        f"SELECT p.date FROM {Bar.__tablename__} p JOIN {Symbol.__tablename__} ps "
        "ON p.symbol_id = ps.id WHERE ps.name = :symbol AND p.date < :first "
        "ORDER BY p.date DESC LIMIT :back) w), :first)" + (" ORDER BY b.date" if order else "")
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
    is none. As ``load_decisions``."""
    values = {"symbol": symbol, "first": first, "end": end, "back": back}
    read = _read_rows(session, _bar_window_query, "b.date", _BAR_NUMBERS, values)
    if read is None:
        return None
    dates, (open_, high, low, close, volume) = read
    return MarketHistory(
        dates=dates, open=open_, high=high, low=low, close=close, volume=volume, symbol=symbol
    )


# the high, NULL (NaN) where the open is not a finite price > 0 (SQLite keeps NaN as NULL;
# 9e999 reads as +inf), what ``MarketHistory`` requires of it
_HIGH_IF_OPEN_OK: Final = "CASE WHEN b.open > 0 AND b.open < 9e999 THEN b.high END"


def load_state_bars(
    session: Session, symbol: str, first: dt.date, end: dt.date, back: int
) -> MarketHistory | None:
    """``load_bar_window``'s bars as a state reads them: no feature reads a bar's open
    (``otonom_schema``'s maths read the dates, close, high, low and volume), so on SQLite the
    open is not fetched (a cell less per bar) but checked in SQL, and the history's ``open``
    holds its ``close``. A bar whose open ``MarketHistory`` would refuse (or whose high is
    not a number) sends the read the general way, which reads the open and refuses it as
    ``load_bar_window`` does; elsewhere it is ``load_bar_window``. For the states only: the
    opens are not the store's."""
    return _state_bars(session, symbol, first, end, back)[0]


_Like = tuple[str, npt.NDArray[np.datetime64]]  # a read's dates as text and as dates


class SharedDates:
    """The bar dates a caller's ``load_symbol_reads`` calls have read (one per dataset): the
    longest bars' date text read so far and its dates (read-only). A later symbol's bars
    whose date text is found whole in it (symbols of one market share their days) take their
    dates from there, not parsed again (``raw._days_of``)."""

    def __init__(self) -> None:
        self.like: _Like | None = None

    def keep(self, like: _Like) -> None:
        """Keep ``like`` if it is longer than the text kept."""
        if self.like is None or len(like[0]) > len(self.like[0]):
            like[1].flags.writeable = False  # its views are handed out
            self.like = like


def _state_bars(
    session: Session,
    symbol: str,
    first: dt.date,
    end: dt.date,
    back: int,
    shared: SharedDates | None = None,
) -> tuple[MarketHistory | None, _Like | None]:
    """``load_state_bars``' bars, and their dates' text and dates when read on SQLite's way
    (``raw._dated_text``; else None); ``shared``: ``load_symbol_reads``'."""
    values = {"symbol": symbol, "first": first, "end": end, "back": back}
    read = _dated_text(
        session,
        _bar_window_query(f"{_HIGH_IF_OPEN_OK}, b.low, b.close, b.volume"),
        _bar_window_query(_DATES.format("b.date"), order=False),
        values,
        4,
        None if shared is None else shared.like,
    )
    if read is None or np.isnan(read[2][0]).any():
        return load_bar_window(session, symbol, first, end, back), None
    joined, dates, (high, low, close, volume) = read
    history = MarketHistory(
        dates=dates, open=close, high=high, low=low, close=close, volume=volume, symbol=symbol
    )
    if shared is not None:
        shared.keep((joined, dates))
    return history, (joined, dates)


_NEWS_AGE: Final = dt.timedelta(days=int(MATHS_PARAMS["SENTIMENT_MAX_AGE_DAYS"]))


@dataclass(frozen=True)
class SymbolReads:
    """What one symbol's dataset rows read (``load_symbol_reads``)."""

    decisions: DecisionColumns | None
    bars: MarketHistory | None
    news: SentimentSeries | None


def load_symbol_reads(
    session: Session,
    run_id: int,
    symbol: str,
    start: dt.date,
    end: dt.date,
    *,
    news_source: str,
    back: int = LOOKBACK - 1,
    news_age: dt.timedelta = _NEWS_AGE,
    shared: SharedDates | None = None,
) -> SymbolReads:
    """The reads of one symbol's dataset rows, the same results as the three readers:
    ``decisions``: ``load_decisions(session, run_id, symbol, start, end)``; when there is one
    (else the rest is None, unread), ``bars``: ``load_state_bars(session, symbol, first,
    last, back)`` (``first``, ``last``: the first and last decision's dates); when there are
    bars (else None, unread), ``news``: ``load_news(session, symbol, source=news_source,
    start=first - news_age, end=last)``.

    The defaults: the bars and news every state from ``first`` on reads (the schema's
    ``LOOKBACK`` and ``SENTIMENT_MAX_AGE_DAYS``). On SQLite, the decisions' and the news'
    dates, when their text is found whole in the bars' date text (a run decides on bar dates;
    news is often dated so too), are those bars' dates, not parsed again
    (``raw._days_of``); so are the bars' own when found in ``shared`` (``SharedDates``, one
    for all the symbols of a dataset); anything else is read as those readers read.
    """
    values = {"run_id": run_id, "symbol": symbol, "start": start, "end": end}
    raw = _dated_raw(
        session,
        _decisions_query(_DECISION_NUMBERS),
        _decisions_query(_DATES.format("d.date"), order=False),
        values,
        6,
    )
    fast = None
    if raw is not None:
        fast = _shared_reads(session, symbol, raw, back, news_source, news_age, shared)
    if fast is not None:
        return fast
    decisions = load_decisions(session, run_id, symbol, start, end)
    if decisions is None:
        return SymbolReads(None, None, None)
    first, last = decisions.dates[0].item(), decisions.dates[-1].item()
    bars = load_state_bars(session, symbol, first, last, back)
    news = None
    if bars is not None:
        news = load_news(session, symbol, source=news_source, start=first - news_age, end=last)
    return SymbolReads(decisions, bars, news)


def _shared_reads(
    session: Session,
    symbol: str,
    raw: tuple[str, list[npt.NDArray[np.float64]]],
    back: int,
    news_source: str,
    news_age: dt.timedelta,
    shared: SharedDates | None,
) -> SymbolReads | None:
    """``load_symbol_reads`` from the decisions read on SQLite's way (``raw``: their dates'
    text, unchecked, and number columns); None when that text is refused (the caller reads
    the general way)."""
    joined, numbers = raw
    try:
        first, last = dt.date.fromisoformat(joined[:10]), dt.date.fromisoformat(joined[-10:])
    except ValueError:
        return None
    bars, like = _state_bars(session, symbol, first, last, back, shared)
    dates = _days_of(joined, numbers[0].size, like)
    if dates is None:
        return None
    decisions = _decision_columns(dates, numbers)
    if bars is None:
        return SymbolReads(decisions, None, None)
    news = _state_news(session, symbol, news_source, first - news_age, last, like)
    return SymbolReads(decisions, bars, news)


def _state_news(
    session: Session, symbol: str, source: str, start: dt.date, end: dt.date, like: _Like | None
) -> SentimentSeries | None:
    """``load_news(session, symbol, source=source, start=start, end=end)``, its dates taken
    from ``like`` where its text is found there (``raw._dated_text``)."""
    if like is None:
        return load_news(session, symbol, source=source, start=start, end=end)
    _autoflush(session)
    values = {"symbol": symbol, "source": source, "start": start, "end": end}
    read = _dated_text(
        session,
        _news_query("n.score", True, True),
        _news_query(_DATES.format("n.date"), True, True, order=False),
        values,
        1,
        like,
    )
    if read is None:
        return load_news(session, symbol, source=source, start=start, end=end)
    return SentimentSeries(dates=read[1], scores=read[2][0])


_MAP_BYTES: Final = 1 << 30


@contextmanager
def mapped_reads(session: Session) -> Iterator[None]:
    """For the block, on SQLite, the session's connection reads the store's file through a
    memory map of up to 1 GiB (``PRAGMA mmap_size``): each page a read touches is mapped,
    not copied in by one ``read`` system call per page (a dataset's reads touch thousands:
    ~3 % of its CPU time; pages still in the write-ahead log are read as before). The pragma
    is back to what it was when the block ends, however it ends (if that fails, the
    connection is invalidated, never reused), so the connection, which the pool hands on,
    keeps no map. For dataset generation's reads (the trainer); elsewhere nothing changes.
    """
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        yield
        return
    dbapi: Any = conn.connection.dbapi_connection
    before = int(dbapi.execute("PRAGMA mmap_size").fetchone()[0])
    restored = False
    try:
        dbapi.execute(f"PRAGMA mmap_size = {_MAP_BYTES}")
        yield
    finally:
        try:
            dbapi.execute(f"PRAGMA mmap_size = {before}")
            restored = True
        finally:
            if not restored:
                conn.invalidate()  # never back to the pool with the map
