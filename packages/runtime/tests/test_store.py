"""The store: engines, sessions, initialisation, tables, constraints and the readers."""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from otonom_runtime import store as store_module
from otonom_runtime._errors import StateBuildError, StoreError, UnknownSymbolError
from otonom_runtime.store import (
    SIGNAL_COLUMNS,
    STORE_VERSION,
    SYNTHETIC_SOURCE,
    USER_SOURCE,
    BacktestRun,
    Bar,
    Decision,
    MacroSentiment,
    NewsSentiment,
    StoreMeta,
    Symbol,
    default_database_url,
    dispose_engines,
    get_engine,
    get_or_create_symbol,
    get_session,
    get_symbol,
    init_db,
    last_bar_date,
    list_symbols,
    load_history,
    load_macro,
    load_news,
    sentiment_source,
)
from otonom_runtime.store.changelog import TRIGGER_NAMES
from otonom_runtime.synth import write_synthetic
from otonom_schema import LOOKBACK, MarketHistory

D0 = dt.date(2021, 1, 1)


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path.as_posix()}"


# --- URLs, engines, initialisation ------------------------------------------------------------


def test_default_url_is_env_var_else_data_folder_of_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OTONOM_DATABASE_URL", raising=False)
    assert default_database_url() == _sqlite(tmp_path / "data" / "otonom.db")
    monkeypatch.setenv("OTONOM_DATABASE_URL", "sqlite:////elsewhere/x.db")
    assert default_database_url() == "sqlite:////elsewhere/x.db"


