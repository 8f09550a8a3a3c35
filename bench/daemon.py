"""The daemon tick at scale (issue 16): steady tick vs per-symbol calls vs the store's I/O alone.

Usage::

    .venv/bin/python bench/daemon.py [--symbols 5000] [--rounds 3] [--sample 200] [--quick]
        [--postgres | --database-url URL] [--clock wall|cpu]

A store (a SQLite file in a temporary folder removed at the end, ``--postgres``: a throwaway
server, or ``--database-url``: an empty database) gets ``--symbols`` synthetic symbols
(``otonom_runtime.synth``, seed 7) with a year of daily history (2023); the bars, news and
macro score of each steady round's day are generated with it and held back (``_store``), to be
imported before that round (``_import``); on PostgreSQL the tables are then vacuumed and
analysed (``VACUUM
ANALYZE``, untimed: a daemon's database is in that state, autovacuum's work long done; right
after the bulk write a steady tick's news read took 170 ms instead of 15-30 ms, by whether
autovacuum had got to it yet). The strategy is
``strategies/baseline_v1.yaml`` with the RL analyst on (a 2 x 128 ONNX policy from
``otonom_runtime.testing.models``). Then, in one process:

* the cold first tick: ``run_tick`` (``Ensemble`` + ``PaperBroker``, what ``otonom daemon``
  runs) deciding every symbol's 2023-12-31 bar and recording it, nothing decided before;
* per round r (interleaved): day r's bar, news score and macro score of every symbol imported
  in a transaction on another connection (untimed, as an importing process writes them: new
  row ids), then the steady tick, ``run_tick`` at ``as_of`` 2023-12-31 + r, with the same
  ``Ensemble`` and ``PaperBroker``: their cache (``daemon.cache.TickCache``) and paper sleeves
  kept, so it reads only the new rows (by row id) and steps each sleeve once;
* the old way on the same bar: ``RlStateBuilder.build_state`` (one builder for the run, its
  cache kept) + ``RlPolicy.predict``, symbol by symbol, with the portfolio the tick decided
  with: timed on ``--sample`` symbols and scaled to all of them (the RL signal only: it
  decides less than the tick, so it is a lower bound of the per-symbol cost);
* the floor: the tick's store reads and writes alone, the SQL of ``FLOOR_SQL`` (SQLite) or
  ``FLOOR_SQL_POSTGRES`` (verbatim as a steady ``run_tick`` issues it; on SQLite the IN lists
  expanded to the symbols, on PostgreSQL each one array parameter; the rows read on from the
  largest ids before the round's import, as the tick reads them), fetched as the driver's
  tuples (on PostgreSQL the reads the tick streams as numbers in binary, as it fetches
  them), then the tick's run row and decision rows (read back) inserted again under a
  scratch strategy (the decisions as the store's writer inserts them: multi-row statements
  on SQLite, a binary ``COPY`` on PostgreSQL) and committed; nothing else.

Each timed subject starts from a collected heap (``gc.collect()``, untimed), as a tick of
``otonom daemon`` does: its loop collects while it waits between ticks (``run_daemon``), so a
tick pays no full collection of what the cold tick or the ticks before it left (one of 30-60
ms at 5,000 symbols, which landed in two of three steady rounds without it).

Ratios printed, targets from issue 16: per-symbol / steady >= 50 and steady / floor <= 1.5.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _clock import add_clock_option, chosen_clock
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from otonom_runtime.builder import RlStateBuilder
from otonom_runtime.daemon import Ensemble, PaperBroker, TickReport, run_tick
from otonom_runtime.policy import load_rl_policy
from otonom_runtime.store import (
    dispose_engines,
    get_engine,
    get_session,
    init_db,
    sentiment_source,
)
from otonom_runtime.store.tables import Bar, MacroSentiment, NewsSentiment, Symbol
from otonom_runtime.strategy import load_strategy, parse_strategy
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.models import make_policy_model

ROOT = Path(__file__).resolve().parents[1]
FIRST, LAST = dt.date(2023, 1, 1), dt.date(2023, 12, 31)  # a year of history
SEED = 7
CLOCK: Callable[[], float] = time.perf_counter  # what each subject is timed by (--clock)

# The floor's SQL, verbatim as run_tick issued it in a steady tick (the cache of
# ``otonom_runtime.daemon.cache`` warm; captured on SQLite with SQLAlchemy's
# before_cursor_execute and, for the reads streamed on the driver's cursor, as
# ``store.tickplans._bound`` gives them to it; {names}/{ids}: the IN list's markers, one per
# symbol). Fixed here so that the floor cannot change to flatter a ratio; the test
# ``tests/test_daemon_bench.py`` holds it equal to the tick's.
FLOOR_SQL = {
    "max": (
        "SELECT (SELECT coalesce(max(bars.id), ?) AS coalesce_1 \nFROM bars) AS anon_1, "
        "(SELECT coalesce(max(news_sentiment.id), ?) AS coalesce_3 \nFROM news_sentiment"
        ") AS anon_2, (SELECT coalesce(max(macro_sentiment.id), ?) AS coalesce_5 \nFROM "
        "macro_sentiment) AS anon_3, (SELECT coalesce(max(row_changes.id), ?) AS coales"
        "ce_7 \nFROM row_changes) AS anon_4, (SELECT count(*) AS count_1 \nFROM symbols) "
        "AS anon_5, (SELECT coalesce(max(symbols.id), ?) AS coalesce_9 \nFROM symbols) A"
        "S anon_6"
    ),
    "bars": (
        "SELECT bars.symbol_id, CASE WHEN length(bars.date) = 10 THEN (julianday(bars.date) - 244"
        "0587.5) * 32 + CAST(substr(bars.date, 9, 2) AS INTEGER) END, bars.open, bars.high, bars."
        "low, bars.close, bars.volume \nFROM bars \nWHERE bars.id > ? AND bars.date <= ?"
    ),
    "news": (
        "SELECT news_sentiment.symbol_id, CASE WHEN length(news_sentiment.date) = 10 THEN (julian"
        "day(news_sentiment.date) - 2440587.5) * 32 + CAST(substr(news_sentiment.date, 9, 2) AS I"
        "NTEGER) END, news_sentiment.score \nFROM news_sentiment \nWHERE news_sentiment.id > ? AN"
        "D news_sentiment.date <= ? AND news_sentiment.source = ?"
    ),
    "macro": (
        "SELECT macro_sentiment.id, macro_sentiment.source, macro_sentiment.date, macro_sentimen"
        "t.score \nFROM macro_sentiment \nWHERE macro_sentiment.source IN (?) AND macro_sentime"
        "nt.date > ? AND macro_sentiment.date <= ? UNION ALL SELECT macro_sentiment.id, macro_se"
        "ntiment.source, macro_sentiment.date, macro_sentiment.score \nFROM macro_sentiment \nWH"
        "ERE macro_sentiment.id > ? AND macro_sentiment.date <= ?"
    ),
    "live": (
        "SELECT decisions.symbol_id, CASE WHEN length(decisions.date) = 10 THEN (julianday(decisi"
        "ons.date) - 2440587.5) * 32 + CAST(substr(decisions.date, 9, 2) AS INTEGER) END, decisio"
        "ns.action, decisions.strength \nFROM decisions \nWHERE decisions.live_strategy = ? AND dec"
        "isions.symbol_id IN ({ids}) AND decisions.date >= ? ORDER BY decisions.symbol_id, decisi"
        "ons.date"
    ),
}
# The same on PostgreSQL (captured there; named parameters, each IN list one array ``keys``)
# and the COPY the store's writer inserts a tick's decisions with (``DECISION_COLUMNS``).
FLOOR_SQL_POSTGRES = {
    "max": (
        "SELECT (SELECT coalesce(max(bars.id), %(coalesce_2)s::INTEGER) AS coalesce_1 \n"
        "FROM bars) AS anon_1, (SELECT coalesce(max(news_sentiment.id), %(coalesce_4)s:"
        ":INTEGER) AS coalesce_3 \nFROM news_sentiment) AS anon_2, (SELECT coalesce(max("
        "macro_sentiment.id), %(coalesce_6)s::INTEGER) AS coalesce_5 \nFROM macro_sentim"
        "ent) AS anon_3, (SELECT coalesce(max(row_changes.id), %(coalesce_8)s::INTEGER)"
        " AS coalesce_7 \nFROM row_changes) AS anon_4, (SELECT count(*) AS count_1 \nFROM"
        " symbols) AS anon_5, (SELECT coalesce(max(symbols.id), %(coalesce_10)s::INTEGE"
        "R) AS coalesce_9 \nFROM symbols) AS anon_6, pg_snapshot_xmax(pg_current_snapsho"
        "t())::text::bigint, coalesce((SELECT min(x::text::bigint) FROM pg_snapshot_xip"
        "(pg_current_snapshot()) AS x WHERE x::text <> coalesce(pg_current_xact_id_if_a"
        "ssigned()::text, '')), pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
    ),
    "bars": (
        "SELECT bars.symbol_id, (bars.date - DATE '1970-01-01') * 32 + CAST(EXTRACT(DAY FROM bars"
        ".date) AS INTEGER), bars.open, bars.high, bars.low, bars.close, bars.volume \nFROM bars \n"
        "WHERE bars.id > %(max_id)s::INTEGER AND bars.date <= %(after)s::DATE"
    ),
    "news": (
        "SELECT news_sentiment.symbol_id, (news_sentiment.date - DATE '1970-01-01') * 32 + CAST(E"
        "XTRACT(DAY FROM news_sentiment.date) AS INTEGER), news_sentiment.score \nFROM news_sentim"
        "ent \nWHERE news_sentiment.id > %(max_id)s::INTEGER AND news_sentiment.date <= %(after)s"
        "::DATE AND news_sentiment.source = %(source)s::VARCHAR"
    ),
    "macro": (
        "SELECT macro_sentiment.id, macro_sentiment.source, macro_sentiment.date, macro_sentimen"
        "t.score \nFROM macro_sentiment \nWHERE macro_sentiment.source = ANY (%(keys)s::VARCHAR"
        "(64)[]) AND macro_sentiment.date > %(after)s::DATE AND macro_sentiment.date <= %(end)s::"
        "DATE UNION ALL SELECT macro_sentiment.id, macro_sentiment.source, macro_sentiment.date, "
        "macro_sentiment.score \nFROM macro_sentiment \nWHERE macro_sentiment.id > %(max_id)s::"
        "INTEGER AND macro_sentiment.date <= %(after)s::DATE"
    ),
    "live": (
        "SELECT decisions.symbol_id, (decisions.date - DATE '1970-01-01') * 32 + CAST(EXTRACT(DAY"
        " FROM decisions.date) AS INTEGER), decisions.action, decisions.strength \nFROM decisions "
        "\nWHERE decisions.live_strategy = %(strategy)s::VARCHAR AND decisions.symbol_id = ANY (%("
        "keys)s::INTEGER[]) AND decisions.date >= %(since)s::DATE ORDER BY decisions.symbol_id, d"
        "ecisions.date"
    ),
    "copy": (
        "COPY decisions (run_id, symbol_id, date, action, strength, position, leverage, cash_fra"
        "ction, days_since_last_trade, equity, live_strategy, tech_action, tech_strength, tech_c"
        "onfidence, news_action, news_strength, news_confidence, risk_action, risk_strength, ris"
        "k_confidence, rl_action, rl_strength, rl_confidence) FROM STDIN (FORMAT BINARY)"
    ),
}
COPY_TYPES = (
    "int4", "int4", "date", "int4", *["float8"] * 5, "float8", "text",
    *(t for _ in range(4) for t in ("int4", "float8", "float8")),
)  # fmt: skip
RUN_COLUMNS = (
    "strategy_name", "strategy_hash", "params", "start_date", "end_date", "symbols", "status",
    "created_at", "finished_at", "metrics", "error", "host", "pid", "process_start",
    "heartbeat_at",
)  # fmt: skip
DECISION_COLUMNS = (
    "run_id", "symbol_id", "date", "action", "strength", "position", "leverage",
    "cash_fraction", "days_since_last_trade", "equity", "live_strategy",
    *(f"{a}_{f}" for a in ("tech", "news", "risk", "rl") for f in ("action", "strength",
                                                                   "confidence")),
)  # fmt: skip
SQLITE_PARAMS = 4000  # values per multi-row INSERT on SQLite (the store's writer does the same)
FLOOR_STRATEGY = "floor-bench"


def _marks(n: int, style: str) -> str:
    return ", ".join([style] * n)


def _sql(text: str, style: str) -> str:
    return text if style == "?" else text.replace("?", style)


class Floor:
    """The tick's store I/O alone on the session's own DBAPI connection (see the module
    docstring); ``style``: the driver's parameter marker (``?`` SQLite, ``%s`` psycopg)."""

    def __init__(
        self, session: Session, names: list[str], strategy: str, sources: tuple[str, str]
    ) -> None:
        self.session, self.names, self.strategy = session, names, strategy
        self.news_source, self.source = sources  # the strategy's news and macro sources
        self.sqlite = session.connection().dialect.name == "sqlite"
        self.style = "?" if self.sqlite else "%s"
        by_name = dict(session.execute(select(Symbol.name, Symbol.id)).all())
        session.rollback()
        self.ids = [by_name[n] for n in names]

    def _dbapi(self) -> Any:
        return self.session.connection().connection.dbapi_connection

    def _fetch(
        self, template: str, params: list[Any] | dict[str, Any], binary: bool = False
    ) -> list[Any]:
        """The rows of ``template``; ``binary``: on psycopg, fetched in binary, as the tick
        fetches its reads streamed as numbers (``store.ticks._numbers``)."""
        if self.sqlite:
            sql = template.format(
                names=_marks(len(self.names), "?"), ids=_marks(len(self.ids), "?")
            )
        else:  # verbatim: the IN lists are array parameters
            sql = template
        cursor = self._dbapi().cursor(binary=True) if binary else self._dbapi().cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def rows_of(self, run_id: int) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        """The tick's run row and decision rows, read back (untimed) to be inserted again."""
        cursor = self._dbapi().cursor()
        try:
            select_run = f"SELECT {', '.join(RUN_COLUMNS)} FROM backtest_runs WHERE id = ?"
            cursor.execute(_sql(select_run, self.style), [run_id])
            run = tuple(cursor.fetchone())
            if not self.sqlite:  # JSON columns come back as Python values from psycopg
                from psycopg.types.json import Jsonb

                run = tuple(Jsonb(v) if isinstance(v, (dict, list)) else v for v in run)
            cursor.execute(
                _sql(
                    f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE run_id = ? "
                    "ORDER BY symbol_id",
                    self.style,
                ),
                [run_id],
            )
            decisions = [tuple(r) for r in cursor.fetchall()]
        finally:
            cursor.close()
        self.session.rollback()
        return run, decisions

    def run(
        self,
        day: dt.date,
        run: tuple[Any, ...],
        decisions: list[tuple[Any, ...]],
        since: dict[str, int],
    ) -> float:
        """One tick's I/O for bar ``day``, timed; the rows it wrote deleted afterwards.
        ``since``: the largest row ids before the round's rows were imported (what the tick
        read on from)."""
        before = day - dt.timedelta(days=1)  # the previous tick's end and decided bar
        horizon = day + dt.timedelta(days=32)  # the cache's (any date on or after ``day``)
        t0 = CLOCK()
        if self.sqlite:
            dates = (before.isoformat(), day.isoformat(), horizon.isoformat())
            self._reads_sqlite(*dates, since)
        else:
            self._reads_postgres(before, day, horizon, since)
        run_id = self._insert(run, decisions)
        self._dbapi().commit()
        elapsed = CLOCK() - t0
        cursor = self._dbapi().cursor()
        try:
            cursor.execute(_sql("DELETE FROM decisions WHERE run_id = ?", self.style), [run_id])
            cursor.execute(_sql("DELETE FROM backtest_runs WHERE id = ?", self.style), [run_id])
        finally:
            cursor.close()
        self._dbapi().commit()
        return elapsed

    def _reads_sqlite(self, after: str, end: str, horizon: str, since: dict[str, int]) -> None:
        self._fetch(FLOOR_SQL["max"], [0, 0, 0, 0, 0])
        self._fetch(FLOOR_SQL["bars"], [since["bars"], horizon])
        self._fetch(FLOOR_SQL["news"], [since["news"], horizon, self.news_source])
        self._fetch(FLOOR_SQL["macro"], [self.source, after, end, since["macro"], after])
        self._fetch(FLOOR_SQL["live"], [self.strategy, *self.ids, after])

    def _reads_postgres(
        self, after: dt.date, end: dt.date, horizon: dt.date, since: dict[str, int]
    ) -> None:
        sql = FLOOR_SQL_POSTGRES
        zeros = {f"coalesce_{k}": 0 for k in (2, 4, 6, 8, 10)}
        self._fetch(sql["max"], zeros)
        self._fetch(sql["bars"], {"after": horizon, "max_id": since["bars"]}, binary=True)
        news = {"after": horizon, "source": self.news_source, "max_id": since["news"]}
        self._fetch(sql["news"], news, binary=True)
        macro = {"keys": [self.source], "after": after, "end": end, "max_id": since["macro"]}
        self._fetch(sql["macro"], macro)
        live = {"strategy": self.strategy, "keys": self.ids, "since": after}
        self._fetch(sql["live"], live, binary=True)

    def _insert(self, run: tuple[Any, ...], decisions: list[tuple[Any, ...]]) -> int:
        cursor = self._dbapi().cursor()
        try:
            insert = (
                f"INSERT INTO backtest_runs ({', '.join(RUN_COLUMNS)}) "
                f"VALUES ({_marks(len(RUN_COLUMNS), self.style)})"
            )
            if self.sqlite:
                cursor.execute(insert, run)
                run_id = int(cursor.lastrowid)
            else:
                cursor.execute(insert + " RETURNING id", run)
                run_id = int(cursor.fetchone()[0])
            rows = [(run_id, *r[1:10], FLOOR_STRATEGY, *r[11:]) for r in decisions]
            width = len(DECISION_COLUMNS)
            head = f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) VALUES "
            row_marks = f"({_marks(width, self.style)})"
            if self.sqlite:  # multi-row statements, as the store's writer inserts them
                per = SQLITE_PARAMS // width
                for at in range(0, len(rows), per):
                    chunk = rows[at : at + per]
                    flat = [v for r in chunk for v in r]
                    cursor.execute(head + ", ".join([row_marks] * len(chunk)), flat)
            else:  # one binary COPY, as the store's writer inserts them
                with cursor.copy(FLOOR_SQL_POSTGRES["copy"]) as copy:
                    copy.set_types(list(COPY_TYPES))
                    for row in rows:
                        copy.write_row(row)
        finally:
            cursor.close()
        return run_id


