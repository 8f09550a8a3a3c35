"""``otonom monitor`` and its maths: a real SQLite store, real backtest decisions, a real sealed
ONNX model with and without ``otonom.training_summary``, drift injected on purpose."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert

from otonom_runtime import StrategyError
from otonom_runtime.backtest import run_backtest
from otonom_runtime.builder import RlStateBuilder
from otonom_runtime.daemon import Ensemble, PaperBroker, run_tick
from otonom_runtime.drift import chi2_sf, chi_square_test, psi, summarize_training
from otonom_runtime.monitor import monitor, prometheus_text, table_text
from otonom_runtime.policy import TRAINING_SUMMARY_KEY, load_rl_policy
from otonom_runtime.store import Bar, get_or_create_symbol, get_session, init_db
from otonom_runtime.store.monitoring import monitored_decisions
from otonom_runtime.strategy import MonitoringConfig, parse_strategy
from otonom_runtime.synth import generate_market, write_synthetic
from otonom_runtime.testing.models import make_policy_model, random_weights

ROOT = Path(__file__).resolve().parents[3]
D = dt.date
TRAIN = (D(2020, 1, 1), D(2020, 12, 31))
LATER = (D(2021, 1, 1), D(2021, 12, 31))
QUIET = MonitoringConfig(min_hit_rate=0.0)


def _drift_bars(session: Any) -> None:
    """DRIFT: DEMO-A's market with four times its daily moves and a steady climb (a market the
    model never saw), and no sentiment."""
    market = generate_market("DEMO-A", D(2019, 6, 1), LATER[1], 8)
    h = market.history
    ret = np.diff(np.log(h.close)) * 4.0 + 0.004
    close = h.close[0] * np.exp(np.concatenate([[0.0], np.cumsum(ret)]))
    symbol, _ = get_or_create_symbol(session, "DRIFT", source="test", is_synthetic=False)
    rows = []
    for i, day in enumerate(h.dates.tolist()):
        c = float(close[i])
        o = float(close[i - 1]) if i else c
        rows.append(
            {"symbol_id": symbol.id, "date": day, "open": o, "high": max(o, c) * 1.01,
             "low": min(o, c) * 0.99, "close": c, "volume": float(h.volume[i])}
        )  # fmt: skip
    session.execute(insert(Bar), rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with runs 1 (DEMO-A, 2020: the training period), 2 (DEMO-A, 2021), 3
    (DRIFT, 2021) and 4 (run 1 with the summarised model serving as the RL analyst), the
    daemon's live decisions of DEMO-A for 50 days of 2021 with that model; a model without
    summary and the same weights with the summary of run 1."""
    tmp = tmp_path_factory.mktemp("monitor")
    url = f"sqlite:///{(tmp / 'otonom.db').as_posix()}"
    init_db(url)
    config = parse_strategy({"name": "watched"})
    with get_session(url) as session:
        write_synthetic(session, ["DEMO-A"], D(2019, 6, 1), LATER[1], 8)
        _drift_bars(session)
        session.commit()
        for symbol, (start, end) in (("DEMO-A", TRAIN), ("DEMO-A", LATER), ("DRIFT", LATER)):
            run_backtest(session, config, [symbol], start, end)
    weights = random_weights(hidden=16, layers=1, seed=3)
    bare = tmp / "bare" / "policy.onnx"
    make_policy_model(bare, weights=weights)
    policy = load_rl_policy(bare)
    with get_session(url) as session:
        rows = monitored_decisions(session, [1], None, None)
        states = RlStateBuilder(session).build_states(
            "DEMO-A",
            rows["date"],
            np.column_stack(
                [rows[k] for k in ("position", "leverage", "cash_fraction")]
                + [np.tanh(np.asarray(rows["days_since_last_trade"]) / 10.0)]
            ),
        )
    predicted, _, _ = policy.predict_batch(states)
    summary = summarize_training(states, rows["action"], predicted)
    model = tmp / "summary" / "policy.onnx"
    make_policy_model(
        model, weights=weights, metadata_overrides={TRAINING_SUMMARY_KEY: json.dumps(summary)}
    )
    with get_session(url) as session:  # run 4: DEMO-A in 2020 with that model serving
        run_backtest(session, config, ["DEMO-A"], *TRAIN, use_rl=True, policy=load_rl_policy(model))
    ensemble = Ensemble(config, use_rl=True, policy=load_rl_policy(model))
    with get_session(url) as session:  # live: the daemon deciding DEMO-A, 2021-01-01 .. 02-19
        for k in range(50):
            run_tick(session, ensemble, ["DEMO-A"], PaperBroker(), as_of=LATER[0] + dt.timedelta(k))
    strategy = tmp / "strategy.yaml"
    strategy.write_text("name: watched\nmonitoring:\n  min_hit_rate: 0.0\n", encoding="utf-8")
    return {"url": url, "bare": bare, "model": model, "tmp": tmp, "strategy": strategy}


