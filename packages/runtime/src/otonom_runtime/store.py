"""The market-data store: SQLAlchemy 2.0 tables, engines, sessions and the readers.

Any SQLAlchemy URL works; the default is the SQLite file ``./data/otonom.db`` (relative to the
working directory at call time) unless the ``OTONOM_DATABASE_URL`` environment variable is set.
PostgreSQL needs the ``postgres`` extra (``postgresql+psycopg://user@host/db``).

Rules:

* Nothing happens at import time: engines are made by ``get_engine`` on first use (one per
  URL, cached), tables by the explicit ``init_db``.
* SQLite files run in WAL mode with ``synchronous=NORMAL``, ``busy_timeout=5000`` ms and
  foreign keys on (set on every connection), so a daemon can read while a backtest writes.
  ``NORMAL`` is SQLite's recommended setting for WAL: a commit does not wait for an fsync
  (a backtest commits every 5,000 decision rows; no measurable difference on a fast-syncing
  disk, milliseconds per commit on a slow one), a crash cannot corrupt the database and an
  application crash loses nothing; only a power cut or OS crash can undo the last commits
  before a checkpoint (a backtest run is then left ``running``, and marked ``failed`` by the
  next opening for writing, or missing, never complete with rows missing).
* A store that was never initialised is refused by ``get_session`` with a ``StoreError``.
* Dates are calendar days (``datetime.date``), prices are in the quote currency, volume in
  whatever unit the source uses (the features only use volume ratios).
* ``Decision.days_since_last_trade`` stores ``math.inf`` ("never traded") as SQL NULL and reads
  NULL back as ``math.inf`` (the ``InfAsNull`` column type), so the ORM attribute is always a
  float.
* The readers return ``otonom_schema`` types and fetch columns with Core selects (no ORM
  objects) in one SQL query on the happy path.
* Sentiment carries its provenance: every news and macro row has a ``source``
  (``SYNTHETIC_SOURCE`` for the synthetic market's rows, ``USER_SOURCE`` by default for
  imported ones), and a symbol reads one source per kind (``sentiment_source``): a synthetic
  symbol reads ``"synthetic"``, a real one ``"user"``, unless the strategy names a source. A
  store holding the demo and a user's data thus gives each what a store holding only it would.
* Interrupted runs are found: a backtest run records its host, pid and process start time and
  keeps a heartbeat (``RunHeartbeat``); every ``init_db`` (every ``otonom`` command, every
  opening of the store for writing) marks ``failed``, with the reason in ``error``, a
  ``running`` run whose process is provably gone or whose heartbeat is stale
  (``fail_interrupted_runs``).
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import logging
import math
import os
import socket
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Double,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    sessionmaker,
    validates,
)
from sqlalchemy.sql.elements import BindParameter, TextClause
from sqlalchemy.types import TypeEngine

from otonom_runtime._errors import StateBuildError, StoreError, UnknownSymbolError
from otonom_runtime._sources import (
    SOURCE_MAX_LEN,
    SYNTHETIC_SOURCE,
    USER_SOURCE,
    check_source_name,
)
from otonom_runtime.ensemble import ANALYSTS
from otonom_schema import LOOKBACK, MarketHistory, SentimentSeries, compute_state

__all__ = [
    "DATABASE_URL_ENV",
    "HEARTBEAT_INTERVAL_S",
    "HEARTBEAT_STALE_S",
    "RUN_STATUSES",
    "SIGNAL_COLUMNS",
    "SIGNAL_FIELDS",
    "STORE_VERSION",
    "SYNTHETIC_SOURCE",
    "USER_SOURCE",
    "BacktestRun",
    "Bar",
    "Base",
    "Decision",
    "InfAsNull",
    "MacroSentiment",
    "NewsSentiment",
    "ProcessIdentity",
    "RunHeartbeat",
    "StoreMeta",
    "Symbol",
    "SymbolInfo",
    "check_source_name",
    "default_database_url",
    "dispose_engines",
    "fail_interrupted_runs",
    "fetch_raw",
    "get_engine",
    "get_or_create_symbol",
    "get_session",
    "get_symbol",
    "init_db",
    "last_bar_date",
    "list_symbols",
    "load_history",
    "load_macro",
    "load_news",
    "sentiment_source",
    "this_process",
]

STORE_VERSION: Final = 4
"""Version of the table layout, written to ``store_meta`` by ``init_db`` (which upgrades an
older store in place: version 1 -> 2 see ``Decision``, 2 -> 3 see ``MacroSentiment``, 3 -> 4
see ``BacktestRun``)."""

HEARTBEAT_INTERVAL_S: Final = 30.0
"""Seconds between two heartbeats of a running backtest (``RunHeartbeat``)."""
HEARTBEAT_STALE_S: Final = 900.0
"""A running run whose last heartbeat is older than this many seconds is taken as interrupted
when its process cannot be checked (another host, or an unknown pid) (``fail_interrupted_runs``)."""

log = logging.getLogger(__name__)

DATABASE_URL_ENV: Final = "OTONOM_DATABASE_URL"
RUN_STATUSES: Final = ("running", "complete", "failed")
_DEFAULT_SQLITE: Final = Path("data") / "otonom.db"
_NOT_INITIALISED_HINT: Final = (
    "run `otonom data synth ...` or `otonom data import-csv ...` (or call "
    "otonom_runtime.store.init_db()) first"
)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class InfAsNull(TypeDecorator[float]):
    """A double column where ``math.inf`` is stored as NULL and NULL reads back as ``math.inf``.

    Used for ``days_since_last_trade`` (``inf`` = never traded). NaN and -inf are refused with
    ``ValueError`` (wrapped in SQLAlchemy's ``StatementError`` when it happens in a statement).
    """

    impl = Double
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: Dialect) -> float | None:
        if value is None or value == math.inf:
            return None
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"days_since_last_trade is {value}; expected a number >= 0 or inf")
        return value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> float | None:
        return math.inf if value is None else float(value)


class Base(DeclarativeBase):
    """Declarative base of every otonom table (constraint names follow one convention)."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads it as a class attribute)
        float: Double(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


class StoreMeta(Base):
    """Key/value facts about the database itself (``store_version``)."""

    __tablename__ = "store_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Symbol(Base):
    """A tradable symbol. ``source``: ``"csv:<file name>"`` or ``"synthetic"``."""

    __tablename__ = "symbols"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(255))
    is_synthetic: Mapped[bool] = mapped_column(default=False)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)

    def __repr__(self) -> str:
        return f"Symbol(id={self.id!r}, name={self.name!r}, source={self.source!r})"


