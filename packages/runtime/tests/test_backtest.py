"""The backtester: fills at the next open, costs, leverage cap, no look-ahead, run records."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

import otonom_schema as s
from otonom_runtime import BacktestError, StateBuildError, UnknownSymbolError
from otonom_runtime import backtest as bt
from otonom_runtime.backtest import (
    EngineParams,
    engine,
    lockstep,
    records,
    run_backtest,
    runner,
    simulate_symbol,
)
from otonom_runtime.ensemble import RlAnalyst
from otonom_runtime.policy import load_rl_policy, write_sha256_sidecar
from otonom_runtime.store import BacktestRun, Decision, get_session
from otonom_runtime.strategy import load_strategy, parse_strategy
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.models import make_policy_model
from otonom_schema.testing import random_history

ROOT = Path(__file__).resolve().parents[3]
BASELINE = ROOT / "strategies" / "baseline_v1.yaml"
IDX = s.feature_index
NEWS_ONLY = EngineParams(weights=(0.0, 1.0, 0.0, 0.0), commission_bps=10.0, slippage_bps=5.0)


def scripted_market(sentiment: list[float]) -> np.ndarray:
    """Neutral states whose news and macro sentiment script the news analyst's votes."""
    n = len(sentiment)
    m = np.zeros((n, 34))
    m[:, IDX("rsi")] = 0.5
    m[:, IDX("cash_fraction")] = 1.0
    m[:, IDX("days_since_last_trade")] = 1.0
    m[:, IDX("regime_normal")] = 1.0
    m[:, IDX("dsi")] = 1.0
    m[:, IDX("news_sentiment")] = sentiment
    m[:, IDX("macro_sentiment")] = sentiment
    return m


def test_fill_at_next_open_with_slippage_and_commission() -> None:
    dates = np.datetime64("2022-01-01") + np.arange(5)
    opens = np.array([100.0, 101.0, 110.0, 120.0, 130.0])
    closes = np.array([100.5, 105.0, 115.0, 125.0, 128.0])
    market = scripted_market([0.0, 0.8, 0.0, 0.0, 0.0])  # BUY 0.8 at the close of day 1
    r = simulate_symbol("X", dates, opens, closes, market, 0, NEWS_ONLY, 1000.0)
    assert r.actions.tolist() == [0, 1, 0, 0, 0]
    assert r.strengths[1] == pytest.approx(0.8)
    # filled at the open of day 2 (110), not at the close of day 1 (105)
    price = 110.0 * (1 + 5e-4)
    units = 0.8 * 1000.0 / 110.0
    cash = 1000.0 - units * price - units * price * 1e-3
    np.testing.assert_allclose(r.equity[:3], [1000.0, 1000.0, cash + units * 115.0])
    np.testing.assert_allclose(r.equity[4], cash + units * 128.0)
    assert r.fills == 1
    # the state on day 2 sees the position opened that morning
    assert r.position[2] == pytest.approx(units * 115.0 / (cash + units * 115.0))
    assert r.days_since_last_trade[1] == np.inf
    assert r.days_since_last_trade[2] == 0.0
    assert r.days_since_last_trade[4] == 2.0
    assert len(r.trade_pnls) == 1  # still open at the end: closed at the last close
    assert r.trade_pnls[0] == pytest.approx(r.equity[-1] - 1000.0)


def test_sell_goes_short_or_flat() -> None:
    dates = np.datetime64("2022-01-01") + np.arange(4)
    opens = np.full(4, 100.0)
    closes = np.full(4, 100.0)
    market = scripted_market([0.9, -0.9, 0.0, 0.0])
    short = simulate_symbol("X", dates, opens, closes, market, 0, NEWS_ONLY, 1000.0)
    assert short.exposure[2] == pytest.approx(-0.9, rel=5e-3)  # costs shave the equity a little
    flat = simulate_symbol(
        "X", dates, opens, closes, market, 0, replace(NEWS_ONLY, allow_short=False), 1000.0
    )
    assert flat.exposure[2] == 0.0
    assert flat.trade_pnls == pytest.approx([flat.equity[2] - 1000.0])


