"""Shared fixtures of the runtime tests: SQLite stores in tmp_path and a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.orm import Session

from otonom_runtime import store
from otonom_runtime.store import (
    BacktestRun,
    Bar,
    Base,
    MacroSentiment,
    NewsSentiment,
    Symbol,
    dispose_engines,
    get_engine,
    get_or_create_symbol,
    get_session,
    init_db,
)
from otonom_runtime.store.changelog import TABLES, TRIGGER_NAMES
from otonom_runtime.testing.postgres import postgres_for_tests

AddBars = Callable[..., list[dt.date]]

# The decisions table of store version 1, analyst signals in one JSON column (its own DDL, as
# SQLAlchemy created it on SQLite; DOUBLE and the id's autoincrement type spelled per dialect).
_V1_DECISIONS = """
CREATE TABLE decisions (
    id {serial} NOT NULL,
    run_id INTEGER NOT NULL,
    symbol_id INTEGER NOT NULL,
    date DATE NOT NULL,
    action INTEGER NOT NULL,
    strength {double} NOT NULL,
    signals JSON NOT NULL,
    position {double} NOT NULL,
    leverage {double} NOT NULL,
    cash_fraction {double} NOT NULL,
    days_since_last_trade {double},
    equity {double} NOT NULL,
    CONSTRAINT pk_decisions PRIMARY KEY (id),
    CONSTRAINT uq_decisions_run_id_symbol_id_date UNIQUE (run_id, symbol_id, date),
    CONSTRAINT fk_decisions_run_id_backtest_runs FOREIGN KEY(run_id)
        REFERENCES backtest_runs (id) ON DELETE CASCADE,
    CONSTRAINT fk_decisions_symbol_id_symbols FOREIGN KEY(symbol_id)
        REFERENCES symbols (id) ON DELETE CASCADE
)
"""
# The sentiment tables of store versions 1 and 2 (no source; macro UNIQUE(date)), as
# SQLAlchemy created them.
_V2_SENTIMENT = (
    """
CREATE TABLE news_sentiment (
    id {serial} NOT NULL,
    symbol_id INTEGER NOT NULL,
    date DATE NOT NULL,
    score {double} NOT NULL,
    CONSTRAINT pk_news_sentiment PRIMARY KEY (id),
    CONSTRAINT uq_news_sentiment_symbol_id_date UNIQUE (symbol_id, date),
    CONSTRAINT fk_news_sentiment_symbol_id_symbols FOREIGN KEY(symbol_id)
        REFERENCES symbols (id) ON DELETE CASCADE
)
""",
    """
