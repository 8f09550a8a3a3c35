"""Interrupted runs: ``kill -9`` of a backtest and of an import, and how the store finds them.

The ``kill -9`` family (``reliability`` marker): real ``otonom`` commands in a subprocess that
sends itself SIGKILL (``os.kill(os.getpid(), SIGKILL)``, by its own pid) at a chosen point: a
backtest at 4 points on SQLite and 1 on PostgreSQL, an import at 3 points. After each, the store
still says ``running`` (nothing could mark it), then the next ``otonom`` command (``runs list``,
which opens the store for writing like every command) marks the run ``failed`` with a reason
naming the dead pid and shows it; a rerun gives exactly the decisions of an uninterrupted run,
under its own run id. An import killed before its commit leaves nothing of itself visible, and
its rerun gives the data of an uninterrupted import.

The unit cases judge runs written directly into real stores (SQLite files and a real
PostgreSQL server), with real processes: a dead pid, a zombie, a pid reused by a later process
(its start time differs), a live process with an old heartbeat (kept), another host (judged by
its heartbeat only), runs stored before version 4, and two ``fail_interrupted_runs`` at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from otonom_runtime import store
from otonom_runtime.backtest import run_backtest
from otonom_runtime.store import (
    HEARTBEAT_STALE_S,
    BacktestRun,
    Bar,
    Base,
    Decision,
    RunHeartbeat,
    Symbol,
    dispose_engines,
    fail_interrupted_runs,
    get_engine,
    get_session,
    init_db,
    this_process,
)
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import write_synthetic

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "strategies" / "baseline_v1.yaml"
LINUX = Path("/proc/self/stat").exists()
needs_proc = pytest.mark.skipif(not LINUX, reason="process start times are read from /proc")

SYMBOLS = ("DEMO-BTC", "DEMO-ETH")
SYNTH_RANGE = ("2019-01-01", "2021-12-31")
BACKTEST_RANGE = ("2020-01-01", "2021-12-31")  # 2 x 731 decisions: 3 batches of 500


def _empty_postgres(url: str) -> str:
    """``url`` emptied (every otonom table dropped) and initialised."""
    Base.metadata.drop_all(get_engine(url))
    dispose_engines()
    init_db(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An initialised, empty store: a SQLite file, then the PostgreSQL server."""
    if request.param == "sqlite":
        url = f"sqlite:///{(tmp_path / 'otonom.db').as_posix()}"
        init_db(url)
        return url
    return _empty_postgres(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> str:
    url = f"sqlite:///{(tmp_path / 'otonom.db').as_posix()}"
    init_db(url)
    return url


# --- unit cases: runs written directly, judged against real processes --------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ticks(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (the test's own reading, not the store's)."""
    data = Path(f"/proc/{pid}/stat").read_text()
    return data[data.rindex(")") + 2 :].split()[19]


def _token(pid: int, ticks: str | None = None) -> str:
    """A ``process_start`` for ``pid`` on this machine (its real start unless ``ticks``)."""
    me = this_process()
    assert me.start is not None
    return f"{me.start.rpartition(':')[0]}:{_ticks(pid) if ticks is None else ticks}"


def _add_run(
    url: str,
    *,
    host: str | None,
    pid: int | None,
    process_start: str | None,
    heartbeat_age_s: float | None,
    created_age_s: float = 0.0,
) -> int:
    """A ``running`` run as a process would have left it; returns its id."""
    now = _now()
    with get_session(url) as session:
        run = BacktestRun(
            strategy_name="unit",
            strategy_hash="0" * 64,
            start_date=dt.date(2021, 1, 1),
            end_date=dt.date(2021, 2, 1),
            symbols=["X"],
            created_at=now - dt.timedelta(seconds=created_age_s),
            host=host,
            pid=pid,
            process_start=process_start,
            heartbeat_at=None
            if heartbeat_age_s is None
            else now - dt.timedelta(seconds=heartbeat_age_s),
        )
        session.add(run)
        session.flush()
        return run.id


def _status(url: str, run_id: int) -> tuple[str, str | None]:
    with get_session(url) as session:
        run = session.get_one(BacktestRun, run_id)
        return run.status, run.error


def _dead_pid() -> tuple[int, str]:
    """The pid and ``process_start`` of a process that ran and was reaped."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    token = _token(child.pid)
    child.communicate(b"")
    return child.pid, token


@contextlib.contextmanager
def _live_child() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        yield child
    finally:
        child.communicate(b"")


@needs_proc
def test_a_run_whose_process_died_is_marked_failed_by_the_next_init_db(sqlite_store: str) -> None:
    """Its heartbeat is fresh: the dead pid alone proves it interrupted."""
    pid, token = _dead_pid()
    run_id = _add_run(
        sqlite_store, host=this_process().host, pid=pid, process_start=token, heartbeat_age_s=1
    )
    assert _status(sqlite_store, run_id) == ("running", None)
    dispose_engines()
    init_db(sqlite_store)
    status, error = _status(sqlite_store, run_id)
    assert status == "failed"
    assert error is not None
    assert error.startswith(f"interrupted: its process {pid} on {this_process().host} is gone (")


@needs_proc
def test_a_zombie_process_counts_as_gone(sqlite_store: str) -> None:
    """Killed but not yet reaped by its parent: the pid still answers ``kill(pid, 0)``, but the
    process is dead (state Z)."""
    with _live_child() as child:
        token = _token(child.pid)
        run_id = _add_run(
            sqlite_store,
            host=this_process().host,
            pid=child.pid,
            process_start=token,
            heartbeat_age_s=1,
        )
        assert fail_interrupted_runs(sqlite_store) == []  # alive: kept
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, left unreaped
        os.kill(child.pid, 0)  # the zombie's pid still exists
        assert fail_interrupted_runs(sqlite_store) == [run_id]
    assert (_status(sqlite_store, run_id)[1] or "").startswith(
        f"interrupted: its process {child.pid} on "
    )


@needs_proc
def test_a_reused_pid_is_told_apart_by_its_start_time(sqlite_store: str) -> None:
    """The pid is alive, but the process holding it started at another time: the run's own
    process is gone. With the true start time the same pid keeps its run."""
    with _live_child() as child:
        true_ticks = _ticks(child.pid)
        host = this_process().host
        reused = _add_run(
            sqlite_store,
            host=host,
            pid=child.pid,
            process_start=_token(child.pid, str(int(true_ticks) - 1)),
            heartbeat_age_s=1,
        )
        own = _add_run(
            sqlite_store,
            host=host,
            pid=child.pid,
            process_start=_token(child.pid),
            heartbeat_age_s=1,
        )
        assert fail_interrupted_runs(sqlite_store) == [reused]
        assert _status(sqlite_store, own) == ("running", None)
        assert (_status(sqlite_store, reused)[1] or "").startswith(
            f"interrupted: its process {child.pid} on {host} is gone (pid {child.pid} now "
            "belongs to a later process) (last heartbeat "
        )


@needs_proc
def test_a_live_process_keeps_its_run_however_old_its_heartbeat(sqlite_store: str) -> None:
    me = this_process()
    run_id = _add_run(
        sqlite_store,
        host=me.host,
        pid=me.pid,
        process_start=me.start,
        heartbeat_age_s=10 * HEARTBEAT_STALE_S,
        created_age_s=10 * HEARTBEAT_STALE_S,
    )
    assert fail_interrupted_runs(sqlite_store) == []
    assert _status(sqlite_store, run_id) == ("running", None)


@needs_proc
def test_runs_of_another_host_are_judged_by_their_heartbeat_only(any_store: str) -> None:
    """On a store shared by several hosts a pid means nothing here: a dead pid with a fresh
    heartbeat is kept, a live pid with a stale heartbeat is marked. The same host name with
    another boot (or pid namespace) counts as another host."""
    dead, token = _dead_pid()
    me = this_process()
    stale = HEARTBEAT_STALE_S + 600
    fresh_dead = _add_run(
        any_store, host="other-host", pid=dead, process_start=token, heartbeat_age_s=60
    )
    stale_live = _add_run(
        any_store, host="other-host", pid=me.pid, process_start=me.start, heartbeat_age_s=stale
    )
    other_boot = "00000000-0000-0000-0000-000000000000:1:1"
    fresh_other_boot = _add_run(
        any_store, host=me.host, pid=dead, process_start=other_boot, heartbeat_age_s=60
    )
    stale_other_boot = _add_run(
        any_store, host=me.host, pid=me.pid, process_start=other_boot, heartbeat_age_s=stale
    )
    assert sorted(fail_interrupted_runs(any_store)) == sorted([stale_live, stale_other_boot])
    assert _status(any_store, fresh_dead) == ("running", None)
    assert _status(any_store, fresh_other_boot) == ("running", None)
    error = _status(any_store, stale_live)[1] or ""
    age = re.match(r"interrupted: no heartbeat for (\d+) s ", error)
    assert age is not None, error
    assert int(age.group(1)) >= stale
    assert f"from process {me.pid} on other-host" in error
    assert error.endswith(f"; stale after {HEARTBEAT_STALE_S:.0f} s)")


def test_runs_without_a_process_are_judged_by_heartbeat_then_created_at(any_store: str) -> None:
    """Runs stored before version 4 (no host, pid or heartbeat) count from ``created_at``; the
    threshold is ``stale_after_s``."""
    young = _add_run(any_store, host=None, pid=None, process_start=None, heartbeat_age_s=None)
    old = _add_run(
        any_store, host=None, pid=None, process_start=None, heartbeat_age_s=None, created_age_s=7200
    )
    beating = _add_run(
        any_store,
        host=None,
        pid=None,
        process_start=None,
        heartbeat_age_s=60,
        created_age_s=7200,
    )
    assert fail_interrupted_runs(any_store) == [old]
    assert fail_interrupted_runs(any_store, stale_after_s=30) == [beating]
    assert _status(any_store, young) == ("running", None)


def test_two_concurrent_fail_interrupted_runs_mark_each_run_once(
    any_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both judge every run before either writes (a barrier): each run is still marked by
    exactly one of them, with one reason."""
    ids = [
        _add_run(
            any_store,
            host="other-host",
            pid=123,
            process_start=None,
            heartbeat_age_s=2 * HEARTBEAT_STALE_S,
        )
        for _ in range(3)
    ]
    barrier = threading.Barrier(2, timeout=120)
    real = store.runs._interrupted
    judged: list[int] = []

    def judge_together(run: Any, *args: Any) -> str | None:
        reason = real(run, *args)
        judged.append(run.id)
        if run.id == ids[-1]:
            barrier.wait()  # both have judged all three; now both write
        return reason

    monkeypatch.setattr(store.runs, "_interrupted", judge_together)
    results: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            results[k] = fail_interrupted_runs(any_store)
        except BaseException as exc:  # pragma: no cover (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(judged) == sorted(ids * 2)
    assert sorted(results[0] + results[1]) == ids
    for run_id in ids:
        status, error = _status(any_store, run_id)
        assert status == "failed"
        assert (error or "").startswith("interrupted: no heartbeat for ")


def test_a_heartbeat_between_judging_and_marking_keeps_the_run(
    any_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UPDATE also requires the heartbeat it judged: a process that beats in between (it
    was only slow) keeps its run."""
    run_id = _add_run(
        any_store,
        host="other-host",
        pid=1,
        process_start=None,
        heartbeat_age_s=2 * HEARTBEAT_STALE_S,
    )
    real = store.runs._interrupted

    def beat_meanwhile(run: Any, *args: Any) -> str | None:
        reason = real(run, *args)
        assert reason is not None
        assert RunHeartbeat(get_engine(any_store), run.id).beat()
        return reason

    monkeypatch.setattr(store.runs, "_interrupted", beat_meanwhile)
    assert fail_interrupted_runs(any_store) == []
    monkeypatch.undo()
    assert _status(any_store, run_id) == ("running", None)
    assert fail_interrupted_runs(any_store) == []  # fresh now


def test_run_heartbeat_beats_until_stopped_and_not_on_a_finished_run(any_store: str) -> None:
    run_id = _add_run(
        any_store, host="h", pid=1, process_start=None, heartbeat_age_s=2 * HEARTBEAT_STALE_S
    )
    with get_session(any_store) as session:
        before = session.get_one(BacktestRun, run_id).heartbeat_at
    heartbeat = RunHeartbeat(get_engine(any_store), run_id, interval_s=0.01).start()
    assert heartbeat.beats >= 1  # the first one at once
    with get_session(any_store) as session:
        first = session.get_one(BacktestRun, run_id).heartbeat_at
    assert before is not None
    assert first is not None
    assert first > before
    waited = threading.Event()
    for _ in range(6000):  # a guard against a hang, not a timing: 3 beats come long before
        if heartbeat.beats >= 3:
            break
        waited.wait(0.01)
    assert heartbeat.beats >= 3
    heartbeat.stop()
    assert not any(t.name == f"otonom-heartbeat-run-{run_id}" for t in threading.enumerate())
    beats = heartbeat.beats
    assert fail_interrupted_runs(any_store) == []  # beating: fresh
    with get_engine(any_store).begin() as conn:
        conn.execute(text(f"UPDATE backtest_runs SET status = 'complete' WHERE id = {run_id}"))
    assert heartbeat.beat() is False  # a finished run is left alone
    assert heartbeat.beats == beats + 1
    with pytest.raises(ValueError, match="interval_s is 0"):
        RunHeartbeat(None, run_id, interval_s=0)
    assert RunHeartbeat(None, run_id).start().beat() is False  # no engine: nothing to beat


def test_a_backtest_records_its_process_and_stops_beating(sqlite_store: str) -> None:
    with get_session(sqlite_store) as session:
        write_synthetic(session, ["DEMO-BTC"], dt.date(2020, 1, 1), dt.date(2020, 6, 30), 7)
    with get_session(sqlite_store) as session:
        report = run_backtest(
            session,
            load_strategy(BASELINE),
            ["DEMO-BTC"],
            dt.date(2020, 3, 1),
            dt.date(2020, 6, 30),
        )
    with get_session(sqlite_store) as session:
        run = session.get_one(BacktestRun, report.run_id)
    assert (run.host, run.pid, run.process_start) == tuple(this_process())
    assert run.heartbeat_at is not None
    assert (run.status, run.error) == ("complete", None)
    assert not any(t.name.startswith("otonom-heartbeat-run-") for t in threading.enumerate())


# --- kill -9 in a subprocess ----------------------------------------------------------------------

# The subprocess: patch the point where it kills itself, then run the real `otonom` command.
# kill_before(module, name, n): SIGKILL on the n-th call of module.name, before it runs;
# kill_after: right after the n-th call returns.
_DRIVER = r"""
import importlib, os, signal, sys

point, argv = sys.argv[1], sys.argv[2:]


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def patch(module, name, n, after):
    module = importlib.import_module(module)
    real = getattr(module, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n and not after:
            die()
        out = real(*args, **kwargs)
        if calls[0] == n and after:
            die()
        return out

    setattr(module, name, wrapper)


import otonom_runtime.backtest.records as records

records._BATCH = 500  # several decision batches in a small backtest
if point != "none":
    module, name, n, when = point.split(":")
    patch(module, name, int(n), when == "after")
from otonom_runtime.cli import main

raise SystemExit(main(argv))
"""

BACKTEST_POINTS = {
    # the run row is committed and beating; nothing else happened
    "after-run-row": "otonom_runtime.backtest.runner:load_macro:1:before",
    # the bars are read, the ensemble is simulating
    "mid-simulation": "otonom_runtime.backtest.runner:_simulate:1:before",
    # 2 of 3 decision batches committed
    "mid-decisions": "otonom_runtime.backtest.records:_insert_decisions:2:after",
    # every decision committed, the metrics not yet computed, the run not complete
    "before-finish": "otonom_runtime.backtest.runner:compute_metrics:1:before",
}
IMPORT_POINTS = {
    # the symbol row is flushed (in the open transaction), no bar yet
    "after-symbol": "otonom_runtime.importers:get_or_create_symbol:1:after",
    # every bar inserted and flushed, the transaction not committed
    "before-commit": "otonom_runtime.importers:ImportReport:1:before",
}


def _otonom(
    url: str, *args: str, point: str = "none", cwd: Path
) -> subprocess.CompletedProcess[str]:
    """``otonom --database-url URL ARGS`` in a subprocess (killing itself at ``point``)."""
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-c", _DRIVER, point, "--database-url", url, *args],
        cwd=cwd,
        env=env,  # PYTHONPATH passes through: the code under test
        capture_output=True,
        text=True,
        timeout=600,  # a guard against a hang, not a timing
    )


def _backtest_args() -> list[str]:
    args = ["backtest", "--strategy-path", str(BASELINE), "--quiet", "--plot", "none"]
    for symbol in SYMBOLS:
        args += ["--symbol", symbol]
    return [*args, "--start-date", BACKTEST_RANGE[0], "--end-date", BACKTEST_RANGE[1]]


def _synth(url: str, cwd: Path) -> None:
    args = ["data", "synth", "--start", SYNTH_RANGE[0], "--end", SYNTH_RANGE[1]]
    for symbol in SYMBOLS:
        args += ["--symbol", symbol]
    out = _otonom(url, *args, cwd=cwd)
    assert out.returncode == 0, out.stderr


def _raw_runs(url: str) -> dict[int, tuple[str, str | None, int | None]]:
    """{id: (status, error, pid)} read without opening the store for writing (no init_db)."""
    engine = get_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(BacktestRun.id, BacktestRun.status, BacktestRun.error, BacktestRun.pid)
        ).all()
    dispose_engines()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


_DECISION_VALUES = [
    c for c in Decision.__table__.columns if c.name not in ("id", "run_id", "symbol_id")
]


def _decisions(url: str, run_id: int) -> list[tuple[Any, ...]]:
    """A run's decisions, (symbol, date, every value) sorted; no ids."""
    engine = get_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Symbol.name, *_DECISION_VALUES)
            .join(Symbol, Decision.symbol_id == Symbol.id)
            .where(Decision.run_id == run_id)
            .order_by(Symbol.name, Decision.date)
        ).all()
    dispose_engines()
    return [tuple(r) for r in rows]


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Any, ...]]]:
    """A SQLite store holding the synthetic symbols and one complete backtest (run 1), made by
    the real CLI once; returns the file and run 1's decisions (the reference)."""
    folder = tmp_path_factory.mktemp("kill9-template")
    db = folder / "otonom.db"
    url = f"sqlite:///{db.as_posix()}"
    _synth(url, folder)
    out = _otonom(url, *_backtest_args(), cwd=folder)
    assert out.returncode == 0, out.stderr
    reference = _decisions(url, 1)
    assert len(reference) == 2 * 731
    return db, reference