class Bar(Base):
    """One daily OHLCV bar. Unique per (symbol, date); that unique index serves every reader."""

    __tablename__ = "bars"
    __table_args__ = (UniqueConstraint("symbol_id", "date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol_id: Mapped[int] = mapped_column(ForeignKey("symbols.id", ondelete="CASCADE"))
    date: Mapped[dt.date] = mapped_column(Date)
    open: Mapped[float]
    high: Mapped[float]
    low: Mapped[float]
    close: Mapped[float]
    volume: Mapped[float]


class NewsSentiment(Base):
    """News sentiment of one symbol on one date from one ``source``, score in [-1, 1].

    Unique per (symbol, source, date). ``source`` has no default: every writer says where its
    rows come from (see ``MacroSentiment``).
    """

    __tablename__ = "news_sentiment"
    __table_args__ = (UniqueConstraint("symbol_id", "source", "date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol_id: Mapped[int] = mapped_column(ForeignKey("symbols.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(SOURCE_MAX_LEN))
    date: Mapped[dt.date] = mapped_column(Date)
    score: Mapped[float]


class MacroSentiment(Base):
    """Market-wide (macro) sentiment on one date from one ``source``, score in [-1, 1].

    Unique per (source, date). ``source``: ``SYNTHETIC_SOURCE`` for the synthetic market's
    rows, ``USER_SOURCE`` (or the name given to ``otonom data import-sentiment --source``) for
    imported ones; no default.

    Store version 2 had no ``source`` (macro UNIQUE(date), news UNIQUE(symbol_id, date)); the
    in-place upgrade labels its rows by rule. News: ``"synthetic"`` when its symbol is
    synthetic, else ``"user"``. Macro, one market-wide table, cannot be told apart row by row:
    ``"synthetic"`` when the store holds any synthetic symbol, else ``"user"``. That is exact
    when every symbol is synthetic or none is; in a store holding both, macro scores a user
    imported before the demo was generated (the old synth only filled days without a score)
    are labelled ``"synthetic"`` too: re-import them (``otonom data import-sentiment``) to make
    them the real symbols' macro again.
    """

    __tablename__ = "macro_sentiment"
    __table_args__ = (UniqueConstraint("source", "date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(SOURCE_MAX_LEN))
    date: Mapped[dt.date] = mapped_column(Date)
    score: Mapped[float]


class BacktestRun(Base):
    """One backtest of one strategy. ``status``: ``"running"`` | ``"complete"`` | ``"failed"``.

    ``host``, ``pid`` and ``process_start`` name the process that runs it (``this_process``;
    ``process_start`` is None where the start time cannot be read, i.e. off Linux) and
    ``heartbeat_at`` is refreshed every ``HEARTBEAT_INTERVAL_S`` while it runs
    (``RunHeartbeat``); ``fail_interrupted_runs`` uses them to mark a run whose process died
    (``kill -9``, a power cut) ``failed``. Store version 3 had none of the four columns: the
    in-place upgrade adds them (NULL on the old rows, which are then judged by ``created_at``).
    """

    __tablename__ = "backtest_runs"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'complete', 'failed')", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy_name: Mapped[str] = mapped_column(String(128))
    strategy_hash: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date] = mapped_column(Date)
    symbols: Mapped[list[str]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="running")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    process_start: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


SIGNAL_FIELDS: Final = ("action", "strength", "confidence")
"""The fields of one analyst's signal in a decision row (``<analyst>_<field>`` columns)."""
SIGNAL_COLUMNS: Final = tuple(f"{a}_{f}" for a in ANALYSTS for f in SIGNAL_FIELDS)
"""The decision table's signal columns, analyst by analyst in ``ANALYSTS`` order."""


class Decision(Base):
    """The ensemble's decision for one symbol on one date within a run.

    ``action``: ``otonom_schema.Action`` value (HOLD=0, BUY=1, SELL=2); ``strength`` in [0, 1];
    ``position``/``leverage``/``cash_fraction``: the portfolio *before* the decision, in the
    units of ``otonom_schema.PortfolioSnapshot``; ``days_since_last_trade``: days, ``math.inf``
    = never traded (stored as NULL); ``equity`` in the quote currency.

    Each analyst's signal has its own typed columns, ``<analyst>_action`` (int),
    ``<analyst>_strength`` and ``<analyst>_confidence`` (floats in [0, 1]) for ``tech``,
    ``news``, ``risk`` and ``rl``; all three NULL when that analyst did not vote (``rl`` when the
    RL analyst was off or fell back). ``signals`` reads and writes them as one dict,
    ``{analyst: {"action": int, "strength": float, "confidence": float} | None}``.
    (Store version 1 kept that dict as JSON text: formatting the floats cost more than the
    whole simulation, and SQL could not query it.)
    """

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("run_id", "symbol_id", "date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("backtest_runs.id", ondelete="CASCADE"))
    symbol_id: Mapped[int] = mapped_column(ForeignKey("symbols.id", ondelete="CASCADE"))
    date: Mapped[dt.date] = mapped_column(Date)
    action: Mapped[int] = mapped_column(Integer)
    strength: Mapped[float]
    position: Mapped[float]
    leverage: Mapped[float]
    cash_fraction: Mapped[float]
    days_since_last_trade: Mapped[float] = mapped_column(InfAsNull(), nullable=True)
    equity: Mapped[float]
    tech_action: Mapped[int | None] = mapped_column(Integer)
    tech_strength: Mapped[float | None]
    tech_confidence: Mapped[float | None]
    news_action: Mapped[int | None] = mapped_column(Integer)
    news_strength: Mapped[float | None]
    news_confidence: Mapped[float | None]
    risk_action: Mapped[int | None] = mapped_column(Integer)
    risk_strength: Mapped[float | None]
    risk_confidence: Mapped[float | None]
    rl_action: Mapped[int | None] = mapped_column(Integer)
    rl_strength: Mapped[float | None]
    rl_confidence: Mapped[float | None]

    @property
    def signals(self) -> dict[str, dict[str, Any] | None]:
        """Every analyst's signal, None where it did not vote (a fresh dict)."""
        out: dict[str, dict[str, Any] | None] = {}
        for name in ANALYSTS:
            values = [getattr(self, f"{name}_{f}") for f in SIGNAL_FIELDS]
            out[name] = None if values[0] is None else dict(zip(SIGNAL_FIELDS, values, strict=True))
        return out

    @signals.setter
    def signals(self, value: Mapping[str, Mapping[str, Any] | None]) -> None:
        unknown = sorted(set(value) - set(ANALYSTS))
        if unknown:
            raise ValueError(f"signals has analysts {unknown}; expected only {', '.join(ANALYSTS)}")
        for name in ANALYSTS:
            signal = value.get(name)
            if signal is not None and set(signal) != set(SIGNAL_FIELDS):
                raise ValueError(
                    f"signals[{name!r}] has keys {sorted(signal)}; expected "
                    f"{', '.join(SIGNAL_FIELDS)}"
                )
            for f in SIGNAL_FIELDS:
                setattr(self, f"{name}_{f}", None if signal is None else signal[f])

    @validates("days_since_last_trade")
    def _check_days(self, key: str, value: float) -> float:
        value = float(value)
        if math.isnan(value) or value < 0:
            raise ValueError(f"{key} is {value}; expected a number of days >= 0 or math.inf")
        return value


# --- engines and sessions --------------------------------------------------------------------

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: weakref.WeakKeyDictionary[Engine, sessionmaker[Session]] = (
    weakref.WeakKeyDictionary()
)
_initialised: weakref.WeakSet[Engine] = weakref.WeakSet()
_fork_hook: list[bool] = []  # the after-fork hook is registered (once, by the first engine)


def _after_fork_in_child() -> None:
    """In a forked child: new, empty pools for the cached engines, so the child opens its own
    connections and never uses (nor closes, on dispose or exit) the parent's pooled ones,
    which share their sockets and file handles with the parent (SQLAlchemy's
    ``dispose(close=False)`` recipe). The lock is made anew: another thread of the parent may
    have held it at the fork."""
    global _lock
    _lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)


def default_database_url() -> str:
    """``$OTONOM_DATABASE_URL`` if set and non-empty, else the SQLite file ``./data/otonom.db``.

    The SQLite path is made absolute against the current working directory at call time.
    """
    env = os.environ.get(DATABASE_URL_ENV, "").strip()
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / _DEFAULT_SQLITE).as_posix()}"


def _safe(url: URL | str) -> str:
    """A URL for messages, password hidden."""
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except sa_exc.ArgumentError:
            return url
        return parsed.render_as_string(hide_password=True)
    return url.render_as_string(hide_password=True)


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite file URL, None for other backends and in-memory SQLite."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: ``default_database_url()``), made once per URL.

    For a SQLite file the parent folders are created and every connection gets WAL mode,
    ``synchronous=NORMAL``, ``busy_timeout=5000`` and ``foreign_keys=ON``. Raises
    ``StoreError`` for a URL that cannot be read or whose driver is not installed.
    """
    text = default_database_url() if url is None else url
    with _lock:
        engine = _engines.get(text)
        if engine is not None:
            return engine
        try:
            parsed = make_url(text)
        except sa_exc.ArgumentError as exc:
            raise StoreError(
                f"cannot read database URL {text!r} ({exc}); expected e.g. "
                "sqlite:///data/otonom.db or postgresql+psycopg://user@host:5432/otonom"
            ) from None
        file = _sqlite_file(parsed)
        if file is not None:
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder of SQLite database {str(file)!r}: {exc}"
                ) from None
        try:
            engine = create_engine(parsed)
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
            hint = " (install otonom-runtime[postgres])" if "postgres" in text else ""
            raise StoreError(
                f"cannot open database {_safe(parsed)}: {exc}{hint}; expected a SQLAlchemy "
                "URL with an installed driver"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _on_sqlite_connect)
        if not _fork_hook and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook.append(True)
        _engines[text] = engine
        return engine


def dispose_engines() -> None:
    """Close and forget every cached engine (tests). A forked child needs no call: it gets
    new pools of its own at the fork, and the parent's connections stay the parent's."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _sessionmakers.clear()
        _initialised.clear()


def _resolve(url_or_engine: str | Engine | None) -> Engine:
    if isinstance(url_or_engine, Engine):
        return url_or_engine
    return get_engine(url_or_engine)


def _read_version(engine: Engine) -> int | None:
    """The stored ``store_version``, None when the store has no ``store_meta`` row/table."""
    file = _sqlite_file(engine.url)
    if file is not None and not file.exists():
        return None
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(StoreMeta.__tablename__):
                return None
            value = conn.execute(
                select(StoreMeta.value).where(StoreMeta.key == "store_version")
            ).scalar_one_or_none()
    except sa_exc.DBAPIError as exc:
        raise StoreError(f"cannot open database {_safe(engine.url)}: {exc.orig}") from None
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise StoreError(
            f"database {_safe(engine.url)} has store_version {value!r}; expected an integer"
        ) from None


def _check_version(engine: Engine, version: int) -> None:
    if version in _UPGRADES:
        raise StoreError(
            f"database {_safe(engine.url)} has store version {version}; this otonom-runtime "
            f"reads store version {STORE_VERSION}: run any `otonom` command on it (or call "
            "otonom_runtime.store.init_db()) to upgrade it in place, nothing is lost"
        )
    if version != STORE_VERSION:
        raise StoreError(
            f"database {_safe(engine.url)} has store version {version}; this otonom-runtime "
            f"reads store version {STORE_VERSION} (upgrade otonom-runtime or use another "
            "database)"
        )


def _signal_from_json(dialect: Dialect, analyst: str, field: str) -> str:
    """SQL reading one signal field out of a version-1 ``signals`` JSON column, typed."""
    if dialect.name == "sqlite":
        return f"json_extract(signals, '$.{analyst}.{field}')"
    kind = "integer" if field == "action" else "double precision"  # PostgreSQL json
    return f"CAST(signals -> '{analyst}' ->> '{field}' AS {kind})"


def _upgrade_from_1(engine: Engine) -> None:
    """Store version 1 -> 2: each decision's ``signals`` JSON becomes the typed
    ``<analyst>_<field>`` columns (NULL where the JSON has no signal for that analyst; the
    backtester only ever wrote these four analysts), the JSON column is dropped (SQLite 3.35 or
    newer) and ``store_version`` becomes 2.

    Resumable: SQLite's driver commits each ``ALTER TABLE`` on its own, so a step that fails
    can leave earlier ones done; every step is skipped or repeated safely when ``init_db`` runs
    again (columns added only if missing, the copy repeated while ``signals`` exists). A
    concurrent upgrade is fine too: whichever comes second finds version 2 and stops.
    """
    table = Decision.__tablename__
    try:
        with engine.begin() as conn:
            stored = conn.execute(
                select(StoreMeta.value).where(StoreMeta.key == "store_version")
            ).scalar_one()
            if stored != "1":
                return
            present = {c["name"] for c in inspect(conn).get_columns(table)}
            for analyst in ANALYSTS:
                for field in SIGNAL_FIELDS:
                    if f"{analyst}_{field}" in present:
                        continue
                    column_type: TypeEngine[Any] = Integer() if field == "action" else Double()
                    kind = column_type.compile(conn.dialect)
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {analyst}_{field} {kind}"))
            if "signals" in present:
                assignments = ", ".join(
                    f"{a}_{f} = {_signal_from_json(conn.dialect, a, f)}"
                    for a in ANALYSTS
                    for f in SIGNAL_FIELDS
                )
                conn.execute(text(f"UPDATE {table} SET {assignments}"))
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN signals"))
            _set_version(conn, 2)
    except sa_exc.DBAPIError as exc:
        if (_read_version(engine) or 0) >= 2:
            return  # upgraded by a concurrent init_db
        hint = ""
        if engine.dialect.name == "sqlite":
            import sqlite3

            hint = f" (dropping a column needs SQLite 3.35+; here {sqlite3.sqlite_version})"
        raise StoreError(
            f"cannot upgrade database {_safe(engine.url)} from store version 1 to 2: "
            f"{exc.orig}{hint}"
        ) from None


def _set_version(conn: Any, version: int) -> None:
    conn.execute(
        text("UPDATE store_meta SET value = :v WHERE key = 'store_version'"),
        {"v": str(version)},
    )


def _upgrade_from_2(engine: Engine) -> None:
    """Store version 2 -> 3: ``news_sentiment`` and ``macro_sentiment`` get their ``source``
    column (labelled as ``MacroSentiment`` says), their unique constraints become
    (symbol_id, source, date) and (source, date), and ``store_version`` becomes 3.

    SQLite cannot change a table's constraints: each table is rebuilt (a ``<table>_v3`` copy in
    the new layout, the rows copied with their labels, the old table dropped, the copy renamed),
    giving exactly the layout of a fresh store. Resumable, as ``_upgrade_from_1``: SQLite's
    driver commits DDL on its own, so every state a failure can leave is recognised on the next
    ``init_db`` (a table that already has ``source`` is done; a copy beside the old table is
    dropped and made again; a copy without the old table holds every row and is renamed).
    PostgreSQL changes the tables in place (add the column, label, NOT NULL, swap the
    constraint) in one transaction.
    """
    try:
        with engine.begin() as conn:
            stored = conn.execute(
                select(StoreMeta.value).where(StoreMeta.key == "store_version")
            ).scalar_one()
            if stored != "2":
                return
            labels = _v2_labels(conn)
            for table in (NewsSentiment.__table__, MacroSentiment.__table__):
                if conn.dialect.name == "sqlite":
                    _rebuild_sqlite(conn, table, labels)
                else:
                    _alter_in_place(conn, table, labels)
            _set_version(conn, 3)
    except sa_exc.DBAPIError as exc:
        if (_read_version(engine) or 0) >= 3:
            return  # upgraded by a concurrent init_db
        raise StoreError(
            f"cannot upgrade database {_safe(engine.url)} from store version 2 to 3: {exc.orig}"
        ) from None


def _v2_labels(conn: Any) -> dict[str, Any]:
    """The bind values of the labelling rule (see ``MacroSentiment``): the macro rows' source
    and the two names a news row gets by its symbol's kind."""
    any_synthetic = conn.execute(
        select(func.count()).select_from(Symbol).where(Symbol.is_synthetic.is_(True))
    ).scalar_one()
    return {
        "macro": SYNTHETIC_SOURCE if any_synthetic else USER_SOURCE,
        "synthetic": SYNTHETIC_SOURCE,
        "user": USER_SOURCE,
    }


def _label_sql(table: Any, alias: str) -> str:
    """The SQL expression of a version-2 row's source (``_v2_labels`` binds)."""
    if table.name == MacroSentiment.__tablename__:
        return ":macro"
    return (
        f"(SELECT CASE WHEN s.is_synthetic THEN :synthetic ELSE :user END "
        f"FROM {Symbol.__tablename__} s WHERE s.id = {alias}.symbol_id)"
    )


def _rebuild_sqlite(conn: Any, table: Any, labels: dict[str, Any]) -> None:
    """One table of ``_upgrade_from_2`` on SQLite (each step skipped or repeated safely)."""
    from sqlalchemy.schema import CreateTable

    name, copy = table.name, f"{table.name}_v3"
    tables = set(inspect(conn).get_table_names())
    if name not in tables:  # stopped after the drop: the copy holds every row
        conn.execute(text(f"ALTER TABLE {copy} RENAME TO {name}"))
        return
    if "source" in {c["name"] for c in inspect(conn).get_columns(name)}:
        conn.execute(text(f"DROP TABLE IF EXISTS {copy}"))
        return
    conn.execute(text(f"DROP TABLE IF EXISTS {copy}"))
    ddl = str(CreateTable(table).compile(dialect=conn.dialect))
    head = f"CREATE TABLE {name} "
    assert ddl.strip().startswith(head), ddl
    conn.execute(text(ddl.strip().replace(head, f"CREATE TABLE {copy} ", 1)))
    old = [c.name for c in table.columns if c.name != "source"]
    conn.execute(
        text(
            f"INSERT INTO {copy} ({', '.join(old)}, source) "
            f"SELECT {', '.join('o.' + c for c in old)}, {_label_sql(table, 'o')} FROM {name} o"
        ),
        labels,
    )
    conn.execute(text(f"DROP TABLE {name}"))
    conn.execute(text(f"ALTER TABLE {copy} RENAME TO {name}"))


def _alter_in_place(conn: Any, table: Any, labels: dict[str, Any]) -> None:
    """One table of ``_upgrade_from_2`` on other databases (ALTER TABLE; steps guarded)."""
    name = table.name
    info = inspect(conn)
    if "source" not in {c["name"] for c in info.get_columns(name)}:
        kind = String(SOURCE_MAX_LEN).compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {name} ADD COLUMN source {kind}"))
    conn.execute(
        text(f"UPDATE {name} SET source = {_label_sql(table, name)} WHERE source IS NULL"),
        labels,
    )
    conn.execute(text(f"ALTER TABLE {name} ALTER COLUMN source SET NOT NULL"))
    wanted = next(c for c in table.constraints if isinstance(c, UniqueConstraint))
    wanted_name = str(wanted.name)
    columns = [c.name for c in wanted.columns]
    for unique in info.get_unique_constraints(name):
        if unique["name"] != wanted_name:  # the version-2 UNIQUE(date) / (symbol_id, date)
            conn.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {unique['name']}"))
    if wanted_name not in {u["name"] for u in info.get_unique_constraints(name)}:
        conn.execute(
            text(f"ALTER TABLE {name} ADD CONSTRAINT {wanted_name} UNIQUE ({', '.join(columns)})")
        )


_V4_RUN_COLUMNS: Final = ("host", "pid", "process_start", "heartbeat_at")
"""The columns store version 4 added to ``backtest_runs``, in the order the upgrade adds them."""


def _upgrade_from_3(engine: Engine) -> None:
    """Store version 3 -> 4: ``backtest_runs`` gets ``host``, ``pid``, ``process_start`` and
    ``heartbeat_at`` (NULL on the stored runs) and ``store_version`` becomes 4.

    Resumable: each column is added only if missing and the version is written last, so an
    upgrade stopped half way (SQLite's driver commits each ``ALTER TABLE`` on its own) is
    finished by the next ``init_db``; PostgreSQL does it in one transaction. A concurrent
    upgrade is fine too: whichever comes second finds version 4 and stops.
    """
    table = BacktestRun.__tablename__
    try:
        with engine.begin() as conn:
            stored = conn.execute(
                select(StoreMeta.value).where(StoreMeta.key == "store_version")
            ).scalar_one()
            if stored != "3":
                return
            present = {c["name"] for c in inspect(conn).get_columns(table)}
            for name in _V4_RUN_COLUMNS:
                if name not in present:
                    kind = BacktestRun.__table__.c[name].type.compile(dialect=conn.dialect)
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))
            _set_version(conn, 4)
    except sa_exc.DBAPIError as exc:
        if (_read_version(engine) or 0) >= 4:
            return  # upgraded by a concurrent init_db
        raise StoreError(
            f"cannot upgrade database {_safe(engine.url)} from store version 3 to 4: {exc.orig}"
        ) from None