def test_leverage_cap_and_high_vol_exposure() -> None:
    dates = np.datetime64("2022-01-01") + np.arange(3)
    prices = np.full(3, 50.0)
    market = scripted_market([1.0, 0.0, 0.0])
    params = replace(NEWS_ONLY, max_leverage=2.0, commission_bps=0.0, slippage_bps=0.0)
    r = simulate_symbol("X", dates, prices, prices, market, 0, params, 1000.0)
    assert r.exposure[1] == pytest.approx(2.0)
    assert r.leverage[1] == pytest.approx(2.0)
    assert r.position[1] == pytest.approx(1.0)  # exposure / max_leverage
    assert r.cash_fraction[1] == 0.0
    market[:, IDX("regime_normal")] = 0.0
    market[:, IDX("regime_high_vol")] = 1.0
    calm_down = simulate_symbol("X", dates, prices, prices, market, 0, params, 1000.0)
    assert calm_down.exposure[1] == pytest.approx(1.0)  # high_vol_exposure 0.5 x 2


def _sleeve_state(sleeve: Any) -> tuple[Any, ...]:
    return (
        sleeve.out,
        sleeve.trade_pnls,
        sleeve.fills,
        sleeve.cash,
        sleeve.units,
        sleeve.bust,
        sleeve.last_fill,
        sleeve.entry_equity,
        sleeve.equity,
        sleeve.exposure,
    )


@pytest.mark.parametrize(
    ("params", "crash"),
    [
        (EngineParams(), False),
        (EngineParams(allow_short=False, max_leverage=2.0, commission_bps=0.0), False),
        (EngineParams(max_leverage=3.0, slippage_bps=50.0), True),  # leveraged longs go bust
    ],
)
def test_sleeve_in_lockstep_equals_the_sleeve_run_up_front(
    params: EngineParams, crash: bool
) -> None:
    """The sleeve's one body, driven one day at a time (the RL path: each day's portfolio
    columns put on the lockstep's board and their bounds' check yielded, then resumed with
    the day's decision on the board, which it records) and with every decision known up
    front (``run``): same floats, same trades, same ruin; the columns put are the ones it
    records, the days normalised by the schema."""
    rng = np.random.default_rng(11 if crash else 5)
    n, first = 900, 100
    moves = rng.normal(0.0, 0.04, n)
    if crash:
        moves[500] = -0.9  # a 90% gap down: a 3x long loses everything
    closes = 100.0 * np.exp(np.cumsum(moves))
    opens = closes * np.exp(rng.normal(0.0, 0.01, n))
    dates = np.datetime64("2020-01-01") + np.cumsum(np.where(rng.random(n) < 0.1, 2, 1))
    bars = engine._Bars("X", dates, opens, closes, np.zeros((n, 34)), first)
    actions = rng.integers(0, 3, n - first).tolist()
    actions[390:420] = [1] * 30  # long into the crash
    strengths = rng.random(n - first).tolist()
    strengths[390:420] = [1.0] * 30
    cap = (rng.choice([0.5, 1.0], n - first) * params.max_leverage).tolist()
    cap[390:420] = [params.max_leverage] * 30
    looped = engine._Sleeve(bars, params, 1000.0, cap)
    looped.run(actions, strengths)
    stepped = engine._Sleeve(bars, params, 1000.0, cap)
    board = lockstep.Board()
    decided: tuple[list[int], list[float]] = ([], [])
    days = stepped.steps(*decided, board, 0)
    in_range = next(days)
    for k in range(n - first):
        position, leverage, cash_fraction, raw_days = stepped.out[6 * k : 6 * k + 4]
        snapshot = s.PortfolioSnapshot(position, leverage, cash_fraction, raw_days)
        assert board.portfolio == snapshot.features().tolist()  # four numbers a day
        assert in_range
        board.portfolio.clear()
        board.decided = [actions[k], strengths[k], 0.5]
        try:
            in_range = next(days)
        except StopIteration:
            assert k == n - first - 1  # it finishes after the last day's decision
    assert decided == (actions, strengths)  # each decision recorded by the sleeve
    assert _sleeve_state(looped) == _sleeve_state(stepped)
    assert looped.fills > 20
    assert looped.bust is crash


def test_no_look_ahead() -> None:
    h = random_history(500, seed=31)
    t = 350
    base = s.market_feature_matrix(h)
    close = h.close.copy()
    close[t + 1 :] *= np.exp(np.random.default_rng(0).normal(0, 0.2, 500 - t - 1))
    changed = s.MarketHistory(
        h.dates, h.open, np.maximum(h.high, close), np.minimum(h.low, close), close, h.volume
    )
    opens = h.open.copy()
    opens[t + 2 :] *= 1.5  # the fill of decision t is at open t+1, left unchanged
    params = EngineParams()
    a = simulate_symbol("X", h.dates, h.open, h.close, base, 140, params, 1000.0)
    b = simulate_symbol(
        "X", h.dates, opens, close, s.market_feature_matrix(changed), 140, params, 1000.0
    )
    k = t - 140
    np.testing.assert_array_equal(a.actions[: k + 1], b.actions[: k + 1])
    np.testing.assert_array_equal(a.strengths[: k + 1], b.strengths[: k + 1])
    np.testing.assert_array_equal(a.equity[: k + 1], b.equity[: k + 1])
    np.testing.assert_array_equal(a.position[: k + 1], b.position[: k + 1])
    assert not np.array_equal(a.actions[k + 1 :], b.actions[k + 1 :])


