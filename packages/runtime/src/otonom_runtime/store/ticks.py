"""The daemon's batched reads and its tick's one write (``otonom_runtime.daemon``).

A tick decides many symbols at once: each read here is one statement for all of them (bars,
news, the strategy's earlier live decisions), never one per symbol; ``record_tick`` writes the
tick's run row and every decision in the session's transaction and commits once, so a tick is
in the store whole or not at all. The tick's cache (``daemon.cache.TickCache``) reads only
what is new: ``tick_marks`` (the largest row ids it has seen), ``new_rows`` (the rows dated after
its last tick or inserted since), ``load_live_tail`` (the live decisions since a date) and
``tick_symbols`` (the symbols' ids by name). All but ``tick_marks`` run as the driver's SQL
(``store.tickplans``: each statement rendered once, sent with its values as they are, read as
the driver's tuples or streamed as numbers), so a steady tick of thousands of symbols builds
no bind parameter or result row object per symbol.
``load_live_signals`` reads the live decisions' analyst signals back (``otonom-train
retrain``: the RL analyst's agreement with the teacher).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    Executable,
    func,
    literal_column,
    select,
)
from sqlalchemy.orm import Session

from otonom_runtime.store.raw import _autoflush, _day_array
from otonom_runtime.store.readers import _unknown
from otonom_runtime.store.tables import (
    BacktestRun,
    Bar,
    Decision,
    NewsSentiment,
    RowChange,
    Symbol,
)
from otonom_runtime.store.tickplans import (
    _COLUMNS,
    _TABLES,
    _VALUES,
    _driver_rows,
    _execute,
    _numbers,
)
from otonom_runtime.store.writers import insert_decisions
from otonom_schema import MarketHistory, SentimentSeries

__all__ = [
    "Changes",
    "LiveDecisions",
    "Marks",
    "NewRows",
    "changed_keys",
    "live_symbols",
    "load_live_decisions",
    "load_live_signals",
    "load_live_tail",
    "load_tick_bars",
    "load_tick_bars_ahead",
    "load_tick_news",
    "load_tick_news_ahead",
    "new_rows",
    "record_tick",
    "tick_marks",
    "tick_symbols",
]


_EPOCH = dt.date(1970, 1, 1).toordinal()
F64 = npt.NDArray[np.float64]


def _days(values: Sequence[dt.date]) -> npt.NDArray[np.datetime64]:
    """``values`` as datetime64[D], through their ordinals (numpy's own conversion of
    ``datetime.date`` objects costs ~50x more: ~8 us a date)."""
    ordinals = np.fromiter((d.toordinal() for d in values), dtype=np.int64, count=len(values))
    return (ordinals - _EPOCH).astype("datetime64[D]")


def _rows(session: Session, query: Executable) -> Sequence[Any]:
    """The rows of ``query`` through the session's connection (SQLAlchemy Core: the same SQL
    and values as ``session.execute``, without the ORM's result layer), pending objects
    flushed first as ``session.execute`` would."""
    _autoflush(session)
    return session.connection().execute(query).all()


def _groups(ids: npt.NDArray[np.int64]) -> list[tuple[int, int, int]]:
    """(symbol id, start, stop) of each run of equal ids in ``ids`` (sorted by id)."""
    if ids.size == 0:
        return []
    cuts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = [0, *cuts.tolist()]
    stops = [*cuts.tolist(), int(ids.size)]
    return [(int(ids[a]), a, b) for a, b in zip(starts, stops, strict=True)]


def load_tick_bars(
    session: Session, names: Mapping[int, str], end: dt.date
) -> dict[int, MarketHistory]:
    """Every bar dated on or before ``end`` of the symbols ``names`` (symbol id -> name), in
    one statement: per symbol id with a bar, its ``MarketHistory`` (oldest first, the values
    ``load_history`` reads); a symbol without one is left out.

    A daemon's first tick reads every symbol's whole history here (5,000 symbols with a year
    each: 1.8 million rows), so the rows are streamed as numbers (``_numbers``: the dates as
    day numbers, no row object kept) and read the ORM's way only where that refuses them (a
    date stored as text that is not canonical ``YYYY-MM-DD``): the same values either way."""
    return load_tick_bars_ahead(session, names, end, end)[0]


def load_tick_bars_ahead(
    session: Session, names: Mapping[int, str], end: dt.date, ahead: dt.date
) -> tuple[dict[int, MarketHistory], NewRows]:
    """``load_tick_bars`` of ``end``, read in the same statement up to ``ahead`` (on or after
    ``end``): the bars dated after ``end`` come apart, as columns by symbol and date
    (``NewRows``), never in a history (nor checked with it before they are due)."""
    keys = list(names)
    numbers = _numbers(session, "bars_whole", keys, {"end": ahead}, 7)
    if numbers is not None:
        ids, days, *columns = numbers
    else:
        rows = _rows(
            session,
            select(Bar.symbol_id, Bar.date, Bar.open, Bar.high, Bar.low, Bar.close, Bar.volume)
            .where(Bar.symbol_id.in_(keys), Bar.date <= ahead)
            .order_by(Bar.symbol_id, Bar.date),
        )
        if not rows:
            return {}, _no_rows(5)
        id_column, dates, *value_columns = zip(*rows, strict=True)
        ids, days = np.array(id_column, dtype=np.int64), _days(dates)
        columns = [np.array(column, dtype=np.float64) for column in value_columns]
    ids, days, columns, later = _split(ids, days, columns, end)
    o, h, lo, c, v = columns
    histories = {
        symbol_id: MarketHistory(
            dates=days[a:b],
            open=o[a:b],
            high=h[a:b],
            low=lo[a:b],
            close=c[a:b],
            volume=v[a:b],
            symbol=names[symbol_id],
        )
        for symbol_id, a, b in _groups(ids)
    }
    return histories, later


def _no_rows(width: int) -> NewRows:
    return NewRows(
        np.array([], dtype=np.int64), np.array([], dtype="datetime64[D]"), np.empty((width, 0))
    )


def _split(
    ids: npt.NDArray[np.int64],
    days: npt.NDArray[np.datetime64],
    columns: list[F64],
    end: dt.date,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.datetime64], list[F64], NewRows]:
    """Rows by symbol and date parted at ``end``: those dated on or before it, and those
    after (``NewRows``)."""
    later = days > np.datetime64(end, "D")
    if not later.any():
        return ids, days, columns, _no_rows(len(columns))
    kept = ~later
    after = NewRows(ids[later], days[later], np.array([c[later] for c in columns]))
    return ids[kept], days[kept], [c[kept] for c in columns], after


def load_tick_news(
    session: Session, sources: Mapping[int, str], end: dt.date
) -> dict[int, SentimentSeries]:
    """The news sentiment dated on or before ``end`` of each symbol id in ``sources`` from its
    source (symbol id -> source), one statement a distinct source (by the (symbol, source,
    date) index; streamed as ``load_tick_bars`` reads); a symbol with none is left out (what
    ``load_news`` gives as None)."""
    return load_tick_news_ahead(session, sources, end, end)[0]


def load_tick_news_ahead(
    session: Session, sources: Mapping[int, str], end: dt.date, ahead: dt.date
) -> tuple[dict[int, SentimentSeries], NewRows]:
    """``load_tick_news`` of ``end``, read in the same statements up to ``ahead``: the scores
    dated after ``end`` apart, as columns by symbol and date (``NewRows``)."""
    by_source: dict[str, list[int]] = {}
    for symbol_id, source in sources.items():
        by_source.setdefault(source, []).append(symbol_id)
    found: dict[int, SentimentSeries] = {}
    parts: list[NewRows] = []
    for source, keys in by_source.items():
        values = {"end": ahead, "source": source}
        numbers = _numbers(session, "news_whole", keys, values, 3)
        if numbers is not None:
            ids, days, scores = numbers
        else:
            query = (
                select(NewsSentiment.symbol_id, NewsSentiment.date, NewsSentiment.score)
                .where(
                    NewsSentiment.symbol_id.in_(keys),
                    NewsSentiment.source == source,
                    NewsSentiment.date <= ahead,
                )
                .order_by(NewsSentiment.symbol_id, NewsSentiment.date)
            )
            rows = _rows(session, query)
            if not rows:
                continue
            id_column, dates, score_column = zip(*rows, strict=True)
            ids, days = np.array(id_column, dtype=np.int64), _days(dates)
            scores = np.array(score_column, dtype=np.float64)
        ids, days, (scores,), later = _split(ids, days, [scores], end)
        parts.append(later)
        for symbol_id, a, b in _groups(ids):
            found[symbol_id] = SentimentSeries(dates=days[a:b], scores=scores[a:b])
    later = _no_rows(1)
    if any(p.days.size for p in parts):  # a symbol has one source: no key in two parts
        keys_out = np.concatenate([np.asarray(p.keys, dtype=np.int64) for p in parts])
        days_out = np.concatenate([p.days for p in parts])
        order = np.lexsort((days_out, keys_out))
        values_out = np.concatenate([p.values for p in parts], axis=1)[:, order]
        later = NewRows(keys_out[order], days_out[order], values_out)
    return {symbol_id: found[symbol_id] for symbol_id in sorted(found)}, later


def tick_symbols(session: Session, names: Sequence[str]) -> tuple[dict[str, int], dict[str, bool]]:
    """Each symbol's id and whether it is synthetic, by name, in one statement (``get_symbols``'
    rows as columns: a tick reads thousands; its ``UnknownSymbolError`` for a name not
    stored)."""
    if not names:
        return {}, {}
    wanted = list(dict.fromkeys(names))
    by_name: dict[str, int] = {}
    kinds: dict[str, bool] = {}
    result = _execute(session, "symbols", wanted, {})
    cursor: Any = result.cursor  # the driver's, iterated: each row read and let go (no list
    try:  # of thousands of tuples for the garbage collector to scan)
        for symbol_id, name, synthetic in cursor:
            by_name[name] = symbol_id
            kinds[name] = bool(synthetic)
    finally:
        result.close()
    if len(by_name) < len(wanted):
        raise _unknown(session, next(n for n in names if n not in by_name))
    return by_name, kinds


class Marks(NamedTuple):
    """What a tick's cache has seen (``tick_marks``): ``ids``, the largest row id of bars,
    news and macro sentiment and of the change log (``"changes"``; 0: none); ``symbols``,
    the symbols table's row count and largest id (a symbol added or deleted changes them; one
    changed in place is in the change log); on PostgreSQL ``oldest``, the oldest
    transaction id still writing when they were read (the session's own left out; ``next``
    when none), and ``next``, the transaction id the next writer would get then (None for
    both elsewhere: SQLite has one writer at a time, so its rows become visible in the order
    of their ids)."""

    ids: dict[str, int]
    symbols: tuple[int, int]
    oldest: int | None
    next: int | None


# The statement's snapshot's writers (pg_current_snapshot: the one the statement reads with;
# PostgreSQL 13 or newer): the next transaction id, and the oldest one in progress other than
# the session's own.
_PG_WRITERS = (
    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
    "coalesce((SELECT min(x::text::bigint) FROM pg_snapshot_xip(pg_current_snapshot()) AS x"
    " WHERE x::text <> coalesce(pg_current_xact_id_if_assigned()::text, '')),"
    " pg_snapshot_xmax(pg_current_snapshot())::text::bigint)",
)


def tick_marks(session: Session) -> Marks:
    """The largest row id of bars, news, macro sentiment and the change log and, on
    PostgreSQL, the writers in progress (``Marks``), in one statement: what a tick's cache has
    seen, so that ``new_rows`` finds every row inserted after it and ``changed_keys`` every
    change logged after it. On PostgreSQL a writer's rows may become visible after a row with
    a larger id (sequence values are taken at insert, rows seen at commit): a cache reads from
    the largest ids of an earlier tick that every writer still in progress began after
    (``daemon.cache``)."""
    tables = {**_TABLES, "changes": RowChange}
    columns: list[Any] = [
        select(func.coalesce(func.max(t.id), 0)).scalar_subquery() for t in tables.values()
    ]
    columns += [
        select(func.count()).select_from(Symbol).scalar_subquery(),
        select(func.coalesce(func.max(Symbol.id), 0)).scalar_subquery(),
    ]
    postgres = session.connection().dialect.name == "postgresql"
    if postgres:
        columns += [literal_column(sql) for sql in _PG_WRITERS]
    row = _rows(session, select(*columns))[0]
    ids = {name: int(v) for name, v in zip(tables, row, strict=False)}
    n = len(tables)
    symbols = (int(row[n]), int(row[n + 1]))
    if not postgres:
        return Marks(ids, symbols, None, None)
    return Marks(ids, symbols, int(row[n + 3]), int(row[n + 2]))


class Changes(NamedTuple):
    """``changed_keys``' entries as columns, by id (ascending): ``ids``, ``kinds`` (``"bars"``,
    ``"news"``, ``"macro"``), ``symbol_ids`` (None for macro), ``sources`` (None for bars) and
    ``row_ids`` (SQLite: the largest id left in the table by a delete above it, the ids above
    it may be given again; else None)."""

    ids: list[int]
    kinds: list[str]
    symbol_ids: list[int | None]
    sources: list[str | None]
    row_ids: list[int | None]


def changed_keys(session: Session, after: int) -> Changes:
    """The change log's entries with an id above ``after`` (``RowChange``: the bars, news and
    macro rows updated in place or deleted since a tick saw the log up to ``after``), by the
    log's primary key: one range."""
    rows = _rows(
        session,
        select(RowChange.id, RowChange.kind, RowChange.symbol_id, RowChange.source,
               RowChange.row_id)
        .where(RowChange.id > after)
        .order_by(RowChange.id),
    )  # fmt: skip
    if not rows:
        return Changes([], [], [], [], [])
    ids, kinds, symbol_ids, sources, row_ids = (list(c) for c in zip(*rows, strict=True))
    return Changes(ids, kinds, symbol_ids, sources, row_ids)


