"""The store on a real PostgreSQL server (skipped without one, except under CI=true)."""

from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from otonom_runtime._errors import DataImportError
from otonom_runtime.importers import import_ohlcv_csv, import_sentiment_csv
from otonom_runtime.store import (
    STORE_VERSION,
    USER_SOURCE,
    BacktestRun,
    Decision,
    MacroSentiment,
    NewsSentiment,
    dispose_engines,
    get_engine,
    get_session,
    get_symbol,
    init_db,
    last_bar_date,
    list_symbols,
    load_history,
    load_macro,
    load_news,
)
from otonom_runtime.store.changelog import TABLES, TRIGGER_NAMES
from otonom_runtime.synth import generate_market, write_synthetic
from otonom_runtime.testing.postgres import TEST_URL_ENV, postgres_server
from otonom_runtime.testing.rows import add_hold_decisions

D0 = dt.date(2021, 1, 1)


def test_it_is_really_postgres(pg: str) -> None:
    assert get_engine(pg).dialect.name == "postgresql"
    with get_session(pg) as session:
        assert "PostgreSQL" in session.execute(text("SELECT version()")).scalar_one()
        assert session.execute(text("SELECT value FROM store_meta")).scalar_one() == str(
            STORE_VERSION
        )
    init_db(pg)  # idempotent here too


def _interrupted(
    pg: str, fail_at: Any, monkeypatch: pytest.MonkeyPatch, step: str, at: int
) -> None:
    """An ``init_db`` of the store at ``pg`` interrupted at ``step`` (``fail_at``): it raises,
    and the store is still at version ``at`` (one transaction: nothing of the upgrade kept)."""
    fail_at(monkeypatch, step)
    with pytest.raises(RuntimeError, match="interrupted"):
        init_db(pg)
    monkeypatch.undo()
    dispose_engines()
    with get_engine(pg).connect() as conn:
        assert conn.execute(text("SELECT value FROM store_meta")).scalar_one() == str(at)


def test_a_version_1_store_is_upgraded_in_place(
    pg: str, make_v1_store: Any, sentiment_layout: Any
) -> None:
    fresh = sentiment_layout(pg)
    run_id, v1_signals = make_v1_store(pg)
    init_db(pg)
    assert sentiment_layout(pg) == fresh  # 1 -> 2 -> 3 -> 4
    with get_session(pg) as session:
        assert session.execute(text("SELECT value FROM store_meta")).scalar_one() == str(
            STORE_VERSION
        )
        decisions = session.query(Decision).filter_by(run_id=run_id).order_by(Decision.date).all()
        assert [d.signals for d in decisions] == list(v1_signals)  # exact floats, None kept
        assert [d.days_since_last_trade for d in decisions] == [math.inf, 2.0]
        names = session.execute(
            text("SELECT column_name FROM information_schema.columns WHERE table_name = :t"),
            {"t": "decisions"},
        ).scalars()
        assert "signals" not in set(names)


@pytest.mark.parametrize("synthetic", [True, False], ids=["with-demo", "real-only"])
def test_a_version_2_store_is_upgraded_in_place(
    pg: str, make_v2_store: Any, sentiment_rows: Any, sentiment_layout: Any, synthetic: bool
) -> None:
    """PostgreSQL alters the tables in place: same labels as on SQLite, and the layout of a
    fresh store (column order aside)."""
    fresh = sentiment_layout(pg)
    expected = make_v2_store(pg, synthetic=synthetic)
    assert sentiment_layout(pg) != fresh
    init_db(pg)
    assert sentiment_rows(pg) == expected
    assert sentiment_layout(pg) == fresh
    with get_session(pg) as session:
        assert session.execute(text("SELECT value FROM store_meta")).scalar_one() == str(
            STORE_VERSION
        )
        day = min(expected["macro"])
        session.add(MacroSentiment(source="other", date=day, score=0.0))  # new unique: fine
    with pytest.raises(IntegrityError), get_session(pg) as session:
        session.add(MacroSentiment(source=expected["macro"][day][0], date=day, score=0.0))
    with get_session(pg) as session:  # the id sequence carries on after the upgrade
        session.add(MacroSentiment(source="later", date=day, score=0.0))


