"""bench/daemon.py --quick, run for real (a subprocess) at 20 symbols: every subject has its
row, both ratios of issue 16 are printed with MET or MISSED, and the per-symbol way's RL
actions equal the tick's (the two ways decide the same states); and its floor's SQL is the
tick's own."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from otonom_runtime.daemon import PaperBroker, run_tick
from otonom_runtime.store import dispose_engines, get_session

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_prints_both_ratios_and_the_cold_tick(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "daemon.py"), "--symbols", "20", "--quick"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for row in ("cold first tick", "steady tick", "per-symbol build_state + predict", "floor"):
        assert f"  {row}" in out, out
    assert re.search(r"(MET   |MISSED) per-symbol / steady +\d+\.\d\d \(>= 50\)", out), out
    assert re.search(r"(MET   |MISSED) steady / floor +\d+\.\d\d \(<= 1\.5\)", out), out
    assert "RL signal on 40 of 40 calls" in out, out
    assert list(tmp_path.iterdir()) == []  # the store goes to a temporary folder


def _bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """bench/daemon.py as a module (not in sys.modules)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_daemon", ROOT / "bench" / "daemon.py")
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)  # not in sys.modules
    spec.loader.exec_module(bench)
    return bench


def _steady_statements(
    bench: Any, url: str, tmp_path: Path, names: list[str], monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Every statement a steady ``run_tick`` of the bench's store sends the driver: through
    SQLAlchemy's execution (its ``before_cursor_execute`` event; psycopg's ``COPY`` is spied
    by the caller) and on the driver's own cursor (the reads streamed as numbers: their SQL
    as ``store.tickplans._bound`` gives it to the cursor)."""
    from otonom_runtime.store import tickplans

    later = bench._store(url, names, 1)
    ensemble, broker = bench._ensemble(tmp_path), PaperBroker()
    statements: list[str] = []
    bound = tickplans._bound

    def spy(*args: Any, **kwargs: Any) -> Any:
        sql, params = bound(*args, **kwargs)
        statements.append(sql)
        return sql, params

    monkeypatch.setattr(tickplans, "_bound", spy)

    def seen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    with get_session(url) as session:
        run_tick(session, ensemble, names, broker, as_of=bench.LAST)
        bench._import(url, later[bench.LAST + dt.timedelta(1)])  # the next bars come
        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", seen)
        try:
            run_tick(session, ensemble, names, broker, as_of=bench.LAST + dt.timedelta(1))
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    dispose_engines()
    return statements


def test_the_floor_is_the_sql_a_steady_tick_issues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every statement of the bench's floor (``FLOOR_SQL``) is verbatim one a steady
    ``run_tick`` issues (captured on SQLite, the IN lists' markers one per symbol), so the
    floor follows the tick's SQL and cannot be made cheaper on its own."""
    bench = _bench(monkeypatch)
    monkeypatch.setenv("OTONOM_MODELS_ROOT", str(tmp_path))  # _ensemble sets it: restored
    names = ["S00000", "S00001", "S00002"]
    url = f"sqlite:///{(tmp_path / 'store.db').as_posix()}"
    statements = _steady_statements(bench, url, tmp_path, names, monkeypatch)
    markers = ", ".join(["?"] * len(names))
    for name, template in bench.FLOOR_SQL.items():
        assert template.format(names=markers, ids=markers) in statements, name


def test_the_postgresql_floor_is_the_sql_a_steady_tick_issues_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on PostgreSQL (a real server): ``FLOOR_SQL_POSTGRES`` verbatim (the IN lists
    one array parameter each), and its ``COPY`` of the decisions (its columns and types) the
    one the store's writer sends."""
    import psycopg

    from otonom_runtime.store import writers
    from otonom_runtime.store.tables import Decision
    from otonom_runtime.testing.postgres import new_database, postgres_for_tests

    bench = _bench(monkeypatch)
    monkeypatch.setenv("OTONOM_MODELS_ROOT", str(tmp_path))
    copies: list[str] = []
    copy = psycopg.Cursor.copy

    def spy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        copies.append(str(statement))
        return copy(self, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", spy)
    with postgres_for_tests() as server:
        url = new_database(server, "floor")
        names = ["S00000", "S00001", "S00002"]
        statements = _steady_statements(bench, url, tmp_path, names, monkeypatch)
    for name, sql in bench.FLOOR_SQL_POSTGRES.items():
        assert sql in (copies if name == "copy" else statements), name
    table = Decision.__table__
    assert list(bench.COPY_TYPES) == [
        writers._copy_type(table.c[c]) for c in bench.DECISION_COLUMNS
    ]