def _same(a: bt.SymbolResult, b: bt.SymbolResult) -> None:
    for name, value in vars(a).items():
        other = getattr(b, name)
        if name == "rl_signals" and value is not None:
            for field in ("actions", "strengths", "confidences"):
                np.testing.assert_array_equal(getattr(value, field), getattr(other, field))
        elif name == "signals":
            assert value.keys() == other.keys()
            for sig, sig2 in zip(value.values(), other.values(), strict=True):
                np.testing.assert_array_equal(sig.actions, sig2.actions)
                np.testing.assert_array_equal(sig.strengths, sig2.strengths)
                np.testing.assert_array_equal(sig.confidences, sig2.confidences)
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, other, err_msg=name)
        else:
            assert value == other, name


def test_rl_sleeves_in_lockstep_equal_one_symbol_at_a_time(tmp_path: Path) -> None:
    """With the RL analyst the symbols advance day by day, one model call per day for all of
    them; each sleeve's result is exactly what it gets simulated alone (histories of different
    lengths, so the daily batch shrinks as the shorter ones end)."""
    make_policy_model(tmp_path / "policy_best.onnx")
    policy = load_rl_policy(tmp_path)
    symbols = []
    for seed, n, first in ((1, 420, 140), (2, 330, 150), (3, 400, 300)):
        h = random_history(n, seed=seed)
        symbols.append(
            engine._Bars(f"S{seed}", h.dates, h.open, h.close, s.market_feature_matrix(h), first)
        )
    params = EngineParams(weights=(1.0, 1.0, 1.0, 2.0), max_leverage=2.0, min_score=0.4)
    for make in (lambda: RlAnalyst(policy), lambda: RlAnalyst(None, reason="gone")):
        together = engine._simulate(symbols, params, 1000.0, [make() for _ in symbols])
        for b, r in zip(symbols, together, strict=True):
            alone = simulate_symbol(
                b.symbol, b.dates, b.opens, b.closes, b.market, b.first, params, 1000.0, make()
            )
            _same(r, alone)
            assert len(r.rl_signals) == len(r.actions)
    assert together[0].fallbacks == len(together[0].actions)


# --- runs in a real SQLite store ---------------------------------------------------------------


@pytest.fixture
def store(db_url: str) -> str:
    with get_session(db_url) as session:
        write_synthetic(
            session, ["DEMO-BTC", "DEMO-ETH"], dt.date(2019, 1, 1), dt.date(2022, 12, 31), 7
        )
    return db_url


def _decisions(url: str, run_id: int) -> list[tuple[Any, ...]]:
    """(symbol_id, date, action, strength, signals, position, equity) per decision row."""
    with get_session(url) as session:
        rows = session.execute(
            select(Decision)
            .where(Decision.run_id == run_id)
            .order_by(Decision.symbol_id, Decision.date)
        ).scalars()
        return [
            (d.symbol_id, d.date, d.action, d.strength, d.signals, d.position, d.equity)
            for d in rows
        ]


def test_a_short_run_marks_its_annualised_figures(store: str) -> None:
    """A week's backtest prints its CAGR, Sharpe, Sortino and turnover marked and says why (a
    Sharpe on 6 returns has a standard error near sqrt(365 / 6)); a year's does not."""
    cfg = load_strategy(BASELINE)
    with get_session(store) as session:
        week = run_backtest(session, cfg, ["DEMO-BTC"], dt.date(2022, 1, 1), dt.date(2022, 1, 7))
        year = run_backtest(session, cfg, ["DEMO-BTC"], dt.date(2022, 1, 1), dt.date(2022, 12, 31))
    short = week.summary().splitlines()
    for name in ("CAGR", "Sharpe", "Sortino", "turnover (per year)"):
        (line,) = [x for x in short if x.startswith(f"  {name} ")]
        assert line.endswith(" ?"), line
    note = (
        "? annualised from 6 daily returns (less than a quarter of 365 bars a year): a "
        "Sharpe's standard error is about 7.8 there, so these figures say little"
    )
    assert short[-1] == f"  {note}"
    assert "?" not in year.summary()