@pytest.mark.parametrize(
    "step",
    ["ALTER TABLE news_sentiment ADD COLUMN", "ALTER TABLE macro_sentiment ADD CONSTRAINT"],
)
def test_a_2_to_3_upgrade_that_fails_midway_completes_on_the_next_init_db(
    pg: str,
    make_v2_store: Any,
    sentiment_rows: Any,
    fail_at: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    expected = make_v2_store(pg)
    made = fail_at(monkeypatch, step)
    with pytest.raises(RuntimeError, match="interrupted"):
        init_db(pg)
    assert any(sql.lstrip().startswith(step) for sql in made)
    monkeypatch.undo()
    dispose_engines()
    with get_engine(pg).connect() as conn:
        assert conn.execute(text("SELECT value FROM store_meta")).scalar_one() == "2"
    init_db(pg)
    assert sentiment_rows(pg) == expected


def test_write_and_read_back(pg: str, add_bars: Any) -> None:
    with get_session(pg) as session:
        days = add_bars(session, "BTC-USD", D0, 200)
        symbol_id = get_symbol(session, "BTC-USD").id
        for i, day in enumerate(days[:3]):
            session.add(
                NewsSentiment(symbol_id=symbol_id, source=USER_SOURCE, date=day, score=0.1 * i)
            )
            session.add(MacroSentiment(source=USER_SOURCE, date=day, score=-0.1 * i))
        run = BacktestRun(
            strategy_name="ensemble",
            strategy_hash="h",
            params={"fee": 0.001},
            start_date=days[0],
            end_date=days[-1],
            symbols=["BTC-USD"],
        )
        session.add(run)
        session.flush()
        for i, day in enumerate(days[:2]):
            session.add(
                Decision(
                    run_id=run.id,
                    symbol_id=symbol_id,
                    date=day,
                    action=i,
                    strength=0.25,
                    signals={"tech": {"action": 1, "strength": 0.5, "confidence": 0.75}},
                    position=0.5,
                    leverage=1.0,
                    cash_fraction=0.5,
                    days_since_last_trade=math.inf if i == 0 else 2.0,
                    equity=1000.0,
                )
            )
        run_id = run.id
    with get_session(pg) as session:
        history = load_history(session, "BTC-USD", end=days[149], last_n=140)
        assert history.dates.tolist() == days[10:150]
        np.testing.assert_array_equal(history.close, 100.0 + np.arange(10, 150))
        assert last_bar_date(session, "BTC-USD") == days[-1]
        news = load_news(session, "BTC-USD")
        macro = load_macro(session, source=USER_SOURCE, start=days[1])
        assert news is not None
        assert macro is not None
        assert news.scores.tolist() == pytest.approx([0.0, 0.1, 0.2])
        assert macro.scores.tolist() == pytest.approx([-0.1, -0.2])
        info = list_symbols(session)[0]
        assert (info.name, info.bars, info.first, info.last, info.health) == (
            "BTC-USD",
            200,
            days[0],
            days[-1],
            1.0,
        )
        run = session.get_one(BacktestRun, run_id)
        assert (run.status, run.params, run.symbols) == ("running", {"fee": 0.001}, ["BTC-USD"])
        run.status, run.metrics, run.finished_at = (
            "complete",
            {"sharpe": 1.5},
            dt.datetime.now(dt.timezone.utc),
        )
        decisions = session.query(Decision).order_by(Decision.date).all()
        assert [d.days_since_last_trade for d in decisions] == [math.inf, 2.0]
        assert decisions[0].signals["tech"] == {"action": 1, "strength": 0.5, "confidence": 0.75}
        assert decisions[0].signals["rl"] is None
    with get_session(pg) as session:
        assert session.get_one(BacktestRun, run_id).metrics == {"sharpe": 1.5}


def test_a_strategys_live_symbols_on_postgresql(pg: str, add_bars: Any) -> None:
    """``live_symbols`` (``otonom-train retrain``'s symbols given none): each symbol a
    strategy's live decisions name, once, sorted; another strategy's and backtest rows not."""
    from otonom_runtime.store.ticks import live_symbols

    with get_session(pg) as session:
        ids = {}
        for name in ("B", "A", "C"):
            add_bars(session, name, D0, 3)
            ids[name] = get_symbol(session, name).id
        rows = [("B", "live_x", 0), ("B", "live_x", 1), ("A", "live_x", 0), ("C", "other", 0)]
        rows += [("C", None, 1)]  # a backtest row
        add_hold_decisions(session, [(ids[n], s, D0 + dt.timedelta(days=k)) for n, s, k in rows])
        session.commit()
        assert live_symbols(session, "live_x") == ["A", "B"]
        assert live_symbols(session, "other") == ["C"]
        assert live_symbols(session, "none") == []


def test_unique_constraints_and_foreign_keys_hold(pg: str, add_bars: Any) -> None:
    with get_session(pg) as session:
        add_bars(session, "A", D0, 2)
        session.add(MacroSentiment(source=USER_SOURCE, date=D0, score=0.0))
    with pytest.raises(IntegrityError), get_session(pg) as session:
        add_bars(session, "A", D0 + dt.timedelta(days=1), 1)
    with pytest.raises(IntegrityError), get_session(pg) as session:
        session.add(MacroSentiment(source=USER_SOURCE, date=D0, score=0.5))
    with pytest.raises(IntegrityError), get_session(pg) as session:
        session.execute(
            text(
                "INSERT INTO bars (symbol_id, date, open, high, low, close, volume) "
                "VALUES (9999, '2021-01-01', 1, 1, 1, 1, 1)"
            )
        )
    with get_session(pg) as session:
        assert len(load_history(session, "A")) == 2


def test_importers_and_synth_on_postgres(pg: str, tmp_path: Path) -> None:
    bars = tmp_path / "x.csv"
    bars.write_text("timestamp,open,high,low,close,volume\n2020-01-01 00:00:00,1,2,0.5,1.5,10\n")
    macro = tmp_path / "m.csv"
    macro.write_text("date,score\n2020-01-01,0.5\n")
    with get_session(pg) as session:
        assert import_ohlcv_csv(session, bars, "X").inserted == 1
        assert import_sentiment_csv(session, macro).inserted == 1
    with get_session(pg) as session:
        assert import_ohlcv_csv(session, bars, "X").unchanged == 1
        report = write_synthetic(session, ["DEMO-BTC"], D0, D0 + dt.timedelta(days=59), 7)
        assert report.bars == 60
    with get_session(pg) as session:
        again = write_synthetic(session, ["DEMO-BTC"], D0, D0 + dt.timedelta(days=59), 7)
        assert again.unchanged == ("DEMO-BTC",)
        longer = write_synthetic(session, ["DEMO-BTC"], D0, D0 + dt.timedelta(days=89), 7)
        assert longer.bars == 30  # the stored 60 compared equal: only new days are added
        history = load_history(session, "DEMO-BTC")
    expected = generate_market("DEMO-BTC", D0, D0 + dt.timedelta(days=89), 7).history
    np.testing.assert_array_equal(history.close, expected.close)  # doubles round-trip exactly
    with get_session(pg) as session, pytest.raises(DataImportError, match="90 stored bars differ"):
        write_synthetic(session, ["DEMO-BTC"], D0, D0 + dt.timedelta(days=89), 8)
    changed = bars.read_text().replace(",1.5,", ",1.25,")
    bars.write_text(changed)
    with get_session(pg) as session, pytest.raises(DataImportError, match=r"\(2020-01-01\)"):
        import_ohlcv_csv(session, bars, "X")
    with get_session(pg) as session:
        assert import_ohlcv_csv(session, bars, "X", replace=True).updated == 1


def test_env_url_is_used_as_is_with_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_URL_ENV, "postgresql://u:p@db.example:5433/otonom")
    with postgres_server() as url:
        assert url == "postgresql+psycopg://u:p@db.example:5433/otonom"
    monkeypatch.setenv(TEST_URL_ENV, "postgresql+psycopg://u@h/d")
    with postgres_server() as url:
        assert url == "postgresql+psycopg://u@h/d"


