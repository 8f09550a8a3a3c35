"""Readers during writers: real OS processes on one SQLite file and on a real PostgreSQL server.

Each round starts, at once, the real CLI (``python -m otonom_runtime``) as writers (three
``data import-csv``: two symbols, one of them twice; three ``data synth``: two symbols whose
new days overlap, so both write the shared macro rows, one of them twice; and two ``backtest``
runs) and two reader processes (``_store_worker.py``, by file path) that read the store in a
loop. Then:

* every process exits 0 and no output mentions ``database is locked``, ``OperationalError``,
  ``IntegrityError`` or a traceback;
* the readers never saw a half-written import (0 bars or the whole series, in one statement)
  nor a ``complete`` run short of decisions;
* the final store equals the one the same commands give run one after another (bars, news,
  macro, decisions per run).

``test_concurrent_synth_writers_share_macro_rows_on_postgres`` makes the macro race
deterministic: the second writer is held on the first one's uncommitted rows (seen in
``pg_stat_activity``) before the first commits. Before the fix (``ON CONFLICT DO NOTHING`` in
``otonom_runtime.synth``) the second writer died with an ``IntegrityError``.

``test_concurrent_imports_of_one_new_symbol_on_postgres`` does the same for two imports of one
new symbol: before the fix (``ON CONFLICT DO NOTHING`` in ``store.get_or_create_symbol``) the
second one died with an ``IntegrityError`` on ``symbols.name``, on SQLite as on PostgreSQL;
``test_concurrent_synth_of_one_new_symbol_on_postgres`` for two ``write_synthetic`` of one new
symbol (the second then died on ``bars``; it now plans again against the first one's rows).

Subprocess timeouts and the polling deadline guard against a hang; nothing is timed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from otonom_runtime.cli import main as otonom_main
from otonom_runtime.store import dispose_engines, get_engine, get_session, init_db
from otonom_runtime.synth import generate_market, write_synthetic
from otonom_runtime.testing.postgres import new_database

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "_store_worker.py"
BASELINE = ROOT / "strategies" / "baseline_v1.yaml"
SEED = 8
BASE = ("BASE-A", "BASE-B")  # stored before the round; the backtests read them
BASE_RANGE = (dt.date(2020, 1, 1), dt.date(2020, 12, 31))
SYNTH = ("SYN-1", "SYN-2")  # generated during the round: new macro days 2021 .. 2022
SYNTH_RANGE = (dt.date(2020, 7, 1), dt.date(2022, 6, 30))
IMPORTS = ("IMP-1", "IMP-2")
IMPORT_DAYS = 1500
BACKTESTS = (("BASE-A", "2020-03-01", "2020-12-31"), ("BASE-B", "2020-02-01", "2020-11-30"))
BAD_WORDS = ("database is locked", "OperationalError", "IntegrityError", "Traceback")
GUARD_S = 300  # a guard against a hang, not a timed assertion


# --- stores ------------------------------------------------------------------------------------


def _new_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{(tmp_path / f'{uuid.uuid4().hex[:8]}.db').as_posix()}"
    return new_database(request.getfixturevalue("postgres_url"), "conc")


# --- inputs ------------------------------------------------------------------------------------


def _write_csv(path: Path, seed: int) -> tuple[int, float]:
    """A valid OHLCV CSV of ``IMPORT_DAYS`` days; returns (bars, sum of closes)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, IMPORT_DAYS)))
    open_ = close * np.exp(rng.normal(0.0, 0.005, IMPORT_DAYS))
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    volume = rng.uniform(1e3, 1e4, IMPORT_DAYS)
    day0 = dt.date(2016, 1, 1)
    lines = ["timestamp,open,high,low,close,volume"]
    closes = []
    for i in range(IMPORT_DAYS):
        row = [open_[i], high[i], low[i], close[i], volume[i]]
        text_row = [f"{v:.6f}" for v in row]
        closes.append(float(text_row[3]))
        lines.append(f"{day0 + dt.timedelta(days=i)},{','.join(text_row)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return IMPORT_DAYS, float(sum(closes))


def _expected_bars(csvs: dict[str, tuple[int, float]]) -> dict[str, list[float]]:
    out = {name: [n, total] for name, (n, total) in csvs.items()}
    for name in SYNTH:
        h = generate_market(name, *SYNTH_RANGE, SEED).history
        out[name] = [len(h.dates), float(np.sum(h.close))]
    return out


def _seed_store(url: str) -> None:
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, list(BASE), *BASE_RANGE, SEED)
    dispose_engines()