def _report(
    world: dict[str, Any], run: int, model: str = "model", cfg: MonitoringConfig = QUIET
) -> Any:
    with get_session(world["url"]) as session:
        rows = monitored_decisions(session, [run], None, None)
        return monitor(session, load_rl_policy(world[model]), cfg, rows)


def test_quiet_on_the_training_period(world: dict[str, Any]) -> None:
    report = _report(world, 1)
    assert report.alerts == []
    assert all(i.status in ("ok", "info") for i in report.items), table_text(report)
    assert report.value("all", "feature_psi", feature_group="market").value == pytest.approx(
        0.0, abs=1e-9
    )
    # RL off: the three analysts' vote recomputed from the stored signals is the decision
    assert report.value("all", "sharpe_rl_gain").value == pytest.approx(0.0, abs=1e-12)
    assert report.value("all", "fallbacks").value == 0


def test_flags_an_injected_drift(world: dict[str, Any]) -> None:
    report = _report(world, 3)
    flagged = {(i.scope, i.metric, i.labels) for i in report.alerts}
    for group in ("market", "technical"):
        assert ("DRIFT", "feature_psi", (("feature_group", group),)) in flagged
    chi2 = report.value("all", "action_chi2_p")  # significant, but the mix moved little:
    assert chi2.value is not None
    assert chi2.value < 1e-50
    assert chi2.status == "warn"  # action PSI 0.066 < psi_warn
    strict = _report(world, 1, cfg=MonitoringConfig(min_hit_rate=0.99))
    assert [i.metric for i in strict.alerts] == ["hit_rate", "hit_rate"]  # DEMO-A and all


def test_states_are_the_ones_the_backtest_served(world: dict[str, Any]) -> None:
    """Run 4 served the model: rebuilt states give the RL action of every stored row."""
    report = _report(world, 4)
    item = report.value("all", "served_agreement")
    assert item.value == 1.0
    assert item.note == "366 rows with a stored RL action"
    with pytest.raises(KeyError):
        _report(world, 1).value("all", "served_agreement")  # run 1 served no model


def test_live_decisions_of_the_daemon(world: dict[str, Any]) -> None:
    """``--live``: the daemon's decisions; its states are the ones rebuilt here."""
    with get_session(world["url"]) as session:
        rows = monitored_decisions(session, [], None, None, live_strategy="watched")
        assert len(rows["date"]) == 50
        report = monitor(session, load_rl_policy(world["model"]), QUIET, rows)
    assert report.value("DEMO-A", "served_agreement").value == 1.0
    assert report.value("DEMO-A", "rows").value == 50.0


def test_model_without_summary(world: dict[str, Any]) -> None:
    report = _report(world, 3, "bare")
    assert not report.has_summary
    assert report.alerts == []
    psi_item = report.value("DRIFT", "feature_psi", feature_group="market")
    assert (psi_item.value, psi_item.status, psi_item.note) == (None, "n/a", "no training summary")
    assert "no training summary" in table_text(report)
    assert load_rl_policy(world["bare"]).training_summary() is None
    assert load_rl_policy(world["model"]).training_summary() is not None


def test_psi_and_chi_square_by_hand() -> None:
    e, a = [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]
    by_hand = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.4 - 0.3) * math.log(0.4 / 0.3)
    assert psi(e, a) == pytest.approx(by_hand, rel=1e-6)
    assert psi([10, 0], [5, 5]) == pytest.approx(
        (0.5 - (1 - 1e-4) / 1) * math.log(0.5 / (1 - 1e-4)) + (0.5 - 1e-4) * math.log(0.5 / 1e-4),
        rel=1e-3,
    )
    stat, p = chi_square_test([30, 50, 20], [1 / 3, 1 / 3, 1 / 3])
    assert stat == pytest.approx(
        ((30 - 100 / 3) ** 2 + (50 - 100 / 3) ** 2 + (20 - 100 / 3) ** 2) / (100 / 3)
    )
    assert p == pytest.approx(math.exp(-stat / 2))  # dof 2
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, abs=1e-9)  # tables: 95 % at dof 1
    assert chi2_sf(11.070497693516351, 5) == pytest.approx(0.05, abs=1e-9)
    assert chi2_sf(18.307038053275146, 10) == pytest.approx(0.05, abs=1e-9)


def _parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A tiny parser of the text exposition format: HELP/TYPE before each family's samples."""
    sample = re.compile(r'^([a-z_][a-z0-9_]*)\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\} (\S+)$')
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind == "gauge"
            typed.add(name)
            continue
        m = sample.match(line)
        assert m, line
        assert m.group(1) in typed, line
        labels = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        families.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return families