def test_runs_show_marks_a_short_runs_annualised_figures(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``otonom runs show`` marks the stored run's figures as ``otonom backtest`` did (each
    column by its own bars) and gives the same note once; a year's run has no mark."""
    from otonom_runtime.cli.runs import _cmd_runs_show

    cfg = load_strategy(BASELINE)
    with get_session(store) as session:
        week = run_backtest(session, cfg, ["DEMO-BTC"], dt.date(2022, 1, 1), dt.date(2022, 1, 7))
        year = run_backtest(session, cfg, ["DEMO-BTC"], dt.date(2022, 1, 1), dt.date(2022, 12, 31))
    noted = [x for x in week.summary().splitlines() if x.startswith("  ? ")]

    def shown(run_id: int) -> list[str]:
        args = argparse.Namespace(run_id=run_id, json=False, database_url=store)
        assert _cmd_runs_show(args) == 0
        return capsys.readouterr().out.splitlines()

    lines = shown(week.run_id)
    for name in ("CAGR", "Sharpe", "Sortino", "turnover (per year)"):
        (line,) = [x for x in lines if x.startswith(f"{name} ")]
        assert line.endswith(" ?"), line
        assert line.count(" ?") == 2, line  # portfolio, DEMO-BTC
    for name in ("total return", "exposure", "trades", "bars"):
        (line,) = [x for x in lines if x.startswith(f"{name} ")]
        assert "?" not in line, line
    assert [f"  {x}" for x in lines if x.startswith("? ")] == noted
    assert "?" not in "\n".join(shown(year.run_id))
    from otonom_runtime.cli.runs import _cmd_runs_list  # the list marks the week's Sharpe only

    assert _cmd_runs_list(argparse.Namespace(database_url=store)) == 0
    listed = capsys.readouterr().out.splitlines()
    (week_row,) = [x for x in listed if x.split()[0] == str(week.run_id)]
    (year_row,) = [x for x in listed if x.split()[0] == str(year.run_id)]
    assert " ?" in week_row
    assert "?" not in year_row
    assert listed[-1].startswith("? a Sharpe annualised from less than a quarter")


def test_run_records_decisions_metrics_and_is_repeatable(store: str) -> None:
    cfg = load_strategy(BASELINE)
    start, end = dt.date(2019, 6, 1), dt.date(2022, 12, 31)
    with get_session(store) as session:
        first = run_backtest(session, cfg, ["DEMO-BTC", "DEMO-ETH"], start, end)
        second = run_backtest(session, cfg, ["DEMO-BTC", "DEMO-ETH"], start, end)
        run = session.get(BacktestRun, first.run_id)
        assert run is not None
        assert run.status == "complete"
        assert run.strategy_name == "baseline_v1"
        assert run.strategy_hash == cfg.file_sha256
        assert run.metrics is not None
        assert run.metrics["portfolio"]["n_bars"] == len(first.dates)
    days = (end - start).days + 1
    assert first.bar_decisions == 2 * days
    rows = _decisions(store, first.run_id)
    assert len(rows) == 2 * days
    assert rows == _decisions(store, second.run_id)
    assert set(rows[0][4]) == {"tech", "news", "risk", "rl"}
    assert rows[0][4]["rl"] is None
    counts = first.action_counts["all"]
    total = sum(counts.values())
    assert counts["HOLD"] == max(counts.values())
    assert counts["BUY"] >= 0.1 * total
    assert counts["SELL"] >= 0.1 * total
    assert "Action distribution:" in first.summary()


def test_an_interrupted_run_is_marked_failed(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_strategy(BASELINE)
    real = runner.load_news
    calls = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        if len(calls) == 2:  # Ctrl-C while the second symbol is read
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "load_news", flaky)
    with get_session(store) as session, pytest.raises(KeyboardInterrupt):
        run_backtest(
            session, cfg, ["DEMO-BTC", "DEMO-ETH"], dt.date(2020, 1, 1), dt.date(2020, 12, 31)
        )
    with get_session(store) as session:
        runs = session.execute(select(BacktestRun.status, BacktestRun.error)).all()
        assert [(r.status, r.error) for r in runs] == [("failed", "KeyboardInterrupt: ")]
        complete = session.execute(
            select(func.count()).select_from(BacktestRun).where(BacktestRun.status == "complete")
        ).scalar_one()
        assert complete == 0


