"""The distributed tick (``otonom_runtime.daemon.distributed``): a local Dask cluster of two
worker processes deciding against a shared PostgreSQL store gives exactly the decision rows of
one process, and a repeated tick records nothing new."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import otonom_runtime.daemon.distributed as dist
from otonom_runtime.daemon import Ensemble, PaperBroker, run_tick
from otonom_runtime.daemon.distributed import partition, run_tick_distributed
from otonom_runtime.store import (
    SIGNAL_COLUMNS,
    BacktestRun,
    Decision,
    Symbol,
    dispose_engines,
    get_session,
    init_db,
)
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.models import make_policy_model
from otonom_runtime.testing.postgres import new_database

distributed = pytest.importorskip("distributed")

SYMBOLS = ["DEMO-A", "DEMO-B", "DEMO-C", "DEMO-D", "DEMO-E"]
HISTORY = (dt.date(2019, 1, 1), dt.date(2020, 1, 31))
TICKS = [HISTORY[1] - dt.timedelta(days=k) for k in (3, 2, 1, 0)]
_ROW = ("date", "action", "strength", "position", "leverage", "cash_fraction")
_ROW += ("days_since_last_trade", "equity", "live_strategy", *SIGNAL_COLUMNS)


def _strategy(folder: Path) -> Path:
    make_policy_model(folder / "models" / "rl" / "policy_best.onnx", seed=3)
    path = folder / "dist.yaml"
    path.write_text(
        "name: dist\n"
        "ensemble:\n"
        "  analyst_weights: {tech: 1.0, news: 1.0, risk: 1.0, rl: 2.0}\n"
        "  min_score: 0.4\n"
        "  rl_policy: {enabled: true, model_path: models/rl/policy_best.onnx}\n"
        "portfolio: {max_leverage: 2.0}\n",
        encoding="utf-8",
    )
    return path


def _store(server: str) -> str:
    url = new_database(server, "dist")
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, SYMBOLS, HISTORY[0], HISTORY[1], 11)
    return url


def _rows(url: str) -> list[tuple[Any, ...]]:
    columns = [getattr(Decision, c) for c in _ROW]
    query = (
        select(Symbol.name, *columns)
        .join(Symbol, Decision.symbol_id == Symbol.id)
        .order_by(Symbol.name, Decision.date)
    )
    with get_session(url) as session:
        return [tuple(r) for r in session.execute(query)]


def _runs(url: str) -> int:
    with get_session(url) as session:
        return int(session.execute(select(func.count()).select_from(BacktestRun)).scalar_one())


def test_partition() -> None:
    assert partition(["a", "b", "c", "a", "d", "e"], 2) == [["a", "b", "c"], ["d", "e"]]
    assert partition(["a"], 4) == [["a"]]
    assert partition(list("abcdefg"), 3) == [["a", "b", "c"], ["d", "e"], ["f", "g"]]


def test_the_partitions_reports_merge_every_list() -> None:
    """What each partition's tick reports of its symbols (decided already, no bars, warming
    up), in partition order; the smallest run id; fallbacks summed; any conflict."""
    from otonom_runtime.daemon.loop import TickReport

    a = TickReport(7, up_to_date=["A"], no_bars=["B"], warming_up=["C"], fallbacks=1)
    b = TickReport(5, up_to_date=["D"], warming_up=["E", "F"], fallbacks=2, conflict=True)
    merged = dist._merge([a, b])
    assert (merged.run_id, merged.fallbacks, merged.conflict) == (5, 3, True)
    assert (merged.up_to_date, merged.no_bars) == (["A", "D"], ["B"])
    assert merged.warming_up == ["C", "E", "F"]


def test_two_dask_workers_decide_as_one_process(postgres_url: str, tmp_path: Path) -> None:
    strategy = _strategy(tmp_path)
    one, spread = _store(postgres_url), _store(postgres_url)
    ensemble = Ensemble.from_strategy(strategy)
    with get_session(one) as session:
        for day in TICKS:
            run_tick(session, ensemble, SYMBOLS, PaperBroker(), as_of=day)
    dispose_engines()
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        reports = [
            run_tick_distributed(client, spread, strategy, SYMBOLS, as_of=day)[0] for day in TICKS
        ]
        again, latencies = run_tick_distributed(client, spread, strategy, SYMBOLS)
        # each worker process loaded the strategy and its model once, for all its tasks
        loaded = client.run(lambda: len(dist._ENSEMBLES))
    assert sorted(loaded.values()) == [1, 1]
    assert [len(r.decisions) for r in reports] == [len(SYMBOLS)] * len(TICKS)
    assert [d.symbol for d in reports[0].decisions] == SYMBOLS  # partition order kept
    assert reports[0].fallbacks == 0
    assert again.run_id is None
    assert again.decisions == []
    assert sorted(again.up_to_date) == SYMBOLS
    assert latencies == []  # nothing left to decide: no predict call
    expected = _rows(one)
    assert len(expected) == len(SYMBOLS) * len(TICKS)
    assert any(r[4] != 0.0 for r in expected)  # the paper positions moved: capital matters
    got = _rows(spread)
    assert got == expected  # every value, exactly (inf: never traded, compared as inf)
    assert all(math.isfinite(r[8]) for r in got)
    assert _runs(spread) == 2 * len(TICKS)  # a run row per partition and tick
    assert _runs(one) == len(TICKS)


def test_cli_daemon_on_a_local_dask_cluster(postgres_url: str, tmp_path: Path) -> None:
    """``otonom daemon --dask-scheduler local:2 --once`` in a subprocess: the tick's rows are
    one process's; a second run records nothing; the cluster is gone when it exits."""
    import subprocess
    import sys

    strategy = _strategy(tmp_path)
    one, spread = _store(postgres_url), _store(postgres_url)
    with get_session(one) as session:
        run_tick(session, Ensemble.from_strategy(strategy), SYMBOLS, PaperBroker())

    def daemon() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "otonom_runtime", "--database-url", spread, "daemon",
             "--strategy-path", str(strategy), "--symbols", *SYMBOLS, "--once",
             "--dask-scheduler", "local:2"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    first = daemon()
    assert first.returncode == 0, first.stderr
    assert "dask: 2 workers at tcp://127.0.0.1:" in first.stdout
    assert f"{len(SYMBOLS)} decisions" in first.stdout
    assert _rows(spread) == _rows(one)
    second = daemon()
    assert second.returncode == 0, second.stderr
    assert "tick: nothing new (5 symbols decided already)" in second.stdout
    assert _rows(spread) == _rows(one)


def test_connect_refuses_bad_addresses() -> None:
    from otonom_runtime import DaemonError
    from otonom_runtime.daemon.distributed import connect

    for address in ("local:0", "local:x"):
        with pytest.raises(DaemonError, match=r"expected local:N with N >= 1"):
            connect(address)
    with pytest.raises(DaemonError, match=r"cannot reach the Dask scheduler at 'nonsense://x'"):
        connect("nonsense://x")