_UPGRADES: Final = {1: _upgrade_from_1, 2: _upgrade_from_2, 3: _upgrade_from_3}
"""The in-place upgrade from each older store version to the next one."""


def init_db(url_or_engine: str | Engine | None = None) -> Engine:
    """Create every table and the ``store_version`` row; idempotent. Returns the engine.

    An older store is upgraded in place first, one version at a time (1 -> 2: see
    ``Decision``; 2 -> 3: see ``MacroSentiment``; 3 -> 4: see ``BacktestRun``; nothing is
    lost). Then ``fail_interrupted_runs`` marks the runs whose process is gone ``failed``.
    Raises ``StoreError`` when the database cannot be opened or was made by another store
    version.
    """
    engine = _resolve(url_or_engine)
    version = _read_version(engine)
    while version is not None and version in _UPGRADES:
        _UPGRADES[version](engine)
        version += 1
    if version is not None:
        _check_version(engine, version)
    try:
        Base.metadata.create_all(engine)
        if version is None:
            with Session(engine) as session, session.begin():
                if session.get(StoreMeta, "store_version") is None:
                    session.add(StoreMeta(key="store_version", value=str(STORE_VERSION)))
    except sa_exc.IntegrityError:
        pass  # a concurrent init_db wrote the row first
    except sa_exc.DBAPIError as exc:
        raise StoreError(f"cannot initialise database {_safe(engine.url)}: {exc.orig}") from None
    with _lock:
        _initialised.add(engine)
    try:
        fail_interrupted_runs(engine)
    except StoreError as exc:  # e.g. locked beyond busy_timeout: the next opening retries
        log.warning("%s", exc)
    return engine


