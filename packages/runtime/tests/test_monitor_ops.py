"""``otonom monitor``'s operational items (``otonom_runtime.monitor_ops``) on constructed stores
(real SQLite files): planted fallbacks and daemon latencies show up, the Sharpe with and without
the RL analyst equals a hand computation, an injected breach alerts, unchanged data is quiet."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from otonom_runtime.monitor import monitor, prometheus_text, table_text
from otonom_runtime.policy import load_rl_policy
from otonom_runtime.store import (
    BacktestRun,
    Decision,
    Symbol,
    get_session,
    init_db,
    load_history,
)
from otonom_runtime.store.daemons import write_daemon_state
from otonom_runtime.store.monitoring import monitored_decisions
from otonom_runtime.strategy import MonitoringConfig, parse_strategy
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.models import make_policy_model

D = dt.date
DAYS = [D(2020, 1, 1) + dt.timedelta(k) for k in range(90)]
CFG = MonitoringConfig(min_hit_rate=0.0, min_rows=10)
HOLD, BUY, SELL = 0, 1, 2
LATENCY = {"n": 40.0, "p50": 0.4, "p90": 0.9, "p99": 3.5, "max": 4.0}


def _teachers(k: int) -> tuple[int, float]:
    """Day k's three-analyst call, the same from all three: BUY 0.5, SELL 0.2, HOLD."""
    return ((BUY, 0.5), (SELL, 0.2), (HOLD, 0.0))[k % 3]


def _stored(k: int) -> tuple[int, float]:
    """Day k's decision as stored (with the RL analyst): unlike the three on every 4th day."""
    return (SELL, 0.8) if k % 4 == 0 else _teachers(k)