def _check_killed_backtest(
    url: str, cwd: Path, point: str, reference: list[tuple[Any, ...]], killed_id: int
) -> dict[str, Any]:
    """Kill a backtest at ``point``, then: still ``running``; ``runs list`` marks and shows it
    failed naming the pid; ``runs show --json`` has its process; a rerun equals
    ``reference``. Returns figures for the report."""
    killed = _otonom(url, *_backtest_args(), point=point, cwd=cwd)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    runs = _raw_runs(url)
    status, error, pid = runs[killed_id]
    assert (status, error) == ("running", None)  # what kill -9 leaves: nothing could mark it
    assert pid is not None
    partial = _decisions(url, killed_id)
    assert partial == reference[: len(partial)]  # the committed batches: an exact prefix

    listed = _otonom(url, "runs", "list", cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    reason_start = f"interrupted: its process {pid} on {this_process().host} is gone"
    if not LINUX:
        reason_start = "interrupted: "
    lines = listed.stdout.splitlines()
    row = next(line.split() for line in lines[2:] if line.split()[0] == str(killed_id))
    assert row[6] == "failed"  # (the dates take 3 cells)
    assert any(line.startswith(f"run {killed_id} failed: {reason_start}") for line in lines), (
        listed.stdout
    )
    record = json.loads(_otonom(url, "runs", "show", str(killed_id), "--json", cwd=cwd).stdout)
    assert (record["status"], record["pid"]) == ("failed", pid)
    assert record["host"] == this_process().host
    assert record["heartbeat_at"] is not None
    assert record["error"].startswith(reason_start)

    rerun = _otonom(url, *_backtest_args(), cwd=cwd)
    assert rerun.returncode == 0, rerun.stderr
    runs = _raw_runs(url)
    rerun_id = max(runs)
    assert runs[rerun_id][:2] == ("complete", None)
    assert runs[killed_id][0] == "failed"
    assert _decisions(url, rerun_id) == reference  # identical, and no duplicates
    return {"partial": len(partial)}


@pytest.mark.reliability
@needs_proc
@pytest.mark.parametrize("where", list(BACKTEST_POINTS))
def test_kill9_of_a_backtest_on_sqlite(
    where: str, synth_store: tuple[Path, list[tuple[Any, ...]]], tmp_path: Path
) -> None:
    template, reference = synth_store
    db = tmp_path / "otonom.db"
    shutil.copyfile(template, db)
    url = f"sqlite:///{db.as_posix()}"
    figures = _check_killed_backtest(url, tmp_path, BACKTEST_POINTS[where], reference, 2)
    expected_partial = {
        "after-run-row": 0,
        "mid-simulation": 0,
        "mid-decisions": 1000,
        "before-finish": len(reference),
    }
    assert figures["partial"] == expected_partial[where]


@pytest.mark.reliability
@needs_proc
def test_kill9_of_a_backtest_on_postgres(
    postgres_url: str, synth_store: tuple[Path, list[tuple[Any, ...]]], tmp_path: Path
) -> None:
    """Mid decisions on a real PostgreSQL server: the server drops the dead connection's open
    transaction; the committed batches stay under the failed run."""
    _, reference = synth_store
    url = _empty_postgres(postgres_url)
    dispose_engines()
    _synth(url, tmp_path)
    first = _otonom(url, *_backtest_args(), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert _decisions(url, 1) == reference  # the same decisions as on SQLite
    figures = _check_killed_backtest(url, tmp_path, BACKTEST_POINTS["mid-decisions"], reference, 2)
    assert figures["partial"] == 1000


def _ohlcv(path: Path, days: int, bump: float = 0.0) -> Path:
    lines = ["Date,Open,High,Low,Close,Volume"]
    for i in range(days):
        day = dt.date(2020, 1, 1) + dt.timedelta(days=i)
        o = 100.0 + i + bump
        lines.append(f"{day.isoformat()},{o},{o + 2},{o - 2},{o + 1},{1000 + i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _stored(url: str) -> dict[str, Any]:
    """Every symbol and bar, without ids (read without opening the store for writing)."""
    engine = get_engine(url)
    with engine.connect() as conn:
        symbols = conn.execute(
            select(Symbol.name, Symbol.source, Symbol.is_synthetic).order_by(Symbol.name)
        ).all()
        bars = conn.execute(
            select(Symbol.name, Bar.date, Bar.open, Bar.high, Bar.low, Bar.close, Bar.volume)
            .join(Symbol, Bar.symbol_id == Symbol.id)
            .order_by(Symbol.name, Bar.date)
        ).all()
    dispose_engines()
    return {"symbols": [tuple(s) for s in symbols], "bars": [tuple(b) for b in bars]}


@pytest.mark.reliability
@pytest.mark.parametrize("where", [*IMPORT_POINTS, "replace-before-commit"])
def test_kill9_of_an_import(where: str, tmp_path: Path) -> None:
    """Killed before its commit: nothing of the import is visible (a fresh import: no symbol,
    no bar; a ``--replace`` re-import: the bars as they were); the rerun gives exactly what an
    import that was never killed gives."""
    first = _ohlcv(tmp_path / "first.csv", 300)
    changed = _ohlcv(tmp_path / "changed.csv", 400, bump=0.5)  # 300 bars differ, 100 new
    reference_url = f"sqlite:///{(tmp_path / 'reference.db').as_posix()}"
    url = f"sqlite:///{(tmp_path / 'store' / 'otonom.db').as_posix()}"

    def import_csv(target: str, csv: Path, point: str = "none", *extra: str) -> Any:
        return _otonom(
            target,
            "data",
            "import-csv",
            str(csv),
            "--symbol",
            "REAL",
            *extra,
            point=point,
            cwd=tmp_path,
        )

    replace = where == "replace-before-commit"
    point = IMPORT_POINTS["before-commit" if replace else where]
    extra = ("--replace",) if replace else ()
    for target in (reference_url, url):
        if replace:
            assert import_csv(target, first).returncode == 0
    assert import_csv(reference_url, changed if replace else first, "none", *extra).returncode == 0
    reference = _stored(reference_url)
    before = _stored(url) if replace else {"symbols": [], "bars": []}

    killed = import_csv(url, changed if replace else first, point, *extra)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert _stored(url) == before  # no half import visible
    listed = _otonom(url, "data", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert ("REAL" in listed.stdout) == replace
    rerun = import_csv(url, changed if replace else first, "none", *extra)
    assert rerun.returncode == 0, rerun.stderr
    assert _stored(url) == reference
    assert len(reference["bars"]) == (400 if replace else 300)
    with get_session(url) as session:  # one row per date
        assert session.execute(select(func.count()).select_from(Bar)).scalar_one() == len(
            reference["bars"]
        )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_this_process_reads_its_start_once_and_a_fork_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``this_process`` reads ``/proc`` once per pid (a daemon's tick asks for it each tick),
    and a forked child, whose pid differs, gets its own start, the one ``/proc`` gives it."""
    from otonom_runtime.store import runs

    me = this_process()
    assert me.start is not None
    assert me.start.endswith(f":{_ticks(os.getpid())}")
    reads: list[int] = []
    start_ticks = runs._start_ticks
    monkeypatch.setattr(runs, "_start_ticks", lambda pid: reads.append(pid) or start_ticks(pid))
    assert [this_process() for _ in range(3)] == [me] * 3
    assert reads == []  # read already, for this pid
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its identity through the pipe, then out at once
        try:
            os.write(write, repr(tuple(this_process())).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        got = pipe.read()
    ticks = _ticks(child)  # exited, not reaped yet: its /proc entry still there
    os.waitpid(child, 0)
    assert got == repr((me.host, child, f"{me.start.rpartition(':')[0]}:{ticks}"))
