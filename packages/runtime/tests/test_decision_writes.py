"""The backtester's decision rows as the store writes them: ``insert_decisions`` (multi-row
statements on SQLite, a binary COPY on PostgreSQL) stores exactly what one row at a time
stores, and a backtest stores the same rows on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from otonom_runtime.backtest import run_backtest
from otonom_runtime.store import (
    BacktestRun,
    Decision,
    decision_batches,
    dispose_engines,
    get_or_create_symbol,
    get_session,
    insert_decisions,
    writers,
)
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import write_synthetic

BASELINE = Path(__file__).resolve().parents[3] / "strategies" / "baseline_v1.yaml"
COLUMNS = (
    "run_id", "symbol_id", "date", "action", "strength", "position", "leverage",
    "cash_fraction", "days_since_last_trade", "equity", "tech_action", "tech_strength",
    "tech_confidence", "news_action", "news_strength", "news_confidence", "risk_action",
    "risk_strength", "risk_confidence",
)  # fmt: skip


def _run(session: Session) -> int:
    run = BacktestRun(
        strategy_name="s",
        strategy_hash="h",
        params={},
        start_date=dt.date(2020, 1, 1),
        end_date=dt.date(2020, 1, 1),
        symbols=["A"],
        status="failed",
    )
    session.add(run)
    session.flush()
    return run.id


def _columns(
    run_id: int, symbol_id: int, n: int, sqlite: bool, first: dt.date = dt.date(2020, 1, 1)
) -> dict[str, list[Any]]:
    """``n`` decision rows column by column, as the backtester hands them over (SQLite: dates
    as ISO text, no ``inf``), with odd values: a NULL, -0.0, tiny and huge floats."""
    days = [first + dt.timedelta(days=i) for i in range(n)]
    out: dict[str, list[Any]] = {
        "run_id": [run_id] * n,
        "symbol_id": [symbol_id] * n,
        "date": [d.isoformat() for d in days] if sqlite else days,
    }
    for j, name in enumerate(COLUMNS[3:]):
        if name.endswith("action"):
            out[name] = [(i + j) % 3 for i in range(n)]
        else:
            out[name] = [(i * 0.1 + j) / 7.0 for i in range(n)]
    out["days_since_last_trade"][0] = None
    if n >= 4:
        out["position"][1] = -0.0
        out["equity"][2], out["equity"][3] = 5e-324, 1.7976931348623157e308
    return out


def _stored(session: Session, run_id: int) -> list[tuple[Any, ...]]:
    query = text(f"SELECT {', '.join(COLUMNS[1:])} FROM decisions WHERE run_id = :r ORDER BY id")
    return [tuple(row) for row in session.execute(query, {"r": run_id})]


@pytest.mark.parametrize("n", [1, 52, 53, 131])  # 52 rows of 19 columns per statement
def test_multi_row_statements_store_what_one_row_at_a_time_stores(db_url: str, n: int) -> None:
    with get_session(db_url) as session:
        symbol, _ = get_or_create_symbol(session, "A", source="test")
        fast, slow = _run(session), _run(session)
        insert_decisions(session, _columns(fast, symbol.id, n, sqlite=True))
        values = _columns(slow, symbol.id, n, sqlite=True)
        cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.executemany(
            f"INSERT INTO decisions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 19)})",
            list(zip(*values.values(), strict=True)),
        )
        cursor.close()
        session.commit()
        stored = _stored(session, fast)
        assert len(stored) == n
        assert stored == _stored(session, slow)
        assert stored[0][7] is None


def test_columns_of_different_lengths_raise_and_store_nothing(db_url: str) -> None:
    with get_session(db_url) as session:
        symbol, _ = get_or_create_symbol(session, "A", source="test")
        run_id = _run(session)
        columns = _columns(run_id, symbol.id, 3, sqlite=True)
        columns["equity"] = columns["equity"][:2]
        with pytest.raises(ValueError, match=r"^decision columns of different lengths \("):
            insert_decisions(session, columns)
        insert_decisions(session, {})  # nothing to store
        assert session.execute(select(func.count()).select_from(Decision)).scalar_one() == 0


def test_a_statement_holds_at_most_4000_values_or_the_build_s_limit(db_url: str) -> None:
    assert writers._sqlite_rows(19, 32766) == 210
    assert writers._sqlite_rows(19, 999) == 52  # builds before SQLite 3.32
    assert writers._sqlite_rows(22, 999) == 45
    assert writers._sqlite_rows(5000, 32766) == 1
    assert writers._values_sql(("a", "b"), 2).endswith("(a, b) VALUES (?, ?), (?, ?)")
    with get_session(db_url) as session:
        dbapi: Any = session.connection().connection.dbapi_connection
        assert writers._variable_limit(dbapi) >= 999
    assert writers._variable_limit(object()) == 999  # a driver that cannot say


def _foreign_keys(session: Session) -> int:
    dbapi: Any = session.connection().connection.dbapi_connection
    return int(dbapi.execute("PRAGMA foreign_keys").fetchone()[0])


def _write(session: Session, *batches: dict[str, list[Any]]) -> None:
    with decision_batches(session) as commit:
        assert _foreign_keys(session) == 0  # off inside the block
        for batch in batches:
            commit(batch)
            commit({k: v[:0] for k, v in batch.items()})  # an empty batch: nothing


@pytest.mark.parametrize("bad", ["symbol_id", "run_id"])
def test_a_batch_naming_a_missing_symbol_or_run_is_refused_as_the_per_row_check_refuses_it(
    db_url: str, bad: str
) -> None:
    """The foreign keys checked once a batch (``decision_batches`` on SQLite) refuse what the
    per-row check refuses, with its error; the batches before it stay, nothing of it does, and
    the connection's checks are on again."""
    with get_session(db_url) as session:
        symbol, _ = get_or_create_symbol(session, "A", source="test")
        run_id = _run(session)
        session.commit()
        good = _columns(run_id, symbol.id, 60, sqlite=True)
        wrong = _columns(run_id, symbol.id, 60, sqlite=True, first=dt.date(2021, 1, 1))
        wrong[bad][59] = 9999
        with pytest.raises(sqlite3.IntegrityError, match=r"^FOREIGN KEY constraint failed$"):
            _write(session, good, wrong)
        assert _foreign_keys(session) == 1
        session.rollback()
        assert len(_stored(session, run_id)) == 60
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY constraint failed"):
            insert_decisions(session, wrong)  # the per-row check: the same refusal
        session.rollback()
    with get_session(db_url) as session:  # the pooled connection checks again
        assert _foreign_keys(session) == 1