def _writer_commands(url: str, csvs: dict[str, Path]) -> list[list[str]]:
    db = ["--database-url", url]
    cmds = [[*db, "data", "import-csv", str(csvs[name]), "--symbol", name] for name in IMPORTS]
    # the same new symbol imported twice at once: as if one ran after the other
    cmds.append([*db, "data", "import-csv", str(csvs[IMPORTS[0]]), "--symbol", IMPORTS[0]])
    cmds += [
        [*db, "data", "synth", "--symbol", name, "--start", str(SYNTH_RANGE[0]), "--end",
         str(SYNTH_RANGE[1]), "--seed", str(SEED)]
        for name in (*SYNTH, SYNTH[0])  # one of them twice at once
    ]  # fmt: skip
    cmds += [
        [*db, "backtest", "--strategy-path", str(BASELINE), "--symbol", name, "--start", start,
         "--end", end, "--no-rl", "--plot", "none", "--quiet"]
        for name, start, end in BACKTESTS
    ]  # fmt: skip
    return cmds


# --- what a store holds ------------------------------------------------------------------------


def _snapshot(url: str) -> dict[str, Any]:
    """Everything the writers make, keyed so that run ids and row ids do not matter."""
    engine = get_engine(url)
    with engine.connect() as conn:
        names = dict(conn.execute(text("SELECT id, name FROM symbols")).all())
        bars: dict[str, list[tuple[Any, ...]]] = {}
        for sid, day, o, h, lo, c, v in conn.execute(
            text(
                "SELECT symbol_id, date, open, high, low, close, volume FROM bars "
                "ORDER BY symbol_id, date"
            )
        ).all():
            bars.setdefault(names[sid], []).append((str(day), o, h, lo, c, v))
        news = sorted(
            (names[sid], src, str(day), score)
            for sid, src, day, score in conn.execute(
                text("SELECT symbol_id, source, date, score FROM news_sentiment")
            ).all()
        )
        macro = sorted(
            (src, str(day), score)
            for src, day, score in conn.execute(
                text("SELECT source, date, score FROM macro_sentiment")
            ).all()
        )
        runs: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {}
        for run_id, status, start, end, symbols in conn.execute(
            text("SELECT id, status, start_date, end_date, symbols FROM backtest_runs")
        ).all():
            assert status == "complete", (run_id, status)
            rows = conn.execute(
                text("SELECT * FROM decisions WHERE run_id = :id ORDER BY symbol_id, date"),
                {"id": run_id},
            ).mappings()
            key = (json.dumps(symbols) if not isinstance(symbols, str) else symbols, str(start),
                   str(end))  # fmt: skip
            assert key not in runs, key
            runs[key] = [
                tuple(
                    (k, names[v] if k == "symbol_id" else str(v))
                    for k, v in sorted(r.items())
                    if k not in ("id", "run_id")
                )
                for r in rows
            ]
    return {"bars": bars, "news": news, "macro": macro, "runs": runs}


def _sequential(url: str, commands: list[list[str]]) -> dict[str, Any]:
    _seed_store(url)
    for cmd in commands:
        with contextlib.redirect_stdout(None), contextlib.redirect_stderr(None):
            assert otonom_main(cmd) == 0, cmd
        dispose_engines()
    snap = _snapshot(url)
    dispose_engines()
    return snap


# --- the round ---------------------------------------------------------------------------------


def _round(url: str, tmp_path: Path, commands: list[list[str]], expected: Path) -> dict[str, Any]:
    """Start every writer and two readers at once; returns the readers' counts."""
    _seed_store(url)
    stop = tmp_path / f"stop-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    readers = []
    for i in range(2):
        out = tmp_path / f"reader-{i}-{uuid.uuid4().hex[:6]}.json"
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, str(expected), str(stop), str(out)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        readers.append((proc, out))
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "otonom_runtime", *cmd],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in commands
    ]
    try:
        results = [(cmd, *p.communicate(timeout=GUARD_S), p.returncode) for cmd, p in
                   zip(commands, writers, strict=True)]  # fmt: skip
    finally:
        stop.touch()
    counts: dict[str, Any] = {
        "rounds": 0,
        "rounds_with_symbols_missing": 0,
        "complete_runs_seen": 0,
        "running_runs_seen": 0,
    }
    for proc, out in readers:
        stdout, stderr = proc.communicate(timeout=GUARD_S)
        results.append((["reader"], stdout, stderr, proc.returncode))
        for key, value in json.loads(out.read_text(encoding="utf-8")).items():
            if key in counts:
                counts[key] += value
    for cmd, stdout, stderr, rc in results:
        said = stdout + stderr
        assert rc == 0, f"{' '.join(cmd[2:])} exited {rc}: {said}"
        for word in BAD_WORDS:
            assert word not in said, f"{' '.join(cmd[2:])}: {said}"
    return counts