def test_prometheus_output_parses(world: dict[str, Any]) -> None:
    parsed = _parse_prometheus(prometheus_text(_report(world, 3)))
    drift = {
        s["feature_group"]: v
        for s, v in parsed["otonom_monitor_feature_psi"]
        if s["symbol"] == "DRIFT"
    }
    assert drift["market"] > 0.25
    assert any(v == 2 for _, v in parsed["otonom_monitor_status"])


def _otonom(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_runtime", *args], cwd=cwd, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def test_cli_run_outputs_and_errors(world: dict[str, Any]) -> None:
    tmp: Path = world["tmp"]
    base = ["--database-url", world["url"], "monitor", "--strategy-path", str(world["strategy"])]
    base += ["--model", str(world["model"])]
    out = [f"--json={tmp / 'r.json'}", f"--prometheus={tmp / 'r.prom'}", f"--plot={tmp / 'r.png'}"]
    quiet = _otonom(*base, "--run", "1", "--since", "2020-01-01", *out, cwd=tmp)
    assert quiet.returncode == 0, quiet.stderr
    assert "0 alert(s)" in quiet.stdout
    assert json.loads((tmp / "r.json").read_text())["alerts"] == 0
    assert (tmp / "r.png").read_bytes()[:4] == b"\x89PNG"
    _parse_prometheus((tmp / "r.prom").read_text())
    drifted = _otonom(*base, "--run", "3", "--since", "365d", cwd=tmp)
    assert drifted.returncode == 3, drifted.stderr
    assert "ALERT: DRIFT feature_psi feature_group=market" in drifted.stdout
    live = _otonom(*base, "--live", "--since", "20d", cwd=tmp)
    assert live.returncode == 0, live.stderr
    header = "strategy 'watched' (live); window 2021-01-31 .. 2021-02-19, decisions 2021-01-31"
    assert f"{header} .. 2021-02-19\n" in live.stdout
    # a window wider than the decisions: it says where they begin and end, not the window alone
    wide = _otonom(*base, "--live", "--since", "1999-01-01", "--until", "2021-06-30", cwd=tmp)
    assert wide.returncode == 3, wide.stderr  # (its 50 days alert)
    assert wide.stdout.splitlines()[0].endswith(
        "; window 1999-01-01 .. 2021-06-30, decisions 2021-01-01 .. 2021-02-19"
    )
    missing = tmp / "none.json"
    bad = _otonom(*base, "--run", "99", f"--json={missing}", cwd=tmp)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: run(s) [99]")
    assert not missing.exists()
    (tmp / "afile").write_text("x", encoding="utf-8")  # a JSON target under a file: fails
    chart = tmp / "late.png"
    failing = _otonom(
        *base, "--run", "1", f"--plot={chart}", f"--json={tmp / 'afile' / 'r.json'}", cwd=tmp
    )
    assert failing.returncode == 1
    assert failing.stderr.startswith("error: ")
    assert failing.stderr.count("\n") == 1
    assert not chart.exists()  # the chart written before the failure is removed again


def test_cli_says_which_key_names_no_model_and_that_the_analyst_is_disabled(
    world: dict[str, Any],
) -> None:
    """A strategy whose RL analyst is off is loaded without resolving its ``model_path`` (the
    shipped baseline's names a model not trained yet): monitoring it says the file, the key and
    that the analyst is disabled, not a bare "received ..." line."""
    project = world["tmp"] / "project"
    (project / "models").mkdir(parents=True)
    (project / "strategies").mkdir()
    off = project / "strategies" / "off.yaml"
    off.write_text(
        "name: switched_off\nensemble:\n  rl_policy:\n    enabled: false\n"
        "    model_path: models/rl_bc/policy_best.pt\n",
        encoding="utf-8",
    )
    bare = project / "strategies" / "bare.yaml"
    bare.write_text("name: bare\n", encoding="utf-8")
    key = "ensemble.rl_policy.model_path"
    for strategy, start in (
        (off, f"error: {off}: {key}: received 'models/rl_bc/policy_best.pt', which resolves to"),
        (bare, f"error: {bare} names no RL model ({key})"),
    ):
        out = _otonom(
            "--database-url", world["url"], "monitor", "--strategy-path", str(strategy), cwd=project
        )
        assert out.returncode == 1, out.stderr
        assert out.stderr.startswith(start), out.stderr
        assert out.stderr.endswith(
            "pass --model PATH (its RL analyst is disabled: name the model to monitor)\n"
        ), out.stderr
        assert out.stderr.count("\n") == 1


def _dashboard(report: Any, path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``plot_monitor``'s figure (kept open by catching ``figure``'s return)."""
    from otonom_runtime import plots

    made: list[Any] = []
    real = plots.figure

    def keep(**kwargs: Any) -> Any:
        made.append(real(**kwargs))
        return made[-1]

    monkeypatch.setattr(plots, "figure", keep)
    plots.plot_monitor(report, path)
    (fig,) = made
    return fig


def test_the_dashboard_says_what_it_did_not_judge(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three live days: the drift, hit-rate and Sharpe panels carry the table's "not judged"
    notes under their titles, each confidence bucket's bar its number of calls (an empty one
    n=0, not a bare 0 % hit rate) and the one-day curve a marker; a year's run: no note."""
    with get_session(world["url"]) as session:
        rows = monitored_decisions(
            session, [], LATER[0], LATER[0] + dt.timedelta(2), live_strategy="watched"
        )
        few = monitor(session, load_rl_policy(world["model"]), QUIET, rows)
    fig = _dashboard(few, world["tmp"] / "few.png", monkeypatch)
    _mix, conf, drift, outcome = fig.axes
    assert drift.get_title() == (
        "feature drift (PSI, all symbols)\n(3 rows < min_rows 50: not judged)"
    )
    assert conf.get_title().startswith("hit rate by confidence\n(")
    assert conf.get_title().endswith(" calls < min_rows 50: not judged)")
    calls = int(few.value("all", "calls").value or 0)
    labels = [t.get_text() for t in conf.texts]
    assert len(labels) == 5
    assert sum(int(t.removeprefix("n=")) for t in labels) == calls
    assert outcome.get_title().startswith("calls compounded (all symbols)\n(")
    year = _dashboard(_report(world, 1), world["tmp"] / "year.png", monkeypatch)
    assert [ax.get_title() for ax in year.axes] == [
        "model action mix (weekly)",
        "hit rate by confidence",
        "feature drift (PSI, all symbols)",
        "calls compounded (all symbols)",
    ]


def test_the_dashboard_draws_the_action_mix_as_a_stacked_bar_a_week(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weekly action mix is a bar a week (Monday to Sunday) for each action, stacked to the
    week's shares (HOLD, BUY, SELL from the bottom, summing to 1), not lines between weekly
    points; its first and last weeks are 2020's partial ones."""
    report = _report(world, 1)
    mix = _dashboard(report, world["tmp"] / "mix.png", monkeypatch).axes[0]
    assert len(mix.lines) == 0
    assert len(mix.collections) == 0  # no stackplot polygons
    bars = [list(c) for c in mix.containers]
    assert [c.get_label() for c in mix.containers] == ["HOLD", "BUY", "SELL"]
    starts = [D(1970, 1, 1) + dt.timedelta(days=b.get_x()) for b in bars[0]]  # mpl's epoch
    assert {d.weekday() for d in starts} == {0}  # Mondays
    assert (starts[0], starts[-1], len(starts)) == (D(2019, 12, 30), D(2020, 12, 28), 53)
    assert all(b.get_width() == pytest.approx(7.0) for c in bars for b in c)
    for week, bucket in enumerate(zip(*bars, strict=True)):
        assert bucket[0].get_y() == 0.0
        for lower, upper in itertools.pairwise(bucket):
            assert upper.get_y() == pytest.approx(lower.get_y() + lower.get_height())
        assert sum(b.get_height() for b in bucket) == pytest.approx(1.0), week
    actions = report.actions[report.dates.astype("datetime64[D]") >= np.datetime64("2020-12-28")]
    assert [b.get_height() for b in (c[-1] for c in bars)] == pytest.approx(
        [float(np.mean(actions == a)) for a in range(3)]
    )


def test_since_refuses_an_empty_window(capsys: pytest.CaptureFixture[str]) -> None:
    """``--since 0d`` is refused when parsed, not answered with "no decisions from <the day
    after the newest> to <the newest>"."""
    from otonom_runtime.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["monitor", "--strategy-path", "s.yaml", "--since", "0d"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: argument --since: '0d' is an empty window; expected 1d or more\n"
    )


def test_strategy_monitoring_section_errors_name_file_and_line(tmp_path: Path) -> None:
    from otonom_runtime.strategy import load_strategy

    path = tmp_path / "s.yaml"
    path.write_text("name: x\nmonitoring:\n  psi_warn: 0.3\n  horizon: 0\n", encoding="utf-8")
    with pytest.raises(StrategyError, match=rf"{re.escape(str(path))}:4: monitoring.horizon"):
        load_strategy(path)
    path.write_text("name: x\nmonitoring:\n  psi_warn: 0.3\n  psi_alert: 0.2\n", encoding="utf-8")
    with pytest.raises(StrategyError, match=r"psi_alert 0\.2 is not above psi_warn 0\.3"):
        load_strategy(path)