CREATE TABLE macro_sentiment (
    id {serial} NOT NULL,
    date DATE NOT NULL,
    score {double} NOT NULL,
    CONSTRAINT pk_macro_sentiment PRIMARY KEY (id),
    CONSTRAINT uq_macro_sentiment_date UNIQUE (date)
)
""",
)
# Two version-1 decision rows: RL off (JSON null) and RL on, as the backtester wrote them.
V1_SIGNALS = (
    {
        "tech": {"action": 2, "strength": 0.629440831318975, "confidence": 0.46423814153721854},
        "news": {"action": 0, "strength": 0.0, "confidence": 1.0},
        "risk": {"action": 0, "strength": 0.0, "confidence": 0.5},
        "rl": None,
    },
    {
        "tech": {"action": 1, "strength": 0.5, "confidence": 0.25},
        "news": {"action": 1, "strength": 0.125, "confidence": 1.0},
        "risk": {"action": 2, "strength": 0.75, "confidence": 0.75},
        "rl": {"action": 1, "strength": 0.3333333333333333, "confidence": 0.9},
    },
)


def _make_v1_store(url: str) -> tuple[int, tuple[dict[str, Any], ...]]:
    """Turn the store at ``url`` into a store of version 1 holding one run with the two
    ``V1_SIGNALS`` decisions (days since last trade: NULL, then 2.0); returns the run id and
    ``V1_SIGNALS``.
    Cached engines are dropped, so the next call sees the store afresh."""
    import json

    init_db(url)
    with get_session(url) as session:
        _add_bars(session, "V1", dt.date(2021, 1, 1), 2)
        run = BacktestRun(
            strategy_name="v1",
            strategy_hash="h",
            params={},
            start_date=dt.date(2021, 1, 1),
            end_date=dt.date(2021, 1, 2),
            symbols=["V1"],
            status="complete",
        )
        session.add(run)
        session.flush()
        run_id = run.id
    _to_v2_sentiment(url, [], [])
    engine = get_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    double, serial = ("DOUBLE", "INTEGER") if sqlite else ("DOUBLE PRECISION", "SERIAL")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE decisions"))
        conn.execute(text(_V1_DECISIONS.format(double=double, serial=serial)))
        symbol_id = conn.execute(text("SELECT id FROM symbols WHERE name = 'V1'")).scalar_one()
        for i, signals in enumerate(V1_SIGNALS):
            conn.execute(
                text(
                    "INSERT INTO decisions (run_id, symbol_id, date, action, strength, signals, "
                    "position, leverage, cash_fraction, days_since_last_trade, equity) VALUES "
                    "(:run, :sym, :date, :action, 0.5, :signals, 0.25, 0.25, 0.75, :days, 1000.0)"
                ),
                {
                    "run": run_id,
                    "sym": symbol_id,
                    "date": dt.date(2021, 1, 1 + i),
                    "action": i,
                    "signals": json.dumps(signals),
                    "days": None if i == 0 else 2.0,
                },
            )
        conn.execute(text("UPDATE store_meta SET value = '1' WHERE key = 'store_version'"))
    dispose_engines()
    return run_id, V1_SIGNALS


def _to_v2_sentiment(
    url: str, news: list[tuple[str, dt.date, float]], macro: list[tuple[dt.date, float]]
) -> None:
    """Replace the sentiment tables of the initialised store at ``url`` by their version-2
    layout holding ``news`` ((symbol, date, score); the symbols must exist) and ``macro``
    ((date, score)); store_version becomes 2. Cached engines are dropped."""
    engine = get_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    double, serial = ("DOUBLE", "INTEGER") if sqlite else ("DOUBLE PRECISION", "SERIAL")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE news_sentiment"))
        conn.execute(text("DROP TABLE macro_sentiment"))
        for ddl in _V2_SENTIMENT:
            conn.execute(text(ddl.format(double=double, serial=serial)))
        for name, day, score in news:
            conn.execute(
                text(
                    "INSERT INTO news_sentiment (symbol_id, date, score) "
                    "SELECT id, :day, :score FROM symbols WHERE name = :name"
                ),
                {"name": name, "day": day, "score": score},
            )
        for day, score in macro:
            conn.execute(
                text("INSERT INTO macro_sentiment (date, score) VALUES (:day, :score)"),
                {"day": day, "score": score},
            )
        conn.execute(text("UPDATE store_meta SET value = '2' WHERE key = 'store_version'"))
    dispose_engines()


V2_DAYS = (dt.date(2021, 1, 1), dt.date(2021, 1, 2))


def _make_v2_store(url: str, *, synthetic: bool = True) -> dict[str, Any]:
    """Turn the store at ``url`` into a store of version 2 holding two real bar series
    (``REAL``, ``REAL2``) with news on ``V2_DAYS``, a synthetic one (``DEMO``, with ``synthetic``)
    with news, and macro scores on ``V2_DAYS``. Returns what the upgrade must make of them:
    ``{"news": {(symbol, date): (source, score)}, "macro": {date: (source, score)}}``."""
    init_db(url)
    names = ["REAL", "REAL2"] + (["DEMO"] if synthetic else [])
    with get_session(url) as session:
        for name in names:
            _add_bars(session, name, V2_DAYS[0], 2, synthetic=name == "DEMO")
    news = [(name, day, 0.1 * (i + 1)) for name in names for i, day in enumerate(V2_DAYS)]
    macro = [(day, -0.5 * (i + 1)) for i, day in enumerate(V2_DAYS)]
    _to_v2_sentiment(url, news, macro)
    macro_source = "synthetic" if synthetic else "user"
    return {
        "news": {
            (name, day): ("synthetic" if name == "DEMO" else "user", score)
            for name, day, score in news
        },
        "macro": {day: (macro_source, score) for day, score in macro},
    }


@pytest.fixture
def make_v2_store() -> Callable[..., dict[str, Any]]:
    """``make_v2_store(url, synthetic=True) -> expected``: the store at ``url`` as store version
    2 left it, sentiment without sources (see ``_make_v2_store``)."""
    return _make_v2_store


@pytest.fixture
def make_v1_store() -> Callable[[str], tuple[int, tuple[dict[str, Any], ...]]]:
    """``make_v1_store(url) -> (run_id, signals)``: the store at ``url`` as store version 1
    left it, with two decisions whose JSON ``signals`` are ``signals``."""
    return _make_v1_store


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    """Every test starts and ends without cached engines (no connection outlives its test)."""
    dispose_engines()
    yield
    dispose_engines()


@pytest.fixture
def start_otonom() -> Callable[..., subprocess.Popen[str]]:
    """``start_otonom(url, cwd, *args)``: ``otonom --database-url URL *args`` started in the
    background (a daemon that ticks until signalled) without the environment's store URL, its
    output piped as text; a context manager, as ``Popen`` is."""

    def start(url: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
        return subprocess.Popen(
            [sys.executable, "-m", "otonom_runtime", "--database-url", url, *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The URL of an initialised SQLite store in a fresh file."""
    url = f"sqlite:///{(tmp_path / 'store' / 'otonom.db').as_posix()}"
    init_db(url)
    return url