def test_inside_an_open_transaction_the_batches_are_checked_row_by_row(db_url: str) -> None:
    with get_session(db_url) as session:
        symbol, _ = get_or_create_symbol(session, "A", source="test")
        run_id = _run(session)  # flushed: the driver's transaction is open
        with decision_batches(session) as commit:
            assert _foreign_keys(session) == 1
            commit(_columns(run_id, symbol.id, 3, sqlite=True))
        assert len(_stored(session, run_id)) == 3


class _Interrupting(dict[str, list[Any]]):
    """Batch columns whose values are interrupted the second time they are read (inside the
    batch's transaction, after its row count was taken)."""

    reads = 0

    def values(self) -> Any:
        self.reads += 1
        if self.reads == 2:
            raise KeyboardInterrupt
        return super().values()


def test_the_checks_come_back_on_when_the_block_is_interrupted(db_url: str) -> None:
    with get_session(db_url) as session:
        symbol, _ = get_or_create_symbol(session, "A", source="test")
        run_id = _run(session)
        session.commit()
        later = _columns(run_id, symbol.id, 3, sqlite=True, first=dt.date(2021, 1, 1))
        with pytest.raises(KeyboardInterrupt):
            _write(session, _columns(run_id, symbol.id, 3, sqlite=True), _Interrupting(later))
        assert _foreign_keys(session) == 1
        assert len(_stored(session, run_id)) == 3  # the first batch; nothing of the second


def _backtest_rows(url: str) -> list[tuple[Any, ...]]:
    with get_session(url) as session:
        write_synthetic(
            session, ["DEMO-A", "DEMO-B"], dt.date(2019, 1, 1), dt.date(2020, 12, 31), 3
        )
        report = run_backtest(
            session,
            load_strategy(BASELINE),
            ["DEMO-A", "DEMO-B"],
            dt.date(2019, 7, 1),
            dt.date(2020, 12, 31),
            use_rl=False,
        )
        query = select(Decision).where(Decision.run_id == report.run_id)
        rows = session.execute(query.order_by(Decision.symbol_id, Decision.date)).scalars()
        out = [
            (
                d.symbol_id,
                d.date,
                d.action,
                d.strength,
                d.position,
                d.leverage,
                d.cash_fraction,
                d.days_since_last_trade,
                d.equity,
                repr(d.signals),
            )
            for d in rows
        ]
    dispose_engines()
    return out


