"""The tick's cache (``Ensemble.cache``, ``daemon.cache.TickCache``) and the paper broker's kept
sleeves: a tick after the cache decides exactly as a cold one (a fresh ensemble, every symbol
read whole), and the cache follows the store: a bar imported out of order, a symbol added to the
universe, news arriving later, a restarted process. Real SQLite files, a real ONNX policy;
decisions compared with == (floats included)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, select, text

from otonom_runtime.daemon import Ensemble, PaperBroker, TickDecision, run_tick
from otonom_runtime.store import (
    SIGNAL_COLUMNS,
    Bar,
    Base,
    Decision,
    NewsSentiment,
    Symbol,
    dispose_engines,
    get_engine,
    get_or_create_symbol,
    get_session,
    init_db,
)
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.models import make_policy_model
from otonom_schema import PortfolioSnapshot

SYMBOLS = ["DEMO-BTC", "DEMO-ETH", "DEMO-SOL"]
FIRST, LAST = dt.date(2019, 1, 1), dt.date(2020, 3, 31)
DAY = dt.date(2020, 3, 20)
PORTFOLIO = PortfolioSnapshot(0.25, 0.5, 0.5, 3.0)


@pytest.fixture(autouse=True)
def _no_models_root_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTONOM_MODELS_ROOT", raising=False)


def _setup(folder: Path, url: str | None = None) -> tuple[str, Path]:
    """The strategy (a real ONNX policy) and a store of the synthetic market: a SQLite file in
    ``folder``, or the PostgreSQL database ``url`` emptied first."""
    model = folder / "models" / "policy_best.onnx"
    model.parent.mkdir(parents=True)
    make_policy_model(model, seed=3)
    path = folder / "live_cache.yaml"
    path.write_text(
        "name: live_cache\nensemble:\n  analyst_weights: {tech: 1.0, news: 1.0, risk: 1.0, "
        f"rl: 2.0}}\n  rl_policy: {{enabled: true, model_path: {model.as_posix()}}}\n",
        encoding="utf-8",
    )
    if url is None:
        url = f"sqlite:///{(folder / 'otonom.db').as_posix()}"
    else:
        Base.metadata.drop_all(get_engine(url))
        with get_engine(url).begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS store_meta"))
        dispose_engines()
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, SYMBOLS, FIRST, LAST, 7)
    return url, path


def _key(d: TickDecision) -> tuple[Any, ...]:
    return (d.symbol, d.date, d.action, d.strength, d.confidence, d.signals)


def _cold(url: str, path: Path, symbols: list[str], day: dt.date) -> list[tuple[Any, ...]]:
    with get_session(url) as session:
        out = Ensemble.from_strategy(path).decide(session, symbols, day, _portfolios(symbols))
    return [_key(d) for d in out]


def _portfolios(symbols: list[str]) -> dict[str, PortfolioSnapshot]:
    return dict.fromkeys(symbols, PORTFOLIO)


def test_ticks_after_the_cache_decide_as_cold_ones_day_after_day(tmp_path: Path) -> None:
    url, path = _setup(tmp_path)
    warm = Ensemble.from_strategy(path)
    day = DAY
    with get_session(url) as session:
        while day <= LAST:
            got = [_key(d) for d in warm.decide(session, SYMBOLS, day, _portfolios(SYMBOLS))]
            assert got == _cold(url, path, SYMBOLS, day), day
            day += dt.timedelta(days=1)


def test_a_steady_tick_reads_by_index_searches_only(tmp_path: Path) -> None:
    """Every SELECT of a steady tick is planned by SQLite as index searches (EXPLAIN QUERY
    PLAN: no SCAN of a table or an index but the symbols' count, in proportion to the
    universe), so a tick reads in proportion to what is new, not to the history. Before: an
    ORDER BY over the new rows' UNION ALL had SQLite scan the whole unique index of the bars
    and of the news, and the news, read without their source, searched every row of each
    symbol (0.5-0.8 s a tick at 5,000 symbols with a year of history). The
    statements are those SQLite ran (its trace callback: the reads streamed on the driver's
    own cursor included), with their values in them."""
    url, path = _setup(tmp_path)
    ensemble, broker = Ensemble.from_strategy(path), PaperBroker()
    statements: list[str] = []
    with get_session(url) as session:
        run_tick(session, ensemble, SYMBOLS, broker, as_of=DAY)
        dbapi = session.connection().connection.dbapi_connection
        dbapi.set_trace_callback(statements.append)
        try:
            report = run_tick(session, ensemble, SYMBOLS, broker, as_of=DAY + dt.timedelta(1))
        finally:
            dbapi.set_trace_callback(None)
    assert len(report.decisions) == len(SYMBOLS)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    tables = " ".join(selects)
    for table in ("FROM bars", "FROM news_sentiment", "FROM macro_sentiment", "FROM decisions"):
        assert table in tables  # the tick read each of them
    with contextlib.closing(sqlite3.connect(tmp_path / "otonom.db")) as con:
        for statement in selects:
            plan = [row[3] for row in con.execute("EXPLAIN QUERY PLAN " + statement)]
            scans = [step for step in plan if step.startswith("SCAN") and "CONSTANT" not in step]
            # the marks' count of the symbols: the universe's table, not a history
            scans = [step for step in scans if not step.startswith("SCAN symbols USING COVERING")]
            assert scans == [], (statement, plan)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_bar_imported_out_of_order_is_read_whole_again(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """A bar missing when the cache read its symbol, imported later (a new row dated before
    the cached ones): the next tick reads that symbol whole; its state is the cold one, and
    not the one without the bar. On SQLite and PostgreSQL (row ids from a sequence)."""
    pg = request.getfixturevalue("postgres_url") if store == "postgresql" else None
    url, path = _setup(tmp_path, pg)
    gap = DAY - dt.timedelta(days=5)
    with get_session(url) as session:
        sid = session.scalars(select(Symbol.id).where(Symbol.name == SYMBOLS[0])).one()
        bar = session.scalars(select(Bar).where(Bar.symbol_id == sid, Bar.date == gap)).one()
        values = {c: getattr(bar, c) for c in ("symbol_id", "date", "open", "high", "low",
                                                 "close", "volume")}  # fmt: skip
        session.execute(delete(Bar).where(Bar.id == bar.id))
        session.commit()
    warm = Ensemble.from_strategy(path)
    nxt = DAY + dt.timedelta(days=1)
    with get_session(url) as session:
        warm.decide(session, SYMBOLS, DAY, _portfolios(SYMBOLS))
    without = _cold(url, path, SYMBOLS, nxt)
    with get_session(url) as session:
        session.add(Bar(**values))
        session.commit()
    with get_session(url) as session:
        got = [_key(d) for d in warm.decide(session, SYMBOLS, nxt, _portfolios(SYMBOLS))]
    cold = _cold(url, path, SYMBOLS, nxt)
    assert got == cold
    assert got[0] != without[0]  # the bar changes the state: the test can see a stale cache
    assert got[1:] == without[1:]


def test_a_symbol_added_to_the_universe_and_late_news(tmp_path: Path) -> None:
    url, path = _setup(tmp_path)
    warm = Ensemble.from_strategy(path)
    nxt = DAY + dt.timedelta(days=1)
    with get_session(url) as session:
        warm.decide(session, SYMBOLS[:2], DAY, _portfolios(SYMBOLS[:2]))
        sid = session.scalars(select(Symbol.id).where(Symbol.name == SYMBOLS[1])).one()
        session.execute(delete(NewsSentiment).where(NewsSentiment.symbol_id == sid,
                                                    NewsSentiment.date == nxt))  # fmt: skip
        session.add(NewsSentiment(symbol_id=sid, source="synthetic", date=nxt, score=-0.75))
        session.commit()
    with get_session(url) as session:
        got = [_key(d) for d in warm.decide(session, SYMBOLS, nxt, _portfolios(SYMBOLS))]
    assert got == _cold(url, path, SYMBOLS, nxt)
    assert got[1][5]["news"] is not None


def _live_rows(session: Any) -> list[Any]:
    """The strategy's live decisions: each one's symbol, date, decision, portfolio and
    signals, in order."""
    return list(
        session.execute(
            select(Decision.symbol_id, Decision.date, Decision.action, Decision.strength,
                   Decision.position, Decision.equity, Decision.days_since_last_trade,
                   *(getattr(Decision, c) for c in SIGNAL_COLUMNS))
            .where(Decision.live_strategy == "live_cache")
            .order_by(Decision.symbol_id, Decision.date)
        ).all()
    )  # fmt: skip


class _Replays(PaperBroker):
    """A paper broker that counts the sleeves it replays in a tick (those decided before
    whose whole history and live decisions the tick gives it)."""

    replayed = 0

    def holdings(self, inputs: Any, params: Any, capital: float) -> Any:
        self.replayed = sum(
            d is not None and w is not None and v is not None
            for d, w, v in zip(inputs.last_dates, inputs.wholes, inputs.lives, strict=True)
        )
        return super().holdings(inputs, params, capital)


def test_a_restarted_daemon_replays_once_then_steps(tmp_path: Path) -> None:
    """Ticks by one ensemble and broker, then by new ones (a restart: the sleeves replayed from
    the stored live decisions once), record the rows that ticks by new ones each day record
    (every sleeve replayed each tick) on a copy of the store."""
    rows = []
    for restart_every in (1, 4):
        folder = tmp_path / str(restart_every)
        folder.mkdir()
        url, path = _setup(folder)
        day, n = DAY, 0
        ensemble, broker = Ensemble.from_strategy(path), PaperBroker()
        with get_session(url) as session:
            while day <= LAST:
                if n % restart_every == 0:
                    ensemble, broker = Ensemble.from_strategy(path), _Replays()
                report = run_tick(session, ensemble, SYMBOLS, broker, as_of=day)
                assert len(report.decisions) == 3
                # replayed once, on a restart after the first tick; then stepped
                assert broker.replayed == (3 if n and n % restart_every == 0 else 0), n
                day, n = day + dt.timedelta(days=1), n + 1
            rows.append(_live_rows(session))
    assert len(rows[0]) == 3 * 12
    assert rows[0] == rows[1]


def _kept_and_fresh(
    tmp_path: Path,
    offsets: list[int],
    replays: Callable[[bool, int], int],
    before: Callable[[Any, int, dt.date], None] | None = None,
    pg: str | None = None,
) -> list[list[Any]]:
    """The live rows of ticks on ``DAY + offsets`` (each on its own store: a SQLite file, or
    the PostgreSQL database ``pg`` emptied first): by one ensemble and broker kept over them,
    then by new ones every tick. ``replays(kept, n)``: how many sleeves tick n replays
    (checked; a tick on a day ticked before decides nothing and replays none);
    ``before(session, n, day)``: a change to the store before tick n (committed)."""
    rows = []
    for kept in (True, False):
        folder = tmp_path / str(kept)
        folder.mkdir()
        url, path = _setup(folder, pg)
        ensemble, broker = Ensemble.from_strategy(path), _Replays()
        with get_session(url) as session:
            for n, k in enumerate(offsets):
                if not kept:
                    ensemble, broker = Ensemble.from_strategy(path), _Replays()
                day = DAY + dt.timedelta(days=k)
                if before is not None:
                    before(session, n, day)
                    session.commit()
                again = k in offsets[:n]
                broker.replayed = 0
                decided = run_tick(session, ensemble, SYMBOLS, broker, as_of=day).decisions
                assert len(decided) == (0 if again else 3)
                assert broker.replayed == (0 if again else replays(kept, n)), (kept, n)
            rows.append(_live_rows(session))
    assert len(rows[0]) == 3 * len(set(offsets))
    return rows


def test_a_kept_sleeve_resumes_over_days_the_daemon_missed_as_a_replay_does(
    tmp_path: Path,
) -> None:
    """A daemon down some days (no tick, so no decision: a HOLD there): one broker kept over
    the gaps (each sleeve resumed over the bars missed from the state it kept, none replayed)
    records the rows of new brokers every tick (each sleeve replayed from its first live
    decision)."""
    ticked = [0, 1, 2, 4, 5, 8, 9, 11]  # days after DAY: 3, 6, 7 and 10 missed
    kept, fresh = _kept_and_fresh(tmp_path, ticked, lambda kept, n: 3 if n and not kept else 0)
    assert len({r[4] for r in kept}) > 3  # the sleeves traded
    assert kept == fresh


def _correct(session: Any, day: dt.date, back: int, how: str) -> None:
    """Change the store in place between two ticks, ``how``: ``"writers"`` as ``otonom data
    import-csv --replace`` or a revised sentiment file does (the store's ``update_*``), or
    ``"sql"`` as another tool's SQL does (an ``UPDATE`` keeping each row's id): the close of
    DEMO-BTC's bar ``back`` days before the tick of ``day`` and the open after it, DEMO-ETH's
    newest news score on or before ``day`` (the score that tick reads: held ahead by the cache
    when it is dated ``day``) and the macro score of the day before (the previous tick's,
    cached), the macro score of ``day`` deleted (so that tick reads the one before);
    ``"replace"``: the same changes as another tool's upsert makes them (SQLite: ``INSERT OR
    REPLACE``, a new row under a new id, the old one deleted unseen by any trigger;
    PostgreSQL: ``ON CONFLICT DO UPDATE``, an update); or ``"delete"``: those two bars, that
    news score and both macro scores deleted."""
    from otonom_runtime.store import MacroSentiment, update_bars, update_macro, update_news

    btc, eth = (session.execute(select(Symbol.id).where(Symbol.name == n)).scalar_one()
                for n in SYMBOLS[:2])  # fmt: skip
    at = day - dt.timedelta(days=back + 1)
    first, second = session.execute(
        select(Bar.id, Bar.close, Bar.open)
        .where(Bar.symbol_id == btc, Bar.date.in_([at, at + dt.timedelta(days=1)]))
        .order_by(Bar.date)
    ).all()
    news = session.execute(
        select(NewsSentiment.id, NewsSentiment.score)
        .where(NewsSentiment.symbol_id == eth, NewsSentiment.date <= day)
        .order_by(NewsSentiment.date.desc())
        .limit(1)
    ).one()
    macro, today = session.execute(
        select(MacroSentiment.id, MacroSentiment.score)
        .where(MacroSentiment.date.in_([day - dt.timedelta(days=1), day]))
        .order_by(MacroSentiment.date)
    ).all()
    session.execute(text("DELETE FROM macro_sentiment WHERE id = :i"), {"i": today.id})
    score, mood = -0.9 if news.score > 0 else 0.9, -0.9 if macro.score > 0 else 0.9
    if how == "writers":
        update_bars(session, [{"id": first.id, "close": first.close * 1.25, "open": first.open},
                              {"id": second.id, "close": second.close,
                               "open": second.open * 1.25}])  # fmt: skip
        update_news(session, [{"id": news.id, "score": score}])
        update_macro(session, [{"id": macro.id, "score": mood}])
    elif how == "sql":
        for sql, values in (
            ("UPDATE bars SET close = close * 1.25 WHERE id = :i", {"i": first.id}),
            ("UPDATE bars SET open = open * 1.25 WHERE id = :i", {"i": second.id}),
            ("UPDATE news_sentiment SET score = :s WHERE id = :i", {"i": news.id, "s": score}),
            ("UPDATE macro_sentiment SET score = :s WHERE id = :i", {"i": macro.id, "s": mood}),
        ):
            session.execute(text(sql), values)
    elif how == "replace":
        sqlite = session.connection().dialect.name == "sqlite"
        for table, key, column, factor, i in (
            ("bars", "symbol_id, date", "close", 1.25, first.id),
            ("bars", "symbol_id, date", "open", 1.25, second.id),
            ("news_sentiment", "symbol_id, source, date", "score", -1.0, news.id),
            ("macro_sentiment", "source, date", "score", -1.0, macro.id),
        ):
            columns = [c.name for c in Base.metadata.tables[table].columns if c.name != "id"]
            values = ", ".join(f"{c} * {factor}" if c == column else c for c in columns)
            head = "INSERT OR REPLACE INTO" if sqlite else "INSERT INTO"
            tail = "" if sqlite else (
                f" ON CONFLICT ({key}) DO UPDATE SET {column} = excluded.{column}")  # fmt: skip
            session.execute(text(
                f"{head} {table} ({', '.join(columns)}) SELECT {values} FROM {table} "
                f"WHERE id = :i{tail}"), {"i": i})  # fmt: skip
    else:
        for table, ids in (("bars", [first.id, second.id]), ("news_sentiment", [news.id]),
                           ("macro_sentiment", [macro.id])):  # fmt: skip
            for i in ids:
                session.execute(text(f"DELETE FROM {table} WHERE id = :i"), {"i": i})


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
@pytest.mark.parametrize("how", ["writers", "sql", "replace", "delete"])
@pytest.mark.parametrize("back", [3, 200], ids=["in-the-window", "before-the-window"])
def test_a_bar_or_score_changed_in_place_or_deleted_is_decided_on_by_the_next_tick(
    tmp_path: Path, back: int, how: str, store: str, request: pytest.FixtureRequest
) -> None:
    """Bars, a news score and a macro score changed in place (by the store's writers, by raw
    SQL keeping their ids, by an upsert) or deleted between two ticks: a kept daemon reads the
    changed symbols whole again (the store's change log; a bar replaced under a new id by its
    values) and replays their sleeves (DEMO-BTC for its bars, DEMO-ETH for its news, which a
    SQLite ``INSERT OR REPLACE`` gives as a new score of its day: once, on the tick after),
    recording the rows of new daemons every tick (each reading the store whole). On SQLite and
    PostgreSQL."""
    pg = request.getfixturevalue("postgres_url") if store == "postgresql" else None
    changed = 1 if how == "replace" and store == "sqlite" else 2

    def correct(session: Any, n: int, day: dt.date) -> None:
        if n == 4:
            _correct(session, day, back, how)

    kept, fresh = _kept_and_fresh(
        tmp_path, list(range(8)),
        lambda kept, n: (changed if n == 4 else 0) if kept else 3 * (n > 0), correct, pg,
    )  # fmt: skip
    assert kept == fresh


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_change_read_by_a_tick_that_decides_nothing_is_replayed_by_the_next_one(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """Bars deleted (and scores) before a tick that has nothing new to decide (the day ticked
    before): that tick reads the changed symbols whole but gives no broker their sleeves; the
    next tick that decides them replays those sleeves (on the history read whole again), as
    new daemons do. Before, the kept sleeves were stepped over the deleted bars' effects."""
    pg = request.getfixturevalue("postgres_url") if store == "postgresql" else None

    def delete(session: Any, n: int, day: dt.date) -> None:
        if n == 5:
            _correct(session, day, 3, "delete")

    kept, fresh = _kept_and_fresh(
        tmp_path, [0, 1, 2, 3, 4, 4, 5, 6],
        lambda kept, n: (2 if n == 6 else 0) if kept else 3 * (n > 0), delete, pg,
    )  # fmt: skip
    assert kept == fresh


