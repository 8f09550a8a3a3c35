"""The readers: symbols, bars, news and macro sentiment as ``otonom_schema`` types.

They fetch columns with plain SQL through the driver (``otonom_runtime.store.raw``), in one
query on the happy path, and return numpy-backed ``MarketHistory`` / ``SentimentSeries``.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy import Date, Integer, String, bindparam, case, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter, TextClause

from otonom_runtime._errors import StateBuildError, UnknownSymbolError
from otonom_runtime._sources import SYNTHETIC_SOURCE, USER_SOURCE, check_source_name
from otonom_runtime.store.engine import _NOT_INITIALISED_HINT
from otonom_runtime.store.raw import _autoflush, _read_rows
from otonom_runtime.store.tables import Bar, MacroSentiment, NewsSentiment, Symbol, _utcnow
from otonom_schema import LOOKBACK, MarketHistory, SentimentSeries, compute_state

__all__ = [
    "StoredBar",
    "SymbolInfo",
    "bar_spans",
    "find_symbol",
    "get_or_create_symbol",
    "get_symbol",
    "get_symbols",
    "last_bar_date",
    "list_symbols",
    "load_history",
    "load_macro",
    "load_news",
    "macro_dates",
    "news_dates",
    "sentiment_source",
    "stored_bars",
    "stored_macro_scores",
    "stored_names",
    "stored_news_scores",
    "symbol_ids",
    "symbols_with_bars",
]


def get_symbol(session: Session, name: str) -> Symbol:
    """The ``Symbol`` row named ``name``; ``UnknownSymbolError`` naming the known symbols."""
    symbol = session.execute(select(Symbol).where(Symbol.name == name)).scalar_one_or_none()
    if symbol is None:
        raise _unknown(session, name)
    return symbol


def get_symbols(session: Session, names: Sequence[str]) -> list[Symbol]:
    """The ``Symbol`` rows named ``names``, in that order, in one query; for the first name
    not in the store, ``get_symbol``'s ``UnknownSymbolError``."""
    query = select(Symbol).where(Symbol.name.in_(sorted(set(names))))
    rows = {symbol.name: symbol for symbol in session.execute(query).scalars()}
    for name in names:
        if name not in rows:
            raise _unknown(session, name)
    return [rows[name] for name in names]


def _unknown(session: Session, name: str) -> UnknownSymbolError:
    names = list(session.execute(select(Symbol.name).order_by(Symbol.name).limit(21)).scalars())
    if not names:
        known = "the store holds no symbols yet; " + _NOT_INITIALISED_HINT
    else:
        known = "known symbols: " + ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    return UnknownSymbolError(f"unknown symbol {name!r}; {known}")


def _require_symbol(session: Session, name: str) -> None:
    if session.execute(select(Symbol.id).where(Symbol.name == name)).first() is None:
        raise _unknown(session, name)


