"""The store's tables: the SQLAlchemy declarative models, their column types and layout version.

Every table of the project is declared here (``Base.metadata``); the analyst names of the
decision rows come from ``otonom_schema.ANALYSTS``. No engine, no SQL is run here.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from otonom_runtime._sources import SOURCE_MAX_LEN
from otonom_schema import ANALYSTS

__all__ = [
    "RUN_STATUSES",
    "SIGNAL_COLUMNS",
    "SIGNAL_FIELDS",
    "STORE_VERSION",
    "BacktestRun",
    "Bar",
    "Base",
    "DaemonState",
    "Decision",
    "InfAsNull",
    "MacroSentiment",
    "NewsSentiment",
    "RowChange",
    "StoreMeta",
    "Symbol",
]

STORE_VERSION: Final = 7
"""Version of the table layout, written to ``store_meta`` by ``init_db`` (which upgrades an
older store in place: version 1 -> 2 see ``Decision``, 2 -> 3 see ``MacroSentiment``, 3 -> 4
see ``BacktestRun``, 4 -> 5 see ``Decision.live_strategy`` and ``DaemonState``, 5 -> 6
see ``Decision``'s ``ix_decisions_live``, 6 -> 7 see ``RowChange``)."""

RUN_STATUSES: Final = ("running", "complete", "failed")


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


class RowChange(Base):
    """One change in place (an update that changed a value, or a delete) of the bars or news
    of a symbol, of a macro source's scores, or of a symbol's own row (its name or kind):
    ``kind`` (``"bars"``, ``"news"``, ``"macro"``, ``"symbols"``), ``symbol_id`` (NULL for
    macro), ``source`` (NULL for bars) and ``row_id``
    (SQLite, a row deleted above every id left in its table: the largest id left, above which
    the table may give ids again; else NULL). Written by
    triggers (``store.changelog``: every writer's changes, raw SQL included; inserts are not
    logged, they add ids of their own), read by a daemon's tick by ``id`` (the changes after
    the last it saw), which reads what they name whole again. No foreign key: a deleted
    symbol's changes stay. Its ids are never reused, even on SQLite once its newest rows are
    deleted (``AUTOINCREMENT``): the log may be emptied (``DELETE FROM row_changes``) while
    daemons run, and a daemon's bound stays below the next entry. Store version 6 had no such
    table: the in-place upgrade to 7 creates it and its triggers.
    """

    __tablename__ = "row_changes"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 (SQLAlchemy's class attribute)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    symbol_id: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(SOURCE_MAX_LEN))
    row_id: Mapped[int | None] = mapped_column(Integer)


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


LIVE_ROWS: Final = "live_strategy IS NOT NULL"
"""The rows of ``decisions`` the live key (``ix_decisions_live``) indexes: live decisions."""
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

    ``live_strategy``: the strategy's name on a live decision (``otonom daemon``: its run's
    ``params["purpose"]`` is ``"live"``), NULL on a backtest's. The unique index
    ``ix_decisions_live`` on (live_strategy, date, symbol_id) is the live decisions' key: one
    per strategy, symbol and bar date, whatever run wrote it. It is partial (``WHERE
    live_strategy IS NOT NULL``): backtest rows have no entry in it, so a backtest's inserts pay
    nothing for it (a full index cost RL-off backtests ~10-15 %: docs/benchmarks.md). Store
    version 4 had neither: the in-place upgrade adds the column (NULL on every stored decision)
    and the index. The key is ordered by date before symbol: a tick's decisions (one bar date,
    every symbol) go in at its end, and its newest live decisions are one range of it
    (``store.ticks.load_live_tail``). Store version 5 ordered it by symbol first: each tick's
    5,000 rows then landed on up to 5,000 pages of a key that grows with every tick (a steady
    tick's write at 5,000 symbols grew from 22 to 69 ms of CPU over 30 ticks, and stays at
    ~18 ms date first; its read of the newest decisions 22 ms by symbol, ~9 ms by date): the
    in-place upgrade builds the key again in the new order.
    """

    __tablename__ = "decisions"
    __table_args__ = (
        UniqueConstraint("run_id", "symbol_id", "date"),
        Index(
            "ix_decisions_live",
            "live_strategy",
            "date",
            "symbol_id",
            unique=True,
            sqlite_where=text(LIVE_ROWS),
            postgresql_where=text(LIVE_ROWS),
        ),
    )

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
    live_strategy: Mapped[str | None] = mapped_column(String(128))

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


class DaemonState(Base):
    """The state of a strategy's daemon (``otonom daemon``), one row per strategy, rewritten
    after every tick and while it waits; what ``otonom status`` prints.

    ``host``, ``pid``, ``started_at``: the daemon process; ``heartbeat_at``: its newest write
    (its age says whether the daemon is alive); ``status``: ``"running"``, ``"stopped"``
    (it exited cleanly) or ``"failed"`` (an exception ended it; the error is in its
    output). ``model_file``, ``model_version`` (the version folder's name), ``model_sha256``
    and ``model_since``: the model in service (all NULL: none, the ensemble
    decides without the RL analyst); ``refused_file``, ``refused_version``, ``refused_reason``
    and ``refused_at``: the newest candidate the hot reload refused (the old model kept).
    ``ticks``, ``fallbacks`` (decisions made without the RL analyst while it is on),
    ``reloads`` (candidates swapped in) and ``refusals`` count since ``started_at``;
    ``latency_ms``: the recent predict calls' latency percentiles (``{"n", "p50", "p90",
    "p99", "max"}``, milliseconds; None before any daemon's first call; a daemon keeps the
    previous one's until it has made predict calls of its own). Store version 4 had no such
    table: the in-place upgrade to 5 creates it.
    """

    __tablename__ = "daemon_state"

    strategy: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ticks: Mapped[int] = mapped_column(Integer, default=0)
    fallbacks: Mapped[int] = mapped_column(Integer, default=0)
    reloads: Mapped[int] = mapped_column(Integer, default=0)
    refusals: Mapped[int] = mapped_column(Integer, default=0)
    model_file: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(255))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    model_since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    refused_file: Mapped[str | None] = mapped_column(Text)
    refused_version: Mapped[str | None] = mapped_column(String(255))
    refused_reason: Mapped[str | None] = mapped_column(Text)
    refused_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    latency_ms: Mapped[dict[str, Any] | None] = mapped_column(JSON)