def test_a_started_server_is_stopped_and_deleted(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.environ.get(TEST_URL_ENV):
        pytest.skip(f"{TEST_URL_ENV} is set: no server is started here")
    before = set(Path(tempfile.gettempdir()).glob("otonom-pg-*"))
    with postgres_server() as url:
        assert url != postgres_url
        made = set(Path(tempfile.gettempdir()).glob("otonom-pg-*")) - before
        assert len(made) == 1
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        engine.dispose()
    assert not next(iter(made)).exists()
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    with pytest.raises(OperationalError):
        engine.connect()
    engine.dispose()


# --- store version 3 -> 4 on PostgreSQL -------------------------------------------------------


def test_a_version_3_store_is_upgraded_in_place(
    pg: str, make_v3_store: Any, run_columns: Any
) -> None:
    """PostgreSQL adds the run columns in place (the layout of a fresh store, column order
    aside); the two-hour-old run left ``running`` is marked failed, the new one kept."""
    fresh = run_columns(pg)
    ids = make_v3_store(pg)
    assert run_columns(pg) != fresh
    init_db(pg)
    assert run_columns(pg) == fresh
    with get_session(pg) as session:
        assert session.execute(text("SELECT value FROM store_meta")).scalar_one() == str(
            STORE_VERSION
        )
        old = session.get_one(BacktestRun, ids["old"])
        assert (old.status, old.host, old.pid, old.heartbeat_at) == ("failed", None, None, None)
        assert (old.error or "").startswith("interrupted: no heartbeat for ")
        assert session.get_one(BacktestRun, ids["new"]).status == "running"


@pytest.mark.parametrize(
    "step",
    ["ALTER TABLE backtest_runs ADD COLUMN pid", "UPDATE store_meta"],
)
def test_a_3_to_4_upgrade_that_fails_midway_completes_on_the_next_init_db(
    pg: str,
    make_v3_store: Any,
    run_columns: Any,
    fail_at: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    """One transaction on PostgreSQL: a failure leaves version 3 without any new column, and
    the next ``init_db`` does the whole upgrade."""
    fresh = run_columns(pg)
    make_v3_store(pg)
    v3 = run_columns(pg)
    made = fail_at(monkeypatch, step)
    with pytest.raises(RuntimeError, match="interrupted"):
        init_db(pg)
    assert any(sql.lstrip().startswith(step) for sql in made)
    monkeypatch.undo()
    dispose_engines()
    with get_engine(pg).connect() as conn:
        assert conn.execute(text("SELECT value FROM store_meta")).scalar_one() == "3"
    assert run_columns(pg) == v3
    init_db(pg)
    assert run_columns(pg) == fresh


# --- store version 4 -> 5 on PostgreSQL -------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [None, "CREATE UNIQUE INDEX", "CREATE TABLE IF NOT EXISTS daemon_state", "UPDATE store_meta"],
)
def test_a_version_4_store_is_upgraded_in_place_even_after_a_failure_midway(
    pg: str,
    make_v4_store: Any,
    decision_layout: Any,
    fail_at: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str | None,
) -> None:
    """``live_strategy`` and ``ix_decisions_live`` are added and ``daemon_state`` created in
    place (the layout of a fresh store); one transaction: a failure (``step``) leaves version 4
    as it was, and the next ``init_db`` does the whole upgrade."""
    fresh = decision_layout(pg)
    assert fresh["live_key_partial"] is True  # backtest rows are not in the live key
    make_v4_store(pg)
    v4 = decision_layout(pg)
    assert v4 != fresh
    assert v4["daemon_state"] is None
    if step is not None:
        _interrupted(pg, fail_at, monkeypatch, step, 4)
        assert decision_layout(pg) == v4
    init_db(pg)
    assert decision_layout(pg) == fresh
    with get_session(pg) as session:
        version = session.execute(text("SELECT value FROM store_meta")).scalar_one()
        assert version == str(STORE_VERSION)


@pytest.mark.parametrize(
    "step", [None, "DROP INDEX IF EXISTS", "CREATE UNIQUE INDEX IF NOT EXISTS", "UPDATE store_meta"]
)
def test_a_version_5_store_gets_its_live_key_ordered_by_date_on_postgresql(
    pg: str,
    make_v5_store: Any,
    decision_layout: Any,
    fail_at: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str | None,
) -> None:
    """``ix_decisions_live`` is built again as (live_strategy, date, symbol_id) in place (a
    fresh store's layout, partial over the live rows); one transaction: a failure (``step``)
    leaves version 5 as it was, and the next ``init_db`` does the whole upgrade."""
    fresh = decision_layout(pg)
    make_v5_store(pg)
    v5 = decision_layout(pg)
    assert v5 != fresh
    if step is not None:
        _interrupted(pg, fail_at, monkeypatch, step, 5)
        assert decision_layout(pg) == v5
    init_db(pg)
    assert decision_layout(pg) == fresh
    assert ("ix_decisions_live", ("live_strategy", "date", "symbol_id"), True) in fresh["indexes"]
    assert fresh["live_key_partial"] is True
    with get_engine(pg).connect() as conn:
        assert conn.execute(text("SELECT value FROM store_meta")).scalar_one() == str(STORE_VERSION)


@pytest.mark.parametrize(
    "step", [None, "CREATE TABLE IF NOT EXISTS", "CREATE TRIGGER tr_news", "UPDATE store_meta"]
)
def test_a_version_6_store_gets_its_change_log_on_postgresql(
    pg: str,
    make_v6_store: Any,
    change_log: Any,
    fail_at: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str | None,
) -> None:
    """``row_changes``, its trigger functions and statement triggers are added in
    place (a fresh store's); one transaction: a failure (``step``) leaves version 6 as it was,
    and the next ``init_db`` does the whole upgrade; the triggers then log."""
    init_db(pg)
    fresh = change_log(pg)
    assert fresh["triggers"] == sorted(TRIGGER_NAMES)
    assert fresh["functions"] == sorted(f"otonom_log_{t}" for t in TABLES)
    make_v6_store(pg)
    v6 = change_log(pg)
    assert v6 == {"columns": None, "triggers": [], "functions": []}
    if step is not None:
        _interrupted(pg, fail_at, monkeypatch, step, 6)
        assert change_log(pg) == v6
    init_db(pg)
    assert change_log(pg) == fresh
    with get_session(pg) as session:
        write_synthetic(session, ["DEMO-A"], dt.date(2023, 1, 1), dt.date(2023, 2, 1), 7)
        session.flush()
        session.execute(text("UPDATE macro_sentiment SET score = score / 2"))
    with get_engine(pg).connect() as conn:
        assert conn.execute(text("SELECT value FROM store_meta")).scalar_one() == str(STORE_VERSION)
        logged = conn.execute(text("SELECT kind, symbol_id, source FROM row_changes")).all()
    assert [tuple(r) for r in logged] == [("macro", None, "synthetic")]


def test_the_readers_read_postgresql_dates_as_numbers(
    pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The readers' fast path (dates as one number each, streamed) works on PostgreSQL: with
    the text read made to fail, the bars, news and decisions still read, dates exact (one
    before 1970 included)."""
    from otonom_runtime.store import Bar, get_or_create_symbol, raw
    from otonom_runtime.store.datasets import load_decisions

    init_db(pg)
    days = [dt.date(1969, 12, 30), dt.date(1970, 1, 31), dt.date(2024, 2, 29)]
    with get_session(pg) as session:
        symbol, _ = get_or_create_symbol(session, "P", source="test")
        for i, day in enumerate(days):
            session.add(
                Bar(
                    symbol_id=symbol.id,
                    date=day,
                    open=1.0,
                    high=2.0,
                    low=0.5,
                    close=1.0 + i,
                    volume=3.0,
                )
            )
            session.add(NewsSentiment(symbol_id=symbol.id, source="user", date=day, score=0.1))
        run = BacktestRun(
            strategy_name="s",
            strategy_hash="h",
            params={},
            start_date=days[0],
            end_date=days[-1],
            symbols=["P"],
            status="complete",
        )
        session.add(run)
        session.flush()
        for day in days:
            session.add(
                Decision(
                    run_id=run.id,
                    symbol_id=symbol.id,
                    date=day,
                    action=2,
                    strength=0.5,
                    signals={},
                    position=0.0,
                    leverage=1.0,
                    cash_fraction=1.0,
                    days_since_last_trade=math.inf,
                    equity=1.0,
                )
            )
        run_id = run.id

    def no_text(*args: Any) -> Any:
        raise AssertionError("the text read was used")

    monkeypatch.setattr(raw, "_fetch_columns", no_text)
    with get_session(pg) as session:
        assert load_history(session, "P").dates.tolist() == days
        news = load_news(session, "P", source="user")
        assert news is not None
        assert news.dates.tolist() == days
        decisions = load_decisions(session, run_id, "P", days[0], days[-1])
        assert decisions is not None
        assert decisions.dates.tolist() == days
        assert decisions.actions.tolist() == [2, 2, 2]
        assert decisions.days_since_last_trade.tolist() == [math.inf] * 3