@pytest.mark.reliability
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_readers_during_writers(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    csv_sums = {}
    csvs = {}
    for i, name in enumerate(IMPORTS):
        csvs[name] = tmp_path / f"{name}.csv"
        csv_sums[name] = _write_csv(csvs[name], seed=100 + i)
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({"bars": _expected_bars(csv_sums)}), encoding="utf-8")

    concurrent_url = _new_store(backend, tmp_path, request)
    counts = _round(concurrent_url, tmp_path, _writer_commands(concurrent_url, csvs), expected)
    got = _snapshot(concurrent_url)
    dispose_engines()

    sequential_url = _new_store(backend, tmp_path, request)
    want = _sequential(sequential_url, _writer_commands(sequential_url, csvs))

    assert counts["rounds"] >= 2  # each reader read at least once more after the writers
    assert sorted(got["bars"]) == sorted([*BASE, *SYNTH, *IMPORTS])
    assert len(got["runs"]) == len(BACKTESTS)
    assert got == want
    writers = len(_writer_commands(concurrent_url, csvs))
    print(f"\n{backend}: {writers} writers, 2 readers: {counts}")


# --- the shared macro rows, deterministically ------------------------------------------------


def _held_then_released(url: str, first: Any, second: Any) -> tuple[Any, dict[str, Any]]:
    """Run ``first(session)`` without committing, then ``second(session)`` in a thread until
    it is held on a lock (``pg_stat_activity``), then commit the first. Returns the first
    result and ``{"report": ...}`` or ``{"error": ...}`` of the second."""
    outcome: dict[str, Any] = {}

    def run_second() -> None:
        try:
            with get_session(url) as session:
                outcome["report"] = second(session)
        except Exception as exc:
            outcome["error"] = exc

    with contextlib.ExitStack() as stack:
        result = first(stack.enter_context(get_session(url)))
        thread = threading.Thread(target=run_second)
        thread.start()
        deadline = time.monotonic() + GUARD_S  # a guard against a hang, not a timed assertion
        while not _waiting_on_a_lock(url):
            assert thread.is_alive(), f"the second writer was never held: {outcome}"
            assert time.monotonic() < deadline, "the second writer was never held on a lock"
            time.sleep(0.01)
    thread.join(GUARD_S)  # the first committed on leaving the block: the second goes on
    assert not thread.is_alive()
    assert "error" not in outcome, f"the second writer failed: {outcome['error']!r}"
    return result, outcome


def test_concurrent_synth_of_one_new_symbol_on_postgres(postgres_url: str) -> None:
    """Two ``write_synthetic`` of the same new symbol: the second, which planned against an
    empty store, plans again against the first one's rows and writes nothing."""
    url = new_database(postgres_url, "conc")
    init_db(url)
    start, end = dt.date(2021, 1, 1), dt.date(2021, 6, 30)
    days = (end - start).days + 1

    def synth(session: Any) -> Any:
        return write_synthetic(session, ["SAME-SYN"], start, end, SEED)

    report_a, outcome = _held_then_released(url, synth, synth)
    report_b = outcome["report"]
    assert (report_a.bars, report_a.news, report_a.macro) == (days, days, days)
    assert (report_b.bars, report_b.news, report_b.macro, report_b.unchanged) == (
        0,
        0,
        0,
        ("SAME-SYN",),
    )
    with get_session(url) as session:
        counts = session.execute(text("SELECT count(*) FROM bars")).scalar_one()
    assert counts == days


def _waiting_on_a_lock(url: str) -> bool:
    with get_engine(url).connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            ).scalar_one()
        )


