"""Raw-driver reads for the hot paths: plain-SQL statements run on the session's own DBAPI
connection, results turned into numpy columns without SQLAlchemy's result layer.

Two ways from rows to columns:

* ``_fetch_numbers``: a statement whose every cell is a number (dates as day numbers,
  ``_day_sql``) is streamed by the driver straight into one float64 array
  (``np.fromiter`` over the cursor): each row tuple is freed as soon as it is read, so no
  result is ever held as thousands of Python objects and the cyclic garbage collector has
  nothing to do. The readers' fast path.
* ``_fetch_columns``: the driver's rows (text dates, NULLs) zipped into columns; the fallback
  for what the fast path refuses (a date stored as text that is not canonical, a dialect
  without day numbers).
* ``_dated`` (SQLite, the readers' first try): the numbers alone, streamed as above, and the
  dates apart, as one text per read (``group_concat`` of the date column over the same rows:
  the table's unique index covers it, so it costs a fraction of a date cell per row), parsed
  in numpy (``_iso_days``) and accepted only when every date is canonical ``YYYY-MM-DD`` text
  of a real day, ascending, one per row. The date query runs while the number query's cursor
  is open, so both read one snapshot of the store. Anything it refuses is read by ``_read``.
  ``_dated_text`` is the same read with the dates' text kept, and takes an earlier read's
  (text, dates): dates found whole in that text are its dates, unparsed (``_days_of``).

No global state is touched (the garbage collector, thread counts): a daemon can import this.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Date, Dialect
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
    with _cursor(session, stmt, values) as cursor:
        return list(cursor.fetchall())


@contextmanager
def _cursor(
    session: Session, stmt: TextClause, values: Mapping[str, Any], conn: Connection | None = None
) -> Iterator[Any]:
    """A DBAPI cursor of the session's own connection (``conn``, when the caller has it:
    ``session.connection()``) that has executed ``stmt`` with ``values`` (``fetch_raw``'s
    rules), closed after the block."""
    if conn is None:
        conn = session.connection()
    sql, positions, dates_as_text = _raw_plan(stmt, conn.dialect)
    if dates_as_text:
        values = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in values.items()}
    params: Any = tuple(values[name] for name in positions) if positions else dict(values)
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        yield cursor
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
    layer), [] when there is no row."""
    rows = fetch_raw(session, stmt, values)
    return list(zip(*rows, strict=True))


def _fetch_numbers(
    session: Session, stmt: TextClause, values: Mapping[str, Any], width: int
) -> npt.NDArray[np.float64] | None:
    """The rows of ``stmt``, whose ``width`` cells are all numbers or NULL, as a C-contiguous
    ``(width, rows)`` float64 array (one row per result column; NULL reads as NaN, as
    ``np.asarray`` reads None); None when a cell cannot be read as a number, for the caller's
    fallback.

    The driver's rows are streamed into ``np.fromiter`` (see the module docstring). Integers
    are exact in float64 up to 2**53 (day numbers, actions, flags).
    """
    with _cursor(session, stmt, values) as cursor:
        try:
            flat = np.fromiter(itertools.chain.from_iterable(cursor), dtype=np.float64)
        except (TypeError, ValueError):
            return None
    return np.ascontiguousarray(flat.reshape(-1, width).T)


_UNIX_EPOCH_JULIAN_DAY: Final = 2440587.5


def _day_sql(column: str, dialect: str) -> str | None:
    """SQL giving the ``Date`` column ``column`` as one number, ``day * 32 + day_of_month``:
    its day number (days since 1970-01-01) and the day of the month as stored (one cell, not
    two: every cell of a wide read costs); None for a dialect without it (the caller reads
    text). ``dialect``: its name. ``_days`` turns it into dates.

    SQLite stores dates as text: the number is NULL unless the text is 10 characters that
    ``julianday`` reads (``YYYY-MM-DD``); ``julianday`` also rolls an impossible day over
    (``2021-02-30`` is March 2), which the day of the month written in the text then shows.
    PostgreSQL stores dates as dates.
    """
    if dialect == "sqlite":
        return (
            f"CASE WHEN length({column}) = 10 THEN (julianday({column}) - "
            f"{_UNIX_EPOCH_JULIAN_DAY}) * 32 + CAST(substr({column}, 9, 2) AS INTEGER) END"
        )
    if dialect == "postgresql":
        return f"({column} - DATE '1970-01-01') * 32 + CAST(EXTRACT(DAY FROM {column}) AS INTEGER)"
    return None