def _ensure_initialised(engine: Engine) -> None:
    if engine in _initialised:
        return
    version = _read_version(engine)
    if version is None:
        raise StoreError(
            f"the store at {_safe(engine.url)} is not initialised; {_NOT_INITIALISED_HINT}"
        )
    _check_version(engine, version)
    with _lock:
        _initialised.add(engine)


@contextmanager
def get_session(url: str | Engine | None = None) -> Iterator[Session]:
    """A session on the store: commits when the block succeeds, rolls back if it raises.

    ``url``: a database URL, an engine, or None for ``default_database_url()``. Raises
    ``StoreError`` when the store cannot be opened or was never initialised (``init_db``).
    Objects stay readable after the block (``expire_on_commit=False``).
    """
    engine = _resolve(url)
    _ensure_initialised(engine)
    with _lock:
        maker = _sessionmakers.get(engine)
        if maker is None:
            maker = sessionmaker(bind=engine, expire_on_commit=False)
            _sessionmakers[engine] = maker
    session = maker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --- interrupted runs --------------------------------------------------------------------------


class ProcessIdentity(NamedTuple):
    """Who runs a backtest: ``host`` (``socket.gethostname()``), ``pid``, and ``start``: the
    process's start time as ``"<boot id>:<pid namespace>:<start ticks>"`` (Linux ``/proc``;
    None elsewhere). Two processes with equal ``start`` prefixes (boot id and pid namespace)
    see the same pids, so one can tell whether the other's pid is still that process."""

    host: str
    pid: int
    start: str | None