def get_or_create_symbol(
    session: Session,
    name: str,
    *,
    source: str,
    is_synthetic: bool = False,
    meta: dict[str, Any] | None = None,
) -> tuple[Symbol, bool]:
    """The ``Symbol`` named ``name``, created (and flushed) if missing; returns (symbol, created).

    An existing row is returned unchanged. Two writers creating the same symbol at once (two
    imports of one new symbol) both succeed, as if one ran after the other: the row is inserted
    with ``ON CONFLICT (name) DO NOTHING`` (SQLite, PostgreSQL), so the second one waits for the
    first to commit and then reads its row (``created`` False) instead of failing with an
    ``IntegrityError``.
    """
    symbol = session.execute(select(Symbol).where(Symbol.name == name)).scalar_one_or_none()
    if symbol is not None:
        return symbol, False
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite

        dialect_insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        values = {"name": name, "source": source, "is_synthetic": is_synthetic}
        stmt = (
            dialect_insert(Symbol)
            .values(**values, meta=dict(meta or {}), created_at=_utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(Symbol.id)
        )
        created = session.execute(stmt).first() is not None
        symbol = session.execute(select(Symbol).where(Symbol.name == name)).scalar_one()
        return symbol, created
    symbol = Symbol(name=name, source=source, is_synthetic=is_synthetic, meta=dict(meta or {}))
    session.add(symbol)
    session.flush()
    return symbol, True


def _range_text(start: dt.date | None, end: dt.date | None) -> str:
    return f"{start.isoformat() if start else '-inf'} .. {end.isoformat() if end else '+inf'}"


def _date_filters(
    alias: str, start: bool, end: bool, by_symbol: bool
) -> tuple[list[str], list[BindParameter[Any]]]:
    """WHERE terms and bind parameters for the readers: ``s.name = :symbol`` (joined symbols)
    and ``<alias>.date`` within ``:start`` / ``:end`` when those filters are used."""
    where: list[str] = []
    params: list[BindParameter[Any]] = []
    if by_symbol:
        where.append("s.name = :symbol")
        params.append(bindparam("symbol", type_=String))
    if start:
        where.append(f"{alias}.date >= :start")
        params.append(bindparam("start", type_=Date))
    if end:
        where.append(f"{alias}.date <= :end")
        params.append(bindparam("end", type_=Date))
    return where, params


@functools.cache
def _history_query(
    columns: str, start: bool, end: bool, last_n: bool, order: bool = True
) -> TextClause:
    """``SELECT columns`` of ``load_history``'s bars for one combination of filters (one
    ``TextClause`` each, so ``fetch_raw`` compiles it once per dialect), oldest first when
    ``order`` (newest first with ``last_n``). The (symbol_id, date) unique index serves it,
    ``last_n`` included (walked backwards from ``end``)."""
    where, params = _date_filters("b", start, end, by_symbol=True)
    order_by = " ORDER BY b.date" if order else ""
    if last_n:
        order_by = " ORDER BY b.date DESC LIMIT :last_n"
        params.append(bindparam("last_n", type_=Integer))
    return text(
        f"SELECT {columns} "
        f"FROM {Bar.__tablename__} b JOIN {Symbol.__tablename__} s ON b.symbol_id = s.id "
        f"WHERE {' AND '.join(where)}{order_by}"
    ).bindparams(*params)


_BAR_NUMBERS = "b.open, b.high, b.low, b.close, b.volume"


@functools.cache
def _news_query(columns: str, start: bool, end: bool, order: bool = True) -> TextClause:
    """``SELECT columns`` of ``load_news``' rows for one combination of filters (the
    (symbol_id, source, date) unique index serves it), oldest first when ``order``."""
    where, params = _date_filters("n", start, end, by_symbol=True)
    where.append("n.source = :source")
    params.append(bindparam("source", type_=String))
    return text(
        f"SELECT {columns} "
        f"FROM {NewsSentiment.__tablename__} n JOIN {Symbol.__tablename__} s "
        f"ON n.symbol_id = s.id WHERE {' AND '.join(where)}" + (" ORDER BY n.date" if order else "")
    ).bindparams(*params)


@functools.cache
def _macro_query(columns: str, start: bool, end: bool, order: bool = True) -> TextClause:
    """``SELECT columns`` of ``load_macro``'s rows for one combination of filters (the
    (source, date) unique index serves it), oldest first when ``order``."""
    where, params = _date_filters("m", start, end, by_symbol=False)
    where.append("m.source = :source")
    params.append(bindparam("source", type_=String))
    return text(
        f"SELECT {columns} FROM {MacroSentiment.__tablename__} m "
        f"WHERE {' AND '.join(where)}" + (" ORDER BY m.date" if order else "")
    ).bindparams(*params)


def load_history(
    session: Session,
    symbol: str,
    *,
    end: dt.date | None = None,
    last_n: int | None = None,
    start: dt.date | None = None,
) -> MarketHistory:
    """The daily bars of ``symbol`` dated in [``start``, ``end``], oldest first.

    ``last_n``: only the newest ``last_n`` of those bars (one bounded query: ``ORDER BY date
    DESC LIMIT last_n``, reversed). Raises ``UnknownSymbolError`` for a symbol not in the store
    and ``StateBuildError`` when it has no bar in the range.

    One query through the driver (``otonom_runtime.store.raw._read``, in the session's
    transaction; pending objects are flushed first when the session autoflushes, as an ORM read
    would), its rows streamed into arrays; read again with the dates as text when one is not
    canonical ``YYYY-MM-DD``.
    """
    if last_n is not None and last_n < 1:
        raise ValueError(f"last_n is {last_n}; expected an integer >= 1 or None")
    _autoflush(session)
    values: dict[str, Any] = {"symbol": symbol}
    if start is not None:
        values["start"] = start
    if end is not None:
        values["end"] = end
    if last_n is not None:
        values["last_n"] = last_n
    flags = (start is not None, end is not None, last_n is not None)
    read = _read_rows(
        session,
        lambda columns, order=True: _history_query(columns, *flags, order=order),
        "b.date",
        _BAR_NUMBERS,
        values,
        dated=last_n is None,  # newest first with last_n: _dated wants ascending dates
        reverse=last_n is not None,  # newest first from the query: back to oldest first
    )
    if read is None:
        _require_symbol(session, symbol)
        first, last = session.execute(
            select(func.min(Bar.date), func.max(Bar.date))
            .join(Symbol, Bar.symbol_id == Symbol.id)
            .where(Symbol.name == symbol)
        ).one()
        held = f"it has bars {first} .. {last}" if first is not None else "it has no bars"
        raise StateBuildError(f"no bar of {symbol!r} dated {_range_text(start, end)}; {held}")
    dates, (open_, high, low, close, volume) = read
    return MarketHistory(
        dates=dates, open=open_, high=high, low=low, close=close, volume=volume, symbol=symbol
    )


def _series(
    read: tuple[npt.NDArray[np.datetime64], list[npt.NDArray[np.float64]]] | None,
) -> SentimentSeries | None:
    if read is None:
        return None
    return SentimentSeries(dates=read[0], scores=read[1][0])


def _sentiment_values(start: dt.date | None, end: dt.date | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if start is not None:
        values["start"] = start
    if end is not None:
        values["end"] = end
    return values


def sentiment_source(symbol: Symbol | SymbolInfo | bool, named: str | None = None) -> str:
    """The sentiment source a symbol reads (for news and for macro alike): ``named`` when given
    (a strategy's ``data.news_source`` / ``data.macro_source``), else ``SYNTHETIC_SOURCE`` for
    a synthetic symbol and ``USER_SOURCE`` for a real one.

    ``symbol``: a ``Symbol`` row, a ``SymbolInfo``, or whether the symbol is synthetic.
    The one place this rule lives (backtest, live builder and dataset generation all use it).
    """
    if named is not None:
        return check_source_name(named)
    synthetic = symbol if isinstance(symbol, bool) else symbol.is_synthetic
    return SYNTHETIC_SOURCE if synthetic else USER_SOURCE


def load_news(
    session: Session,
    symbol: str,
    *,
    source: str | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> SentimentSeries | None:
    """News sentiment of ``symbol`` from ``source`` dated in [``start``, ``end``], oldest
    first; None if none.

    ``source``: None reads the symbol's own kind (``sentiment_source``: ``"synthetic"`` for a
    synthetic symbol, ``"user"`` for a real one; one more query). Raises
    ``UnknownSymbolError`` for a symbol not in the store. One query through the driver, as
    ``load_history``.
    """
    _autoflush(session)
    if source is None:
        source = sentiment_source(get_symbol(session, symbol))
    values = {"symbol": symbol, "source": source, **_sentiment_values(start, end)}
    flags = (start is not None, end is not None)
    read = _read_rows(
        session,
        lambda columns, order=True: _news_query(columns, *flags, order),
        "n.date",
        "n.score",
        values,
    )
    if read is None:
        _require_symbol(session, symbol)
    return _series(read)


def load_macro(
    session: Session,
    *,
    source: str,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> SentimentSeries | None:
    """Macro sentiment from ``source`` dated in [``start``, ``end``], oldest first; None if
    there is none.

    ``source`` is required: macro sentiment is market-wide, so the reader says whose
    (``sentiment_source`` of the symbol it is for). One query through the driver, as
    ``load_history``.
    """
    _autoflush(session)
    values = {"source": source, **_sentiment_values(start, end)}
    flags = (start is not None, end is not None)
    read = _read_rows(
        session,
        lambda columns, order=True: _macro_query(columns, *flags, order),
        "m.date",
        "m.score",
        values,
    )
    return _series(read)


def last_bar_date(session: Session, symbol: str) -> dt.date | None:
    """The date of the newest bar of ``symbol`` (one indexed query); None if it has no bars.

    Raises ``UnknownSymbolError`` for a symbol not in the store.
    """
    value: dt.date | None = session.execute(
        select(func.max(Bar.date))
        .join(Symbol, Bar.symbol_id == Symbol.id)
        .where(Symbol.name == symbol)
    ).scalar_one()
    if value is None:
        _require_symbol(session, symbol)
    return value


@dataclass(frozen=True)
class SymbolInfo:
    """One line of ``list_symbols``.

    ``health`` is the Data Health Index (``dsi`` feature, 0-1) of the symbol's newest bar, as
    ``otonom_schema.compute_state`` computes it from the last ``LOOKBACK`` bars at that bar's
    date: coverage (bars / 140) x no-gap share x non-zero-volume share x non-flat share. It
    does not judge freshness against today. None when the symbol has no bars.
    """

    name: str
    is_synthetic: bool
    source: str
    first: dt.date | None
    last: dt.date | None
    bars: int
    health: float | None


def list_symbols(session: Session) -> list[SymbolInfo]:
    """Every symbol, sorted by name, with its first/last bar date, bar count and data health."""
    stmt = (
        select(
            Symbol.name,
            Symbol.is_synthetic,
            Symbol.source,
            func.min(Bar.date),
            func.max(Bar.date),
            func.count(Bar.id),
        )
        .outerjoin(Bar, Bar.symbol_id == Symbol.id)
        .group_by(Symbol.id, Symbol.name, Symbol.is_synthetic, Symbol.source)
        .order_by(Symbol.name)
    )
    out: list[SymbolInfo] = []
    for name, synthetic, source, first, last, count in session.execute(stmt).all():
        health: float | None = None
        if count:
            history = load_history(session, name, last_n=LOOKBACK)
            health = float(compute_state(history).dsi)
        out.append(
            SymbolInfo(
                name=name,
                is_synthetic=bool(synthetic),
                source=source,
                first=first,
                last=last,
                bars=int(count),
                health=health,
            )
        )
    return out


# --- the stored rows the importers and the synthetic market compare against ------------------


class StoredBar(NamedTuple):
    """One stored bar with its row ``id`` (``stored_bars``)."""

    id: int
    date: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: float


def find_symbol(session: Session, name: str) -> Symbol | None:
    """The ``Symbol`` row named ``name``, or None (``get_symbol`` raises instead)."""
    return session.execute(select(Symbol).where(Symbol.name == name)).scalar_one_or_none()


def symbol_ids(session: Session) -> dict[str, int]:
    """Every symbol's row id by name."""
    return dict(session.execute(select(Symbol.name, Symbol.id)).all())


def stored_names(session: Session, names: Sequence[str]) -> set[str]:
    """Those of ``names`` that the store holds a symbol of, in one statement."""
    return set(session.execute(select(Symbol.name).where(Symbol.name.in_(names))).scalars())


def stored_bars(session: Session, symbol_id: int) -> dict[dt.date, StoredBar]:
    """The stored bars of the symbol ``symbol_id`` by date."""
    rows = session.execute(
        select(Bar.id, Bar.date, Bar.open, Bar.high, Bar.low, Bar.close, Bar.volume).where(
            Bar.symbol_id == symbol_id
        )
    ).all()
    return {r.date: StoredBar(*r) for r in rows}


def stored_macro_scores(session: Session, source: str) -> dict[dt.date, tuple[int, float]]:
    """The stored macro scores of ``source``: (row id, score) by date."""
    rows = session.execute(
        select(MacroSentiment.id, MacroSentiment.date, MacroSentiment.score).where(
            MacroSentiment.source == source
        )
    ).all()
    return {r.date: (r.id, r.score) for r in rows}


def stored_news_scores(
    session: Session, ids: Iterable[int], source: str
) -> dict[tuple[int, dt.date], tuple[int, float]]:
    """The stored news scores of ``source`` of the symbols ``ids``: (row id, score) by
    (symbol id, date)."""
    rows = session.execute(
        select(
            NewsSentiment.id, NewsSentiment.symbol_id, NewsSentiment.date, NewsSentiment.score
        ).where(NewsSentiment.symbol_id.in_(set(ids)), NewsSentiment.source == source)
    ).all()
    return {(r.symbol_id, r.date): (r.id, r.score) for r in rows}


def news_dates(
    session: Session, symbol_id: int, source: str, start: dt.date, end: dt.date
) -> set[dt.date]:
    """The dates in ``start`` .. ``end`` with a news score of ``source`` for ``symbol_id``."""
    return set(
        session.execute(
            select(NewsSentiment.date).where(
                NewsSentiment.symbol_id == symbol_id,
                NewsSentiment.source == source,
                NewsSentiment.date >= start,
                NewsSentiment.date <= end,
            )
        ).scalars()
    )


def macro_dates(session: Session, source: str, start: dt.date, end: dt.date) -> set[dt.date]:
    """The dates in ``start`` .. ``end`` with a macro score of ``source``."""
    return set(
        session.execute(
            select(MacroSentiment.date).where(
                MacroSentiment.source == source,
                MacroSentiment.date >= start,
                MacroSentiment.date <= end,
            )
        ).scalars()
    )


def symbols_with_bars(
    session: Session, ids: Iterable[int], start: dt.date, end: dt.date, at_least: int = 2
) -> int:
    """How many of the symbols ``ids`` have at least ``at_least`` (>= 1) bars in ``start ..
    end``: those whose ``at_least``-th bar from ``start`` on is dated ``end`` or before (one
    query; per symbol a few steps down the unique ``(symbol_id, date)`` index, not a count of
    its bars in range)."""
    if at_least < 1:
        raise ValueError(f"at_least is {at_least}; expected an integer >= 1")
    nth = (
        select(Bar.date)
        .where(Bar.symbol_id == Symbol.id, Bar.date >= start)
        .order_by(Bar.date)
        .limit(1)
        .offset(at_least - 1)
        .scalar_subquery()
    )
    query = select(func.count()).select_from(Symbol).where(Symbol.id.in_(list(ids)), nth <= end)
    return int(session.execute(query).scalar_one())


def bar_spans(
    session: Session, ids: Iterable[int], start: dt.date, end: dt.date
) -> dict[int, tuple[dt.date, dt.date, int]]:
    """``{symbol_id: (first bar, last bar, bars in start .. end)}`` in one query; a symbol
    without bars is absent."""
    in_range = func.sum(case((Bar.date.between(start, end), 1), else_=0))
    rows = session.execute(
        select(Bar.symbol_id, func.min(Bar.date), func.max(Bar.date), in_range)
        .where(Bar.symbol_id.in_(list(ids)))
        .group_by(Bar.symbol_id)
    )
    return {int(r[0]): (r[1], r[2], int(r[3] or 0)) for r in rows}