def test_a_request_without_bars_stores_no_run(store: str) -> None:
    """Unknown symbols and periods without bars are refused before the run row is written."""
    cfg = load_strategy(BASELINE)
    with get_session(store) as session:
        write_synthetic(session, ["DEMO-OLD"], dt.date(2019, 1, 1), dt.date(2019, 12, 31), 7)
    with get_session(store) as session:
        with pytest.raises(
            StateBuildError,
            match=r"^'DEMO-OLD' has no bar in 2020-06-01 \.\. 2020-07-01; its bars run "
            r"2019-01-01 \.\. 2019-12-31$",
        ):
            run_backtest(
                session, cfg, ["DEMO-BTC", "DEMO-OLD"], dt.date(2020, 6, 1), dt.date(2020, 7, 1)
            )
        with pytest.raises(StateBuildError, match=r"'DEMO-BTC' has no bar in 2018-01-01 \.\. "):
            run_backtest(session, cfg, ["DEMO-BTC"], dt.date(2018, 1, 1), dt.date(2018, 12, 31))
        with pytest.raises(UnknownSymbolError):
            run_backtest(session, cfg, ["NOPE"], dt.date(2020, 1, 1), dt.date(2020, 12, 31))
        assert session.execute(select(func.count()).select_from(BacktestRun)).scalar_one() == 0
        with pytest.raises(
            StateBuildError,
            match=r"^'DEMO-BTC' has only 1 bar in 2022-12-31 \.\. 2023-01-05; its bars run "
            r"2019-01-01 \.\. 2022-12-31; a backtest needs at least 2 bars$",
        ):
            run_backtest(session, cfg, ["DEMO-BTC"], dt.date(2022, 12, 31), dt.date(2023, 1, 5))
        assert session.execute(select(func.count()).select_from(BacktestRun)).scalar_one() == 0
        report = run_backtest(
            session, cfg, ["DEMO-BTC"], dt.date(2022, 12, 30), dt.date(2023, 1, 5)
        )
        assert report.bar_decisions == 2