def test_a_backtest_stores_the_same_rows_on_sqlite_and_postgresql(db_url: str, pg: str) -> None:
    on_sqlite = _backtest_rows(db_url)
    assert len(on_sqlite) > 2 * 250
    assert any(math.isinf(row[7]) for row in on_sqlite)  # days before the first trade
    assert _backtest_rows(pg) == on_sqlite


def test_the_runs_dates_are_those_np_unique_gives() -> None:
    """``records._union_dates``: the symbols' dates once, sorted, a new array, whether the
    symbols share one calendar (the first one's dates, copied) or not."""
    from types import SimpleNamespace

    from otonom_runtime.backtest import records

    base = np.arange(np.datetime64("2020-01-01"), np.datetime64("2020-03-01"))
    for calendars in ([base, base, base], [base, base[5:], base[::2]], [base[10:], base[:3]]):
        results: Any = [SimpleNamespace(dates=d) for d in calendars]
        got = records._union_dates(results)
        want = np.unique(np.concatenate(calendars))
        assert got.dtype == want.dtype
        assert got.tolist() == want.tolist()
        assert not np.shares_memory(got, calendars[0])


def test_the_copy_on_postgresql_stores_what_one_row_at_a_time_stores(
    pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's binary ``COPY`` (``writers._insert_copy``) stores what SQLAlchemy's
    insert of one row at a time stores: a NULL, ``inf`` (as NULL), -0.0, tiny and huge
    floats, numpy numbers, the live strategy's text."""
    copies: list[int] = []
    copy = writers._insert_copy

    def spy(conn: Any, columns: Any) -> None:
        copies.append(1)
        copy(conn, columns)

    monkeypatch.setattr(writers, "_insert_copy", spy)
    with get_session(pg) as session:
        symbol, _ = get_or_create_symbol(session, "A", source="test")
        fast, slow = _run(session), _run(session)
        copied = _columns(fast, symbol.id, 131, sqlite=False)
        copied["days_since_last_trade"][5] = math.inf
        copied["strength"] = [np.float64(v) for v in copied["strength"]]
        copied["action"] = [np.int64(v) for v in copied["action"]]
        copied["live_strategy"] = ["live-é"] * 131
        insert_decisions(session, copied)
        rows = {**copied, "run_id": [slow] * 131, "live_strategy": [None] * 131}
        session.execute(
            insert(Decision),
            [dict(zip(rows, r, strict=True)) for r in zip(*rows.values(), strict=True)],
        )
        session.commit()
        stored = _stored(session, fast)
        assert len(stored) == 131
        assert stored == _stored(session, slow)
        assert stored[0][7] is None
        assert stored[5][7] is None  # inf stored as NULL
        assert math.copysign(1.0, stored[1][4]) == -1.0  # -0.0 kept
        live = session.scalars(select(Decision.live_strategy).where(Decision.run_id == fast))
        assert set(live) == {"live-é"}
    assert copies == [1]  # the rows went in by COPY
    dispose_engines()


def test_a_duplicate_live_decision_on_postgresql_is_an_integrity_error(pg: str) -> None:
    """The ``COPY``'s broken unique key is raised as SQLAlchemy raises a statement's
    (``IntegrityError``: what ``record_tick`` takes for another writer's tick), and the
    transaction rolled back stores none of the rows."""
    from sqlalchemy.exc import IntegrityError

    with get_session(pg) as session:
        symbol, _ = get_or_create_symbol(session, "A", source="test")
        run_id = _run(session)
        rows = _columns(run_id, symbol.id, 3, sqlite=False)
        rows["live_strategy"] = ["s"] * 3
        insert_decisions(session, rows)
        session.commit()
        again = _columns(_run(session), symbol.id, 3, sqlite=False)
        again["live_strategy"] = ["s"] * 3
        with pytest.raises(IntegrityError, match="ix_decisions_live"):
            insert_decisions(session, again)
        session.rollback()
        assert session.execute(select(func.count()).select_from(Decision)).scalar_one() == 3
    dispose_engines()