def test_bars_under_ids_sqlite_gives_again_are_read_by_a_running_daemon(tmp_path: Path) -> None:
    """SQLite gives a table's largest ids again once those rows are deleted: DEMO-SOL's two
    newest bars (the table's largest ids) deleted by one statement and DEMO-ETH's next two
    bars inserted under those ids, ids the kept daemon had read up to. The delete's log entry
    lowers the daemon's bound for the bars to the largest id left, so it reads both bars and
    decides them, as new daemons do (each tick)."""
    rows = []
    cut = DAY + dt.timedelta(days=4)
    after = [cut + dt.timedelta(days=k) for k in (1, 2)]
    for kept in (True, False):
        folder = tmp_path / str(kept)
        folder.mkdir()
        url, path = _setup(folder)
        ensemble, broker = Ensemble.from_strategy(path), PaperBroker()
        with get_session(url) as session:
            sid = {n: session.execute(select(Symbol.id).where(Symbol.name == n)).scalar_one()
                   for n in SYMBOLS}  # fmt: skip
            eth, sol = sid["DEMO-ETH"], sid["DEMO-SOL"]
            values = [session.execute(
                select(Bar.open, Bar.high, Bar.low, Bar.close, Bar.volume).where(
                    Bar.symbol_id == eth, Bar.date == day)).one()._asdict() for day in after
            ]  # fmt: skip
            session.execute(delete(Bar).where(Bar.symbol_id.in_([eth, sol]), Bar.date > cut))
            session.commit()
            for n in range(7):
                if not kept:
                    ensemble, broker = Ensemble.from_strategy(path), PaperBroker()
                if n == 3:
                    top = session.execute(select(Bar.id, Bar.symbol_id).order_by(Bar.id.desc())
                                          .limit(2)).all()  # fmt: skip
                    assert [s for _, s in top] == [sol, sol]
                    session.execute(delete(Bar).where(Bar.id.in_([i for i, _ in top])))
                    for day, bar in zip(after, values, strict=True):
                        session.add(Bar(symbol_id=eth, date=day, **bar))
                        session.flush()
                    given = session.execute(
                        select(Bar.id).where(Bar.symbol_id == eth, Bar.date.in_(after))
                    ).scalars().all()  # fmt: skip
                    assert sorted(given) == sorted(i for i, _ in top)  # the ids given again
                    session.commit()
                run_tick(session, ensemble, SYMBOLS, broker, as_of=DAY + dt.timedelta(days=n))
            rows.append(_live_rows(session))
    assert rows[0] == rows[1]
    assert {(eth, day) for day in after} <= {(r[0], r[1]) for r in rows[0]}


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_symbol_whose_kind_changed_in_place_reads_its_new_sources_at_once(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """DEMO-ETH marked a real symbol in place between two ticks (its row updated: it then
    reads the ``"user"`` news and macro sources, which hold no scores): a kept daemon reads the
    names again and the symbol whole (its sleeve replayed once), recording the rows of new
    daemons every tick. On SQLite and PostgreSQL."""
    pg = request.getfixturevalue("postgres_url") if store == "postgresql" else None

    def real(session: Any, n: int, day: dt.date) -> None:
        if n == 4:
            session.execute(text("UPDATE symbols SET is_synthetic = :f WHERE name = 'DEMO-ETH'"),
                            {"f": False})  # fmt: skip

    kept, fresh = _kept_and_fresh(
        tmp_path, list(range(7)), lambda kept, n: (1 if n == 4 else 0) if kept else 3 * (n > 0),
        real, pg,
    )  # fmt: skip
    assert kept == fresh


def test_a_change_read_again_behind_a_postgresql_writer_in_progress_is_acted_on_once(
    tmp_path: Path, postgres_url: str
) -> None:
    """While a writer that began before a change is still in progress, the tick's bound stays
    back and it reads the change log's entry again each tick: the changed symbol is read whole
    and its sleeve replayed once, not on every tick until that writer ends."""
    url, path = _setup(tmp_path, postgres_url)
    ensemble, broker = Ensemble.from_strategy(path), _Replays()
    replays = []
    with get_session(url) as session, get_engine(url).connect() as writer:
        for n in range(5):
            if n == 1:  # a writer begins (its transaction id taken) and stays in progress
                writer.begin()
                writer.execute(text("SELECT pg_current_xact_id()"))
            if n == 2:  # another one changes a bar of DEMO-BTC in place, and commits
                session.execute(text(
                    "UPDATE bars SET close = close * 1.1 WHERE symbol_id = (SELECT id FROM "
                    "symbols WHERE name = 'DEMO-BTC') AND date = :d"),
                    {"d": DAY - dt.timedelta(days=5)})  # fmt: skip
                session.commit()
            if n == 4:
                writer.commit()
            run_tick(session, ensemble, SYMBOLS, broker, as_of=DAY + dt.timedelta(days=n))
            replays.append(broker.replayed)
            session.commit()
    assert replays == [0, 0, 1, 0, 0]


def _csv(path: Path, days: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, days)))
    lines = ["Date,Open,High,Low,Close,Volume"]
    for i, c in enumerate(close.tolist()):
        day = dt.date(2023, 1, 1) + dt.timedelta(days=i)
        lines.append(f"{day.isoformat()},{c:.4f},{c * 1.01:.4f},{c * 0.99:.4f},{c:.4f},1000")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _acme(folder: Path) -> tuple[Path, str, Path]:
    """The strategy of ``_setup``, an empty store ``acme.db`` and a bars folder holding
    ACME.csv (200 days from 2023-01-01: past the warm-up)."""
    _, path = _setup(folder)
    url = f"sqlite:///{(folder / 'acme.db').as_posix()}"
    init_db(url)
    bars = folder / "bars"
    bars.mkdir()
    _csv(bars / "ACME.csv", 200)
    return path, url, bars