def _add_bars(
    session: Session,
    name: str,
    start: dt.date,
    n: int,
    *,
    step_days: int = 1,
    price: float = 100.0,
    synthetic: bool = False,
) -> list[dt.date]:
    """Write ``n`` simple bars of ``name`` (created if missing, marked synthetic with
    ``synthetic``), every ``step_days`` days.

    Bar i has close ``price + i``, open ``price + i - 0.5``, high close+1, low open-1, volume
    ``1000 + i``. Returns the dates.
    """
    symbol, _ = get_or_create_symbol(session, name, source="test", is_synthetic=synthetic)
    days = [start + dt.timedelta(days=i * step_days) for i in range(n)]
    session.execute(
        insert(Bar),
        [
            {
                "symbol_id": symbol.id,
                "date": d,
                "open": price + i - 0.5,
                "high": price + i + 1.0,
                "low": price + i - 1.5,
                "close": price + i,
                "volume": 1000.0 + i,
            }
            for i, d in enumerate(days)
        ],
    )
    return days


@pytest.fixture
def add_bars() -> AddBars:
    """``add_bars(session, name, start, n, step_days=1, price=100.0, synthetic=False) ->
    dates``."""
    return _add_bars


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session; skips without one, fails when ``CI=true``."""
    with postgres_for_tests() as url:
        yield url
        dispose_engines()


@pytest.fixture
def pg(postgres_url: str) -> str:
    """An empty, initialised store on the session's PostgreSQL server."""
    Base.metadata.drop_all(get_engine(postgres_url))
    with get_engine(postgres_url).begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS store_meta"))
    dispose_engines()
    init_db(postgres_url)
    return postgres_url


# --- store upgrades: what the sentiment tables hold and how they are laid out -------------------


def _sentiment_rows(url: str) -> dict[str, dict[Any, tuple[str, float]]]:
    """Every sentiment row: news {(symbol, date): (source, score)}, macro {date: (...)}."""
    with get_session(url) as session:
        news = session.execute(
            select(Symbol.name, NewsSentiment.date, NewsSentiment.source, NewsSentiment.score).join(
                Symbol, NewsSentiment.symbol_id == Symbol.id
            )
        ).all()
        macro = session.execute(
            select(MacroSentiment.date, MacroSentiment.source, MacroSentiment.score)
        ).all()
    return {
        "news": {(r[0], r[1]): (r[2], r[3]) for r in news},
        "macro": {r[0]: (r[1], r[2]) for r in macro},
    }


def _sentiment_layout(url: str) -> dict[str, Any]:
    """Columns (name, type, nullable) and unique constraints of the sentiment tables."""
    engine = get_engine(url)
    with engine.connect() as conn:
        info = inspect(conn)
        return {
            table: (
                sorted((c["name"], str(c["type"]), c["nullable"]) for c in info.get_columns(table)),
                sorted(
                    (u["name"], tuple(u["column_names"]))
                    for u in info.get_unique_constraints(table)
                ),
                sorted(fk["referred_table"] for fk in info.get_foreign_keys(table)),
            )
            for table in ("news_sentiment", "macro_sentiment")
        }


@pytest.fixture
def sentiment_rows() -> Callable[[str], dict[str, dict[Any, tuple[str, float]]]]:
    """``sentiment_rows(url)``: news {(symbol, date): (source, score)}, macro {date: (...)}."""
    return _sentiment_rows