class NewRows(NamedTuple):
    """``new_rows``' rows as columns, by key and date: ``keys`` (symbol ids as int64; macro:
    the sources, a list of text), ``days`` (datetime64[D]) and ``values`` (float64, one row a
    value column: bars open, high, low, close, volume; news and macro their score)."""

    keys: npt.NDArray[np.int64] | list[str]
    days: npt.NDArray[np.datetime64]
    values: npt.NDArray[np.float64]


def new_rows(
    session: Session,
    table: str,
    keys: Sequence[Any],
    after: dt.date,
    end: dt.date,
    max_id: int,
    source: str | None = None,
    *,
    dated: bool = True,
) -> NewRows:
    """The rows of ``table`` (``"bars"``, ``"news"``, ``"macro"``) of the symbol ids (macro:
    the sources) ``keys`` that a cache holding every row dated on or before ``after`` with an
    id up to ``max_id`` lacks, dated on or before ``end``: those dated after ``after`` and
    those inserted since (an id above ``max_id``: a bar imported out of order), in one
    statement, as columns ordered by key and date (``NewRows``). News: ``source``, the one
    source read (None: every source, each symbol's rows searched whole: slower). ``dated``
    False: those inserted since alone (``end`` is then ``after``: one range of the primary key,
    no index search a key; for a cache that holds every row dated up to ``after`` already).

    The statement is a UNION ALL whose parts are each one index search, so that a steady tick
    reads in proportion to what is new, never to the history: the dated part by the
    (symbol, date) or (symbol, source, date) unique index, the inserted part by the row id
    (the integer primary key). It has no ORDER BY: with one, SQLite (no statistics) served
    the inserted part by scanning the whole (symbol, date) index in order, and without the
    source the news part scanned every row of each symbol (5,000 symbols with a year of
    history: 0.16-0.22 s for the bars and 0.39-0.57 s for the news, against 0.025 s each
    now); the rows are sorted here instead. The inserted rows of other keys are dropped here.

    The bars and one source's news are streamed as numbers (``_numbers``: each date as its day
    number, no row object kept: a tick of thousands of symbols leaves the garbage collector
    nothing to scan); a date stored as odd text, the macro (keyed by its source's name) and
    news of every source are read as the driver's rows.
    """
    values: dict[str, Any] = {"after": after, "end": end if dated else after, "max_id": max_id}
    if table == "news" and source is not None:
        values["source"] = source
    numbers = None
    if table == "bars" or (table == "news" and source is not None):
        name, by_key = (f"{table}_new", keys) if dated else (f"{table}_ins", ())
        numbers = _numbers(session, name, by_key, values, 2 + len(_VALUES[table]))
    if numbers is not None:
        ids, days, *columns = numbers
        found = np.isin(ids, np.asarray(keys, dtype=np.int64))
        if not found.all():  # inserted rows of other symbols
            ids, days, columns = ids[found], days[found], [c[found] for c in columns]
        order = np.lexsort((days, ids))  # by key, then date
        if not np.array_equal(order, np.arange(order.size)):  # the usual case: ordered already
            ids, days, columns = ids[order], days[order], [c[order] for c in columns]
        return NewRows(ids, days, np.array(columns, dtype=np.float64).reshape(len(columns), -1))
    return _new_rows_driver(session, table, keys, values)