def test_the_daemon_pulls_new_bars_from_a_csv_folder(tmp_path: Path) -> None:
    """``otonom daemon --bars-from DIR --once`` (a real subprocess): the first run imports
    ACME.csv through the CSV importer and decides its newest bar; a bar appended to the file
    is imported and decided by the next run; a file with a changed bar is refused (logged),
    nothing of it written, and the tick goes on with the stored bars."""
    path, url, folder = _acme(tmp_path)
    cmd = ["daemon", "--strategy-path", str(path), "--symbols", "ACME", "--once"]
    first = _run(url, tmp_path, *cmd, "--bars-from", str(folder))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("tick run 1: 1 decision, 0 symbols decided"), first.stdout
    assert "2023-07-19" in first.stdout  # the file's last day
    _csv(folder / "ACME.csv", 201)
    second = _run(url, tmp_path, *cmd, "--bars-from", str(folder))
    assert second.returncode == 0, second.stderr
    assert "2023-07-20" in second.stdout, second.stdout
    text = (folder / "ACME.csv").read_text(encoding="utf-8").replace(",1000\n", ",2000\n", 1)
    (folder / "ACME.csv").write_text(text, encoding="utf-8")
    third = _run(url, tmp_path, *cmd, "--bars-from", str(folder))
    assert third.returncode == 0, third.stderr
    assert third.stdout.strip() == "tick: nothing new (1 symbol decided already)", third.stdout
    assert "bars of ACME not imported" in third.stderr
    assert "differs" in third.stderr
    assert "add --replace" not in third.stderr  # the daemon has no such flag
    fix = f"`otonom data import-csv {folder / 'ACME.csv'} --symbol ACME --replace`"
    assert third.stderr.rstrip().endswith(f"correct the file, or overwrite them with {fix}")
    with get_session(url) as session:
        assert len(session.scalars(select(Bar.id)).all()) == 201
    missing = _run(url, tmp_path, *cmd, "--bars-from", str(tmp_path / "nowhere"))
    assert missing.returncode != 0
    assert "is not a folder" in missing.stderr