_GONE: Final = "gone"


def _machine() -> str | None:
    """``"<boot id>:<pid namespace inode>"`` of this process (Linux), None when unreadable."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = str(Path("/proc/self/ns/pid").readlink())  # "pid:[4026531836]"
    except (OSError, UnicodeDecodeError):
        return None
    return f"{boot}:{namespace.removeprefix('pid:[').removesuffix(']')}"


def _start_ticks(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks after boot); ``_GONE`` when
    there is no such process or it is a zombie (dead, not yet reaped); None when unreadable."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return _GONE
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # the name in (...) may hold blanks
    if len(fields) < 20:
        return None
    if fields[0] in (b"Z", b"X"):
        return _GONE
    return fields[19].decode("ascii", "replace")


def this_process() -> ProcessIdentity:
    """The ``ProcessIdentity`` of the calling process (read anew: a fork has another pid)."""
    pid = os.getpid()
    machine = _machine()
    ticks = _start_ticks(pid) if machine is not None else None
    start = f"{machine}:{ticks}" if machine is not None and ticks not in (None, _GONE) else None
    return ProcessIdentity(socket.gethostname(), pid, start)


def _as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite gives stored times back without a zone: they are UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def _db_now(conn: Any) -> dt.datetime:
    """Now, by the clock every process of the store shares: the server's for PostgreSQL and
    other servers, this machine's for SQLite (a local file)."""
    if conn.dialect.name == "sqlite":
        return _utcnow()
    return _as_utc(conn.execute(select(func.now())).scalar_one())