def _new_rows_driver(
    session: Session, table: str, keys: Sequence[Any], values: Mapping[str, Any]
) -> NewRows:
    """``new_rows`` read as the driver's rows (its dates parsed by ``_column_days``)."""
    name = "news_all" if table == "news" and "source" not in values else table
    wanted = set(keys)
    found = [r for r in _driver_rows(session, name, keys, values) if r[1] in wanted]
    width = len(_VALUES[table])
    if not found:
        empty: npt.NDArray[np.int64] | list[str] = (
            np.array([], dtype=np.int64) if table != "macro" else []
        )
        return NewRows(empty, np.array([], dtype="datetime64[D]"), np.empty((width, 0)))
    columns: list[Sequence[Any]] = list(zip(*found, strict=True))
    days = _column_days(columns[_COLUMNS[table].index("date")], session)
    key_column = columns[1]
    picked = [_COLUMNS[table].index(c) for c in _VALUES[table]]
    numbers = np.array([columns[i] for i in picked], dtype=np.float64).reshape(width, -1)
    keys_out: npt.NDArray[np.int64] | list[str]
    if table == "macro":
        order = np.lexsort((days, np.unique(key_column, return_inverse=True)[1]))
        keys_out = [key_column[i] for i in order.tolist()]
    else:
        keys_out = np.asarray(key_column, dtype=np.int64)
        order = np.lexsort((days, keys_out))
        keys_out = keys_out[order]
    return NewRows(keys_out, days[order], numbers[:, order])