@pytest.fixture
def sentiment_layout() -> Callable[[str], dict[str, Any]]:
    """``sentiment_layout(url)``: columns, unique constraints and foreign keys of the
    sentiment tables (sorted; comparable across stores)."""
    return _sentiment_layout


def _fail_at(monkeypatch: pytest.MonkeyPatch, step: str) -> list[str]:
    """Make the store's next SQL text starting with ``step`` raise (once); returns the list
    of the SQL texts made, which the test can check reached the step."""
    made: list[str] = []
    real = store.migrations.text

    def text_or_fail(sql: str) -> Any:
        made.append(sql)
        if sql.lstrip().startswith(step) and made.count(sql) == 1:
            raise RuntimeError(f"interrupted at {step}")
        return real(sql)

    monkeypatch.setattr(store.migrations, "text", text_or_fail)
    return made


@pytest.fixture
def fail_at() -> Callable[[pytest.MonkeyPatch, str], list[str]]:
    """``fail_at(monkeypatch, step)``: the store's next SQL text starting with ``step``
    raises ``RuntimeError("interrupted at <step>")`` (once)."""
    return _fail_at


# --- store version 3 (runs without host, pid, process_start, heartbeat_at) ---------------------

V3_RUN_COLUMNS = ("host", "pid", "process_start", "heartbeat_at")


def _make_v3_store(url: str) -> dict[str, int]:
    """Turn the store at ``url`` into a store of version 3 holding two backtest runs left
    ``running`` (as a ``kill -9`` left them then): one created two hours ago, one just now.
    Returns their ids: ``{"old": id, "new": id}``."""
    init_db(url)
    now = dt.datetime.now(dt.timezone.utc)
    ids = {}
    with get_session(url) as session:
        for key, created in (("old", now - dt.timedelta(hours=2)), ("new", now)):
            run = BacktestRun(
                strategy_name=f"v3-{key}",
                strategy_hash="0" * 64,
                start_date=dt.date(2021, 1, 1),
                end_date=dt.date(2021, 2, 1),
                symbols=["X"],
                created_at=created,
            )
            session.add(run)
            session.flush()
            ids[key] = run.id
    _make_v4_store(url)
    engine = get_engine(url)
    with engine.begin() as conn:
        for column in V3_RUN_COLUMNS:
            conn.execute(text(f"ALTER TABLE backtest_runs DROP COLUMN {column}"))
        conn.execute(text("UPDATE store_meta SET value = '3' WHERE key = 'store_version'"))
    dispose_engines()
    return ids


# --- store version 4 (decisions without live_strategy and its unique index) --------------------


def _make_v4_store(url: str) -> None:
    """Turn the (initialised) store at ``url`` into a store of version 4: ``decisions``
    without ``live_strategy`` and the ``ix_decisions_live`` index, no ``daemon_state``."""
    _make_v5_store(url)
    with get_engine(url).begin() as conn:
        conn.execute(text("DROP TABLE daemon_state"))
        conn.execute(text("DROP INDEX ix_decisions_live"))
        conn.execute(text("ALTER TABLE decisions DROP COLUMN live_strategy"))
        conn.execute(text("UPDATE store_meta SET value = '4' WHERE key = 'store_version'"))
    dispose_engines()


def _make_v6_store(url: str) -> None:
    """Turn the (initialised) store at ``url`` into a store of version 6: no change log (no
    ``row_changes`` table, no triggers, on PostgreSQL no trigger functions)."""
    with get_engine(url).begin() as conn:
        for name in TRIGGER_NAMES:
            table = name.removeprefix("tr_").rsplit("_", 1)[0]  # (TABLES)
            on = f" ON {table}" if conn.dialect.name == "postgresql" else ""
            conn.execute(text(f"DROP TRIGGER {name}{on}"))
        if conn.dialect.name == "postgresql":
            for table in TABLES:
                conn.execute(text(f"DROP FUNCTION otonom_log_{table}()"))
        conn.execute(text("DROP TABLE row_changes"))
        conn.execute(text("UPDATE store_meta SET value = '6' WHERE key = 'store_version'"))
    dispose_engines()


@pytest.fixture
def make_v6_store() -> Callable[[str], None]:
    """``make_v6_store(url)``: the store at ``url`` as store version 6 left it."""
    return _make_v6_store