def _heartbeat_value(dialect: Dialect) -> Any:
    """The value a heartbeat writes: ``_db_now`` as SQL (the server's clock) or a bind."""
    return _utcnow() if dialect.name == "sqlite" else func.now()


@dataclass(frozen=True)
class _Running:
    id: int
    host: str | None
    pid: int | None
    process_start: str | None
    heartbeat_at: dt.datetime | None
    created_at: dt.datetime


def _process_gone(run: _Running, me: ProcessIdentity) -> str | None:
    """Why ``run``'s process is provably gone; "" when it provably lives; None when this
    process cannot tell (another host, another pid namespace or boot, no /proc)."""
    if run.host != me.host or run.pid is None:
        return None
    who = f"process {run.pid} on {run.host}"
    if run.process_start is not None and me.start is not None:
        machine, _, ticks = run.process_start.rpartition(":")
        if machine != me.start.rpartition(":")[0]:
            return None  # another boot or pid namespace under the same host name
        now = _start_ticks(run.pid)
        if now == _GONE:
            return f"its {who} is gone"
        if now is None:
            return None
        if now != ticks:
            return f"its {who} is gone (pid {run.pid} now belongs to a later process)"
        return ""
    if run.process_start is None and me.start is None and os.name == "posix":
        try:
            os.kill(run.pid, 0)  # signal 0: is there such a pid (no start time to compare)
        except ProcessLookupError:
            return f"its {who} is gone"
        except OSError:
            return None
    return None