def _decisions(run_id: int, symbol_id: int, rl_on: bool, fallback: set[int]) -> list[Decision]:
    rows = []
    for k, day in enumerate(DAYS):
        action, strength = _stored(k) if rl_on and k not in fallback else _teachers(k)
        teacher, t_strength = _teachers(k)
        rl = None if k in fallback or not rl_on else action
        rows.append(Decision(
            run_id=run_id, symbol_id=symbol_id, date=day, action=action, strength=strength,
            position=0.0, leverage=0.0, cash_fraction=1.0, days_since_last_trade=math.inf,
            equity=1.0,
            **{f"{a}_action": teacher for a in ("tech", "news", "risk")},
            **{f"{a}_strength": t_strength for a in ("tech", "news", "risk")},
            **{f"{a}_confidence": 1.0 for a in ("tech", "news", "risk")},
            rl_action=rl, rl_strength=None if rl is None else strength,
            rl_confidence=None if rl is None else 0.9,
        ))  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run 1: DEMO-A decided over ``DAYS`` with the RL analyst on, 5 fallbacks planted (days
    10..14); run 2: the same, RL off and no fallback; a daemon state row with latencies."""
    tmp = tmp_path_factory.mktemp("monitor_ops")
    url = f"sqlite:///{(tmp / 'otonom.db').as_posix()}"
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, ["DEMO-A"], D(2019, 6, 1), D(2020, 6, 30), 4)
        session.commit()
        symbol_id = session.execute(select(Symbol.id).where(Symbol.name == "DEMO-A")).scalar_one()
        for rl_on in (True, False):
            run = BacktestRun(
                strategy_name="ops", strategy_hash="x", params={"rl_enabled": rl_on},
                start_date=DAYS[0], end_date=DAYS[-1], symbols=["DEMO-A"], status="complete",
            )  # fmt: skip
            session.add(run)
            session.flush()
            session.add_all(_decisions(run.id, symbol_id, rl_on, set(range(10, 15))))
        write_daemon_state(session, "ops", {
            "host": "h", "pid": 1, "status": "running",
            "started_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
            "heartbeat_at": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
            "ticks": 3, "fallbacks": 7, "latency_ms": LATENCY,
        })  # fmt: skip
        session.commit()
    model = tmp / "m" / "policy.onnx"
    make_policy_model(model)
    strategy = tmp / "ops.yaml"
    strategy.write_text(
        "name: ops\ncalendar:\n  periods_per_year: 365\nmonitoring:\n  min_hit_rate: 0.0\n"
        "  min_rows: 10\n  max_fallback_rate: 0.1\n",
        encoding="utf-8",
    )
    return {"url": url, "model": model, "tmp": tmp, "strategy": strategy}


def _report(store: dict[str, Any], run: int, cfg: MonitoringConfig = CFG, **kw: Any) -> Any:
    config = parse_strategy({"name": "ops", "calendar": {"periods_per_year": 365}})
    with get_session(store["url"]) as session:
        rows = monitored_decisions(session, [run], None, None)
        return monitor(session, load_rl_policy(store["model"]), cfg, rows, strategy=config, **kw)


def _hand_sharpe(calls: list[tuple[int, float]], close: dict[D, float]) -> float:
    """mean / std (ddof 1) x sqrt(365) of each day's signed call times its next close's return."""
    days = sorted(close)
    out = []
    for k, day in enumerate(DAYS):
        nxt = days[days.index(day) + 1]
        sign = {BUY: 1.0, SELL: -1.0, HOLD: 0.0}[calls[k][0]]
        out.append(sign * calls[k][1] * (close[nxt] / close[day] - 1.0))
    r = np.array(out)
    return float(r.mean() / r.std(ddof=1) * math.sqrt(365))


def test_sharpe_with_and_without_rl_by_hand(store: dict[str, Any]) -> None:
    with get_session(store["url"]) as session:
        h = load_history(session, "DEMO-A")
    close = dict(zip(h.dates.tolist(), h.close.tolist(), strict=True))
    report = _report(store, 1)
    with_rl = _hand_sharpe(
        [_teachers(k) if 10 <= k < 15 else _stored(k) for k in range(len(DAYS))], close
    )
    without = _hand_sharpe([_teachers(k) for k in range(len(DAYS))], close)
    assert with_rl != pytest.approx(without)
    for scope in ("DEMO-A", "all"):
        assert report.value(scope, "sharpe_rl").value == pytest.approx(with_rl, rel=1e-9)
        assert report.value(scope, "sharpe_no_rl").value == pytest.approx(without, rel=1e-9)
        gain = report.value(scope, "sharpe_rl_gain")
        assert gain.value == pytest.approx(with_rl - without, rel=1e-9)
    assert report.days.size == len(DAYS)


def test_planted_fallbacks_and_latency_show_up(store: dict[str, Any]) -> None:
    with get_session(store["url"]) as session:
        from otonom_runtime.cli.monitor import _daemon_record

        daemon = _daemon_record(session, "ops")
    report = _report(store, 1, daemon=daemon)
    assert report.value("all", "fallbacks").value == 5
    assert report.value("all", "fallback_rate").value == pytest.approx(5 / 90)
    assert report.value("all", "fallback_rate").status == "alert"  # > 0.05, the default
    for q, v in LATENCY.items():
        if q != "n":
            assert report.value("all", "predict_latency_ms", quantile=q).value == v
    assert report.value("all", "daemon_fallbacks").value == 7
    text = table_text(report)
    assert "daemon predict latency: p50 0.400 ms, p90 0.900 ms, p99 3.500 ms" in text
    assert "note: daemon state of 2026-01-02 00:00 UTC: its last 40 predict calls" in text
    assert "ALERT: all fallback_rate = 0.05556" in text
    prom = prometheus_text(report)
    assert 'otonom_monitor_predict_latency_ms{symbol="all",quantile="p99"} 3.5' in prom
    assert 'otonom_monitor_fallbacks{symbol="DEMO-A"} 5' in prom


def test_daemon_record_says_when_it_served_another_model(store: dict[str, Any]) -> None:
    from otonom_runtime.cli.monitor import _daemon_record

    with get_session(store["url"]) as session:
        write_daemon_state(session, "ops", {"model_sha256": "a" * 64, "model_version": "v2"})
        try:
            same = _daemon_record(session, "ops", "a" * 64)
            other = _daemon_record(session, "ops", "b" * 64)
        finally:
            write_daemon_state(session, "ops", {"model_sha256": None, "model_version": None})
    assert same is not None
    assert other is not None
    assert (same["other_model"], other["other_model"]) == (False, True)
    report = _report(store, 2, daemon=other)
    note = report.value("all", "daemon_fallbacks").note
    assert note.endswith("model version v2 (not the model monitored): its last 40 predict calls")


def test_injected_breaches_alert_and_unchanged_data_is_quiet(store: dict[str, Any]) -> None:
    quiet = _report(store, 2)  # RL off: the same decisions twice, no fallback, no daemon
    assert quiet.alerts == [], table_text(quiet)
    assert quiet.value("all", "sharpe_rl_gain").value == pytest.approx(0.0, abs=1e-12)
    assert quiet.value("all", "fallback_rate").status == "info"
    lenient = MonitoringConfig(
        min_hit_rate=0.0, min_rows=10, max_fallback_rate=0.1, max_rl_sharpe_loss=100.0
    )
    daemon = {"heartbeat_at": None, "fallbacks": 0, "latency_ms": LATENCY}
    assert _report(store, 1, lenient, daemon=daemon).alerts == []
    strict = MonitoringConfig(
        min_hit_rate=0.0, min_rows=10, max_fallback_rate=0.01, max_latency_ms=1.0,
        max_rl_sharpe_loss=0.0,
    )  # fmt: skip
    report = _report(store, 1, strict, daemon=daemon)
    gain = report.value("all", "sharpe_rl_gain").value
    assert gain is not None
    flagged = {(i.scope, i.metric) for i in report.alerts}
    assert ("all", "fallback_rate") in flagged
    assert ("all", "predict_latency_ms") in flagged
    assert (("all", "sharpe_rl_gain") in flagged) == (gain < 0)


def test_cli_live_and_thresholds_from_yaml(store: dict[str, Any]) -> None:
    tmp: Path = store["tmp"]
    base = ["--database-url", store["url"], "monitor", "--strategy-path", str(store["strategy"])]
    base += ["--model", str(store["model"]), "--since", "2020-01-01"]
    out = subprocess.run(
        [sys.executable, "-m", "otonom_runtime", *base, "--run", "1", f"--plot={tmp / 'd.png'}"],
        cwd=tmp, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode in (0, 3), out.stderr
    assert "Sharpe RL/no RL" in out.stdout
    assert "ALERT: all fallback_rate" not in out.stdout  # max_fallback_rate 0.1 in the YAML
    assert (tmp / "d.png").read_bytes()[:4] == b"\x89PNG"