def test_an_interrupted_write_leaves_a_failed_run(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decision batches are committed as they go; a Ctrl-C between them still marks the run
    failed (dataset generation reads complete runs only)."""
    real = records._insert_decisions
    calls = []

    def flaky(*args: Any, **kwargs: Any) -> None:
        calls.append(len(args[1]["run_id"]))  # the batch's rows, column by column
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(records, "_BATCH", 100)
    monkeypatch.setattr(records, "_insert_decisions", flaky)
    with get_session(store) as session, pytest.raises(KeyboardInterrupt):
        run_backtest(
            session,
            load_strategy(BASELINE),
            ["DEMO-BTC", "DEMO-ETH"],
            dt.date(2020, 1, 1),
            dt.date(2020, 6, 30),
        )
    assert calls == [100, 100, 100], calls
    with get_session(store) as session:
        run = session.execute(select(BacktestRun)).scalar_one()
        assert run.status == "failed"
        stored = session.execute(select(func.count()).select_from(Decision)).scalar_one()
        assert stored == 200


def test_rl_analyst_votes_as_the_fourth_member(store: str, tmp_path: Path) -> None:
    make_policy_model(tmp_path / "rl" / "policy_best.onnx")
    cfg = parse_strategy(
        {
            "name": "with_rl",
            "ensemble": {"rl_policy": {"enabled": True, "model_path": str(tmp_path / "rl")}},
        },
        base_dir=tmp_path,  # the models root: a model path must be inside it
    )
    with get_session(store) as session:
        report = run_backtest(session, cfg, ["DEMO-BTC"], dt.date(2020, 1, 1), dt.date(2020, 3, 31))
        off = run_backtest(
            session, cfg, ["DEMO-BTC"], dt.date(2020, 1, 1), dt.date(2020, 3, 31), use_rl=False
        )
    assert report.rl_enabled
    assert report.fallbacks == 0
    rows = _decisions(store, report.run_id)
    assert all(r[4]["rl"] is not None for r in rows)
    assert not off.rl_enabled
    assert all(r[4]["rl"] is None for r in _decisions(store, off.run_id))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("otonom_runtime") and r.levelno >= logging.WARNING
    ]


def test_a_broken_model_falls_back_and_says_so(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "rl" / "policy_best.onnx"
    model.parent.mkdir()
    model.write_bytes(b"not an onnx model")
    write_sha256_sidecar(model)
    cfg = parse_strategy(
        {"ensemble": {"rl_policy": {"enabled": True, "model_path": str(model)}}}, base_dir=tmp_path
    )
    with get_session(store) as session:
        report = run_backtest(session, cfg, ["DEMO-BTC"], dt.date(2020, 1, 1), dt.date(2020, 1, 31))
        caplog.clear()  # the first run's warning
        with caplog.at_level(logging.WARNING, logger="otonom_runtime"):
            both = run_backtest(
                session, cfg, ["DEMO-BTC", "DEMO-ETH"], dt.date(2020, 1, 1), dt.date(2020, 1, 31)
            )
    assert report.fallbacks == 31
    assert report.fallback_reason is not None
    assert "PolicyError" in report.fallback_reason
    assert "RL analyst fell back" in report.summary()
    # one warning for the run, however many symbols (issue #4: "logs it once")
    assert both.fallbacks == 62
    assert both.fallback_reason == (
        f"DEMO-BTC: {report.fallback_reason.split(': ', 1)[1]}; "
        f"DEMO-ETH: {report.fallback_reason.split(': ', 1)[1]}"
    )
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("RL analyst disabled for this run")
    assert "not a valid ONNX model" in warnings[0]


def test_a_model_marked_degenerate_is_a_warning_and_still_votes(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reason = "predicts HOLD on 100.0% of the validation rows"
    metrics = {
        "val_action_acc": 0.596,
        "train_action_acc": 0.6,
        "best_val_loss": 0.9,
        "best_epoch": 1,
        "degenerate": {"reason": reason, "rules": ["one action"]},
    }
    model = tmp_path / "rl" / "policy_best.onnx"
    make_policy_model(model, metadata_overrides={"otonom.metrics": json.dumps(metrics)})
    assert load_rl_policy(model).degenerate_reason == reason
    cfg = parse_strategy(
        {"ensemble": {"rl_policy": {"enabled": True, "model_path": str(model)}}}, base_dir=tmp_path
    )
    with (
        get_session(store) as session,
        caplog.at_level(logging.WARNING, logger="otonom_runtime"),
    ):
        report = run_backtest(session, cfg, ["DEMO-BTC"], dt.date(2020, 1, 1), dt.date(2020, 1, 31))
    assert report.fallbacks == 0  # a warning, not a fallback: the model still votes
    assert _warnings(caplog) == [f"RL model {model} is marked degenerate at training: {reason}"]


def test_the_run_records_its_purpose(store: str) -> None:
    cfg = load_strategy(BASELINE)
    span = (dt.date(2020, 1, 1), dt.date(2020, 1, 31))
    with get_session(store) as session:
        user = run_backtest(session, cfg, ["DEMO-BTC"], *span)
        gate = run_backtest(session, cfg, ["DEMO-BTC"], *span, purpose="gate")
        assert session.get(BacktestRun, user.run_id).params["purpose"] == "user"  # type: ignore[union-attr]
        assert session.get(BacktestRun, gate.run_id).params["purpose"] == "gate"  # type: ignore[union-attr]
        before = session.scalar(select(func.count()).select_from(BacktestRun))
        with pytest.raises(BacktestError, match="purpose is 'mine'; expected one of user, pipe"):
            run_backtest(session, cfg, ["DEMO-BTC"], *span, purpose="mine")
        assert session.scalar(select(func.count()).select_from(BacktestRun)) == before
    assert bt.INTERNAL_PURPOSES == ("gate", "evaluation", "live")
    # the daemon's ticks ("live") are internal runs run_backtest never makes
    assert set(bt.INTERNAL_PURPOSES) - set(bt.RUN_PURPOSES) == {"live"}


class _Hot:
    """A policy that raises on states with rsi > 0.7 (a whole daily batch raises, then the rows
    are retried one by one, so only those states fall back)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def predict(self, state: Any, return_probs: bool = False) -> Any:
        x = state.to_array() if isinstance(state, s.RlState) else np.asarray(state)
        if x[IDX("rsi")] > 0.7:
            raise RuntimeError("too hot")
        return self.policy.predict(state, return_probs=return_probs)

    def predict_batch(self, states: np.ndarray) -> Any:
        x = s.validate_states(states)
        if (x[:, IDX("rsi")] > 0.7).any():
            raise RuntimeError("too hot")
        return self.policy.predict_batch(x)


def test_a_model_failing_at_predict_time_is_logged_once_per_run(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_policy_model(tmp_path / "policy_best.onnx")
    hot = _Hot(load_rl_policy(tmp_path))
    cfg = load_strategy(BASELINE)
    with get_session(store) as session, caplog.at_level(logging.WARNING, logger="otonom_runtime"):
        report = run_backtest(
            session,
            cfg,
            ["DEMO-BTC", "DEMO-ETH"],
            dt.date(2020, 1, 1),
            dt.date(2021, 12, 31),
            use_rl=True,
            policy=hot,  # type: ignore[arg-type]
        )
    per_symbol = {name: m.fallbacks for name, m in report.per_symbol.items()}
    assert all(n > 0 for n in per_symbol.values()), per_symbol
    assert report.fallbacks == sum(per_symbol.values()) < report.bar_decisions
    assert (
        report.fallback_reason == "DEMO-BTC: RuntimeError: too hot; DEMO-ETH: RuntimeError: too hot"
    )
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0] == (
        f"RL analyst failed on {report.fallbacks} of {report.bar_decisions} decisions "
        "(DEMO-BTC, DEMO-ETH), the ensemble carried on without it there: "
        f"{report.fallback_reason}"
    )


def test_a_run_on_postgresql(postgres_url: str) -> None:
    """Decision rows go through SQLAlchemy's own types there (the SQLite path is raw)."""
    from otonom_runtime.store import init_db

    init_db(postgres_url)
    with get_session(postgres_url) as session:
        write_synthetic(session, ["PG-BT"], dt.date(2021, 1, 1), dt.date(2021, 12, 31), 3)
        report = run_backtest(
            session, load_strategy(BASELINE), ["PG-BT"], dt.date(2021, 6, 1), dt.date(2021, 12, 31)
        )
        rows = [
            (d.signals, d.days_since_last_trade)
            for d in session.execute(
                select(Decision).where(Decision.run_id == report.run_id).order_by(Decision.date)
            ).scalars()
        ]
    assert len(rows) == report.bar_decisions == 214
    assert set(rows[0][0]) == {"tech", "news", "risk", "rl"}
    assert rows[0][0]["rl"] is None  # RL off
    assert all(isinstance(r[0]["tech"]["strength"], float) for r in rows)
    assert rows[0][1] == float("inf")  # never traded yet: NULL in the table
    assert any(r[1] != float("inf") for r in rows)


def test_sqlite_rows_read_back_through_the_orm(store: str) -> None:
    """The raw SQLite writer stores exactly what the ORM types read back."""
    with get_session(store) as session:
        report = run_backtest(
            session,
            load_strategy(BASELINE),
            ["DEMO-BTC"],
            dt.date(2020, 1, 1),
            dt.date(2020, 2, 29),
        )
        rows = (
            session.execute(
                select(Decision).where(Decision.run_id == report.run_id).order_by(Decision.date)
            )
            .scalars()
            .all()
        )
    assert [r.date for r in rows][:2] == [dt.date(2020, 1, 1), dt.date(2020, 1, 2)]
    assert rows[0].days_since_last_trade == float("inf")
    assert isinstance(rows[0].signals["tech"]["strength"], float)
    assert rows[0].signals["rl"] is None


def test_calendar_auto_annualises_by_the_bars_dates(store: str, tmp_path: Path) -> None:
    """``calendar.periods_per_year: auto`` (the baseline's): 365 on every-day bars, 252 on
    weekday-only bars; a number in the strategy wins. Only the annualisation changes."""
    import csv

    from otonom_runtime.importers import import_ohlcv_csv

    path = tmp_path / "stock.csv"
    rng = np.random.default_rng(5)
    days = [dt.date(1990, 1, 1) + dt.timedelta(days=i) for i in range(600)]
    days = [d for d in days if d.weekday() < 5]
    closes = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, len(days))))
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["Date", "Open", "High", "Low", "Close", "Volume"])
        for d, c in zip(days, closes, strict=True):
            out.writerow([d.isoformat(), c, c * 1.01, c * 0.99, c, 1000])
    auto = load_strategy(BASELINE)
    assert auto.calendar.periods_per_year == "auto"
    fixed = parse_strategy({"calendar": {"periods_per_year": 365}})
    with get_session(store) as session:
        import_ohlcv_csv(session, path, "STOCK")
    with get_session(store) as session:
        stock = run_backtest(session, auto, ["STOCK"], dt.date(1990, 7, 1), days[-1])
        stock_365 = run_backtest(session, fixed, ["STOCK"], dt.date(1990, 7, 1), days[-1])
        demo = run_backtest(session, auto, ["DEMO-BTC"], dt.date(2019, 6, 1), dt.date(2019, 12, 31))
    assert stock.metrics.periods_per_year == 252
    assert stock_365.metrics.periods_per_year == 365
    assert demo.metrics.periods_per_year == 365
    np.testing.assert_array_equal(stock.equity, stock_365.equity)
    assert stock.metrics.sharpe is not None
    assert stock_365.metrics.sharpe is not None
    assert stock.metrics.sharpe == pytest.approx(stock_365.metrics.sharpe * (252 / 365) ** 0.5)


