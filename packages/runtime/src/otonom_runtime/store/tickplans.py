"""The SQL of the daemon's batched reads (``store.ticks``), built once and run as the driver's.

Each read is a named statement (``_statement``: a tick's symbols, the rows new since its last
tick, its live decisions, a first tick's whole histories), rendered by SQLAlchemy once per IN
list length (``_plan``; on PostgreSQL once: the IN list is one array parameter, ``=
ANY(...)``), then sent with its values as they are (``_bound``, ``_execute``) and read as the
driver's tuples (``_driver_rows``) or streamed as numbers (``_numbers``: each date as
``raw._day_sql``'s day number, no row kept), so a tick of thousands of symbols builds no bind
parameter or result row object per symbol.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import ARRAY, Dialect, any_, bindparam, literal_column, select, union_all
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ClauseElement, ColumnElement

from otonom_runtime.store.raw import _autoflush, _day_sql
from otonom_runtime.store.raw import _days as _day_numbers
from otonom_runtime.store.tables import Bar, Decision, MacroSentiment, NewsSentiment

__all__: list[str] = []  # internal: the readers of ``store.ticks`` run these


_BATCH = 4096
"""Rows a ``_numbers`` read fetches at a time."""


def _keys(name: str) -> Any:
    """An IN list's values as one expanding parameter bound at execution: the same SQL as
    ``column.in_(values)``, without SQLAlchemy making a literal of each of a tick's thousands
    of values as it builds the statement."""
    return bindparam(name, expanding=True)


def _numbers(
    session: Session, name: str, keys: Sequence[Any], values: Mapping[str, Any], width: int
) -> tuple[Any, ...] | None:
    """The rows of ``_statement(name)`` (a symbol id, a date, then ``width - 2`` numbers; its
    date as ``raw._day_sql``'s number) as columns: the ids as int64, the dates as
    datetime64[D], the rest float64; the driver's rows streamed into one array
    (``np.fromiter``: no row is kept, the garbage collector has nothing to scan). None where
    the dialect has no day numbers or a cell is no number (a date ``_day_sql`` refuses) or
    ``raw._days`` refuses a date: the caller reads the ORM's way."""
    conn = session.connection()
    if _day_sql("date", conn.dialect.name) is None:
        return None
    sql, params = _bound(session, name, keys, values)
    dbapi: Any = conn.connection.dbapi_connection
    # psycopg: numbers in binary (its text floats are parsed one by one: 2.5x slower here)
    cursor = dbapi.cursor(binary=True) if conn.dialect.driver == "psycopg" else dbapi.cursor()
    try:
        cursor.execute(sql, params)
        # the rows a batch at a time, each batch let go once read (psycopg makes a batch's
        # rows in C; iterating its cursor costs a Python ``__next__`` a row: ~2 ms at 5,000)
        batches = iter(functools.partial(cursor.fetchmany, _BATCH), [])
        rows = itertools.chain.from_iterable(batches)
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    finally:
        cursor.close()
    columns = np.ascontiguousarray(flat.reshape(-1, width).T)
    days = _day_numbers(columns[1])
    if days is None:
        return None
    return (columns[0].astype(np.int64), days, *columns[2:])


_TABLES: dict[str, Any] = {"bars": Bar, "news": NewsSentiment, "macro": MacroSentiment}


_COLUMNS: dict[str, tuple[str, ...]] = {
    "bars": ("id", "symbol_id", "date", "open", "high", "low", "close", "volume"),
    "news": ("id", "symbol_id", "source", "date", "score"),
    "macro": ("id", "source", "date", "score"),
}


_VALUES: dict[str, tuple[str, ...]] = {
    "bars": ("open", "high", "low", "close", "volume"),
    "news": ("score",),
    "macro": ("score",),
}


_WHOLE = frozenset({"bars_whole", "news_whole", "live_whole"})
"""``_statement``'s whole reads (``_numbers``' statements): a first tick's histories
(``load_tick_bars``, ``load_tick_news``) and a restarted daemon's live decisions
(``load_live_decisions``)."""


_NEW = frozenset({"bars_new", "news_new", "bars_ins", "news_ins", "live_new"})
"""``_statement``'s steady reads as numbers (``_numbers``' statements): ``new_rows`` of the
bars and of one news source (``_new``: the rows dated in a stretch and those inserted since;
``_ins``: those inserted since alone), ``load_live_tail``; the dates as ``raw._day_sql``'s
numbers."""


_ARRAY_DIALECTS = frozenset({"postgresql"})
"""Dialects whose ``_driver_rows`` IN lists are one array parameter (``column = ANY(:keys)``):
on PostgreSQL a list of 5,000 markers costs the server 2-3x the time of the same rows read
through one array (a steady tick's bars 60-106 ms against 29-33 ms, news 47-57 against 26,
symbols 15 against 6.5: 5,000 symbols with a year of history)."""


def _in(column: Any, array: bool) -> ColumnElement[bool]:
    """``column IN (:keys...)`` (the expanding parameter ``keys``) or, ``array``, ``column =
    ANY(:keys)`` (one array parameter of the column's type)."""
    if array:
        condition: ColumnElement[bool] = column == any_(bindparam("keys", type_=ARRAY(column.type)))
        return condition
    found: ColumnElement[bool] = column.in_(_keys("keys"))
    return found


def _statement(name: str, dialect: str, array: bool = False) -> ClauseElement:
    """The statement ``_driver_rows`` runs as ``name``: its IN list the parameter ``keys``
    (``_in``: expanding, or one array with ``array``), its other values named parameters;
    ``dialect``: the dialect's name (the whole reads' dates as its day numbers)."""
    if name in _WHOLE:
        return _whole_statement(name, dialect, array)
    if name in _NEW:
        return _new_statement(name, dialect, array)
    if name == "symbols":
        from otonom_runtime.store.tables import Symbol  # here only: the tick's one read of it

        symbols = Symbol.__table__
        return select(symbols.c.id, symbols.c.name, symbols.c.is_synthetic).where(
            _in(symbols.c.name, array)
        )
    if name == "live":
        return (
            select(Decision.symbol_id, Decision.date, Decision.action, Decision.strength)
            .where(
                Decision.live_strategy == bindparam("strategy"),
                _in(Decision.symbol_id, array),
                Decision.date >= bindparam("since"),
            )
            .order_by(Decision.symbol_id, Decision.date)
        )
    table = "news" if name == "news_all" else name
    t = _TABLES[table]
    key = t.source if table == "macro" else t.symbol_id
    columns = [getattr(t, c) for c in _COLUMNS[table]]
    after: BindParameter[Any] = bindparam("after")
    newer = select(*columns).where(_in(key, array), t.date > after, t.date <= bindparam("end"))
    inserted = select(*columns).where(t.id > bindparam("max_id"), t.date <= after)  # by row id
    if name == "news":
        source: BindParameter[Any] = bindparam("source")
        newer, inserted = newer.where(t.source == source), inserted.where(t.source == source)
    return union_all(newer, inserted)


def _whole_statement(name: str, dialect: str, array: bool) -> ClauseElement:
    """``_statement`` of a whole read (``_WHOLE``): a symbol id, the date as ``raw._day_sql``'s
    number for ``dialect`` (NULL where it has none: never run, ``_numbers`` reads the ORM's
    way), then the read's numbers; by symbol and date."""
    t: Any = {"bars_whole": Bar, "news_whole": NewsSentiment, "live_whole": Decision}[name]
    day: ColumnElement[Any] = literal_column(_day_sql(f"{t.__tablename__}.date", dialect) or "NULL")
    if name == "bars_whole":
        numbers = [t.open, t.high, t.low, t.close, t.volume]
        where = [t.date <= bindparam("end")]
    elif name == "news_whole":
        numbers = [t.score]
        where = [t.source == bindparam("source"), t.date <= bindparam("end")]
    else:
        numbers = [t.action, t.strength, t.equity]
        where = [t.live_strategy == bindparam("strategy")]
    return (
        select(t.symbol_id, day, *numbers)
        .where(_in(t.symbol_id, array), *where)
        .order_by(t.symbol_id, t.date)
    )


def _new_statement(name: str, dialect: str, array: bool) -> ClauseElement:
    """``_statement`` of a steady read as numbers (``_NEW``): the statement of ``bars``,
    ``news`` or ``live`` with a symbol id, the date as ``raw._day_sql``'s number for
    ``dialect`` (NULL where it has none: never run, ``_numbers`` reads the driver's rows),
    then the read's numbers (no row id, no source: the caller has them)."""
    if name == "live_new":
        t: Any = Decision
        day: ColumnElement[Any] = literal_column(_day_sql("decisions.date", dialect) or "NULL")
        return (
            select(t.symbol_id, day, t.action, t.strength)
            .where(
                t.live_strategy == bindparam("strategy"),
                _in(t.symbol_id, array),
                t.date >= bindparam("since"),
            )
            .order_by(t.symbol_id, t.date)
        )
    table = name.removesuffix("_new").removesuffix("_ins")
    t = _TABLES[table]
    day = literal_column(_day_sql(f"{t.__tablename__}.date", dialect) or "NULL")
    columns = [t.symbol_id, day, *(getattr(t, c) for c in _VALUES[table])]
    after: BindParameter[Any] = bindparam("after")
    newer = select(*columns).where(
        _in(t.symbol_id, array), t.date > after, t.date <= bindparam("end")
    )
    inserted = select(*columns).where(t.id > bindparam("max_id"), t.date <= after)  # by row id
    if table == "news":
        source: BindParameter[Any] = bindparam("source")
        newer, inserted = newer.where(t.source == source), inserted.where(t.source == source)
    if name.endswith("_ins"):  # the primary key's range alone: no IN list, no index search a key
        return inserted
    return union_all(newer, inserted)


@functools.lru_cache(maxsize=32)
def _plan(
    name: str, dialect: Dialect, n: int
) -> tuple[str, tuple[str, ...], tuple[str, ...] | None]:
    """``_statement(name)`` with ``n`` keys as the dialect renders it (the SQL that
    SQLAlchemy's execution sends, built once per IN list length; ``_ARRAY_DIALECTS``: once,
    ``n`` 0, the keys one array) and its parameters: for a positional paramstyle the names
    bound before the keys and those after them; for a named one the keys' names (``keys_1``
    .. ``keys_n``; ``("keys",)``: one array) and None."""
    if dialect.name in _ARRAY_DIALECTS:
        return _array_plan(name, dialect)
    stmt = _statement(name, dialect.name)
    names = tuple(p for p in stmt.compile().params if p != "keys")
    stmt = stmt.params(keys=[0] * n, **dict.fromkeys(names))
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    assert isinstance(compiled, SQLCompiler)
    positions = compiled.positiontup
    if positions is None:
        return compiled.string, tuple(f"keys_{i}" for i in range(1, n + 1)), None
    keyed = [i for i, p in enumerate(positions) if p.startswith("keys_")]
    first = keyed[0] if keyed else len(positions)
    if keyed != list(range(first, first + n)):
        raise AssertionError(f"{name}: expected the IN list's {n} parameters in one run")
    return compiled.string, tuple(positions[:first]), tuple(positions[first + n :])


def _array_plan(name: str, dialect: Dialect) -> tuple[str, tuple[str, ...], tuple[str, ...] | None]:
    """``_plan`` of a dialect that binds the keys as one array (``_ARRAY_DIALECTS``)."""
    compiled = _statement(name, dialect.name, array=True).compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    positions = compiled.positiontup
    if positions is None:
        return compiled.string, ("keys",), None
    at = positions.index("keys")
    return compiled.string, tuple(positions[:at]), tuple(positions[at + 1 :])


def _driver_rows(
    session: Session, name: str, keys: Sequence[Any], values: Mapping[str, Any]
) -> Sequence[Any]:
    """The rows of the statement ``name`` (``_statement``) with the IN list ``keys`` and the
    other parameters ``values`` (``_execute``), as the driver's tuples of its values (dates:
    ISO text on SQLite; no SQLAlchemy Row per row: a tick reads thousands)."""
    result = _execute(session, name, keys, values)
    try:
        rows: Sequence[Any] = result.cursor.fetchall()
    finally:
        result.close()
    return rows


def _execute(
    session: Session, name: str, keys: Sequence[Any], values: Mapping[str, Any]
) -> CursorResult[Any]:
    """The statement ``name`` (``_statement``) with the IN list ``keys`` and the other
    parameters ``values`` (``_bound``), run as the driver's SQL on the session's connection
    (``exec_driver_sql``: the same SQL and values as SQLAlchemy's execution of the statement,
    without building the statement's thousands of IN list parameters anew each time). The
    caller reads the result's DBAPI cursor and closes the result."""
    sql, params = _bound(session, name, keys, values)
    return session.connection().exec_driver_sql(sql, params)


def _bound(
    session: Session, name: str, keys: Sequence[Any], values: Mapping[str, Any]
) -> tuple[str, Any]:
    """The SQL of the statement ``name`` with ``len(keys)`` keys (``_plan``: rendered once per
    number of keys; on PostgreSQL once, the keys bound as one array) and its parameters, in
    the driver's paramstyle; pending objects flushed first, as ``session.execute`` would.
    Dates bound as ISO text on SQLite (how ``Date`` stores them)."""
    _autoflush(session)
    conn = session.connection()
    array = conn.dialect.name in _ARRAY_DIALECTS
    sql, before, after = _plan(name, conn.dialect, 0 if array else len(keys))
    if conn.dialect.name == "sqlite":
        values = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in values.items()}
    params: Any
    if array:  # the keys as one list (the driver binds it as an array)
        if after is None:
            params = {**values, "keys": list(keys)}
        else:
            params = (*[values[p] for p in before], list(keys), *[values[p] for p in after])
    elif after is None:  # named parameters
        params = dict(values)
        params.update(zip(before, keys, strict=True))
    else:
        params = (*[values[p] for p in before], *keys, *[values[p] for p in after])
    return sql, params