def load_live_tail(
    session: Session, strategy: str, symbol_ids: Sequence[int], since: dt.date
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.datetime64], npt.NDArray[np.int64], F64]:
    """The symbol ids, dates, actions and strengths of the live decisions of ``strategy`` for
    ``symbol_ids`` dated on or after ``since``, in one statement, by symbol and date, as
    arrays (streamed as numbers, ``_numbers``; a date stored as odd text: the driver's rows)."""
    values = {"strategy": strategy, "since": since}
    numbers = _numbers(session, "live_new", symbol_ids, values, 4)
    if numbers is not None:
        ids, days, actions, strengths = numbers
        return ids, days, actions.astype(np.int64), strengths
    rows = _driver_rows(session, "live", symbol_ids, values)
    if not rows:
        return (
            np.array([], dtype=np.int64),
            np.array([], dtype="datetime64[D]"),
            np.array([], dtype=np.int64),
            np.array([], dtype=np.float64),
        )
    id_column, dates, action_column, strength_column = zip(*rows, strict=True)
    return (
        np.asarray(id_column, dtype=np.int64),
        _column_days(dates, session),
        np.asarray(action_column, dtype=np.int64),
        np.asarray(strength_column, dtype=np.float64),
    )


def _column_days(values: Sequence[Any], session: Session) -> npt.NDArray[np.datetime64]:
    """A date result column of the driver's values as datetime64[D] (``raw._day_array``'s
    parse and checks), each distinct value parsed once: a tick's rows share a few dates."""
    distinct = list(set(values))
    if len(distinct) * 8 > len(values):
        return _day_array(values, session)
    days = dict(zip(distinct, _day_array(distinct, session).astype(np.int64).tolist(), strict=True))
    numbers = np.fromiter(map(days.__getitem__, values), dtype=np.int64, count=len(values))
    out: npt.NDArray[np.datetime64] = numbers.astype("datetime64[D]")
    return out


