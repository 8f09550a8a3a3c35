"""The writes of the data importers (``otonom_runtime.importers``) and the synthetic market
(``otonom_runtime.synth``): bars, news and macro sentiment, in the caller's transaction.

Each ``insert_*`` takes rows as dicts of column values, each ``update_*`` rows that also carry
the row's ``id`` (SQLAlchemy's bulk UPDATE by primary key); an empty list writes nothing. None
of them commits or flushes the session's pending objects: the caller does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


def insert_decisions(
    session: Session, rows: Sequence[Sequence[Any]], columns: Sequence[str]
) -> None:
    """Insert decision rows (tuples holding ``columns``, in order) without committing. On SQLite
    through the driver's ``executemany`` (the rows may hold dates as ISO text, as SQLite stores
    them); elsewhere through SQLAlchemy's insert."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
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