Later = dict[dt.date, dict[str, list[dict[str, Any]]]]
IMPORTED = (Bar.__table__, NewsSentiment.__table__, MacroSentiment.__table__)


def _store(url: str, names: list[str], rounds: int) -> Later:
    """The store with the history up to ``LAST``, and the rows of each steady round's day
    (held back: ``_import`` writes them before the round's tick)."""
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, names, FIRST, LAST + dt.timedelta(days=rounds), SEED)
    later: Later = {}
    engine = get_engine(url)
    with engine.begin() as conn:
        for table in IMPORTED:
            columns = [c for c in table.c if c.name != "id"]
            for row in conn.execute(select(*columns).where(table.c.date > LAST)).mappings():
                later.setdefault(row["date"], {}).setdefault(table.name, []).append(dict(row))
            conn.execute(delete(table).where(table.c.date > LAST))
    if engine.dialect.name == "postgresql":  # see the module docstring
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    return later


def _import(url: str, rows: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Insert one day's bars, news and macro score in a transaction of their own (another
    connection than the daemon's, as an importing process writes them): new row ids. The
    largest ids before them, by the names ``store.ticks.tick_marks`` gives them."""
    with get_engine(url).begin() as conn:
        before = {
            name: int(conn.execute(select(func.coalesce(func.max(t.c.id), 0))).scalar_one())
            for name, t in zip(("bars", "news", "macro"), IMPORTED, strict=True)
        }
        for table in IMPORTED:
            if rows.get(table.name):
                conn.execute(insert(table), rows[table.name])
    return before


def _ensemble(tmp: Path) -> Ensemble:
    os.environ["OTONOM_MODELS_ROOT"] = str(tmp)  # the strategy resolves the model under it
    make_policy_model(tmp / "model" / "policy_best.onnx", hidden=128, layers=2)
    raw = load_strategy(ROOT / "strategies" / "baseline_v1.yaml").to_dict()
    raw["ensemble"]["rl_policy"] = {"enabled": True, "model_path": str(tmp / "model")}
    return Ensemble(parse_strategy(raw), use_rl=True)


def per_symbol(
    builder: RlStateBuilder, policy: Any, report: TickReport, sample: int
) -> tuple[float, int]:
    """``build_state`` + ``predict`` for the first ``sample`` symbols of the tick with the
    portfolio it decided with: the time, and how many RL actions equal the tick's."""
    same = 0
    chosen = list(zip(report.decisions, report.holdings, strict=True))[:sample]
    t0 = CLOCK()
    for d, h in chosen:
        p = d.portfolio
        days = None if p.days_since_last_trade == float("inf") else p.days_since_last_trade
        state = builder.build_state(
            d.symbol,
            d.date,
            current_position=p.position,
            portfolio_equity=h.equity,
            cash=p.cash_fraction * h.equity,
            leverage=p.leverage,
            days_since_last_trade=days,
        )
        action, _ = policy.predict(state)
        rl = d.signals["rl"]
        same += rl is not None and int(action) == int(rl.action)
    return CLOCK() - t0, same


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=5000, help="synthetic symbols (5000)")
    parser.add_argument("--rounds", type=int, default=3, help="steady rounds (3; each one bar)")
    parser.add_argument(
        "--sample", type=int, default=200, help="symbols the per-symbol way is timed on (200)"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds, sample of 20 at most")
    parser.add_argument(
        "--database-url",
        help="an empty PostgreSQL (or SQLite) database to use instead of a temporary SQLite file",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="start a throwaway PostgreSQL server for the store (otonom_runtime.testing.postgres;"
        " needs initdb and pg_ctl)",
    )
    add_clock_option(parser)
    return parser


def _database(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> str:
    """The store's URL: ``--database-url``, a new database on a throwaway server
    (``--postgres``) or a SQLite file in ``tmp``."""
    if args.database_url:
        return str(args.database_url)
    if args.postgres:
        from otonom_runtime.testing.postgres import new_database, postgres_server

        return new_database(stack.enter_context(postgres_server()), "bench")
    return f"sqlite:///{tmp / 'store.db'}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    global CLOCK
    CLOCK = chosen_clock(args)
    with contextlib.ExitStack() as stack:  # the folder removed last, after any server
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="otonom-bench-daemon-")))
        return _run(args, tmp, _database(args, tmp, stack))