def _interrupted(
    run: _Running, me: ProcessIdentity, now: dt.datetime, stale_s: float
) -> str | None:
    """Why ``run`` is interrupted, None when it may still be running."""
    last = _as_utc(run.heartbeat_at or run.created_at)
    seen = f"last heartbeat {last.strftime('%Y-%m-%d %H:%M:%S UTC')}"
    gone = _process_gone(run, me)
    if gone == "":
        return None  # the very process is alive: running, however long since its heartbeat
    if gone is not None:
        return f"interrupted: {gone} ({seen})"
    age = (now - last).total_seconds()
    if age > stale_s:
        who = "" if run.pid is None else f" from process {run.pid} on {run.host}"
        return (
            f"interrupted: no heartbeat for {age:.0f} s{who} ({seen}; stale after {stale_s:.0f} s)"
        )
    return None


def fail_interrupted_runs(
    url_or_engine: str | Engine | None = None, *, stale_after_s: float = HEARTBEAT_STALE_S
) -> list[int]:
    """Mark ``failed`` every ``running`` backtest run whose process is gone; returns their ids.

    A run is interrupted when its process is provably gone (same host, boot and pid namespace,
    and the pid is dead, a zombie, or now another process: its start time differs) or, when
    this process cannot check that (a run of another host, on a PostgreSQL store shared by
    several hosts; a run stored before version 4), when its heartbeat (else its
    ``created_at``) is older than ``stale_after_s`` by the store's clock. A run whose process
    provably lives is never marked, however old its heartbeat. The run gets ``error`` =
    ``"interrupted: ..."`` (why, and its last heartbeat) and ``finished_at`` = now.

    Safe to run concurrently (``init_db`` runs it on every opening): each run is marked by one
    conditional UPDATE (still ``running``, heartbeat unchanged since it was judged), so a run
    is marked once and a heartbeat that comes in between keeps it running. Raises
    ``StoreError`` when the store cannot be read or written.
    """
    engine = _resolve(url_or_engine)
    table = BacktestRun
    me = this_process()
    marked: list[int] = []
    try:
        with engine.connect() as conn:
            now = _db_now(conn)
            runs = [
                _Running(*row)
                for row in conn.execute(
                    select(
                        table.id,
                        table.host,
                        table.pid,
                        table.process_start,
                        table.heartbeat_at,
                        table.created_at,
                    ).where(table.status == "running")
                ).all()
            ]
        verdicts = [(run, _interrupted(run, me, now, stale_after_s)) for run in runs]
        for run, reason in verdicts:
            if reason is None:
                continue
            beat = (
                table.heartbeat_at.is_(None)
                if run.heartbeat_at is None
                else table.heartbeat_at == run.heartbeat_at
            )
            with engine.begin() as conn:
                done = conn.execute(
                    update(table)
                    .where(table.id == run.id, table.status == "running", beat)
                    .values(
                        status="failed",
                        finished_at=_heartbeat_value(conn.dialect),
                        error=reason[:2000],
                    )
                )
            if done.rowcount == 1:
                marked.append(run.id)
                log.warning("backtest run %d marked failed: %s", run.id, reason)
    except sa_exc.DBAPIError as exc:
        raise StoreError(
            f"cannot mark the interrupted runs of {_safe(engine.url)} failed: {exc.orig}"
        ) from None
    return marked