def _run(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "otonom_runtime", "--database-url", url, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_csv_folder_reads_a_file_again_only_when_it_changed(tmp_path: Path) -> None:
    from otonom_runtime.daemon import CsvFolderBars

    url = f"sqlite:///{(tmp_path / 'acme.db').as_posix()}"
    init_db(url)
    _csv(tmp_path / "ACME.csv", 50)
    source = CsvFolderBars(tmp_path)
    with get_session(url) as session:
        first = source.pull(session, ["ACME", "NOFILE"])
        again = source.pull(session, ["ACME"])
    assert [(r.inserted, r.last) for r in first] == [(50, dt.date(2023, 2, 19))]
    assert again == []  # unchanged since the last pull: not read
    _csv(tmp_path / "ACME.csv", 52)
    with get_session(url) as session:
        more = source.pull(session, ["ACME"])
    assert [(r.inserted, r.unchanged) for r in more] == [(2, 50)]


def test_a_refused_csv_file_is_logged_once_until_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file whose bar differs from the stored one is refused and logged at the first pull,
    left alone (not read, not logged) while unchanged, and read again once it changes."""
    from otonom_runtime.daemon import CsvFolderBars

    url = f"sqlite:///{(tmp_path / 'acme.db').as_posix()}"
    init_db(url)
    _csv(tmp_path / "ACME.csv", 50)
    with get_session(url) as session:
        CsvFolderBars(tmp_path).pull(session, ["ACME"])
    _csv(tmp_path / "ACME.csv", 51, seed=2)  # every stored bar changed, one added
    source = CsvFolderBars(tmp_path)
    with caplog.at_level("WARNING", logger="otonom_runtime.daemon"):
        with get_session(url) as session:
            assert source.pull(session, ["ACME"]) == []
            assert source.pull(session, ["ACME"]) == []
        assert len(caplog.records) == 1
        assert "50 bars differ" in caplog.records[0].getMessage()
        _csv(tmp_path / "ACME.csv", 52, seed=2)
        with get_session(url) as session:
            assert source.pull(session, ["ACME"]) == []
        assert len(caplog.records) == 2


def test_symbols_left_out_of_a_call_are_read_whole_when_they_return(tmp_path: Path) -> None:
    """A call without some cached symbols (a universe that shrank, a Dask worker given another
    partition) moves the cache past days those symbols did not read: they are forgotten, and
    read whole when they return, deciding as cold."""
    url, path = _setup(tmp_path)
    warm = Ensemble.from_strategy(path)
    days = [DAY + dt.timedelta(days=k) for k in range(3)]
    with get_session(url) as session:
        warm.decide(session, SYMBOLS[:2], days[0], _portfolios(SYMBOLS[:2]))
        warm.decide(session, SYMBOLS[2:], days[1], _portfolios(SYMBOLS[2:]))
        got = [_key(d) for d in warm.decide(session, SYMBOLS, days[2], _portfolios(SYMBOLS))]
    assert got == _cold(url, path, SYMBOLS, days[2])


def test_a_symbol_added_to_a_running_daemon_that_the_store_lacks_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real loop (``run_daemon`` with a CSV folder, ticks 10 ms apart) on a universe that
    grows while it runs: NOPE (no file, not in the store) at the second tick is left out with
    one warning, not repeated at the third; BETA, added at the fourth with its file in the
    folder, is imported and decided at once (NOPE still out, no new warning); ZED at the fifth
    changes the set left out: warned again. At the first tick an unknown symbol is a typo:
    the daemon fails."""
    import signal

    from otonom_runtime import UnknownSymbolError
    from otonom_runtime.daemon import CsvFolderBars, TickReport, run_daemon

    path, url, folder = _acme(tmp_path)
    universes = [["ACME"], ["ACME", "NOPE"], ["ACME", "NOPE"], ["ACME", "NOPE", "BETA"],
                 ["ACME", "NOPE", "BETA", "ZED"]]  # fmt: skip
    reports: list[TickReport] = []

    def universe() -> list[str]:
        if len(reports) == 3:
            _csv(folder / "BETA.csv", 200, seed=2)
        return universes[len(reports)]

    def report(r: TickReport) -> None:
        reports.append(r)
        if len(reports) == len(universes):
            os.kill(os.getpid(), signal.SIGTERM)

    def daemon(symbols: Any, **kw: Any) -> int:
        return run_daemon(lambda: get_session(url), Ensemble.from_strategy(path), symbols,
                          PaperBroker(), bars=CsvFolderBars(folder), as_of=dt.date(2023, 12, 31),
                          interval_s=0.01, **kw)  # fmt: skip

    with caplog.at_level("WARNING", logger="otonom_runtime.daemon"):
        assert daemon(universe, report=report) == 5
    decided = [[d.symbol for d in r.decisions] for r in reports]
    assert decided == [["ACME"], [], [], ["BETA"], []]
    assert [r.up_to_date for r in reports] == [[], ["ACME"], ["ACME"], ["ACME"], ["ACME", "BETA"]]
    warned = [r.getMessage() for r in caplog.records if "not in the store" in r.getMessage()]
    assert warned == [
        "not in the store: NOPE; left out of the ticks until their bars are imported (otonom "
        "data import-csv); this tick decides the other 1 symbol",
        "not in the store: NOPE, ZED; left out of the ticks until their bars are imported "
        "(otonom data import-csv); this tick decides the other 2 symbols",
    ]
    calls: list[int] = []

    def only_unknown() -> list[str]:  # the 2nd tick has no stored symbol: it is skipped
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the tick in progress finishes
        return ["NOPE"] if len(calls) == 2 else ["ACME"]

    caplog.clear()
    reports.clear()
    with caplog.at_level("WARNING", logger="otonom_runtime.daemon"):
        assert daemon(only_unknown, report=reports.append) == 2
    assert len(calls) == 3
    assert [r.up_to_date for r in reports] == [["ACME"], ["ACME"]]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("not in the store: NOPE; ")
    assert warning.endswith("this tick decides the other 0 symbols")
    with pytest.raises(UnknownSymbolError, match="unknown symbol 'NOPE'"):
        daemon(lambda: ["ACME", "NOPE"])
    dispose_engines()


def test_a_live_tick_that_decides_old_bars_warns_a_replay_does_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``run_daemon`` once on six symbols whose newest bar is of 2020 and one with a bar of
    today: a replay (``as_of``) decides old bars on purpose and warns of nothing; a live tick
    (no ``as_of``) logs one warning counting the old bars decided, five of them named, today's
    bar not among them."""
    from otonom_runtime.daemon import OLD_BAR_DAYS, TickReport, run_daemon

    url, path = _setup(tmp_path)
    today = dt.datetime.now(dt.timezone.utc).date()
    more = ["DEMO-ADA", "DEMO-DOT", "DEMO-XRP"]
    with get_session(url) as session:
        write_synthetic(session, more, FIRST, LAST, 7)
        write_synthetic(session, ["DEMO-NOW"], today - dt.timedelta(days=400), today, 7)
    names = ["DEMO-NOW", *SYMBOLS, *more]
    reports: list[TickReport] = []

    def once(as_of: dt.date | None) -> None:
        run_daemon(lambda: get_session(url), Ensemble.from_strategy(path), lambda: names,
                   PaperBroker(), once=True, as_of=as_of, report=reports.append)  # fmt: skip

    with caplog.at_level("WARNING", logger="otonom_runtime.daemon"):
        once(LAST - dt.timedelta(days=1))
        assert len(reports[0].decisions) == 6
        assert caplog.records == []
        once(None)
    assert len(reports[1].decisions) == 7
    (warning,) = [r.getMessage() for r in caplog.records]
    old = ", ".join(f"{s} {LAST.isoformat()}" for s in [*SYMBOLS, *more][:5])
    assert warning == (
        f"live tick decided bars more than {OLD_BAR_DAYS} days before today "
        f"({today.isoformat()}): 6 of 7, {old}, ...; the store's newest bars of these symbols "
        "are old: import newer ones, or replay with --as-of"
    )
    dispose_engines()


def test_the_live_decisions_the_cache_recorded_are_verified_each_tick(tmp_path: Path) -> None:
    """``TickCache.live`` after a tick: a symbol whose newest live decision is the one the
    cache recorded is taken from the one statement's tail (not read whole); one whose newest is
    a later decision another process recorded, or whose recorded one is gone, is read whole
    (``whole``), its newest decision then the store's."""
    url, path = _setup(tmp_path)
    ensemble = Ensemble.from_strategy(path)
    cache, name = ensemble.cache, ensemble.name
    with get_session(url) as session:
        report = run_tick(session, ensemble, SYMBOLS, PaperBroker(), as_of=DAY)
        mine = {d.symbol: (d.date, int(d.action), d.strength) for d in report.decisions}
        cached, _ = cache.refresh(session, ensemble.config, SYMBOLS, DAY)
        ids = dict(zip(cached.symbols, cached.ids, strict=True))
        last, whole = cache.live(session, name, cached)
        assert whole == {}  # each verified by the tail: none read whole
        assert {s: tuple(last[ids[s]]) for s in SYMBOLS} == mine
        later = session.scalars(select(Decision).where(Decision.symbol_id == ids["DEMO-BTC"]))
        row = later.one()
        session.add(
            Decision(
                run_id=row.run_id,
                symbol_id=row.symbol_id,
                date=DAY + dt.timedelta(days=1),
                action=2,
                strength=0.375,
                position=0.0,
                leverage=0.0,
                cash_fraction=1.0,
                days_since_last_trade=float("inf"),
                equity=row.equity,
                live_strategy=name,
            )
        )  # another process's later decision
        session.execute(delete(Decision).where(Decision.symbol_id == ids["DEMO-ETH"]))
        session.commit()
        last, whole = cache.live(session, name, cached)
    assert sorted(whole) == [ids["DEMO-BTC"]]  # read whole; DEMO-ETH has none left
    assert tuple(last[ids["DEMO-BTC"]]) == (DAY + dt.timedelta(days=1), 2, 0.375)
    assert ids["DEMO-ETH"] not in last
    assert tuple(last[ids["DEMO-SOL"]]) == mine["DEMO-SOL"]


def test_refresh_reuses_a_steady_universe_and_follows_any_change(tmp_path: Path) -> None:
    """``TickCache.refresh`` day after day, the universe kept, reordered, shrunk, grown back
    and given a symbol without bars: each call's symbols, newest dates and market features
    equal a cold cache's for the same names and day (a steady call reuses the last one's
    symbols: the same lists; any change builds them anew)."""
    url, path = _setup(tmp_path)
    with get_session(url) as session:
        get_or_create_symbol(session, "NO-BARS", source="test")
        session.commit()
    warm = Ensemble.from_strategy(path)
    universes = [
        SYMBOLS,
        SYMBOLS,
        SYMBOLS,
        SYMBOLS[::-1],
        SYMBOLS[:2],
        SYMBOLS,
        [*SYMBOLS, "NO-BARS"],
        SYMBOLS,
        SYMBOLS,
    ]
    previous = None
    with get_session(url) as session:
        for k, names in enumerate(universes):
            day = DAY + dt.timedelta(days=k)
            got, no_bars = warm.cache.refresh(session, warm.config, names, day)
            cold = Ensemble.from_strategy(path)
            want, want_no_bars = cold.cache.refresh(session, cold.config, names, day)
            assert no_bars == want_no_bars == (["NO-BARS"] if "NO-BARS" in names else [])
            assert got.symbols == want.symbols == [n for n in names if n != "NO-BARS"]
            assert got.ids == want.ids
            assert got.newest == want.newest == [day] * len(got)
            assert got.sources == want.sources
            assert np.array_equal(warm.cache.market(got), cold.cache.market(want)), k
            if k in (1, 2, 8):  # the same universe as the call before: its lists reused
                assert previous is not None
                assert got.symbols is previous.symbols
            previous = got


def test_news_dated_after_a_symbols_newest_bar_wait_for_its_bar(tmp_path: Path) -> None:
    """A symbol whose bars stop while its news go on two more days: the news dated after its
    newest bar are kept apart, not its latest score, until its bars arrive (imported late);
    then the newest of them is (no later score comes); a score re-imported for an old day
    changes nothing. Each tick decides as a cold read does."""
    url, path = _setup(tmp_path)
    late = SYMBOLS[2]
    with get_session(url) as session:
        sid = session.scalars(select(Symbol.id).where(Symbol.name == late)).one()
        kept = session.scalars(
            select(Bar).where(Bar.symbol_id == sid, Bar.date > DAY, Bar.date <= LAST)
        ).all()
        saved = [
            {c: getattr(b, c) for c in ("symbol_id", "date", "open", "high", "low", "close",
                                         "volume")}
            for b in kept
        ]  # fmt: skip
        session.execute(delete(Bar).where(Bar.symbol_id == sid, Bar.date > DAY))
        two = DAY + dt.timedelta(days=2)  # its news stop two days after its bars
        session.execute(
            delete(NewsSentiment).where(NewsSentiment.symbol_id == sid, NewsSentiment.date > two)
        )
        session.commit()
    warm = Ensemble.from_strategy(path)
    with get_session(url) as session:
        for k in range(3):  # its newest bar stays DAY; its news go on
            day = DAY + dt.timedelta(days=k)
            got = [_key(d) for d in warm.decide(session, SYMBOLS, day, _portfolios(SYMBOLS))]
            assert got == _cold(url, path, SYMBOLS, day), day
            assert got[2][1] == DAY
        session.execute(Bar.__table__.insert(), saved)  # its bars, imported late
        old = session.scalars(
            select(NewsSentiment).where(
                NewsSentiment.symbol_id == sid, NewsSentiment.date == DAY - dt.timedelta(days=5)
            )
        ).one()
        session.delete(old)
        session.flush()
        session.add(NewsSentiment(symbol_id=sid, source=old.source, date=old.date, score=0.9))
        session.commit()
        for k in range(3, 6):
            day = DAY + dt.timedelta(days=k)
            got = [_key(d) for d in warm.decide(session, SYMBOLS, day, _portfolios(SYMBOLS))]
            assert got == _cold(url, path, SYMBOLS, day), day
            assert got[2][1] == day
            assert got[2][5]["news"] is not None


@pytest.mark.parametrize("slack", [1, 3])
def test_the_windows_move_on_and_are_compacted_deciding_as_cold_ones(
    tmp_path: Path, slack: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache's windows move on in their buffers as steady ticks append a bar each, and are
    copied back to the buffers' start every ``_SLACK`` bars (here every 1 and 3): each day's
    decisions equal a cold read's, across the copies, with a symbol's bars read whole again
    (imported out of order) between them."""
    from otonom_runtime.daemon import cache

    monkeypatch.setattr(cache, "_SLACK", slack)
    url, path = _setup(tmp_path)
    warm = Ensemble.from_strategy(path)
    day = DAY
    with get_session(url) as session:
        while day <= LAST:
            if day == DAY + dt.timedelta(days=4):  # a bar out of order: read whole again
                bar = session.scalars(
                    select(Bar).join(Symbol).where(Symbol.name == SYMBOLS[0], Bar.date == DAY)
                ).one()
                values = {c: getattr(bar, c) for c in ("symbol_id", "date", "open", "high",
                                                       "low", "close", "volume")}  # fmt: skip
                session.delete(bar)
                session.flush()
                session.execute(Bar.__table__.insert(), [values])
                session.commit()
            got = [_key(d) for d in warm.decide(session, SYMBOLS, day, _portfolios(SYMBOLS))]
            assert got == _cold(url, path, SYMBOLS, day), day
            day += dt.timedelta(days=1)


def _hold_back(url: str, after: dt.date) -> dict[dt.date, dict[str, list[dict[str, Any]]]]:
    """Take the bars and news dated after ``after`` out of the store: by date, each table's
    rows as ``_import`` writes them back (new row ids, as an importing process gives them)."""
    later: dict[dt.date, dict[str, list[dict[str, Any]]]] = {}
    with get_engine(url).begin() as conn:
        for table in (Bar.__table__, NewsSentiment.__table__):
            columns = [c for c in table.c if c.name != "id"]
            for row in conn.execute(select(*columns).where(table.c.date > after)).mappings():
                later.setdefault(row["date"], {}).setdefault(table.name, []).append(dict(row))
            conn.execute(delete(table).where(table.c.date > after))
    return later


def _import(url: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    with get_engine(url).begin() as conn:
        for table in (Bar.__table__, NewsSentiment.__table__):
            if rows.get(table.name):
                conn.execute(table.insert(), rows[table.name])


@pytest.mark.parametrize("ahead", [1, 3, 32])
def test_bars_read_ahead_or_imported_day_by_day_decide_as_cold_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead: int
) -> None:
    """The cache reads each symbol's bars and news up to a horizon ``_AHEAD`` past the tick
    and holds those not due yet; ticks before the horizon read by row id alone, a tick past
    it reads the dates up to the next. Day after day, with a horizon of 1, 3 and 32 days
    (crossed every tick, every third, never) and a day skipped, every tick decides as a cold
    one: first over bars in the store from the start (read ahead, then held), then over bars
    imported before each tick (new row ids: what a daemon sees in production)."""
    from otonom_runtime.daemon import cache

    monkeypatch.setattr(cache, "_AHEAD", dt.timedelta(days=ahead))
    url, path = _setup(tmp_path)
    middle = DAY + dt.timedelta(days=5)
    later = _hold_back(url, middle)  # the store has the bars up to ``middle``
    warm = Ensemble.from_strategy(path)
    days = [DAY, *(DAY + dt.timedelta(days=k) for k in (1, 2, 4, 5))]  # DAY + 3 skipped
    with get_session(url) as session:
        for day in days:
            got = [_key(d) for d in warm.decide(session, SYMBOLS, day, _portfolios(SYMBOLS))]
            assert got == _cold(url, path, SYMBOLS, day), day
        day = middle + dt.timedelta(days=1)
        while day <= LAST:
            _import(url, later[day])
            got = [_key(d) for d in warm.decide(session, SYMBOLS, day, _portfolios(SYMBOLS))]
            assert got == _cold(url, path, SYMBOLS, day), day
            day += dt.timedelta(days=1)


def test_a_steady_tick_reads_the_imported_bars_by_row_id_alone(tmp_path: Path) -> None:
    """A steady tick whose bars and news were imported since the last one reads them by row id
    (``bars.id > ?``: no IN list of symbols, no date range of each symbol), and its decisions
    are those of a cold tick."""
    url, path = _setup(tmp_path)
    later = _hold_back(url, DAY)
    warm = Ensemble.from_strategy(path)
    nxt = DAY + dt.timedelta(days=1)
    statements: list[str] = []
    with get_session(url) as session:
        warm.decide(session, SYMBOLS, DAY, _portfolios(SYMBOLS))
        _import(url, later[nxt])
        dbapi = session.connection().connection.dbapi_connection
        dbapi.set_trace_callback(statements.append)
        try:
            got = [_key(d) for d in warm.decide(session, SYMBOLS, nxt, _portfolios(SYMBOLS))]
        finally:
            dbapi.set_trace_callback(None)
    assert got == _cold(url, path, SYMBOLS, nxt)
    assert {g[1] for g in got} == {nxt}
    reads = [
        s
        for s in statements
        if ("FROM bars" in s or "FROM news_sentiment" in s) and "max(bars.id)" not in s
    ]  # the marks' largest ids left out
    assert len(reads) == 2, reads
    for sql in reads:
        assert ".id > " in sql, sql
        assert "symbol_id IN" not in sql, sql


def test_a_bar_held_ahead_and_imported_again_before_it_is_due(tmp_path: Path) -> None:
    """A bar the cache read ahead (dated after the tick), deleted and imported again with
    another close before its day: the tick of its day decides with the new one (the later row
    replaces the held one), as a cold tick does."""
    url, path = _setup(tmp_path)
    warm = Ensemble.from_strategy(path)
    due = DAY + dt.timedelta(days=2)
    with get_session(url) as session:
        warm.decide(session, SYMBOLS, DAY, _portfolios(SYMBOLS))
    before = _cold(url, path, SYMBOLS, due)
    with get_session(url) as session:
        sid = session.scalars(select(Symbol.id).where(Symbol.name == SYMBOLS[0])).one()
        bar = session.scalars(select(Bar).where(Bar.symbol_id == sid, Bar.date == due)).one()
        values = {c: getattr(bar, c) for c in ("symbol_id", "date", "open", "high", "low",
                                                 "volume")}  # fmt: skip
        session.execute(delete(Bar).where(Bar.id == bar.id))
        session.add(Bar(**values, close=bar.close * 1.07))
        session.commit()
    with get_session(url) as session:
        for day in (DAY + dt.timedelta(days=1), due):
            got = [_key(d) for d in warm.decide(session, SYMBOLS, day, _portfolios(SYMBOLS))]
            assert got == _cold(url, path, SYMBOLS, day), day
    assert got[0] != before[0]  # the new close changes the state: the test sees a stale bar
    assert got[1:] == before[1:]


def test_a_bar_committed_late_under_a_smaller_id_is_read_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two writers import the next day's bars: one takes its row id first and commits after a
    tick, the other takes a larger id and commits before it. The tick sees the second only;
    the next one reads the first (the cache reads on from the bound before the first writer
    began, ``daemon.seen.Seen``), and decides the symbol as a cold tick does."""
    url, path = _setup(tmp_path, postgres_url)
    later = _hold_back(url, DAY)
    nxt = DAY + dt.timedelta(days=1)
    bars = {row["symbol_id"]: row for row in later[nxt]["bars"]}
    _import(url, {"bars": [], "news_sentiment": later[nxt]["news_sentiment"]})
    with get_session(url) as session:
        ids = dict(session.execute(select(Symbol.name, Symbol.id)).all())
    first, second = [bars[ids[name]] for name in SYMBOLS[:2]]
    warm = Ensemble.from_strategy(path)
    with get_session(url) as session:
        warm.decide(session, SYMBOLS, DAY, _portfolios(SYMBOLS))
    engine = get_engine(url)
    with engine.connect() as slow:
        slow.begin()
        slow.execute(Bar.__table__.insert(), [first])  # its id taken now, committed later
        with engine.begin() as quick:
            quick.execute(Bar.__table__.insert(), [second])
        with get_session(url) as session:
            seen = warm.decide(session, SYMBOLS, nxt, _portfolios(SYMBOLS))
        assert [d.date for d in seen] == [DAY, nxt, DAY]  # the first writer's bar: not yet
        slow.commit()
    with engine.begin() as conn:
        conn.execute(Bar.__table__.insert(), [bars[ids[SYMBOLS[2]]]])
    version = warm.cache._version  # bumped when a symbol is read whole
    with get_session(url) as session:
        got = [_key(d) for d in warm.decide(session, SYMBOLS, nxt, _portfolios(SYMBOLS))]
    assert got == _cold(url, path, SYMBOLS, nxt)
    assert {g[1] for g in got} == {nxt}
    assert warm.cache._version == version  # the second writer's bar, read again: dropped