def _days(numbers: npt.NDArray[np.float64]) -> npt.NDArray[np.datetime64] | None:
    """The dates of ``_day_sql``'s numbers as datetime64[D]; None unless every number is a
    whole number (not NaN: a date ``_day_sql`` refused) whose day of the month (1-31) is that
    of its day number (else: read the text)."""
    if not np.isfinite(numbers).all():
        return None
    packed = numbers.astype(np.int64)
    if not np.array_equal(packed, numbers):
        return None
    days, day_of_month = np.divmod(packed, 32)
    if day_of_month.min(initial=1) < 1:
        return None
    out: npt.NDArray[np.datetime64] = days.astype("datetime64[D]")
    late = np.flatnonzero(day_of_month > 28)  # only these can have rolled over
    if late.size:
        month_start = out[late].astype("datetime64[M]").astype("datetime64[D]")
        if not np.array_equal((out[late] - month_start).astype(np.int64) + 1, day_of_month[late]):
            return None
    return out


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


def _date_column(column: str, dialect: str | None) -> str:
    """``column`` as stored, or as ``_day_sql``'s number for ``dialect``."""
    return column if dialect is None else (_day_sql(column, dialect) or column)


def _read(
    session: Session,
    stmt: Callable[[str | None], TextClause],
    values: Mapping[str, Any],
    width: int,
    *,
    reverse: bool = False,
) -> tuple[npt.NDArray[np.datetime64], list[npt.NDArray[np.float64]]] | None:
    """The rows of a reader's query (date first, then numbers) as (dates, the other columns as
    float64 arrays), None when there is no row; ``width``: its columns as stored; ``reverse``:
    the rows in reverse order.

    ``stmt(dialect)`` is the query with its date as day numbers (``_day_sql``), ``stmt(None)``
    as stored. The numbers are streamed (``_fetch_numbers``); where the dialect has no day
    numbers or a date does not qualify (text that is not canonical ``YYYY-MM-DD``) the query
    is read again with its dates as stored and parsed as an ORM read parses them
    (``_day_array``).
    """
    dialect = session.connection().dialect.name
    if _day_sql("d", dialect) is not None:
        numbers = _fetch_numbers(session, stmt(dialect), values, width)
        if numbers is not None:
            if numbers.shape[1] == 0:
                return None
            if reverse:
                numbers = np.ascontiguousarray(numbers[:, ::-1])
            days = _days(numbers[0])
            if days is not None:
                return days, list(numbers[1:])
    cols = _fetch_columns(session, stmt(None), values)
    if not cols:
        return None
    if reverse:
        cols = [c[::-1] for c in cols]
    return _day_array(cols[0], session), [_floats(c) for c in cols[1:]]


# --- SQLite: the numbers streamed, the dates as one text ----------------------------------------

_SEP: Final = "|"  # between two dates in ``_DATES``' text; never in a canonical date
_DATES: Final = "group_concat({}, '" + _SEP + "')"


Query = Callable[..., TextClause]
"""A reader's query builder: ``query(columns)`` selects ``columns`` of its rows, oldest first;
``query(columns, order=False)`` the same rows unordered (``_DATES``' aggregate)."""


def _read_rows(
    session: Session,
    query: Query,
    date: str,
    numbers: str,
    values: Mapping[str, Any],
    *,
    dated: bool = True,
    reverse: bool = False,
) -> tuple[npt.NDArray[np.datetime64], list[npt.NDArray[np.float64]]] | None:
    """The rows of a reader (``date``: its date column, ``numbers``: its comma-separated number
    columns) as (dates, the number columns as float64 arrays), None when there is no row: the
    SQLite way first (``_dated``, when ``dated``), else the general way (``_read``, the rows in
    reverse order when ``reverse``). Every reader of dated rows reads through here."""
    width = numbers.count(",") + 1
    read = None
    if dated:
        read = _dated(
            session, query(numbers), query(_DATES.format(date), order=False), values, width
        )
    return read or _read(
        session,
        lambda dialect: query(f"{_date_column(date, dialect)}, {numbers}"),
        values,
        width + 1,
        reverse=reverse,
    )


def _dated(
    session: Session,
    numbers: TextClause,
    dates: TextClause,
    values: Mapping[str, Any],
    width: int,
) -> tuple[npt.NDArray[np.datetime64], list[npt.NDArray[np.float64]]] | None:
    """The rows of a read on SQLite (the module docstring's third way) as (dates, the
    ``width`` number columns as float64 arrays); None when this way does not serve it
    (another dialect, no row, a cell that is not a number or NULL, a date ``_iso_days``
    refuses): the caller reads the general way.

    ``numbers``: the number columns, ordered by date; ``dates``: one row, the dates of the same
    rows joined by ``_SEP`` (``_DATES``). NULL reads as NaN, as in ``raw._fetch_numbers``.
    """
    read = _dated_text(session, numbers, dates, values, width)
    return None if read is None else read[1:]


def _dated_text(
    session: Session,
    numbers: TextClause,
    dates: TextClause,
    values: Mapping[str, Any],
    width: int,
    like: tuple[str, npt.NDArray[np.datetime64]] | None = None,
) -> tuple[str, npt.NDArray[np.datetime64], list[npt.NDArray[np.float64]]] | None:
    """``_dated``'s read with its dates' text first: (text, dates, columns); None as there.
    ``like``: an earlier read's (text, dates) (``_days_of``)."""
    read = _dated_raw(session, numbers, dates, values, width)
    if read is None:
        return None
    joined, columns = read
    days = _days_of(joined, columns[0].size, like)
    return None if days is None else (joined, days, columns)