def test_importing_creates_no_engine_and_no_file(tmp_path: Path) -> None:
    code = (
        "import otonom_runtime.store as s, otonom_runtime.importers, otonom_runtime.synth, "
        "otonom_runtime.cli; print(len(s.engine._engines))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "0"
    assert list(tmp_path.iterdir()) == []


def test_engine_is_cached_and_sqlite_connections_get_the_pragmas(tmp_path: Path) -> None:
    url = _sqlite(tmp_path / "a" / "b" / "x.db")
    engine = get_engine(url)
    assert get_engine(url) is engine
    assert (tmp_path / "a" / "b").is_dir()
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


@pytest.mark.parametrize(
    ("url", "fragment"),
    [("not a url", "cannot read database URL"), ("nosuchdb:///x", "cannot open database")],
)
def test_bad_urls_raise_store_error(url: str, fragment: str) -> None:
    with pytest.raises(StoreError, match=fragment):
        get_engine(url)


def test_an_uninitialised_store_is_refused_without_creating_the_file(tmp_path: Path) -> None:
    path = tmp_path / "never.db"
    with pytest.raises(StoreError, match=r"not initialised.*otonom data synth"):  # noqa: SIM117
        with get_session(_sqlite(path)):
            pass
    assert not path.exists()


def test_an_empty_database_file_is_refused(tmp_path: Path) -> None:
    url = _sqlite(tmp_path / "empty.db")
    with get_engine(url).connect() as conn:
        conn.execute(text("CREATE TABLE other (x INTEGER)"))
        conn.commit()
    with pytest.raises(StoreError, match="not initialised"), get_session(url):
        pass


def test_init_db_is_idempotent_and_writes_the_store_version(tmp_path: Path) -> None:
    url = _sqlite(tmp_path / "x.db")
    init_db(url)
    init_db(url)
    with get_session(url) as session:
        rows = session.execute(select(StoreMeta.key, StoreMeta.value)).all()
    assert [tuple(r) for r in rows] == [("store_version", str(STORE_VERSION))]


def test_a_store_of_another_version_is_refused(db_url: str) -> None:
    with get_session(db_url) as session:
        session.get_one(StoreMeta, "store_version").value = str(STORE_VERSION + 1)
    from otonom_runtime.store import dispose_engines

    dispose_engines()  # forget that this engine was checked
    with pytest.raises(StoreError, match=f"store version {STORE_VERSION + 1}"), get_session(db_url):
        pass
    with pytest.raises(StoreError, match=f"store version {STORE_VERSION + 1}"):
        init_db(db_url)


def test_session_commits_on_success_and_rolls_back_on_error(db_url: str) -> None:
    with get_session(db_url) as session:
        get_or_create_symbol(session, "KEEP", source="test")

    def fail_midway() -> None:
        with get_session(db_url) as session:
            get_or_create_symbol(session, "DROP", source="test")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_midway()
    with get_session(db_url) as session:
        names = session.execute(select(Symbol.name)).scalars().all()
    assert names == ["KEEP"]


def test_objects_stay_readable_after_the_session(db_url: str) -> None:
    with get_session(db_url) as session:
        symbol, created = get_or_create_symbol(session, "S", source="src", meta={"k": 1})
    assert created
    assert (symbol.name, symbol.source, symbol.meta, symbol.is_synthetic) == (
        "S",
        "src",
        {"k": 1},
        False,
    )
    with get_session(db_url) as session:
        again, created = get_or_create_symbol(session, "S", source="other")
    assert not created
    assert again.id == symbol.id
    assert again.source == "src"


# --- constraints -----------------------------------------------------------------------------


def test_bars_are_unique_per_symbol_and_date(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 3)
    with pytest.raises(IntegrityError), get_session(db_url) as session:
        add_bars(session, "A", D0 + dt.timedelta(days=2), 1)
    with get_session(db_url) as session:
        add_bars(session, "B", D0, 3)  # same dates, another symbol: fine


def test_foreign_keys_are_enforced(db_url: str) -> None:
    with pytest.raises(IntegrityError), get_session(db_url) as session:
        session.add(Bar(symbol_id=999, date=D0, open=1, high=1, low=1, close=1, volume=0))


def _run(session: Any) -> BacktestRun:
    run = BacktestRun(
        strategy_name="ensemble",
        strategy_hash="abc",
        params={"k": 1},
        start_date=D0,
        end_date=D0 + dt.timedelta(days=9),
        symbols=["A"],
    )
    session.add(run)
    session.flush()
    return run


def _decision(run_id: int, symbol_id: int, day: dt.date, days_since: float) -> Decision:
    return Decision(
        run_id=run_id,
        symbol_id=symbol_id,
        date=day,
        action=1,
        strength=0.5,
        signals={"tech": {"action": 1, "strength": 0.7, "confidence": 0.9}},
        position=0.0,
        leverage=0.0,
        cash_fraction=1.0,
        days_since_last_trade=days_since,
        equity=10_000.0,
    )


def test_runs_and_decisions_round_trip_with_inf_days_as_null(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 2)
        symbol_id = get_symbol(session, "A").id
        run = _run(session)
        session.add(_decision(run.id, symbol_id, D0, math.inf))
        session.add(_decision(run.id, symbol_id, D0 + dt.timedelta(days=1), 3.0))
        run_id = run.id
    with get_session(db_url) as session:
        run = session.get_one(BacktestRun, run_id)
        assert (run.status, run.finished_at, run.metrics, run.error) == (
            "running",
            None,
            None,
            None,
        )
        assert run.symbols == ["A"]
        assert run.params == {"k": 1}
        assert run.created_at is not None
        decisions = session.execute(select(Decision).order_by(Decision.date)).scalars().all()
        assert [d.days_since_last_trade for d in decisions] == [math.inf, 3.0]
        assert decisions[0].signals == {
            "tech": {"action": 1, "strength": 0.7, "confidence": 0.9},
            "news": None,
            "risk": None,
            "rl": None,
        }
        assert (decisions[0].tech_action, decisions[0].tech_confidence) == (1, 0.9)
        raw = session.execute(text("SELECT days_since_last_trade FROM decisions ORDER BY date"))
        assert [r[0] for r in raw] == [None, 3.0]


def _interrupted(
    db_url: str, fail_at: Any, monkeypatch: pytest.MonkeyPatch, step: str, at: int
) -> list[str]:
    """An ``init_db`` of the SQLite store at ``db_url`` interrupted at ``step`` (``fail_at``):
    it raises, and the store is still at version ``at`` (the version is written last); the
    SQL texts it made."""
    made: list[str] = fail_at(monkeypatch, step)
    with pytest.raises(RuntimeError, match=f"interrupted at {step}"):
        init_db(db_url)
    monkeypatch.undo()
    dispose_engines()
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as raw:
        assert raw.execute("SELECT value FROM store_meta").fetchone() == (str(at),)
    return made


def test_a_version_1_store_is_refused_then_upgraded_in_place_by_init_db(
    db_url: str, make_v1_store: Any
) -> None:
    run_id, v1_signals = make_v1_store(db_url)
    with (
        pytest.raises(StoreError, match=r"store version 1; .* upgrade it in place"),
        get_session(db_url),
    ):
        pass
    init_db(db_url)
    with get_session(db_url) as session:
        assert session.execute(text("SELECT value FROM store_meta")).scalar_one() == str(
            STORE_VERSION
        )
        columns = {c["name"] for c in inspect(session.connection()).get_columns("decisions")}
        for table in ("news_sentiment", "macro_sentiment"):  # then 2 -> 3
            assert "source" in {c["name"] for c in inspect(session.connection()).get_columns(table)}
        assert "signals" not in columns
        assert set(SIGNAL_COLUMNS) <= columns
        decisions = (
            session.execute(
                select(Decision).where(Decision.run_id == run_id).order_by(Decision.date)
            )
            .scalars()
            .all()
        )
        assert [d.signals for d in decisions] == list(v1_signals)  # exact floats, None kept
        assert [d.days_since_last_trade for d in decisions] == [math.inf, 2.0]
        assert [d.action for d in decisions] == [0, 1]
        # the upgraded table takes new rows (the JSON column, NOT NULL in v1, is gone)
        later = _decision(run_id, decisions[0].symbol_id, D0 + dt.timedelta(days=30), 1.0)
        session.add(later)
    init_db(db_url)  # idempotent on the upgraded store
    with get_session(db_url) as session:
        assert session.execute(select(func.count()).select_from(Decision)).scalar_one() == 3


def test_an_upgrade_that_fails_midway_completes_on_the_next_init_db(
    db_url: str, make_v1_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite commits each ALTER TABLE on its own: a failure after the new columns exist must
    leave a store that the next ``init_db`` upgrades with the right values."""
    run_id, v1_signals = make_v1_store(db_url)

    def broken(*args: Any) -> str:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(store_module.migrations, "_signal_from_json", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        init_db(db_url)
    monkeypatch.undo()
    dispose_engines()
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as raw:
        assert raw.execute("SELECT value FROM store_meta").fetchone() == ("1",)
    init_db(db_url)
    with get_session(db_url) as session:
        decisions = session.query(Decision).filter_by(run_id=run_id).order_by(Decision.date)
        assert [d.signals for d in decisions] == list(v1_signals)


@pytest.mark.parametrize("synthetic", [True, False], ids=["with-demo", "real-only"])
def test_a_version_2_store_is_upgraded_in_place_labelling_sentiment_by_symbol_kind(
    db_url: str,
    make_v2_store: Any,
    sentiment_rows: Any,
    sentiment_layout: Any,
    tmp_path: Path,
    synthetic: bool,
) -> None:
    """News by its symbol's kind; macro "synthetic" when the store holds a synthetic symbol,
    else "user"; the layout then equals a fresh store's and new rows obey the new uniques."""
    expected = make_v2_store(db_url, synthetic=synthetic)
    with (
        pytest.raises(StoreError, match=r"store version 2; .* upgrade it in place"),
        get_session(db_url),
    ):
        pass
    init_db(db_url)
    with get_session(db_url) as session:
        assert session.execute(text("SELECT value FROM store_meta")).scalar_one() == str(
            STORE_VERSION
        )
    assert sentiment_rows(db_url) == expected
    fresh = _sqlite(tmp_path / "fresh.db")
    init_db(fresh)
    assert sentiment_layout(db_url) == sentiment_layout(fresh)
    day = min(expected["macro"])
    other = "user" if synthetic else "synthetic"
    with get_session(db_url) as session:
        session.add(MacroSentiment(source=other, date=day, score=0.0))  # the other source: fine
        session.add(
            NewsSentiment(symbol_id=get_symbol(session, "REAL").id, source="x", date=day, score=0)
        )
    with pytest.raises(IntegrityError), get_session(db_url) as session:
        session.add(MacroSentiment(source=expected["macro"][day][0], date=day, score=0.0))
    init_db(db_url)  # idempotent on the upgraded store
    assert len(sentiment_rows(db_url)["macro"]) == len(expected["macro"])  # keyed by date


_V3_STEPS = (
    "CREATE TABLE news_sentiment_v3",
    "INSERT INTO news_sentiment_v3",
    "DROP TABLE news_sentiment",
    "ALTER TABLE news_sentiment_v3 RENAME",
    "CREATE TABLE macro_sentiment_v3",
    "INSERT INTO macro_sentiment_v3",
    "DROP TABLE macro_sentiment",
    "ALTER TABLE macro_sentiment_v3 RENAME",
    "UPDATE store_meta",
)


@pytest.mark.parametrize("step", _V3_STEPS)
def test_a_2_to_3_upgrade_that_fails_at_any_step_completes_on_the_next_init_db(
    db_url: str,
    make_v2_store: Any,
    sentiment_rows: Any,
    fail_at: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    """SQLite's driver commits DDL on its own: whatever a failure leaves behind, the next
    ``init_db`` finishes the upgrade with every row labelled once."""
    expected = make_v2_store(db_url)
    _interrupted(db_url, fail_at, monkeypatch, step, 2)
    init_db(db_url)
    assert sentiment_rows(db_url) == expected
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as raw:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert raw.execute("SELECT value FROM store_meta").fetchone() == (str(STORE_VERSION),)
    assert not {"news_sentiment_v3", "macro_sentiment_v3"} & tables


def test_a_2_to_3_upgrade_stopped_between_drop_and_rename_keeps_every_row(
    db_url: str, make_v2_store: Any, sentiment_rows: Any, sentiment_layout: Any, tmp_path: Path
) -> None:
    """A driver that commits each statement could stop after the old table was dropped: the
    copy then holds every labelled row and the next ``init_db`` renames it."""
    expected = make_v2_store(db_url)
    from sqlalchemy.dialects import sqlite as sqlite_dialect
    from sqlalchemy.schema import CreateTable

    ddl = str(CreateTable(NewsSentiment.__table__).compile(dialect=sqlite_dialect.dialect()))
    ddl = ddl.strip().replace("CREATE TABLE news_sentiment ", "CREATE TABLE news_sentiment_v3 ")
    raw = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        raw.execute(ddl)
        raw.execute(
            "INSERT INTO news_sentiment_v3 (id, symbol_id, date, score, source) "
            "SELECT n.id, n.symbol_id, n.date, n.score, CASE WHEN s.is_synthetic "
            "THEN 'synthetic' ELSE 'user' END FROM news_sentiment n JOIN symbols s "
            "ON s.id = n.symbol_id"
        )
        raw.execute("DROP TABLE news_sentiment")
    finally:
        raw.close()
    init_db(db_url)
    assert sentiment_rows(db_url) == expected
    fresh = _sqlite(tmp_path / "fresh.db")
    init_db(fresh)
    assert sentiment_layout(db_url) == sentiment_layout(fresh)


def test_decision_signals_map_to_typed_columns_and_refuse_unknown_analysts() -> None:
    d = _decision(1, 1, D0, 1.0)
    d.signals = {"rl": {"action": 2, "strength": 0.5, "confidence": 0.25}}
    assert (d.rl_action, d.rl_strength, d.rl_confidence) == (2, 0.5, 0.25)
    assert d.tech_action is None
    assert d.signals["rl"] == {"action": 2, "strength": 0.5, "confidence": 0.25}
    assert d.signals["tech"] is None
    with pytest.raises(ValueError, match=r"analysts \['trend'\]; expected only tech, news"):
        d.signals = {"trend": {"action": 1, "strength": 0.5, "confidence": 0.5}}
    with pytest.raises(ValueError, match=r"signals\['news'\] has keys \['action'\]; expected"):
        d.signals = {"news": {"action": 1}}


def test_decisions_are_unique_per_run_symbol_and_date(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 1)
        symbol_id = get_symbol(session, "A").id
        run_id = _run(session).id
        session.add(_decision(run_id, symbol_id, D0, 1.0))
    with pytest.raises(IntegrityError), get_session(db_url) as session:
        session.add(_decision(run_id, symbol_id, D0, 2.0))


@pytest.mark.parametrize("days", [math.nan, -1.0, -math.inf])
def test_bad_days_since_last_trade_is_refused(days: float) -> None:
    with pytest.raises(ValueError, match="days_since_last_trade"):
        _decision(1, 1, D0, days)


def test_core_inserts_refuse_nan_days_too(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 1)
        run_id = _run(session).id
        row = {
            "run_id": run_id,
            "symbol_id": get_symbol(session, "A").id,
            "date": D0,
            "action": 0,
            "strength": 0.0,
            "position": 0.0,
            "leverage": 0.0,
            "cash_fraction": 1.0,
            "equity": 1.0,
        }
        session.execute(insert(Decision), [{**row, "days_since_last_trade": math.inf}])
        with pytest.raises(StatementError, match="days_since_last_trade is nan"):
            session.execute(
                insert(Decision),
                [{**row, "date": D0 + dt.timedelta(1), "days_since_last_trade": math.nan}],
            )


def test_run_status_is_checked(db_url: str) -> None:
    with get_session(db_url) as session:
        run = _run(session)
        run.status = "bogus"
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()
        for status in ("running", "complete", "failed"):
            _run(session).status = status
            session.flush()


def test_sentiment_is_unique_per_source_and_date(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 1)
        session.add(MacroSentiment(source=USER_SOURCE, date=D0, score=0.1))
        session.add(MacroSentiment(source=SYNTHETIC_SOURCE, date=D0, score=0.3))  # other source
    with pytest.raises(IntegrityError), get_session(db_url) as session:
        session.add(MacroSentiment(source=USER_SOURCE, date=D0, score=0.2))
    with get_session(db_url) as session:
        symbol_id = get_symbol(session, "A").id
        session.add(NewsSentiment(symbol_id=symbol_id, source=USER_SOURCE, date=D0, score=0.1))
        session.add(NewsSentiment(symbol_id=symbol_id, source="vendor", date=D0, score=0.3))
        session.flush()
        session.add(NewsSentiment(symbol_id=symbol_id, source=USER_SOURCE, date=D0, score=0.2))
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()
    with pytest.raises(IntegrityError), get_session(db_url) as session:
        session.add(MacroSentiment(date=D0, score=0.2))  # a row must say where it comes from


def test_readers_read_one_source(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "REAL", D0, 2)
        add_bars(session, "DEMO", D0, 2, synthetic=True)
        ids = {name: get_symbol(session, name).id for name in ("REAL", "DEMO")}
        for source, score in ((USER_SOURCE, 0.5), (SYNTHETIC_SOURCE, -0.5), ("vendor", 0.25)):
            session.add(MacroSentiment(source=source, date=D0, score=score))
            for symbol_id in ids.values():
                session.add(NewsSentiment(symbol_id=symbol_id, source=source, date=D0, score=score))
    with get_session(db_url) as session:

        def scores(series: Any) -> list[float]:
            assert series is not None
            return list(series.scores)

        assert scores(load_macro(session, source=USER_SOURCE)) == [0.5]
        assert scores(load_macro(session, source=SYNTHETIC_SOURCE)) == [-0.5]
        assert load_macro(session, source="nobody") is None
        # no source: by the symbol's kind
        assert scores(load_news(session, "REAL")) == [0.5]
        assert scores(load_news(session, "DEMO")) == [-0.5]
        assert scores(load_news(session, "DEMO", source="vendor")) == [0.25]
        assert load_news(session, "REAL", source="nobody") is None
        real, demo = get_symbol(session, "REAL"), get_symbol(session, "DEMO")
        assert (sentiment_source(real), sentiment_source(demo)) == ("user", "synthetic")
        assert sentiment_source(demo, "vendor") == "vendor"
        assert [sentiment_source(info) for info in list_symbols(session)] == [
            "synthetic",
            "user",
        ]
        with pytest.raises(ValueError, match=r"'no way' is not a source name; expected 1-64"):
            sentiment_source(real, "no way")


# --- readers ---------------------------------------------------------------------------------


def test_load_history_returns_all_bars_oldest_first(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        days = add_bars(session, "A", D0, 10)
        add_bars(session, "B", D0, 5, price=500.0)
    with get_session(db_url) as session:
        history = load_history(session, "A")
    assert isinstance(history, MarketHistory)
    assert history.symbol == "A"
    assert history.dates.tolist() == days
    np.testing.assert_array_equal(history.close, 100.0 + np.arange(10))
    np.testing.assert_array_equal(history.open, 99.5 + np.arange(10))
    np.testing.assert_array_equal(history.high, 101.0 + np.arange(10))
    np.testing.assert_array_equal(history.low, 98.5 + np.arange(10))
    np.testing.assert_array_equal(history.volume, 1000.0 + np.arange(10))


def test_load_history_start_end_and_last_n(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        days = add_bars(session, "A", D0, 10, step_days=2)
    with get_session(db_url) as session:
        assert load_history(session, "A", start=days[3]).dates.tolist() == days[3:]
        assert load_history(session, "A", end=days[6]).dates.tolist() == days[:7]
        # an end date between two bars keeps the earlier one
        between = days[6] + dt.timedelta(days=1)
        assert load_history(session, "A", end=between, last_n=3).dates.tolist() == days[4:7]
        assert load_history(session, "A", last_n=2).dates.tolist() == days[-2:]
        assert load_history(session, "A", last_n=100).dates.tolist() == days
        got = load_history(session, "A", start=days[5], end=days[8], last_n=10)
        assert got.dates.tolist() == days[5:9]
        with pytest.raises(ValueError, match="last_n"):
            load_history(session, "A", last_n=0)


def test_load_history_last_n_is_one_bounded_query(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 300)
    statements: list[str] = []
    with get_session(db_url) as session:
        # counted at the driver: the reader goes through the DBAPI connection, not the engine
        driver = session.connection().connection.dbapi_connection
        assert driver is not None
        driver.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        try:
            history = load_history(session, "A", end=D0 + dt.timedelta(days=199), last_n=LOOKBACK)
        finally:
            driver.set_trace_callback(None)  # type: ignore[attr-defined]
    assert len(history) == LOOKBACK
    assert history.dates[-1] == np.datetime64(D0 + dt.timedelta(days=199))
    assert len(statements) == 1
    assert "LIMIT" in statements[0].upper()
    assert "DESC" in statements[0].upper()


def _orm_history(session: Any, symbol: str, **filters: Any) -> tuple[np.ndarray, ...]:
    """The bars as the ORM reads them (the readers' previous implementation)."""
    stmt = (
        select(Bar.date, Bar.open, Bar.high, Bar.low, Bar.close, Bar.volume)
        .join(Symbol, Bar.symbol_id == Symbol.id)
        .where(Symbol.name == symbol)
    )
    if filters.get("start") is not None:
        stmt = stmt.where(Bar.date >= filters["start"])
    if filters.get("end") is not None:
        stmt = stmt.where(Bar.date <= filters["end"])
    if filters.get("last_n") is not None:
        rows = session.execute(stmt.order_by(Bar.date.desc()).limit(filters["last_n"])).all()
        rows = rows[::-1]
    else:
        rows = session.execute(stmt.order_by(Bar.date)).all()
    cols = list(zip(*rows, strict=True))
    floats = [np.array(c, dtype=np.float64) for c in cols[1:]]
    return (np.array(cols[0], dtype="datetime64[D]"), *floats)


def _orm_series(session: Any, model: Any, symbol: str | None, **filters: Any) -> Any:
    stmt = select(model.date, model.score).order_by(model.date)
    stmt = stmt.where(model.source == filters.get("source", SYNTHETIC_SOURCE))
    if symbol is not None:
        stmt = stmt.join(Symbol, model.symbol_id == Symbol.id).where(Symbol.name == symbol)
    if filters.get("start") is not None:
        stmt = stmt.where(model.date >= filters["start"])
    if filters.get("end") is not None:
        stmt = stmt.where(model.date <= filters["end"])
    rows = session.execute(stmt).all()
    if not rows:
        return None
    dates, scores = zip(*rows, strict=True)
    return np.array(dates, dtype="datetime64[D]"), np.array(scores, dtype=np.float64)


def _same_arrays(got: tuple[np.ndarray, ...], expected: tuple[np.ndarray, ...]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype
        assert a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # bit for bit


def test_readers_equal_an_orm_read(db_url: str) -> None:
    """The readers go through the driver (``fetch_raw``) and convert whole columns; what they
    return is bit for bit what the ORM reads, for every combination of filters."""
    with get_session(db_url) as session:
        write_synthetic(session, ["S1", "S2"], dt.date(2019, 1, 1), dt.date(2021, 6, 30), 5)
    days = [None, dt.date(2019, 1, 1), dt.date(2020, 2, 29), dt.date(2021, 6, 30)]
    with get_session(db_url) as session:
        for symbol in ("S1", "S2"):
            for start in days:
                for end in days:
                    if start and end and start > end:
                        continue
                    for last_n in (None, 1, LOOKBACK, 10_000):
                        try:
                            h = load_history(session, symbol, start=start, end=end, last_n=last_n)
                        except StateBuildError:
                            assert end == days[1] or start == end
                            continue
                        expected = _orm_history(
                            session, symbol, start=start, end=end, last_n=last_n
                        )
                        _same_arrays((h.dates, h.open, h.high, h.low, h.close, h.volume), expected)
                    news = load_news(session, symbol, start=start, end=end)
                    want = _orm_series(session, NewsSentiment, symbol, start=start, end=end)
                    if want is None:
                        assert news is None
                    else:
                        assert news is not None
                        _same_arrays((news.dates, news.scores), want)
        for start in days:
            for end in days:
                macro = load_macro(session, source=SYNTHETIC_SOURCE, start=start, end=end)
                want = _orm_series(session, MacroSentiment, None, start=start, end=end)
                if want is None:
                    assert macro is None
                else:
                    assert macro is not None
                    _same_arrays((macro.dates, macro.scores), want)


def test_readers_see_pending_objects_like_an_orm_read(db_url: str, add_bars: Any) -> None:
    """Objects added to the session but not flushed are flushed before a read (autoflush), as
    they were when the readers went through ``session.execute``."""
    with get_session(db_url) as session:
        days = add_bars(session, "A", D0, 3)
        symbol_id = get_symbol(session, "A").id
    with get_session(db_url) as session:
        later = days[-1] + dt.timedelta(days=1)
        session.add(
            Bar(symbol_id=symbol_id, date=later, open=1.0, high=2.0, low=0.5, close=1.5, volume=9.0)
        )
        session.add(NewsSentiment(symbol_id=symbol_id, source=USER_SOURCE, date=later, score=0.25))
        session.add(MacroSentiment(source=USER_SOURCE, date=later, score=-0.5))
        assert load_history(session, "A").dates[-1] == np.datetime64(later)
        news = load_news(session, "A")
        assert news is not None
        assert news.scores.tolist() == [0.25]
        macro = load_macro(session, source=USER_SOURCE)
        assert macro is not None
        assert macro.scores.tolist() == [-0.5]
        session.rollback()
    with get_session(db_url) as session, session.no_autoflush:
        session.add(
            Bar(symbol_id=symbol_id, date=D0, open=1.0, high=2.0, low=0.5, close=1.5, volume=9.0)
        )  # a duplicate date: flushing it would fail
        assert len(load_history(session, "A")) == 3  # autoflush off: nothing flushed
        session.expunge_all()


def test_dates_stored_as_odd_text_read_as_the_orm_reads_them(db_url: str, add_bars: Any) -> None:
    """SQLite keeps dates as text. Text that is not canonical ``YYYY-MM-DD`` (written by hand)
    is read by SQLAlchemy's own SQLite date parser, as an ORM read would: parsed the same way,
    or refused the same way (numpy alone would accept ``2021-01-05 00:00:00``)."""
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 1)
        session.execute(text("UPDATE bars SET date = '2021-W01-2'"))
        session.execute(
            text(
                "INSERT INTO macro_sentiment (source, date, score) "
                "VALUES ('user', '2021-01-06', 0.5), ('user', '2021-W01-4', 0.25)"
            )
        )
    with get_session(db_url) as session:
        assert session.execute(select(Bar.date)).scalar_one() == dt.date(2021, 1, 5)
        assert load_history(session, "A").dates.tolist() == [dt.date(2021, 1, 5)]
        macro = load_macro(session, source=USER_SOURCE)
        assert macro is not None
        assert macro.dates.tolist() == [dt.date(2021, 1, 6), dt.date(2021, 1, 7)]
        session.execute(text("UPDATE bars SET date = '2021-01-05 00:00:00'"))
        with pytest.raises(ValueError, match="Invalid isoformat"):
            session.execute(select(Bar.date)).all()
        with pytest.raises(ValueError, match="Invalid isoformat"):
            load_history(session, "A")
        session.rollback()


def test_unknown_symbols_are_named_with_the_known_ones(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "BTC-USD", D0, 3)
        add_bars(session, "ETH-USD", D0, 3)
    with get_session(db_url) as session:
        for call in (
            lambda: load_history(session, "DOGE"),
            lambda: load_news(session, "DOGE"),
            lambda: last_bar_date(session, "DOGE"),
            lambda: get_symbol(session, "DOGE"),
        ):
            with pytest.raises(UnknownSymbolError) as info:
                call()
            assert str(info.value) == "unknown symbol 'DOGE'; known symbols: BTC-USD, ETH-USD"
            assert isinstance(info.value, KeyError)


def test_unknown_symbol_in_an_empty_store_says_how_to_fill_it(db_url: str) -> None:
    with get_session(db_url) as session, pytest.raises(UnknownSymbolError, match="otonom data"):
        get_symbol(session, "X")


def test_no_bar_in_range_raises_state_build_error(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 3)
        get_or_create_symbol(session, "EMPTY", source="test")
    with get_session(db_url) as session:
        with pytest.raises(
            StateBuildError,
            match=r"dated -inf \.\. 2020-12-31; it has bars 2021-01-01 \.\. 2021-01-03",
        ):
            load_history(session, "A", end=D0 - dt.timedelta(days=1))
        with pytest.raises(StateBuildError, match="it has no bars"):
            load_history(session, "EMPTY")


def test_last_bar_date(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        days = add_bars(session, "A", D0, 4)
        get_or_create_symbol(session, "EMPTY", source="test")
    with get_session(db_url) as session:
        assert last_bar_date(session, "A") == days[-1]
        assert last_bar_date(session, "EMPTY") is None
        add_bars(session, "A", days[-1] + dt.timedelta(days=1), 1)
        assert last_bar_date(session, "A") == days[-1] + dt.timedelta(days=1)


def test_sentiment_readers(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 3)
        add_bars(session, "B", D0, 3)
        symbol_id = get_symbol(session, "A").id
        for i, score in enumerate([0.5, -0.25, 1.0]):
            day = D0 + dt.timedelta(days=i)
            session.add(
                NewsSentiment(symbol_id=symbol_id, source=USER_SOURCE, date=day, score=score)
            )
            session.add(MacroSentiment(source=USER_SOURCE, date=day, score=-score))
    with get_session(db_url) as session:
        news = load_news(session, "A")
        assert news is not None
        assert news.scores.tolist() == [0.5, -0.25, 1.0]
        assert news.dates.tolist() == [D0 + dt.timedelta(days=i) for i in range(3)]
        later = load_news(
            session, "A", start=D0 + dt.timedelta(days=1), end=D0 + dt.timedelta(days=1)
        )
        assert later is not None
        assert later.scores.tolist() == [-0.25]
        assert load_news(session, "B") is None
        assert load_news(session, "A", start=D0 + dt.timedelta(days=5)) is None
        macro = load_macro(session, source=USER_SOURCE, end=D0 + dt.timedelta(days=1))
        assert macro is not None
        assert macro.scores.tolist() == [-0.5, 0.25]
        assert load_macro(session, source=USER_SOURCE, start=D0 + dt.timedelta(days=3)) is None


def test_load_macro_is_none_on_an_empty_store(db_url: str) -> None:
    with get_session(db_url) as session:
        assert load_macro(session, source=USER_SOURCE) is None


def test_list_symbols_counts_dates_and_health(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "FULL", D0, LOOKBACK + 10)
        add_bars(session, "SHORT", D0, LOOKBACK // 2)
        add_bars(session, "GAPPY", D0, LOOKBACK + 10, step_days=7)
        get_or_create_symbol(session, "NONE", source="test", is_synthetic=True)
    with get_session(db_url) as session:
        infos = {i.name: i for i in list_symbols(session)}
    assert list(infos) == ["FULL", "GAPPY", "NONE", "SHORT"]
    full = infos["FULL"]
    assert (full.first, full.last, full.bars) == (
        D0,
        D0 + dt.timedelta(days=LOOKBACK + 9),
        LOOKBACK + 10,
    )
    assert full.health == pytest.approx(1.0)
    assert infos["SHORT"].health == pytest.approx(0.5)  # coverage 70 / 140
    assert infos["GAPPY"].health == pytest.approx(0.0)  # every interval is a gap
    none = infos["NONE"]
    assert (none.first, none.last, none.bars, none.health, none.is_synthetic) == (
        None,
        None,
        0,
        None,
        True,
    )


def test_a_reader_is_not_blocked_by_an_open_write_transaction(db_url: str, add_bars: Any) -> None:
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 3)
    with get_session(db_url) as writer:
        add_bars(writer, "A", D0 + dt.timedelta(days=3), 2)
        writer.flush()  # the writer holds the write lock now
        with get_session(db_url) as reader:
            assert len(load_history(reader, "A")) == 3  # WAL: reads the last commit, no wait
    with get_session(db_url) as reader:
        assert len(load_history(reader, "A")) == 5


def test_meta_json_round_trips(db_url: str) -> None:
    meta = {"seed": 7, "nested": {"a": [1, 2.5, "x"]}}
    with get_session(db_url) as session:
        get_or_create_symbol(session, "S", source="synthetic", is_synthetic=True, meta=meta)
    with get_session(db_url) as session:
        assert get_symbol(session, "S").meta == meta
        raw = session.execute(text("SELECT meta FROM symbols")).scalar_one()
        assert json.loads(raw) == meta


# --- store version 3 -> 4: runs record their process and a heartbeat ---------------------------

V3_RUN_COLUMNS = ("host", "pid", "process_start", "heartbeat_at")  # what version 4 added


def test_a_version_3_store_is_upgraded_in_place_and_its_stale_running_run_marked_failed(
    db_url: str, make_v3_store: Any, run_columns: Any, tmp_path: Path
) -> None:
    """The four columns are added (NULL on the stored runs), the layout then equals a fresh
    store's, and the run a ``kill -9`` left ``running`` two hours ago is marked failed by the
    same ``init_db`` (judged by its ``created_at``: it has no heartbeat); the one made just now
    stays running until it is stale."""
    ids = make_v3_store(db_url)
    assert not set(V3_RUN_COLUMNS) & {c[0] for c in run_columns(db_url)}
    with (
        pytest.raises(StoreError, match=r"store version 3; .* upgrade it in place"),
        get_session(db_url),
    ):
        pass
    init_db(db_url)
    fresh = _sqlite(tmp_path / "fresh.db")
    init_db(fresh)
    assert run_columns(db_url) == run_columns(fresh)
    with get_session(db_url) as session:
        assert session.execute(text("SELECT value FROM store_meta")).scalar_one() == str(
            STORE_VERSION
        )
        old = session.get_one(BacktestRun, ids["old"])
        new = session.get_one(BacktestRun, ids["new"])
        assert (old.host, old.pid, old.process_start, old.heartbeat_at) == (None,) * 4
        assert old.status == "failed"
        assert old.error is not None
        assert old.error.startswith("interrupted: no heartbeat for ")
        assert "stale after 900 s" in old.error
        assert (new.status, new.error) == ("running", None)
    init_db(db_url)  # idempotent on the upgraded store


_V4_STEPS = (
    *(f"ALTER TABLE backtest_runs ADD COLUMN {c}" for c in V3_RUN_COLUMNS),
    "UPDATE store_meta",
)


@pytest.mark.parametrize("step", _V4_STEPS)
def test_a_3_to_4_upgrade_that_fails_at_any_step_completes_on_the_next_init_db(
    db_url: str,
    make_v3_store: Any,
    run_columns: Any,
    fail_at: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    tmp_path: Path,
) -> None:
    """SQLite's driver commits each ALTER TABLE on its own: a failure leaves the columns added
    before it, and the next ``init_db`` adds the rest and writes version 4 (last)."""
    ids = make_v3_store(db_url)
    made = fail_at(monkeypatch, step)
    with pytest.raises(RuntimeError, match=f"interrupted at {step}"):
        init_db(db_url)
    monkeypatch.undo()
    dispose_engines()
    done = V3_RUN_COLUMNS[: _V4_STEPS.index(step)]
    assert [c[0] for c in run_columns(db_url) if c[0] in V3_RUN_COLUMNS] == sorted(done)
    assert sum(sql.startswith("ALTER TABLE backtest_runs") for sql in made) == len(done) + (
        step != "UPDATE store_meta"
    )
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as raw:
        assert raw.execute("SELECT value FROM store_meta").fetchone() == ("3",)
    init_db(db_url)
    fresh = _sqlite(tmp_path / "fresh.db")
    init_db(fresh)
    assert run_columns(db_url) == run_columns(fresh)
    with get_session(db_url) as session:
        assert session.execute(text("SELECT value FROM store_meta")).scalar_one() == str(
            STORE_VERSION
        )
        assert session.get_one(BacktestRun, ids["new"]).status == "running"


# --- store version 4 -> 5: live decisions and their key -----------------------------------------


def _one_decision(url: str, live_strategy: str | None = None) -> None:
    """A run and one decision of symbol ``S`` on D0 (``live_strategy``: marked live)."""
    with get_session(url) as session:
        symbol, _ = get_or_create_symbol(session, "S", source="test")
        run = BacktestRun(
            strategy_name="v4", strategy_hash="0" * 64, start_date=D0, end_date=D0, symbols=["S"]
        )
        session.add(run)
        session.flush()
        values = {"live_strategy": live_strategy} if live_strategy is not None else {}
        session.add(
            Decision(
                run_id=run.id,
                symbol_id=symbol.id,
                date=D0,
                action=1,
                strength=0.5,
                position=0.0,
                leverage=0.0,
                cash_fraction=1.0,
                days_since_last_trade=math.inf,
                equity=100.0,
                **values,
            )
        )


def test_a_version_4_store_is_upgraded_in_place_keeping_its_decisions_as_backtest_rows(
    db_url: str, make_v4_store: Any, decision_layout: Any, tmp_path: Path
) -> None:
    """``live_strategy`` is added (NULL on the stored decisions) with the unique index, and
    ``daemon_state`` is created: the layout then equals a fresh store's, and the index holds one
    live decision per strategy, symbol and date while backtest rows (NULL) never collide."""
    _one_decision(db_url)
    fresh = _sqlite(tmp_path / "fresh.db")
    init_db(fresh)
    make_v4_store(db_url)
    assert decision_layout(db_url) != decision_layout(fresh)
    assert decision_layout(db_url)["daemon_state"] is None
    with (
        pytest.raises(StoreError, match=r"store version 4; .* upgrade it in place"),
        get_session(db_url),
    ):
        pass
    init_db(db_url)
    assert decision_layout(db_url) == decision_layout(fresh)
    # the live key is partial: backtest rows (live_strategy NULL) are not in it
    assert decision_layout(fresh)["live_key_partial"] is True
    with get_session(db_url) as session:
        version = session.execute(text("SELECT value FROM store_meta")).scalar_one()
        assert version == str(STORE_VERSION)
        assert session.execute(select(Decision.live_strategy)).scalars().all() == [None]
    _one_decision(db_url)  # another backtest row for the same symbol and date: fine
    _one_decision(db_url, "live-a")
    _one_decision(db_url, "live-b")
    with pytest.raises(IntegrityError):
        _one_decision(db_url, "live-a")
    init_db(db_url)  # idempotent on the upgraded store


_V5_STEPS = (
    "ALTER TABLE decisions ADD COLUMN live_strategy",
    "CREATE UNIQUE INDEX IF NOT EXISTS ix_decisions_live",
    "CREATE TABLE IF NOT EXISTS daemon_state",
    "UPDATE store_meta",
)


@pytest.mark.parametrize("step", _V5_STEPS)
def test_a_4_to_5_upgrade_that_fails_at_any_step_completes_on_the_next_init_db(
    db_url: str,
    make_v4_store: Any,
    decision_layout: Any,
    fail_at: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    tmp_path: Path,
) -> None:
    """A failure at any step leaves version 4 (the version is written last) and the next
    ``init_db`` finishes the upgrade: the layout of a fresh store, the decision kept."""
    _one_decision(db_url)
    make_v4_store(db_url)
    made = _interrupted(db_url, fail_at, monkeypatch, step, 4)
    assert any(sql.lstrip().startswith(step) for sql in made)
    init_db(db_url)
    fresh = _sqlite(tmp_path / "fresh.db")
    init_db(fresh)
    assert decision_layout(db_url) == decision_layout(fresh)
    with get_session(db_url) as session:
        assert session.execute(select(Decision.live_strategy)).scalars().all() == [None]


# --- store version 5 -> 6: the live key ordered by date ------------------------------------------


@pytest.mark.parametrize(
    "step",
    [None, "DROP INDEX IF EXISTS", "CREATE UNIQUE INDEX IF NOT EXISTS", "UPDATE store_meta"],
)
def test_a_version_5_store_gets_its_live_key_ordered_by_date_in_place(
    db_url: str,
    make_v5_store: Any,
    decision_layout: Any,
    fail_at: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str | None,
    tmp_path: Path,
) -> None:
    """``ix_decisions_live`` is built again as (live_strategy, date, symbol_id) in place (the
    layout of a fresh store, the decisions kept, still unique); a failure at a step
    (``step``) leaves version 5 and the next ``init_db`` finishes; a tick's read of its newest
    live decisions is then one range of the key (SQLite's plan)."""
    _one_decision(db_url, "live-a")
    fresh = _sqlite(tmp_path / "fresh.db")
    init_db(fresh)
    make_v5_store(db_url)
    before = decision_layout(db_url)
    assert ("ix_decisions_live", ("live_strategy", "symbol_id", "date"), True) in before["indexes"]
    assert before != decision_layout(fresh)
    with (
        pytest.raises(StoreError, match=r"store version 5; .* upgrade it in place"),
        get_session(db_url),
    ):
        pass
    if step is not None:
        _interrupted(db_url, fail_at, monkeypatch, step, 5)
    init_db(db_url)
    assert decision_layout(db_url) == decision_layout(fresh)
    layout = decision_layout(db_url)
    assert ("ix_decisions_live", ("live_strategy", "date", "symbol_id"), True) in layout["indexes"]
    assert layout["live_key_partial"] is True
    with get_session(db_url) as session:
        version = session.execute(text("SELECT value FROM store_meta")).scalar_one()
        assert version == str(STORE_VERSION)
        assert session.execute(select(Decision.live_strategy)).scalars().all() == ["live-a"]
    with pytest.raises(IntegrityError):
        _one_decision(db_url, "live-a")  # still one a strategy, symbol and date
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as raw:
        plan = raw.execute(
            "EXPLAIN QUERY PLAN SELECT symbol_id, date, action, strength FROM decisions "
            "WHERE live_strategy = 'live-a' AND symbol_id IN (1, 2, 3) AND date >= '2021-01-01'"
        ).fetchall()
    assert "ix_decisions_live (live_strategy=? AND date>?)" in str(plan), plan
    init_db(db_url)  # idempotent on the upgraded store


def test_impossible_day_text_is_refused_as_the_orm_refuses_it(db_url: str, add_bars: Any) -> None:
    """The readers' fast path reads SQLite dates as day numbers (``julianday``), which rolls an
    impossible day over (``2021-02-30`` would read as March 2): the day of the month written in
    the text is checked too, so such a date goes the ORM's way and is refused, as before."""
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 1)
        session.execute(text("UPDATE bars SET date = '2021-02-30'"))
        session.execute(
            text(
                "INSERT INTO macro_sentiment (source, date, score) "
                "VALUES ('user', '2021-02-28', 0.5), ('user', '2021-02-31', 0.25)"
            )
        )
    with get_session(db_url) as session:
        with pytest.raises(ValueError, match="day is out of range"):
            session.execute(select(Bar.date)).all()
        with pytest.raises(ValueError, match="day is out of range"):
            load_history(session, "A")
        with pytest.raises(ValueError, match="day is out of range"):
            load_macro(session, source=USER_SOURCE)
        session.execute(text("UPDATE bars SET date = '2021-02-28'"))
        assert load_history(session, "A").dates.tolist() == [dt.date(2021, 2, 28)]
        session.rollback()


def test_the_readers_leave_the_garbage_collector_alone(
    db_url: str, add_bars: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw readers stream their rows (no pause of the process-wide garbage collector, which
    a daemon importing the store must keep): ``gc.disable`` is never called."""
    import gc

    def refuse() -> None:
        raise AssertionError("gc.disable() called")

    monkeypatch.setattr(gc, "disable", refuse)
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 30)
        session.add(MacroSentiment(source=USER_SOURCE, date=D0, score=0.5))
    with get_session(db_url) as session:
        assert len(load_history(session, "A")) == 30
        assert len(load_history(session, "A", last_n=5)) == 5
        assert load_news(session, "A") is None
        macro = load_macro(session, source=USER_SOURCE)
        assert macro is not None
        assert macro.scores.tolist() == [0.5]
    assert gc.isenabled()


# --- the writers and the readers the importers and the synthetic market compare against -------


def test_store_writers_and_the_stored_row_readers(db_url: str) -> None:
    from otonom_runtime.store import (
        StoredBar,
        delete_symbol_data,
        find_symbol,
        insert_bars,
        insert_macro,
        insert_news,
        insert_shared_macro,
        macro_dates,
        news_dates,
        probe_latest,
        stored_bars,
        stored_macro_scores,
        stored_news_scores,
        symbol_ids,
        update_bars,
        update_macro,
        update_news,
    )

    d1, d2 = D0 + dt.timedelta(days=1), D0 + dt.timedelta(days=2)
    ohlcv = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0}
    with get_session(db_url) as session:
        a, _ = get_or_create_symbol(session, "AAA", source="test")
        b, _ = get_or_create_symbol(session, "BBB", source="test")
        insert_bars(session, [])  # an empty list writes nothing (no default row)
        insert_bars(session, [{"symbol_id": a.id, "date": d, **ohlcv} for d in (D0, d1)])
        insert_bars(session, [{"symbol_id": b.id, "date": d, **ohlcv} for d in (D0, d2)])
        bars = stored_bars(session, a.id)
        assert sorted(bars) == [D0, d1]
        assert bars[D0] == StoredBar(bars[D0].id, D0, 1.0, 2.0, 0.5, 1.5, 10.0)
        update_bars(session, [{"id": bars[D0].id, "close": 1.75}])
        assert stored_bars(session, a.id)[D0].close == 1.75
        assert stored_bars(session, a.id)[d1].close == 1.5

        news = [(a.id, USER_SOURCE, 0.5), (a.id, SYNTHETIC_SOURCE, -0.5), (b.id, USER_SOURCE, 0.1)]
        insert_news(
            session, [{"symbol_id": i, "source": s, "date": D0, "score": v} for i, s, v in news]
        )
        user = stored_news_scores(session, [a.id], USER_SOURCE)
        assert {k: v for k, (_, v) in user.items()} == {(a.id, D0): 0.5}
        update_news(session, [{"id": user[(a.id, D0)][0], "score": 0.25}])
        assert news_dates(session, a.id, USER_SOURCE, D0, d2) == {D0}
        assert news_dates(session, a.id, USER_SOURCE, d1, d2) == set()

        insert_macro(session, [{"source": USER_SOURCE, "date": D0, "score": 0.3}])
        shared = [
            {"source": USER_SOURCE, "date": d, "score": 0.9 if d == D0 else 0.4} for d in (D0, d1)
        ]
        assert insert_shared_macro(session, shared) == 1  # D0 was stored: skipped, not failed
        assert insert_shared_macro(session, []) == 0
        macro = stored_macro_scores(session, USER_SOURCE)
        assert {d: v for d, (_, v) in macro.items()} == {D0: 0.3, d1: 0.4}
        update_macro(session, [{"id": macro[D0][0], "score": -0.3}])
        assert macro_dates(session, USER_SOURCE, D0, d2) == {D0, d1}
        assert macro_dates(session, SYNTHETIC_SOURCE, D0, d2) == set()

        assert symbol_ids(session) == {"AAA": a.id, "BBB": b.id}
        assert find_symbol(session, "AAA") is a
        assert find_symbol(session, "ZZZ") is None
        # the live probe: newest bar <= day, first bar, latest news and macro <= day
        assert probe_latest(session, "BBB", d1, USER_SOURCE, USER_SOURCE) == (
            D0,
            D0,
            D0,
            0.1,
            d1,
            0.4,
        )
        assert probe_latest(session, "AAA", D0, USER_SOURCE, USER_SOURCE) == (
            D0,
            D0,
            D0,
            0.25,
            D0,
            -0.3,
        )
        assert probe_latest(session, "ZZZ", D0, USER_SOURCE, USER_SOURCE) is None

        delete_symbol_data(session, a.id, SYNTHETIC_SOURCE)
        assert stored_bars(session, a.id) == {}
        assert news_dates(session, a.id, SYNTHETIC_SOURCE, D0, d2) == set()
        left = stored_news_scores(session, [a.id, b.id], USER_SOURCE)  # other sources stay
        assert {k: v for k, (_, v) in left.items()} == {(a.id, D0): 0.25, (b.id, D0): 0.1}
        assert sorted(stored_bars(session, b.id)) == [D0, d2]  # other symbols stay


def test_symbols_with_bars_counts_as_the_bars_in_range_do(db_url: str, add_bars: Any) -> None:
    """``symbols_with_bars`` (the n-th bar from ``start`` on, dated ``end`` or before) agrees
    with counting each symbol's bars in range (``bar_spans``) on every range around the bars,
    gaps included."""
    from otonom_runtime.store import bar_spans, symbols_with_bars

    with get_session(db_url) as session:
        add_bars(session, "A", D0, 6, step_days=2)
        add_bars(session, "B", D0 + dt.timedelta(days=3), 3)
        ids = [get_symbol(session, name).id for name in ("A", "B")] + [999]
        days = [D0 + dt.timedelta(days=k) for k in range(-1, 14)]
        for start in days:
            for end in days:
                spans = bar_spans(session, ids, start, end)
                for at_least in (1, 2, 3):
                    expected = sum(1 for *_, n in spans.values() if n >= at_least)
                    assert symbols_with_bars(session, ids, start, end, at_least) == expected
        with pytest.raises(ValueError, match=r"^at_least is 0; expected an integer >= 1$"):
            symbols_with_bars(session, ids, D0, D0, 0)


def test_get_symbols_reads_them_in_order_and_names_the_first_unknown(
    db_url: str, add_bars: Any
) -> None:
    from otonom_runtime.store import get_symbols

    with get_session(db_url) as session:
        add_bars(session, "BTC-USD", D0, 1)
        add_bars(session, "ETH-USD", D0, 1)
    with get_session(db_url) as session:
        rows = get_symbols(session, ["ETH-USD", "BTC-USD", "ETH-USD"])
        assert [r.name for r in rows] == ["ETH-USD", "BTC-USD", "ETH-USD"]
        assert rows[1].id == get_symbol(session, "BTC-USD").id
        assert get_symbols(session, []) == []
        with pytest.raises(UnknownSymbolError) as info:
            get_symbols(session, ["BTC-USD", "DOGE", "XRP"])
        with pytest.raises(UnknownSymbolError) as one:
            get_symbol(session, "DOGE")
        assert str(info.value) == str(one.value)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_the_change_log_names_every_change_in_place_and_delete_whoever_writes_it(
    request: pytest.FixtureRequest, store: str
) -> None:
    """The store's triggers log (``row_changes``, ids ascending) the symbol of each bar or news
    row updated with another value or deleted, and the source of each macro row, through the
    store's writers and through raw SQL alike: an update that changes no value, and inserts,
    log nothing; a bar moved to another symbol logs both. On SQLite (a row a change) and
    PostgreSQL (a statement and key a change): the same keys."""
    from otonom_runtime.store import (
        delete_symbol_data,
        insert_bars,
        insert_macro,
        insert_news,
        update_bars,
        update_macro,
        update_news,
    )

    url: str = request.getfixturevalue("db_url" if store == "sqlite" else "pg")
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=k) for k in range(3)]
    bar = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0}
    with get_session(url) as session:
        acme = get_or_create_symbol(session, "ACME", source="test")[0].id
        beta = get_or_create_symbol(session, "BETA", source="test")[0].id
        for sid in (acme, beta):
            insert_bars(session, [{"symbol_id": sid, "date": d, **bar} for d in days])
            insert_news(session, [{"symbol_id": sid, "source": "user", "date": d, "score": 0.1}
                                  for d in days])  # fmt: skip
        insert_macro(session, [{"source": "user", "date": d, "score": 0.2} for d in days])
    seen = 0

    def logged(change: Callable[[Session], object]) -> set[tuple[str, int | None, str | None]]:
        nonlocal seen
        with get_session(url) as session:
            change(session)
        with get_session(url) as session:
            rows = session.execute(
                text("SELECT id, kind, symbol_id, source FROM row_changes WHERE id > :seen "
                     "ORDER BY id"), {"seen": seen}
            ).all()  # fmt: skip
        ids = [r[0] for r in rows]
        assert ids == sorted(set(ids))
        seen = max(ids, default=seen)
        return {(r[1], r[2], r[3]) for r in rows}

    def bar_id(session: Session, sid: int, day: dt.date) -> int:
        return int(session.execute(
            select(Bar.id).where(Bar.symbol_id == sid, Bar.date == day)).scalar_one())  # fmt: skip

    def ids_of(session: Session, table: Any) -> list[int]:
        return list(session.execute(select(table.id).order_by(table.id)).scalars())

    assert logged(lambda s: None) == set()  # the inserts above: nothing
    assert logged(lambda s: update_bars(s, [
        {"id": bar_id(s, acme, days[0]), "close": 1.25},
        {"id": bar_id(s, acme, days[1]), "open": 1.25},
    ])) == {("bars", acme, None)}  # fmt: skip
    assert logged(lambda s: update_news(s, [{"id": ids_of(s, NewsSentiment)[0], "score": -0.5}])
                  ) == {("news", acme, "user")}  # fmt: skip
    assert logged(lambda s: update_macro(s, [{"id": ids_of(s, MacroSentiment)[1], "score": 0.9}])
                  ) == {("macro", None, "user")}  # fmt: skip
    assert logged(lambda s: s.execute(text("UPDATE bars SET close = close"))) == set()
    assert logged(lambda s: s.execute(
        text("UPDATE bars SET volume = volume + 1 WHERE symbol_id = :b"), {"b": beta})
    ) == {("bars", beta, None)}  # fmt: skip
    assert logged(lambda s: s.execute(
        text("DELETE FROM news_sentiment WHERE id = :i"), {"i": ids_of(s, NewsSentiment)[-1]})
    ) == {("news", beta, "user")}  # fmt: skip
    assert logged(lambda s: s.execute(
        text("UPDATE bars SET symbol_id = :b, date = :d WHERE id = :i"),
        {"b": beta, "d": dt.date(2024, 2, 1), "i": bar_id(s, acme, days[2])},
    )) == {("bars", acme, None), ("bars", beta, None)}  # fmt: skip
    assert logged(lambda s: delete_symbol_data(s, beta, "user")) == {
        ("bars", beta, None), ("news", beta, "user")}  # fmt: skip
    assert logged(lambda s: insert_bars(s, [{"symbol_id": acme, "date": days[2], **bar}])) == set()
    # a symbol's own row: its name or kind changed (a meta change is not logged)
    assert logged(lambda s: s.execute(text("UPDATE symbols SET meta = meta"))) == set()
    assert logged(lambda s: s.execute(
        text("UPDATE symbols SET name = 'ACME2', is_synthetic = NOT is_synthetic WHERE id = :a"),
        {"a": acme})) == {("symbols", acme, None)}  # fmt: skip
    # a delete above every id left logs the largest id left (SQLite gives the ids above again)
    with get_session(url) as session:
        bar_ids = ids_of(session, Bar)  # acme's three: the oldest two, then the newest
        newest, older = bar_ids[-1], bar_id(session, acme, days[0])
        bar_ids.remove(older)
    for row in (older, newest):
        assert logged(lambda s, i=row: s.execute(text("DELETE FROM bars WHERE id = :i"), {"i": i})
                      ) == {("bars", acme, None)}  # fmt: skip
        with get_session(url) as session:
            freed = session.execute(text("SELECT row_id FROM row_changes WHERE id = :i"),
                                    {"i": seen}).scalar_one()  # fmt: skip
            left = session.execute(select(func.max(Bar.id))).scalar_one()
        assert freed == (left if row == newest and store == "sqlite" else None)
        assert left == (newest if row == older else bar_ids[-2])
    last = seen  # the log emptied (as one may, between ticks): its ids are not given again
    assert logged(lambda s: s.execute(text("DELETE FROM row_changes"))) == set()
    assert logged(lambda s: s.execute(text("DELETE FROM bars"))) == {("bars", acme, None)}
    assert seen > last


# --- store version 6 -> 7: the change log ---------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [None, "CREATE TABLE IF NOT", "CREATE TRIGGER IF NOT EXISTS tr_news", "UPDATE store_meta"],
)
def test_a_version_6_store_gets_its_change_log_in_place(
    db_url: str,
    make_v6_store: Any,
    change_log: Any,
    fail_at: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str | None,
    tmp_path: Path,
) -> None:
    """``row_changes`` and its triggers are added in place (the layout of a fresh store;
    the rows kept) and log from then on; a failure at a step (``step``) leaves version 6 and
    the next ``init_db`` finishes."""
    fresh = _sqlite(tmp_path / "fresh.db")
    init_db(fresh)
    assert change_log(fresh)["triggers"] == sorted(TRIGGER_NAMES)
    with get_session(db_url) as session:
        write_synthetic(session, ["DEMO-A"], dt.date(2023, 1, 1), dt.date(2023, 2, 1), 7)
    make_v6_store(db_url)
    assert change_log(db_url) == {"columns": None, "triggers": [], "functions": []}
    with (
        pytest.raises(StoreError, match=r"store version 6; .* upgrade it in place"),
        get_session(db_url),
    ):
        pass
    if step is not None:
        made = _interrupted(db_url, fail_at, monkeypatch, step, 6)
        assert any(sql.lstrip().startswith(step) for sql in made)
    init_db(db_url)
    assert change_log(db_url) == change_log(fresh)
    with get_session(db_url) as session:
        assert session.execute(text("SELECT value FROM store_meta")).scalar_one() == "7"
        assert session.execute(select(func.count()).select_from(Bar)).scalar_one() == 32
        session.execute(text("DELETE FROM bars WHERE date = '2023-01-05'"))
    with get_session(db_url) as session:
        assert session.execute(text("SELECT kind FROM row_changes")).scalars().all() == ["bars"]
    init_db(db_url)  # idempotent on the upgraded store