@dataclass(frozen=True)
class LiveDecisions:
    """One symbol's live decisions of a strategy, oldest first: their bar dates, actions and
    strengths; ``first_equity``: the sleeve's equity recorded with the first of them (its
    capital: a sleeve is flat until its first decision; None: not read)."""

    dates: npt.NDArray[np.datetime64]
    actions: list[int]
    strengths: list[float]
    first_equity: float | None = None


def load_live_decisions(
    session: Session, strategy: str, symbol_ids: Sequence[int]
) -> dict[int, LiveDecisions]:
    """The live decisions of ``strategy`` (``Decision.live_strategy``) for ``symbol_ids``, in
    one statement (with the first one's equity); a symbol with none is left out. A restarted
    daemon reads every symbol's here: streamed as ``load_tick_bars`` reads."""
    numbers = _numbers(session, "live_whole", symbol_ids, {"strategy": strategy}, 5)
    if numbers is not None:
        ids, days, action_column, strength_column, equity_column = numbers
        actions: Sequence[int] = action_column.astype(np.int64).tolist()
        strengths: Sequence[float] = strength_column.tolist()
        equities: Sequence[float] = equity_column.tolist()
    else:
        rows = _rows(
            session,
            select(
                Decision.symbol_id,
                Decision.date,
                Decision.action,
                Decision.strength,
                Decision.equity,
            )
            .where(Decision.live_strategy == strategy, Decision.symbol_id.in_(list(symbol_ids)))
            .order_by(Decision.symbol_id, Decision.date),
        )
        if not rows:
            return {}
        id_column, dates, actions, strengths, equities = zip(*rows, strict=True)
        ids, days = np.array(id_column, dtype=np.int64), _days(dates)
    return {
        symbol_id: LiveDecisions(
            days[a:b], list(actions[a:b]), list(strengths[a:b]), float(equities[a])
        )
        for symbol_id, a, b in _groups(ids)
    }