def _dated_raw(
    session: Session,
    numbers: TextClause,
    dates: TextClause,
    values: Mapping[str, Any],
    width: int,
) -> tuple[str, list[npt.NDArray[np.float64]]] | None:
    """``_dated``'s two queries, the dates left as their text (not checked: ``_days_of``
    turns it into dates or refuses it): (text, the ``width`` number columns); None when
    ``_dated`` would be None before its dates (another dialect, no row, a cell that is not a
    number or NULL, a text that is not a string)."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return None
    with _cursor(session, numbers, values, conn) as cursor:
        first = cursor.fetchone()
        if first is None:
            return None
        # the first row is read and the cursor open: the store's read lock (and, in WAL mode,
        # its snapshot) is held, so the date query sees the same rows
        with _cursor(session, dates, values, conn) as date_cursor:
            joined = date_cursor.fetchone()[0]
        try:
            flat = np.fromiter(
                itertools.chain(first, itertools.chain.from_iterable(cursor)), dtype=np.float64
            )
        except (TypeError, ValueError):
            return None
    if not isinstance(joined, str):
        return None
    rows = flat.size // width
    return joined, list(np.ascontiguousarray(flat.reshape(rows, width).T))


def _days_of(
    joined: str, rows: int, like: tuple[str, npt.NDArray[np.datetime64]] | None = None
) -> npt.NDArray[np.datetime64] | None:
    """The dates of ``joined`` (``rows`` dates joined by ``_SEP``), as ``_iso_days``.

    ``like``: the (text, dates) of an earlier read that ``_iso_days`` accepted. When
    ``joined`` is ``rows`` dates long and found in that text starting at a date, it is those
    dates of it (same text, so the same days, already checked): a slice of ``like``'s dates,
    no parse. Else it is parsed (``_iso_days``). Where to look: where ``joined``'s first date
    is in the text (its first place there; dates there are unique).
    """
    if like is not None and len(joined) == 11 * rows - 1:
        text, days = like
        at = text.find(joined[:11])  # the first date and its separator, if any
        if at >= 0 and at % 11 == 0 and text.startswith(joined, at):
            shared: npt.NDArray[np.datetime64] = days[at // 11 : at // 11 + rows]
            return shared
    return _iso_days(joined, rows)


# each date and its separator: the lowest and the highest byte of each of its 11 characters
_DATE_LOW: Final = np.frombuffer(b"0000-00-00" + _SEP.encode(), dtype=np.uint8)
_DATE_HIGH: Final = np.frombuffer(b"9999-99-99" + _SEP.encode(), dtype=np.uint8)
_DAY_ONE: Final = np.datetime64("0001-01-01", "D").astype(np.int64)  # the first datetime.date
_BLOCK: Final = 64  # dates checked a block at a time: long rows, which numpy compares faster
_BLOCK_LOW: Final = np.tile(_DATE_LOW, _BLOCK)
_BLOCK_HIGH: Final = np.tile(_DATE_HIGH, _BLOCK)


def _iso_days(joined: object, rows: int) -> npt.NDArray[np.datetime64] | None:
    """The dates of ``joined`` (``rows`` dates joined by ``_SEP``) as datetime64[D]; None
    unless each is ``YYYY-MM-DD`` (ASCII digits) of a real day from year 1 on and they
    strictly ascend.

    Exactly the text that every reader of the store (``datetime.date.fromisoformat``,
    SQLAlchemy's SQLite date parser, ``julianday``) reads as that same day, so accepting it
    changes no date. A date of another length or holding ``_SEP`` cannot pass: the separators
    must be at every 11th character and the other characters digits and dashes. numpy parses
    the days (and refuses an impossible one: month 13, February 30).
    """
    if not isinstance(joined, str) or len(joined) != 11 * rows - 1 or not joined.isascii():
        return None
    raw = (joined + _SEP).encode("ascii")
    cells = np.frombuffer(raw, dtype=np.uint8)
    wide = rows // _BLOCK * _BLOCK * 11
    block, tail = cells[:wide].reshape(-1, _BLOCK * 11), cells[wide:].reshape(-1, 11)
    if not (
        ((block >= _BLOCK_LOW) & (block <= _BLOCK_HIGH)).all()
        and ((tail >= _DATE_LOW) & (tail <= _DATE_HIGH)).all()
    ):
        return None
    try:
        text = np.ndarray((rows,), dtype="S10", buffer=raw, strides=(11,))
        out: npt.NDArray[np.datetime64] = text.astype("datetime64[D]")
    except ValueError:
        return None
    days = out.view(np.int64)
    if days[0] < _DAY_ONE or not (days[1:] > days[:-1]).all():
        return None
    return out