def test_a_run_records_the_model_file_and_sha256_it_served(store: str, tmp_path: Path) -> None:
    model = tmp_path / "rl" / "policy_best.onnx"
    make_policy_model(model)
    broken = tmp_path / "broken" / "policy_best.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"not an onnx model")
    write_sha256_sidecar(broken)

    def strategy(path: Path) -> Any:
        mapping = {"ensemble": {"rl_policy": {"enabled": True, "model_path": str(path)}}}
        return parse_strategy(mapping, base_dir=tmp_path)

    days = (dt.date(2020, 1, 1), dt.date(2020, 1, 31))
    with get_session(store) as session:
        served = run_backtest(session, strategy(model.parent), ["DEMO-BTC"], *days)
        fell_back = run_backtest(session, strategy(broken), ["DEMO-BTC"], *days)
        off = run_backtest(session, strategy(model), ["DEMO-BTC"], *days, use_rl=False)
        handed = run_backtest(
            session, parse_strategy({}), ["DEMO-BTC"], *days, use_rl=True,
            policy=load_rl_policy(model),
        )  # fmt: skip
        params = {
            r.id: r.params for r in session.execute(select(BacktestRun)).scalars()
        }  # fmt: skip
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert params[served.run_id]["rl_model_file"] == str(model)
    assert params[served.run_id]["rl_model_sha256"] == digest
    assert params[fell_back.run_id]["rl_model_file"] == str(broken)
    assert params[fell_back.run_id]["rl_model_sha256"] is None  # nothing was served
    assert fell_back.fallbacks == 31
    assert params[off.run_id]["rl_model_file"] is None
    assert params[off.run_id]["rl_model_sha256"] is None
    assert params[handed.run_id]["rl_model_sha256"] == digest


