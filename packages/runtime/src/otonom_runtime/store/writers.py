"""The writes of the data importers (``otonom_runtime.importers``) and the synthetic market
(``otonom_runtime.synth``): bars, news and macro sentiment, in the caller's transaction.

Each ``insert_*`` takes rows as dicts of column values, each ``update_*`` rows that also carry
the row's ``id`` (SQLAlchemy's bulk UPDATE by primary key); an empty list writes nothing. None
of them commits or flushes the session's pending objects: the caller does.

An update or delete of these tables is logged by the store's triggers (``store.changelog``),
whoever writes it: a running daemon's tick reads the symbols it touched whole again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Date,
    Float,
    Integer,
    SmallInteger,
    String,
    TypeDecorator,
    delete,
    insert,
    update,
)
from sqlalchemy.orm import Session

from otonom_runtime.store.tables import (
    BacktestRun,
    Bar,
    Decision,
    MacroSentiment,
    NewsSentiment,
    Symbol,
)

__all__ = [
    "DecisionBatch",
    "decision_batches",
    "delete_symbol_data",
    "insert_bars",
    "insert_decisions",
    "insert_macro",
    "insert_news",
    "insert_shared_macro",
    "update_bars",
    "update_macro",
    "update_news",
]

Rows = Sequence[Mapping[str, Any]]


def _insert(session: Session, table: Any, rows: Rows) -> None:
    if rows:
        session.execute(insert(table), list(rows))


def _update(session: Session, table: Any, rows: Rows) -> None:
    if rows:
        session.execute(update(table), list(rows))


def insert_bars(session: Session, rows: Rows) -> None:
    """Insert bars (``symbol_id``, ``date``, ``open`` .. ``volume``)."""
    _insert(session, Bar, rows)


def update_bars(session: Session, rows: Rows) -> None:
    """Update bars by ``id`` (the given columns only)."""
    _update(session, Bar, rows)


def insert_news(session: Session, rows: Rows) -> None:
    """Insert news scores (``symbol_id``, ``source``, ``date``, ``score``)."""
    _insert(session, NewsSentiment, rows)


def update_news(session: Session, rows: Rows) -> None:
    """Update news scores by ``id``."""
    _update(session, NewsSentiment, rows)


def insert_macro(session: Session, rows: Rows) -> None:
    """Insert macro scores (``source``, ``date``, ``score``)."""
    _insert(session, MacroSentiment, rows)


def update_macro(session: Session, rows: Rows) -> None:
    """Update macro scores by ``id``."""
    _update(session, MacroSentiment, rows)


def insert_shared_macro(session: Session, rows: Rows) -> int:
    """Insert the macro ``rows`` that no other writer stored meanwhile; returns how many were
    inserted.

    Macro rows are shared by every symbol and seed, so two ``write_synthetic`` calls for
    different symbols may both find a day missing and both insert it: on PostgreSQL the second
    one then waits for the first to commit and failed with an ``IntegrityError`` (on SQLite the
    write lock serialises them). The rows are the same (they depend on the seed and the date
    only, and the first writer's seed wins, as it does for a sequential run), so a row stored
    meanwhile is skipped: ``ON CONFLICT DO NOTHING`` on (source, date).
    """
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(MacroSentiment).on_conflict_do_nothing(index_elements=["source", "date"])
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(MacroSentiment).on_conflict_do_nothing(
            index_elements=["source", "date"]
        )
    else:  # another backend: a plain insert (a concurrent writer may then conflict)
        session.execute(insert(MacroSentiment), list(rows))
        return len(rows)
    return len(session.execute(stmt.returning(MacroSentiment.date), list(rows)).all())


def delete_symbol_data(session: Session, symbol_id: int, news_source: str) -> None:
    """Delete every bar of the symbol ``symbol_id`` and its news scores of ``news_source``
    (news of other sources and the symbol's row stay)."""
    session.execute(delete(Bar).where(Bar.symbol_id == symbol_id))
    session.execute(
        delete(NewsSentiment).where(
            NewsSentiment.symbol_id == symbol_id, NewsSentiment.source == news_source
        )
    )


_SQLITE_PARAMS: Final = 4000
"""Bound parameters per statement of ``insert_decisions`` on SQLite, at most (fewer where the
build's ``SQLITE_MAX_VARIABLE_NUMBER`` is lower: ``_variable_limit``). Measured on 34,720 rows
of 19 columns: ~4 % less time than 999 a statement; 8,000 is slower again."""
_OLDEST_LIMIT: Final = 999
"""``SQLITE_MAX_VARIABLE_NUMBER`` of SQLite builds before 3.32 (32766 since)."""


def insert_decisions(session: Session, columns: Mapping[str, Sequence[Any]]) -> None:
    """Insert decision rows given column by column (``{column: values}``, every column as
    long: row i holds each column's value i) without committing. On SQLite through the driver
    (the dates may be ISO text, as SQLite stores them); on PostgreSQL through psycopg as a
    binary ``COPY`` (``_insert_copy``); elsewhere through the driver's ``executemany``
    (``_insert_many``; a driver of another parameter style: SQLAlchemy's insert).
    Columns of different lengths raise ``ValueError`` and insert nothing.

    On SQLite the rows go in as multi-row ``INSERT ... VALUES (...), (...), ...`` statements
    of ``_sqlite_rows`` rows each (the last one shorter), bound from the rows'
    values laid end to end: the same rows in the same order as one statement per row, but the
    statement's fixed cost (SQLite's and the driver's) is paid once per statement instead of
    once per row, and no row tuple is made (34,720 rows of 19 columns: ~58 ms against ~87 ms
    for ``executemany`` of the rows' tuples, plus the tuples).
    """
    n = _rows(columns)
    if n == 0:
        return
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        _insert_sqlite(conn.connection.dbapi_connection, columns, n)
    elif conn.dialect.driver == "psycopg":
        _insert_copy(conn, columns)
    elif conn.dialect.paramstyle in _MARKERS:
        _insert_many(conn, columns)
    else:
        rows = zip(*columns.values(), strict=True)
        names = tuple(columns)
        conn.execute(insert(Decision), [dict(zip(names, row, strict=True)) for row in rows])


_MARKERS: Final = {"format": "%s", "pyformat": "%s", "qmark": "?"}
"""A positional parameter's marker by DBAPI ``paramstyle`` (``_insert_many``)."""


def _insert_many(conn: Connection, columns: Mapping[str, Sequence[Any]]) -> None:
    """``columns`` inserted by the driver's ``executemany`` of a one-row statement (psycopg
    pipelines it), each value bound as SQLAlchemy binds its column's type (``InfAsNull``: inf
    as NULL; its ``ValueError`` raised as ``StatementError``, as in a statement): the rows
    ``insert(Decision)`` inserts, without a parameter dictionary per row (2,000 rows of 30
    columns on PostgreSQL: 42 ms against 62-80 ms)."""
    marker = _MARKERS[conn.dialect.paramstyle]
    sql = (
        f"INSERT INTO {Decision.__tablename__} ({', '.join(columns)}) "
        f"VALUES ({', '.join([marker] * len(columns))})"
    )
    conn.exec_driver_sql(sql, list(zip(*_bound(conn, sql, columns), strict=True)))


def _bound(conn: Connection, sql: str, columns: Mapping[str, Sequence[Any]]) -> list[Sequence[Any]]:
    """Each column's values as SQLAlchemy binds its column's type (``InfAsNull``: inf as
    NULL); its ``ValueError`` raised as ``StatementError`` (of ``sql``), as in a statement."""
    from sqlalchemy.exc import StatementError

    dialect = conn.dialect
    table = Decision.__table__
    bound: list[Sequence[Any]] = []
    for name, values in columns.items():
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        try:
            bound.append(values if process is None else [process(v) for v in values])
        except ValueError as exc:
            raise StatementError(str(exc), sql, None, exc) from exc
    return bound


_COPY_TYPES: Final = (
    (BigInteger, "int8"),
    (SmallInteger, "int2"),
    (Integer, "int4"),
    (Float, "float8"),
    (Date, "date"),
    (String, "text"),
    (Boolean, "bool"),
)
"""The PostgreSQL type of a binary ``COPY``'s values by the column's SQLAlchemy type (the
first that matches: ``BigInteger`` is an ``Integer``; ``Double`` a ``Float``)."""


def _copy_type(column: Any) -> str:
    """The PostgreSQL type a binary ``COPY`` sends a decision column's values as."""
    kind = column.type
    if isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    for sa_type, name in _COPY_TYPES:
        if isinstance(kind, sa_type):
            return name
    raise TypeError(f"decisions.{column.name}: no COPY type for {kind!r}")


def _insert_copy(conn: Connection, columns: Mapping[str, Sequence[Any]]) -> None:
    """``columns`` inserted by one binary ``COPY decisions (...) FROM STDIN`` of psycopg in
    the connection's transaction, each value bound as in ``_insert_many``: the rows
    ``insert(Decision)`` inserts (5,000 rows of 24 columns: 65-76 ms against 140-190 ms for
    the pipelined ``executemany``; the server's own work, the rows and two foreign keys each,
    is ~70 ms). A driver error (a broken unique key or foreign key ...) is raised as
    SQLAlchemy raises it for a statement (``sqlalchemy.exc.IntegrityError`` ...)."""
    from sqlalchemy.exc import DBAPIError

    table = Decision.__table__
    sql = f"COPY {Decision.__tablename__} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    types = [_copy_type(table.c[name]) for name in columns]
    bound = _bound(conn, sql, columns)
    dbapi: Any = conn.connection.dbapi_connection
    module: Any = conn.dialect.loaded_dbapi
    try:
        with dbapi.cursor() as cursor, cursor.copy(sql) as copy:
            copy.set_types(types)
            write = copy.write_row
            for row in zip(*bound, strict=True):
                write(row)
    except module.Error as exc:
        raise DBAPIError.instance(sql, None, exc, module.Error, dialect=conn.dialect) from exc


DecisionBatch = Callable[[Mapping[str, Sequence[Any]]], None]
"""Inserts and commits one batch of decision rows, given as ``insert_decisions`` takes them."""


@contextmanager
def decision_batches(session: Session) -> Iterator[DecisionBatch]:
    """A function that inserts one batch of decision rows (``insert_decisions``) and commits
    it, for the length of the block; nothing else may use ``session`` inside the block.

    On SQLite, when the session's connection has no transaction open and the session nothing
    pending, the rows' two foreign keys (``run_id``, ``symbol_id``) are checked once per
    batch instead of once per row (~4 ms of the bench's 34,720 rows): the connection's
    ``foreign_keys`` pragma is off for the block (toggled once: a toggle makes SQLite
    prepare every statement again), and each batch goes in inside a ``BEGIN IMMEDIATE``
    transaction (it holds SQLite's one write lock from its start), in which every run and
    symbol the rows name is then looked up before the commit. No other writer can delete one
    of them between that look-up and the commit (it would need the write lock), and a
    deletion committed earlier is seen by the look-up, so what is committed is exactly what
    the per-row checks admit; a missing one raises ``sqlite3.IntegrityError`` ("FOREIGN KEY
    constraint failed", as the per-row check does) and the batch is rolled back. The batches
    are committed on the driver's connection, which the session keeps for the block; the
    pragma is back on when the block ends, however it ends (if that fails, the connection is
    invalidated, never reused). Anything else (a transaction already open, where the pragma
    cannot change; another database) inserts with the per-row checks and commits the session.
    """
    conn = session.connection()
    dbapi: Any = conn.connection.dbapi_connection
    if (
        conn.dialect.name != "sqlite"
        or dbapi.in_transaction
        or session.new
        or session.dirty
        or session.deleted
    ):

        def checked(columns: Mapping[str, Sequence[Any]]) -> None:
            insert_decisions(session, columns)
            session.commit()

        yield checked
        return

    def unchecked(columns: Mapping[str, Sequence[Any]]) -> None:
        n = _rows(columns)
        if n:
            dbapi.execute("BEGIN IMMEDIATE")
            _insert_sqlite(dbapi, columns, n)
            _check_parents(dbapi, columns)
            dbapi.commit()

    restored = False
    try:
        dbapi.execute("PRAGMA foreign_keys = OFF")
        yield unchecked
    finally:
        try:
            if dbapi.in_transaction:  # a batch failed midway: nothing of it stays
                dbapi.rollback()
            dbapi.execute("PRAGMA foreign_keys = ON")
            restored = True
        finally:
            if not restored:
                conn.invalidate()  # never back to the pool with the checks off


def _check_parents(dbapi: Any, columns: Mapping[str, Sequence[Any]]) -> None:
    """``sqlite3.IntegrityError`` unless every run and symbol the rows name is stored (one
    query)."""
    import sqlite3

    runs, symbols = sorted(set(columns["run_id"])), sorted(set(columns["symbol_id"]))
    counts = dbapi.execute(
        f"SELECT (SELECT count(*) FROM {BacktestRun.__tablename__} "
        f"WHERE id IN ({', '.join('?' * len(runs))})), "
        f"(SELECT count(*) FROM {Symbol.__tablename__} "
        f"WHERE id IN ({', '.join('?' * len(symbols))}))",
        [*runs, *symbols],
    ).fetchone()
    if tuple(counts) != (len(runs), len(symbols)):
        raise sqlite3.IntegrityError("FOREIGN KEY constraint failed")


def _rows(columns: Mapping[str, Sequence[Any]]) -> int:
    """How many rows ``columns`` hold; ``ValueError`` when they differ in length."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{name} {len(values)}" for name, values in columns.items())
        raise ValueError(f"decision columns of different lengths ({sizes}); expected one length")
    return lengths.pop() if lengths else 0


def _insert_sqlite(dbapi: Any, columns: Mapping[str, Sequence[Any]], n: int) -> None:
    """``columns`` (``n`` rows) inserted by multi-row statements on the driver's connection."""
    names = tuple(columns)
    width = len(names)
    flat: list[Any] = [None] * (n * width)  # row-major: row i's values at i*width ..
    for j, values in enumerate(columns.values()):
        flat[j::width] = values
    per = _sqlite_rows(width, _variable_limit(dbapi))
    step = per * width
    cursor = dbapi.cursor()
    try:
        full = _values_sql(names, per)
        for at in range(0, len(flat), step):
            chunk = flat[at : at + step]
            cursor.execute(full if len(chunk) == step else _values_sql(names, n % per), chunk)
    finally:
        cursor.close()


def _sqlite_rows(width: int, limit: int) -> int:
    """Rows per multi-row INSERT of ``width`` columns on SQLite (``_SQLITE_PARAMS`` values, or
    the connection's ``limit`` on bound parameters where that is lower)."""
    return max(1, min(_SQLITE_PARAMS, limit) // width)


def _variable_limit(dbapi: Any) -> int:
    """The most bound parameters a statement may have on the driver connection ``dbapi``
    (``sqlite3.Connection.getlimit``), or ``_OLDEST_LIMIT`` where the driver cannot say."""
    import sqlite3

    getlimit = getattr(dbapi, "getlimit", None)
    code = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", None)
    if getlimit is None or code is None:
        return _OLDEST_LIMIT
    return int(getlimit(code))


@functools.lru_cache(maxsize=64)
def _values_sql(columns: tuple[str, ...], n: int) -> str:
    """``INSERT INTO decisions (columns) VALUES (?, ...), ...`` for ``n`` rows."""
    one = f"({', '.join('?' * len(columns))})"
    return (
        f"INSERT INTO {Decision.__tablename__} ({', '.join(columns)}) VALUES {', '.join([one] * n)}"
    )