def _change_log(url: str) -> dict[str, Any]:
    """The change log of the store at ``url``: the ``row_changes`` columns (name, type,
    nullable; None: no table), its triggers' names and, on PostgreSQL, the trigger functions'
    names, sorted."""
    with get_engine(url).connect() as conn:
        info = inspect(conn)
        if conn.dialect.name == "sqlite":
            triggers = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            functions: list[str] = []
        else:
            triggers = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
            named = "SELECT proname FROM pg_proc WHERE proname LIKE 'otonom_log_%'"
            functions = sorted(conn.execute(text(named)).scalars())
        return {
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"]) for c in info.get_columns("row_changes")
            )
            if info.has_table("row_changes")
            else None,
            "triggers": sorted(conn.execute(text(triggers)).scalars()),
            "functions": functions,
        }


@pytest.fixture
def change_log() -> Callable[[str], dict[str, Any]]:
    """``change_log(url)``: the store's change log table, triggers and functions."""
    return _change_log


def _make_v5_store(url: str) -> None:
    """Turn the (initialised) store at ``url`` into a store of version 5: the live key
    ``ix_decisions_live`` ordered by symbol before date, no change log."""
    _make_v6_store(url)
    with get_engine(url).begin() as conn:
        conn.execute(text("DROP INDEX ix_decisions_live"))
        conn.execute(
            text(
                "CREATE UNIQUE INDEX ix_decisions_live ON decisions (live_strategy, symbol_id, "
                "date) WHERE live_strategy IS NOT NULL"
            )
        )
        conn.execute(text("UPDATE store_meta SET value = '5' WHERE key = 'store_version'"))
    dispose_engines()


@pytest.fixture
def make_v5_store() -> Callable[[str], None]:
    """``make_v5_store(url)``: the store at ``url`` as store version 5 left it."""
    return _make_v5_store


@pytest.fixture
def make_v4_store() -> Callable[[str], None]:
    """``make_v4_store(url)``: the store at ``url`` as store version 4 left it."""
    return _make_v4_store


def _decision_layout(url: str) -> dict[str, Any]:
    """The ``decisions`` table's columns (name, type, nullable) and indexes (name, columns,
    unique), whether the live key is partial (its SQL's ``WHERE live_strategy IS NOT NULL``;
    None: no such index), and the ``daemon_state`` table's columns (None: no such table),
    sorted: comparable across stores."""
    with get_engine(url).connect() as conn:
        info = inspect(conn)
        if conn.dialect.name == "sqlite":
            live_sql = "SELECT sql FROM sqlite_master WHERE name = 'ix_decisions_live'"
        else:
            live_sql = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_decisions_live'"
        live = conn.execute(text(live_sql)).scalar_one_or_none()
        return {
            "live_key_partial": None
            if live is None
            else "where live_strategy is not null"
            in live.lower().replace("(", "").replace(")", ""),
            "daemon_state": sorted(
                (c["name"], str(c["type"]), c["nullable"], bool(c.get("primary_key")))
                for c in info.get_columns("daemon_state")
            )
            if info.has_table("daemon_state")
            else None,
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"]) for c in info.get_columns("decisions")
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in info.get_indexes("decisions")
            ),
        }


@pytest.fixture
def decision_layout() -> Callable[[str], dict[str, Any]]:
    """``decision_layout(url)``: the ``decisions`` table's columns and indexes, sorted."""
    return _decision_layout


@pytest.fixture
def make_v3_store() -> Callable[[str], dict[str, int]]:
    """``make_v3_store(url) -> {"old": id, "new": id}``: the store at ``url`` as store version
    3 left it, with two runs left ``running`` (created two hours ago and now)."""
    return _make_v3_store


def _run_columns(url: str) -> list[tuple[str, str, bool]]:
    """(name, type, nullable) of every ``backtest_runs`` column, sorted."""
    with get_engine(url).connect() as conn:
        return sorted(
            (c["name"], str(c["type"]), c["nullable"])
            for c in inspect(conn).get_columns("backtest_runs")
        )


@pytest.fixture
def run_columns() -> Callable[[str], list[tuple[str, str, bool]]]:
    """``run_columns(url)``: (name, type, nullable) of the ``backtest_runs`` columns, sorted."""
    return _run_columns