@pytest.mark.parametrize("overlap", ["same range", "overlapping ranges"])
def test_concurrent_synth_writers_share_macro_rows_on_postgres(
    overlap: str, postgres_url: str
) -> None:
    """Writer A has inserted the macro rows but not committed; writer B, which read no macro
    rows, is then held on A's rows; A commits; B must skip them, not fail."""
    url = new_database(postgres_url, "conc")
    init_db(url)
    start, end = dt.date(2021, 1, 1), dt.date(2021, 3, 31)
    b_start = start if overlap == "same range" else dt.date(2021, 2, 1)
    b_end = end if overlap == "same range" else dt.date(2021, 4, 30)
    outcome: dict[str, Any] = {}

    def writer_b() -> None:
        try:
            with get_session(url) as session:
                outcome["report"] = write_synthetic(session, ["SYN-B"], b_start, b_end, SEED)
        except Exception as exc:
            outcome["error"] = exc

    with contextlib.ExitStack() as stack:
        session_a = stack.enter_context(get_session(url))
        report_a = write_synthetic(session_a, ["SYN-A"], start, end, SEED)
        thread = threading.Thread(target=writer_b)
        thread.start()
        deadline = time.monotonic() + GUARD_S  # a guard against a hang, not a timed assertion
        while not _waiting_on_a_lock(url):
            assert thread.is_alive(), f"writer B was never held on writer A's rows: {outcome}"
            assert time.monotonic() < deadline, "writer B never reached the macro rows"
            time.sleep(0.01)
    # session A committed on leaving the block: B goes on
    thread.join(GUARD_S)
    assert not thread.is_alive()
    assert "error" not in outcome, f"writer B failed: {outcome['error']!r}"
    report_b = outcome["report"]
    days_a = (end - start).days + 1
    assert report_a.macro == days_a
    assert report_b.macro == (b_end - end).days  # only the days A did not write
    with get_session(url) as session:
        stored = session.execute(
            text("SELECT date, score FROM macro_sentiment WHERE source = 'synthetic' ORDER BY date")
        ).all()
    assert len(stored) == (max(end, b_end) - start).days + 1
    dispose_engines()
    # the store equals a sequential run's
    url2 = new_database(postgres_url, "conc")
    init_db(url2)
    with get_session(url2) as session:
        write_synthetic(session, ["SYN-A"], start, end, SEED)
    with get_session(url2) as session:
        write_synthetic(session, ["SYN-B"], b_start, b_end, SEED)
    with get_session(url2) as session:
        again = session.execute(
            text("SELECT date, score FROM macro_sentiment WHERE source = 'synthetic' ORDER BY date")
        ).all()
    assert again == stored


def test_concurrent_imports_of_one_new_symbol_on_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    """Import A has created the symbol and its bars but not committed; import B of the same
    file is then held on A's symbol row; A commits; B must find A's bars unchanged, not fail."""
    from otonom_runtime.importers import import_ohlcv_csv

    url = new_database(postgres_url, "conc")
    init_db(url)
    csv = tmp_path / "same.csv"
    n, _ = _write_csv(csv, seed=7)
    outcome: dict[str, Any] = {}

    def import_b() -> None:
        try:
            with get_session(url) as session:
                outcome["report"] = import_ohlcv_csv(session, csv, "SAME")
        except Exception as exc:
            outcome["error"] = exc

    with contextlib.ExitStack() as stack:
        session_a = stack.enter_context(get_session(url))
        report_a = import_ohlcv_csv(session_a, csv, "SAME")
        thread = threading.Thread(target=import_b)
        thread.start()
        deadline = time.monotonic() + GUARD_S  # a guard against a hang, not a timed assertion
        while not _waiting_on_a_lock(url):
            assert thread.is_alive(), f"import B was never held on import A's rows: {outcome}"
            assert time.monotonic() < deadline, "import B never reached the symbol row"
            time.sleep(0.01)
    thread.join(GUARD_S)
    assert not thread.is_alive()
    assert "error" not in outcome, f"import B failed: {outcome['error']!r}"
    report_b = outcome["report"]
    assert (report_a.inserted, report_a.unchanged, report_a.created_symbol) == (n, 0, True)
    assert (report_b.inserted, report_b.unchanged, report_b.created_symbol) == (0, n, False)
    with get_session(url) as session:
        counts = session.execute(text("SELECT count(*), count(DISTINCT symbol_id) FROM bars")).one()
    assert tuple(counts) == (n, 1)