def load_live_signals(
    session: Session, strategy: str, after: dt.date | None, limit: int
) -> list[dict[str, dict[str, Any] | None]]:
    """Every analyst's signals (``Decision.signals``) of the newest ``limit`` live decisions of
    ``strategy`` that have an RL signal, dated after ``after`` (None: any date), newest first,
    in one statement (``otonom-train retrain``'s live agreement with the teacher)."""
    query = select(Decision).where(
        Decision.live_strategy == strategy, Decision.rl_action.is_not(None)
    )
    if after is not None:
        query = query.where(Decision.date > after)
    found = session.scalars(query.order_by(Decision.date.desc()).limit(limit)).all()
    return [d.signals for d in found]


def live_symbols(session: Session, strategy: str) -> list[str]:
    """The names of the symbols ``strategy`` has live decisions of (what its daemon decides),
    sorted, in one statement over the live key's index (``otonom-train retrain``'s symbols
    when none are given)."""
    query = (
        select(Symbol.name)
        .join(Decision, Decision.symbol_id == Symbol.id)
        .where(Decision.live_strategy == strategy)
        .distinct()
        .order_by(Symbol.name)
    )
    return list(session.scalars(query))


def record_tick(session: Session, run: BacktestRun, columns: Mapping[str, list[Any]]) -> int | None:
    """Write ``run`` and its decision rows (``insert_decisions``' columns, without
    ``run_id``; ``date`` as ``datetime.date``, ``days_since_last_trade`` as floats, ``inf``
    for never) in the session's transaction and commit once: the whole tick or nothing.

    Returns the run's id, or None when the store refused the rows for what another writer
    committed since they were decided (an integrity error: another daemon of the same strategy
    recorded a live decision of the same symbol and bar first, ``ix_decisions_live``, or a
    symbol was deleted meanwhile): nothing is written, and the next tick reads again. Any
    other failure is rolled back and raised.
    """
    import sqlite3

    from sqlalchemy.exc import IntegrityError

    rows = dict(columns)
    if session.connection().dialect.name == "sqlite":  # what the ORM types store there
        text = {d: d.isoformat() for d in set(rows["date"])}  # a tick's rows share a few dates
        rows["date"] = [text[d] for d in rows["date"]]
        rows["days_since_last_trade"] = [
            None if d == math.inf else d for d in rows["days_since_last_trade"]
        ]
    try:
        session.add(run)
        session.flush()
        insert_decisions(session, {"run_id": [run.id] * len(rows["date"]), **rows})
        session.commit()
    except (IntegrityError, sqlite3.IntegrityError):
        session.rollback()
        return None
    except BaseException:
        session.rollback()
        raise
    return run.id