class RunHeartbeat:
    """Keeps a running run's ``heartbeat_at`` fresh while it runs.

    ``start()`` writes one heartbeat at once, then a daemon thread writes one every
    ``interval_s`` (one small UPDATE on its own pooled connection, only while the run is still
    ``running``); ``stop()`` ends the thread (waits for it). Also a context manager. A
    heartbeat that fails (the store busy beyond its timeout, the server gone) is logged and
    tried again at the next interval: it never fails the run. ``engine`` None (a session bound
    to a connection) or an in-memory SQLite store (no other process can see it): no thread.
    """

    def __init__(
        self, engine: Engine | None, run_id: int, *, interval_s: float = HEARTBEAT_INTERVAL_S
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s is {interval_s}; expected seconds > 0")
        self.run_id = run_id
        self.interval_s = interval_s
        self.beats = 0
        self._engine = engine
        if (
            engine is not None
            and engine.dialect.name == "sqlite"
            and _sqlite_file(engine.url) is None
        ):
            self._engine = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """Write one heartbeat now; True when the run was still ``running`` (and updated)."""
        if self._engine is None:
            return False
        table = BacktestRun
        with self._engine.begin() as conn:
            done = conn.execute(
                update(table)
                .where(table.id == self.run_id, table.status == "running")
                .values(heartbeat_at=_heartbeat_value(conn.dialect))
            )
        self.beats += 1
        return bool(done.rowcount)

    def _beat_quietly(self) -> None:
        try:
            self.beat()
        except Exception as exc:  # a heartbeat never fails the run
            log.warning(
                "heartbeat of backtest run %d failed (tried again later): %s", self.run_id, exc
            )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat_quietly()

    def start(self) -> RunHeartbeat:
        """The first heartbeat now, then one every ``interval_s`` (idempotent)."""
        if self._engine is None or self._thread is not None:
            return self
        self._beat_quietly()
        self._thread = threading.Thread(
            target=self._loop, name=f"otonom-heartbeat-run-{self.run_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """No more heartbeats (waits for the thread to end)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> RunHeartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- raw reads (hot paths) --------------------------------------------------------------------


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


# --- readers ---------------------------------------------------------------------------------


def get_symbol(session: Session, name: str) -> Symbol:
    """The ``Symbol`` row named ``name``; ``UnknownSymbolError`` naming the known symbols."""
    symbol = session.execute(select(Symbol).where(Symbol.name == name)).scalar_one_or_none()
    if symbol is None:
        raise _unknown(session, name)
    return symbol


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


def _autoflush(session: Session) -> None:
    """What ``session.execute`` does before an ORM read: flush pending objects (when the
    session autoflushes), so the raw readers see them as the ORM readers always did."""
    if session.autoflush and (session.new or session.dirty or session.deleted):
        session.flush()


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
def _history_stmt(start: bool, end: bool, last_n: bool) -> TextClause:
    """``load_history``'s query for one combination of filters (one ``TextClause`` each, so
    ``fetch_raw`` compiles it once per dialect). The (symbol_id, date) unique index serves it,
    ``last_n`` included (walked backwards from ``end``)."""
    where, params = _date_filters("b", start, end, by_symbol=True)
    order = "b.date"
    if last_n:
        order = "b.date DESC LIMIT :last_n"
        params.append(bindparam("last_n", type_=Integer))
    return text(
        "SELECT b.date, b.open, b.high, b.low, b.close, b.volume "
        f"FROM {Bar.__tablename__} b JOIN {Symbol.__tablename__} s ON b.symbol_id = s.id "
        f"WHERE {' AND '.join(where)} ORDER BY {order}"
    ).bindparams(*params)


@functools.cache
def _news_stmt(start: bool, end: bool) -> TextClause:
    """``load_news``'s query for one combination of filters (the (symbol_id, source, date)
    unique index serves it)."""
    where, params = _date_filters("n", start, end, by_symbol=True)
    where.append("n.source = :source")
    params.append(bindparam("source", type_=String))
    return text(
        "SELECT n.date, n.score "
        f"FROM {NewsSentiment.__tablename__} n JOIN {Symbol.__tablename__} s "
        f"ON n.symbol_id = s.id WHERE {' AND '.join(where)} ORDER BY n.date"
    ).bindparams(*params)


@functools.cache
def _macro_stmt(start: bool, end: bool) -> TextClause:
    """``load_macro``'s query for one combination of filters (the (source, date) unique index
    serves it)."""
    where, params = _date_filters("m", start, end, by_symbol=False)
    where.append("m.source = :source")
    params.append(bindparam("source", type_=String))
    return text(
        f"SELECT m.date, m.score FROM {MacroSentiment.__tablename__} m "
        f"WHERE {' AND '.join(where)} ORDER BY m.date"
    ).bindparams(*params)


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

    One query through the driver (``fetch_raw``, in the session's transaction; pending objects
    are flushed first when the session autoflushes, as an ORM read would), the columns turned
    into arrays whole.
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
    stmt = _history_stmt(start is not None, end is not None, last_n is not None)
    cols = _fetch_columns(session, stmt, values)
    if not cols:
        _require_symbol(session, symbol)
        first, last = session.execute(
            select(func.min(Bar.date), func.max(Bar.date))
            .join(Symbol, Bar.symbol_id == Symbol.id)
            .where(Symbol.name == symbol)
        ).one()
        held = f"it has bars {first} .. {last}" if first is not None else "it has no bars"
        raise StateBuildError(f"no bar of {symbol!r} dated {_range_text(start, end)}; {held}")
    if last_n is not None:
        cols = [c[::-1] for c in cols]  # newest first from the query: back to oldest first
    return MarketHistory(
        dates=_day_array(cols[0], session),
        open=_floats(cols[1]),
        high=_floats(cols[2]),
        low=_floats(cols[3]),
        close=_floats(cols[4]),
        volume=_floats(cols[5]),
        symbol=symbol,
    )


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


def _series(cols: Sequence[Sequence[Any]], session: Session) -> SentimentSeries | None:
    if not cols:
        return None
    return SentimentSeries(dates=_day_array(cols[0], session), scores=_floats(cols[1]))


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
    cols = _fetch_columns(session, _news_stmt(start is not None, end is not None), values)
    if not cols:
        _require_symbol(session, symbol)
    return _series(cols, session)


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
    cols = _fetch_columns(session, _macro_stmt(start is not None, end is not None), values)
    return _series(cols, session)


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
