"""The writes of the data importers (``otonom_runtime.importers``) and the synthetic market
(``otonom_runtime.synth``): bars, news and macro sentiment, in the caller's transaction.

Each ``insert_*`` takes rows as dicts of column values, each ``update_*`` rows that also carry
the row's ``id`` (SQLAlchemy's bulk UPDATE by primary key); an empty list writes nothing. None
of them commits or flushes the session's pending objects: the caller does.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from otonom_runtime.store.tables import Bar, Decision, MacroSentiment, NewsSentiment

__all__ = [
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


_SQLITE_PARAMS: Final = 999
"""Bound parameters per statement of ``insert_decisions`` on SQLite: the oldest builds' limit
(``SQLITE_MAX_VARIABLE_NUMBER``, 32766 since 3.32), so every build takes the statement."""


def insert_decisions(session: Session, columns: Mapping[str, Sequence[Any]]) -> None:
    """Insert decision rows given column by column (``{column: values}``, every column as
    long: row i holds each column's value i) without committing. On SQLite through the driver
    (the dates may be ISO text, as SQLite stores them); elsewhere through SQLAlchemy's insert.
    Columns of different lengths raise ``ValueError`` and insert nothing.

    On SQLite the rows go in as multi-row ``INSERT ... VALUES (...), (...), ...`` statements
    of ``_sqlite_rows(len(columns))`` rows each (the last one shorter), bound from the rows'
    values laid end to end: the same rows in the same order as one statement per row, but the
    statement's fixed cost (SQLite's and the driver's) is paid once per statement instead of
    once per row, and no row tuple is made (34,720 rows of 19 columns: ~58 ms against ~87 ms
    for ``executemany`` of the rows' tuples, plus the tuples).
    """
    names = tuple(columns)
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{name} {len(values)}" for name, values in columns.items())
        raise ValueError(f"decision columns of different lengths ({sizes}); expected one length")
    n = lengths.pop() if lengths else 0
    if n == 0:
        return
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        rows = zip(*columns.values(), strict=True)
        conn.execute(insert(Decision), [dict(zip(names, row, strict=True)) for row in rows])
        return
    width = len(names)
    flat: list[Any] = [None] * (n * width)  # row-major: row i's values at i*width ..
    for j, values in enumerate(columns.values()):
        flat[j::width] = values
    per = _sqlite_rows(width)
    step = per * width
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        full = _values_sql(names, per)
        for at in range(0, len(flat), step):
            chunk = flat[at : at + step]
            cursor.execute(full if len(chunk) == step else _values_sql(names, n % per), chunk)
    finally:
        cursor.close()


def _sqlite_rows(width: int) -> int:
    """Rows per multi-row INSERT of ``width`` columns on SQLite (``_SQLITE_PARAMS`` values)."""
    return max(1, _SQLITE_PARAMS // width)


@functools.lru_cache(maxsize=64)
def _values_sql(columns: tuple[str, ...], n: int) -> str:
    """``INSERT INTO decisions (columns) VALUES (?, ...), ...`` for ``n`` rows."""
    one = f"({', '.join('?' * len(columns))})"
    return (
        f"INSERT INTO {Decision.__tablename__} ({', '.join(columns)}) VALUES {', '.join([one] * n)}"
    )
