"""Raw-driver reads for the hot paths: plain-SQL statements run on the session's own DBAPI
connection, results turned into numpy columns without SQLAlchemy's result layer."""

from __future__ import annotations

import datetime as dt
import functools
import gc
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import Date, Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

__all__ = ["fetch_raw"]


@functools.lru_cache(maxsize=32)
def _raw_plan(stmt: TextClause, dialect: Dialect) -> tuple[str, tuple[str, ...], bool]:
    """(SQL in the driver's paramstyle, positional parameter names or (), dates-as-text)."""
    compiled = stmt.compile(dialect=dialect)
    return compiled.string, tuple(compiled.positiontup or ()), dialect.name == "sqlite"


def fetch_raw(session: Session, stmt: TextClause, values: Mapping[str, Any]) -> list[Any]:
    """The rows of a plain-SQL ``text()`` statement, through the session's own DBAPI connection.

    Same transaction as the session, SQL compiled once per dialect. For hot paths only (the
    live builder's per-tick probe, dataset generation): SQLAlchemy's execution and result
    layers cost more than the query itself there. Parameters of type ``datetime.date`` go in
    as ISO text on SQLite (how the ``Date`` type stores them); results are the driver's raw
    values, so date columns come back as ISO text on SQLite and as ``datetime.date`` elsewhere.
    """
    conn = session.connection()
    sql, positions, dates_as_text = _raw_plan(stmt, conn.dialect)
    if dates_as_text:
        values = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in values.items()}
    params: Any = tuple(values[name] for name in positions) if positions else dict(values)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _autoflush(session: Session) -> None:
    """What ``session.execute`` does before an ORM read: flush pending objects (when the
    session autoflushes), so the raw readers see them as the ORM readers always did."""
    if session.autoflush and (session.new or session.dirty or session.deleted):
        session.flush()


def _fetch_columns(
    session: Session, stmt: TextClause, values: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    """The result columns of ``stmt`` (``fetch_raw``: the driver's rows, no SQLAlchemy result
    layer), [] when there is no row. The cyclic garbage collector is paused while the rows are
    made: thousands of row tuples, none in a reference cycle, would otherwise trigger its
    passes over the whole heap."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        rows = fetch_raw(session, stmt, values)
        return list(zip(*rows, strict=True))
    finally:
        if was_on:
            gc.enable()


def _floats(values: Sequence[Any]) -> npt.NDArray[np.float64]:
    """A NOT NULL numeric result column as float64 (``np.fromiter``: no shape discovery)."""
    return np.fromiter(values, dtype=np.float64, count=len(values))


_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()


def _day_array(days: Sequence[Any], session: Session) -> npt.NDArray[np.datetime64]:
    """A date result column as datetime64[D].

    SQLite stores ``Date`` as ISO text (``YYYY-MM-DD``, what SQLAlchemy writes), which numpy
    parses in C; the parse is kept only when every date prints back as exactly its text (numpy
    also reads text that ``date.fromisoformat`` refuses or reads otherwise, e.g. ``20210105``).
    Any other text goes through SQLAlchemy's own SQLite date parser, as an ORM read would (so
    it parses, or raises, as before). Other drivers return ``datetime.date`` values: via
    ordinals (~30x faster than ``np.array`` on dates).
    """
    if days and isinstance(days[0], str):
        text_days = np.array(days)
        try:
            parsed: npt.NDArray[np.datetime64] = text_days.astype("datetime64[D]")
        except ValueError:
            pass
        else:
            if (np.datetime_as_string(parsed, unit="D") == text_days).all():
                return parsed
        dialect = session.connection().dialect
        process = Date().dialect_impl(dialect).result_processor(dialect, None)
        assert process is not None
        days = [process(d) for d in days]
    ordinals = np.fromiter((d.toordinal() for d in days), dtype=np.int64, count=len(days))
    out: npt.NDArray[np.datetime64] = (ordinals - _EPOCH_ORDINAL).astype("datetime64[D]")
    return out