@pytest.mark.parametrize(
    ("symbols", "span", "message"),
    [
        ([], (dt.date(2020, 1, 1), dt.date(2020, 12, 31)), "no symbols given; expected at least"),
        (["DEMO-BTC"], (dt.date(2021, 1, 1), dt.date(2020, 12, 31)), "start 2021-01-01 is after"),
    ],
)
def test_a_request_that_cannot_run_is_a_backtest_error(
    store: str, symbols: list[str], span: tuple[dt.date, dt.date], message: str
) -> None:
    """The runtime's own error (still a ``ValueError``), raised before any run row."""
    with get_session(store) as session:
        with pytest.raises(BacktestError, match=message) as caught:
            run_backtest(session, load_strategy(BASELINE), symbols, *span)
        assert isinstance(caught.value, ValueError)
        assert session.scalar(select(func.count()).select_from(BacktestRun)) == 0


def test_a_history_without_decision_days_gives_empty_results() -> None:
    """``first`` at the end of the bars: nothing to decide, with or without the RL analyst."""
    h = random_history(200, seed=4)
    market = s.market_feature_matrix(h)
    for rl in (None, RlAnalyst(None, reason="gone")):
        r = simulate_symbol("X", h.dates, h.open, h.close, market, 200, EngineParams(), 1e3, rl)
        assert len(r.actions) == len(r.equity) == len(r.dates) == 0
        assert (r.rl_signals is None) == (rl is None)
        assert r.fills == 0


def test_a_bad_market_state_in_lockstep_raises_as_the_day_by_day_check(tmp_path: Path) -> None:
    """With the RL analyst the market features are validated once per chunk of days; a bad
    one sends that chunk to the per-day validation, so the run fails with the error the
    day-by-day check always raised (the bad state's own, naming the feature)."""
    make_policy_model(tmp_path / "policy_best.onnx")
    policy = load_rl_policy(tmp_path)
    symbols = []
    for seed, n, first in ((1, 420, 140), (2, 330, 150)):
        h = random_history(n, seed=seed)
        market = s.market_feature_matrix(h)
        if seed == 2:
            market[first + 40, s.feature_index("rsi")] = np.nan
        symbols.append(engine._Bars(f"S{seed}", h.dates, h.open, h.close, market, first))
    params = EngineParams(weights=(1.0, 1.0, 1.0, 2.0), max_leverage=2.0, min_score=0.4)
    with pytest.raises(s.SchemaError, match=r"^feature .rsi. \(index 20\) is nan"):
        engine._simulate(symbols, params, 1000.0, [RlAnalyst(policy) for _ in symbols])