def _run(args: argparse.Namespace, tmp: Path, url: str) -> int:
    rounds = 2 if args.quick else max(1, args.rounds)
    sample = min(args.symbols, 20 if args.quick else args.sample)
    names = [f"S{i:05d}" for i in range(args.symbols)]
    t0 = time.perf_counter()
    later = _store(url, names, rounds)
    setup_s = time.perf_counter() - t0
    ensemble = _ensemble(tmp)
    policy = load_rl_policy(tmp / "model")
    steady: list[float] = []
    old: list[float] = []
    floor: list[float] = []
    agree = checked = 0
    broker = PaperBroker()  # one broker for the run, as ``otonom daemon`` keeps it
    with get_session(url) as session:
        gc.collect()
        t0 = CLOCK()
        report = run_tick(session, ensemble, names, broker, as_of=LAST)
        cold = CLOCK() - t0
        assert len(report.decisions) == len(names), "the cold tick decided every symbol"
        data = ensemble.config.data
        sources = (
            sentiment_source(True, data.news_source),
            sentiment_source(True, data.macro_source),
        )
        io = Floor(session, names, ensemble.name, sources)
        builder = RlStateBuilder(session)
        for r in range(1, rounds + 1):
            day = LAST + dt.timedelta(days=r)
            since = _import(url, later[day])  # the day's bar of every symbol comes (untimed)
            gc.collect()  # each subject from a collected heap (see the module docstring)
            t0 = CLOCK()
            report = run_tick(session, ensemble, names, broker, as_of=day)
            steady.append(CLOCK() - t0)
            assert report.run_id is not None
            assert len(report.decisions) == len(names)
            gc.collect()
            seconds, same = per_symbol(builder, policy, report, sample)
            old.append(seconds * len(names) / sample)
            agree, checked = agree + same, checked + sample
            rows = io.rows_of(report.run_id)
            gc.collect()
            floor.append(io.run(day, *rows, since))
    dispose_engines()  # before a throwaway server stops
    _print(args, url, setup_s, cold, steady, old, floor, (agree, checked, sample))
    return 0


def _print(
    args: argparse.Namespace,
    url: str,
    setup_s: float,
    cold: float,
    steady: list[float],
    old: list[float],
    floor: list[float],
    counts: tuple[int, int, int],
) -> None:
    n = args.symbols
    agree, checked, sample = counts
    med = statistics.median
    kind = url.split(":", 1)[0]
    print(
        f"machine: {platform.machine()}, python {platform.python_version()}, {n} symbols x "
        f"{(LAST - FIRST).days + 1} days, {kind}, {len(steady)} steady rounds, {args.clock} "
        f"clock, load average {os.getloadavg()[0]:.2f} (store written in {setup_s:.0f} s)"
    )
    rows = (
        ("cold first tick", [cold]),
        ("steady tick (run_tick, one new bar)", steady),
        (f"per-symbol build_state + predict ({sample} timed, x{n / sample:g})", old),
        ("floor: the tick's SQL alone", floor),
    )
    print(f"\n{'subject':<58}{'median s':>10}{'per symbol us':>15}  all rounds (s)")
    for label, values in rows:
        rounds = " ".join(f"{v:.3f}" for v in values)
        print(f"  {label:<56}{med(values):>10.3f}{med(values) / n * 1e6:>15.1f}  {rounds}")
    print(f"\nthe per-symbol RL action equals the tick's RL signal on {agree} of {checked} calls")
    print("\nratios (issue 16)")
    for name, ratio, ok, target in (
        ("per-symbol / steady", med(old) / med(steady), med(old) / med(steady) >= 50, ">= 50"),
        ("steady / floor", med(steady) / med(floor), med(steady) / med(floor) <= 1.5, "<= 1.5"),
    ):
        print(f"  {'MET   ' if ok else 'MISSED'} {name:<20} {ratio:8.2f} ({target})")
    print(f"  cold first tick / steady tick  {cold / med(steady):.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
