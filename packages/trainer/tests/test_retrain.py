"""``otonom-train retrain``: the decision (a pure function) on constructed histories, the
evidence it is made from (regime mix of synthetic bars, live agreement of constructed decision
rows with the teacher's vote), and one real end-to-end run that retrains and promotes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from otonom_runtime.ensemble import Signals, aggregate_signal_arrays
from otonom_runtime.store import get_or_create_symbol, get_session, list_symbols
from otonom_runtime.store.ticks import live_symbols
from otonom_runtime.strategy import load_strategy
from otonom_runtime.teacher import teacher_params
from otonom_runtime.testing.rows import add_hold_decisions
from otonom_schema import MarketHistory
from otonom_trainer.config import DEMO_SYMBOLS
from otonom_trainer.retrain import (
    Evidence,
    RegimeMix,
    RetrainConfig,
    RetrainError,
    ServiceModel,
    choose_symbols,
    decide_retrain,
    regime_mix,
    serving_note,
    teacher_agreement,
)

ROOT = Path(__file__).resolve().parents[3]
STRATEGY = str(ROOT / "strategies" / "baseline_v1.yaml")
TRAINED = dt.datetime(2026, 1, 10, 6, 0, tzinfo=dt.timezone.utc)
MODEL = ServiceModel("20260110T060000Z", TRAINED, dt.date(2023, 1, 1), dt.date(2025, 12, 31))
CALM = RegimeMix((250, 500, 250), (22, 46, 22))


def _cfg(**kw: Any) -> RetrainConfig:
    return RetrainConfig(**{"strategy_path": STRATEGY, "today": dt.date(2026, 1, 25), **kw})


def _reasons(decision: Any) -> dict[str, bool]:
    return {r.name: r.triggered for r in decision.reasons}


# --- the decision (pure) -------------------------------------------------------------------------


def test_nothing_due_means_no_retrain() -> None:
    decision = decide_retrain(_cfg(), Evidence(MODEL, CALM, live_agree=90, live_total=100))
    assert not decision.retrain
    assert _reasons(decision) == {"schedule": False, "regime": False, "agreement": False}
    text = decision.text()
    assert "retrain: no, nothing due" in text
    assert "monthly retrain due 2026-02-10" in text
    assert "90/100 live decisions (90.0 %) >= 60 %" in text
    assert "PSI 0.000 <= 0.25" in text


def test_the_schedule_elapsed_means_retrain() -> None:
    ev = Evidence(MODEL, CALM, live_agree=90, live_total=100)
    monthly = decide_retrain(_cfg(today=dt.date(2026, 2, 10)), ev)
    assert monthly.retrain
    assert _reasons(monthly) == {"schedule": True, "regime": False, "agreement": False}
    assert "retrain: yes (schedule)" in monthly.text()
    # a quarter has not passed yet
    quarterly = decide_retrain(_cfg(today=dt.date(2026, 2, 10), schedule="quarterly"), ev)
    assert not quarterly.retrain
    assert decide_retrain(_cfg(today=dt.date(2026, 4, 10), schedule="quarterly"), ev).retrain


def test_no_model_in_service_means_retrain_and_force_always_does() -> None:
    decision = decide_retrain(_cfg(), Evidence(None))
    assert decision.retrain
    assert "no model in service under models/rl_bc" in decision.text()
    forced = decide_retrain(_cfg(force=True), Evidence(MODEL, CALM, live_agree=9, live_total=10))
    assert forced.retrain
    assert _reasons(forced)["force"]
    assert not _reasons(forced)["schedule"]


def test_live_agreement_at_half_means_retrain() -> None:
    decision = decide_retrain(_cfg(), Evidence(MODEL, CALM, live_agree=50, live_total=100))
    assert decision.retrain
    assert _reasons(decision) == {"schedule": False, "regime": False, "agreement": True}
    assert "50/100 live decisions (50.0 %) < 60 %" in decision.text()


def test_too_few_live_decisions_is_not_a_reason() -> None:
    decision = decide_retrain(_cfg(), Evidence(MODEL, CALM, live_agree=0, live_total=10))
    assert not decision.retrain
    assert "too few live decisions with an RL signal to judge: 10 (need >= 30)" in (decision.text())


def test_too_few_new_days_is_not_a_regime_change() -> None:
    shifted = RegimeMix((250, 500, 250), (0, 0, 10))  # all high-vol, but only 10 days
    decision = decide_retrain(_cfg(), Evidence(MODEL, shifted))
    assert not decision.retrain
    assert "not measured" in decision.text()


def test_the_config_is_validated() -> None:
    with pytest.raises(RetrainError, match="schedule"):
        _cfg(schedule="weekly")
    with pytest.raises(RetrainError, match="min_agreement: got 2"):
        _cfg(min_agreement=2.0)


# --- the regime mix of synthetic bars ------------------------------------------------------------


def _bars(jump_at: int | None, n: int = 700, seed: int = 5) -> MarketHistory:
    """A random walk with 1 % daily volatility, 5 % from bar ``jump_at`` on."""
    rng = np.random.default_rng(seed)
    sigma = np.full(n, 0.01)
    if jump_at is not None:
        sigma[jump_at:] = 0.05
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, sigma)))
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + n)
    return MarketHistory(dates, close, close * 1.01, close * 0.99, close, np.full(n, 1e6))


TRAIN = (dt.date(2024, 7, 1), dt.date(2025, 9, 30))  # bars 182 .. 638; 61 bars after


def test_a_volatility_jump_after_the_training_end_is_a_regime_change() -> None:
    jump = int((np.datetime64(TRAIN[1]) - np.datetime64("2024-01-01")).astype(int)) + 1
    mix = regime_mix({"X": _bars(jump)}, TRAIN, 90)
    assert sum(mix.recent) == 61
    assert sum(mix.train) == 457
    # most new days are high-vol (the regime ranks the 20-bar volatility among its last 120
    # values: it takes a few bars to rise, and a long enough spell becomes the new normal)
    assert mix.recent[2] >= 40
    assert mix.psi > 1.0
    decision = decide_retrain(_cfg(), Evidence(MODEL, mix, live_agree=90, live_total=100))
    assert decision.retrain
    assert _reasons(decision) == {"schedule": False, "regime": True, "agreement": False}
    assert "retrain: yes (regime)" in decision.text()


def test_unchanged_volatility_is_no_regime_change() -> None:
    mix = regime_mix({"X": _bars(None), "Y": _bars(None, seed=6)}, TRAIN, 90)
    assert sum(mix.recent) == 122
    assert mix.psi <= 0.25
    assert not decide_retrain(_cfg(), Evidence(MODEL, mix)).retrain


# --- live agreement with the teacher's vote ------------------------------------------------------


def _signal(action: int, strength: float = 0.8, confidence: float = 1.0) -> dict[str, Any]:
    return {"action": action, "strength": strength, "confidence": confidence}


def test_agreement_counts_rl_against_the_vote_without_rl() -> None:
    params = teacher_params(load_strategy(STRATEGY))
    buy = {"tech": _signal(1), "news": _signal(1), "risk": None}  # the teacher says BUY
    rows = [{**buy, "rl": _signal(1 if i % 2 else 2)} for i in range(100)]
    rows += [{**buy, "rl": None}] * 7  # RL fell back: not counted
    assert teacher_agreement(rows, params) == (50, 100)
    assert teacher_agreement([], params) == (0, 0)


def test_agreement_uses_the_ensembles_vote() -> None:
    """On random signals, RL voting what ``aggregate_signal_arrays`` (the vote) decides agrees
    everywhere; voting anything else, nowhere."""
    params = teacher_params(load_strategy(STRATEGY))
    rng = np.random.default_rng(0)
    n = 300
    signals = [
        Signals(rng.integers(0, 3, n), rng.uniform(0, 1, n), rng.uniform(0, 1, n)) for _ in range(3)
    ]
    vote = aggregate_signal_arrays(signals, params.weights[:3], min_score=params.min_score)
    assert len(set(vote.actions.tolist())) == 3  # every action occurs
    rows = [
        {name: s[i].to_dict() for name, s in zip(("tech", "news", "risk"), signals, strict=True)}
        for i in range(n)
    ]
    same = [{**r, "rl": _signal(int(a))} for r, a in zip(rows, vote.actions, strict=True)]
    other = [
        {**r, "rl": _signal((int(a) + 1) % 3)} for r, a in zip(rows, vote.actions, strict=True)
    ]
    assert teacher_agreement(same, params) == (n, n)
    assert teacher_agreement(other, params) == (0, n)


# --- the command, end to end ---------------------------------------------------------------------


def _retrain(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        "retrain", "--strategy-path", STRATEGY, "--symbol", "DEMO-BTC", "--start-date",
        "2019-01-01", "--end-date", "2022-12-31", "--epochs", "6", "--teacher-rows", "30000",
        "--quiet", *extra,
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "otonom_trainer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_retrain_end_to_end_dry_run_then_retrain_and_promote(tmp_path: Path) -> None:
    """No model in service: a dry run says so and writes nothing; the real run trains on a small
    synthetic store (one symbol, 4 years, 6 epochs, 30k teacher rows: a size at which the demo
    seed's model passes every gate item, as test_check's default-size run does), passes the
    gate and promotes."""
    dry = _retrain(tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "retrain: yes (schedule)" in dry.stdout
    assert "no model in service under models/rl_bc" in dry.stdout
    assert "dry run: nothing trained, nothing written" in dry.stdout
    assert list(tmp_path.iterdir()) == []

    out = _retrain(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "retrain: yes (schedule)" in out.stdout
    latest = (tmp_path / "models" / "rl_bc" / "latest").read_text().strip()
    assert f"retrained: models/rl_bc/{latest} promoted" in out.stdout
    lines = (tmp_path / "reports" / "retrain" / "retrain.jsonl").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["retrain"] is True
    assert entry["promoted"] is True
    assert entry["gate"] == {"passed": True, "promoted": True, "failed": []}
    assert [r["name"] for r in entry["reasons"]] == ["schedule", "regime", "agreement"]
    run = tmp_path / entry["run"]
    assert json.loads((run / "retrain.json").read_text()) == entry
    assert (run / "table.json").is_file()  # the pipeline's own report

    # the model just trained is in service: a dry run on the same day finds nothing due
    again = _retrain(tmp_path, "--dry-run")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"model {latest} trained" in again.stdout
    assert "schedule  ok" in again.stdout
    assert len((tmp_path / "reports" / "retrain" / "retrain.jsonl").read_text().splitlines()) == 1


def test_retrain_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    out = _retrain(tmp_path, "--min-agreement", "1.5")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: min_agreement: got 1.5; expected a fraction in [0, 1]"
    (tmp_path / "models" / "rl_bc").mkdir(parents=True)
    (tmp_path / "models" / "rl_bc" / "latest").write_text("nope\n")
    out = _retrain(tmp_path, "--dry-run")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ")
    assert len(out.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["latest", "models", "rl_bc"]


def test_the_live_decisions_are_read_from_the_store(tmp_path: Path) -> None:
    """Constructed live decision rows in a real SQLite store (as ``otonom daemon`` writes them:
    ``live_strategy`` set): half of the RL votes agree with the teacher's BUY -> retrain for
    agreement; rows before the training end, of another strategy or without an RL signal (a
    fallback), and backtest rows are not counted."""
    from otonom_runtime.store import (
        BacktestRun,
        Decision,
        get_or_create_symbol,
        get_session,
        init_db,
    )
    from otonom_runtime.store.ticks import load_live_signals
    from otonom_trainer.retrain import gather_evidence

    url = f"sqlite:///{tmp_path / 'store.db'}"
    init_db(url)
    strategy = load_strategy(STRATEGY)
    teacher = {"tech": _signal(1), "news": _signal(1), "risk": None}
    day0 = dt.date(2026, 1, 1)  # after MODEL's training end

    def row(run: BacktestRun, sym: Any, i: int, rl: int | None, live: str | None) -> Decision:
        d = Decision(
            run_id=run.id, symbol_id=sym.id, date=day0 + dt.timedelta(days=i), action=1,
            strength=0.5, position=0.0, leverage=0.0, cash_fraction=1.0,
            days_since_last_trade=float("inf"), equity=1e4, live_strategy=live,
        )  # fmt: skip
        d.signals = {**teacher, "rl": None if rl is None else _signal(rl)}
        return d

    with get_session(url) as session:
        sym, _ = get_or_create_symbol(session, "X", source="test")
        run = BacktestRun(
            strategy_name=strategy.name, strategy_hash="h", params={"purpose": "live"},
            start_date=day0, end_date=day0,
        )  # fmt: skip
        session.add(run)
        session.flush()
        rows = [row(run, sym, i, 1 if i % 2 else 2, strategy.name) for i in range(40)]
        rows += [row(run, sym, 40 + i, None, strategy.name) for i in range(5)]  # fallbacks
        rows += [row(run, sym, 50 + i, 2, "other") for i in range(5)]
        rows += [row(run, sym, -400 + i, 2, strategy.name) for i in range(5)]  # before the end
        session.add_all(rows)
        session.commit()

    model_dir = tmp_path / "models"  # nothing in service: the regime is not measured
    cfg = _cfg(database_url=url, model_dir=str(model_dir), symbols=("X",))
    ev = gather_evidence(cfg, teacher_params(strategy), strategy.name)
    assert (ev.live_agree, ev.live_total) == (20, 45)  # no training end known: all 45 counted
    end = dataclasses.replace(MODEL, train_end=day0 - dt.timedelta(days=1))
    with get_session(url) as session:  # the read itself, after the training end
        got = load_live_signals(session, strategy.name, end.train_end, 250)
    assert len(got) == 40
    agree, total = teacher_agreement(got, teacher_params(strategy))
    decision = decide_retrain(_cfg(), Evidence(end, CALM, live_agree=agree, live_total=total))
    assert _reasons(decision) == {"schedule": False, "regime": False, "agreement": True}
    assert "20/40 live decisions (50.0 %) < 60 %" in decision.text()


def test_without_symbol_flags_the_model_in_services_symbols_are_judged(tmp_path: Path) -> None:
    """A model trained on a real symbol (its metadata.json's dataset symbols) and a store holding
    only that symbol's bars: ``retrain`` without --symbol judges that symbol's regime (never the
    DEMO-* symbols, which a retrain would synthesise into the store and train on) and says so."""
    from otonom_runtime.store import Bar, get_or_create_symbol, get_session, init_db
    from otonom_runtime.testing.models import make_policy_model

    version = tmp_path / "models" / "rl_bc" / "20260110T060000Z"
    version.mkdir(parents=True)
    make_policy_model(version / "policy_best.onnx")
    dataset = {"symbols": ["REAL-X"], "start_date": "2024-07-01", "end_date": "2025-09-30"}
    (version / "metadata.json").write_text(json.dumps({"dataset": {"metadata": dataset}}))
    (version.parent / "latest").write_text(version.name + "\n")
    url = f"sqlite:///{tmp_path / 'data' / 'otonom.db'}"
    init_db(url)
    bars = _bars(None)
    with get_session(url) as session:
        sym, _ = get_or_create_symbol(session, "REAL-X", source="test")
        session.add_all(
            Bar(symbol_id=sym.id, date=d, open=o, high=h, low=lo, close=c, volume=v)
            for d, o, h, lo, c, v in zip(
                bars.dates.astype(dt.date).tolist(), bars.open.tolist(), bars.high.tolist(),
                bars.low.tolist(), bars.close.tolist(), bars.volume.tolist(), strict=True,
            )
        )  # fmt: skip
        session.commit()
    out = subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "retrain", "--strategy-path", STRATEGY,
         "--today", "2026-01-25", "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(
        "symbols: REAL-X (the training symbols of 20260110T060000Z, the model in service; "
        "--symbol chooses others)\n"
    )
    assert "(457 days)" in out.stdout  # the training period's bars of REAL-X, 2024-07-01 ..
    assert "DEMO" not in out.stdout + out.stderr


# --- the symbols of a retrain without --symbol ----------------------------------------------------


def _store(
    tmp_path: Path,
    real: Sequence[str] = (),
    synthetic: Sequence[str] = (),
    live: Mapping[str, Sequence[str]] | None = None,
    backtest: Sequence[str] = (),
) -> str:
    """A real SQLite store with symbols (no bars) and a live decision of each ``live``
    strategy's symbols (two of each, as a daemon's ticks make them) and backtest decisions of
    ``backtest``."""
    from otonom_runtime.store import (
        get_or_create_symbol,
        get_session,
        init_db,
    )

    url = f"sqlite:///{tmp_path / 'data' / 'otonom.db'}"
    init_db(url)
    with get_session(url) as session:
        ids = {
            name: get_or_create_symbol(session, name, source="test", is_synthetic=fake)[0].id
            for names, fake in ((real, False), (synthetic, True))
            for name in names
        }
        day = dt.date(2026, 1, 1)
        rows = [
            (ids[name], strategy, day + dt.timedelta(days=k))
            for strategy, names in (live or {}).items()
            for name in names
            for k in range(2)
        ] + [(ids[name], None, day - dt.timedelta(days=1)) for name in backtest]
        if rows:
            add_hold_decisions(session, rows)
        session.commit()
    return url


def _version(folder: Path, symbols: Sequence[str], promote: bool = False) -> Path:
    """A model version folder (a test policy and a metadata.json naming its training
    symbols), promoted (``latest``) when asked."""
    from otonom_runtime.testing.models import make_policy_model

    folder.mkdir(parents=True)
    make_policy_model(folder / "policy_best.onnx")
    dataset = {"symbols": list(symbols), "start_date": "2024-01-01", "end_date": "2025-01-01"}
    (folder / "metadata.json").write_text(json.dumps({"dataset": {"metadata": dataset}}))
    if promote:
        (folder.parent / "latest").write_text(folder.name + "\n")
    return folder


def _serving(tmp_path: Path, model_path: str) -> Any:
    """The baseline strategy with its RL analyst on, serving ``model_path`` (resolved against
    ``tmp_path``, which holds models/)."""
    raw = load_strategy(STRATEGY).to_dict()
    raw["name"] = "live_x"
    raw["ensemble"]["rl_policy"] = {"enabled": True, "model_path": model_path}
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_strategy(path)


def test_symbols_without_a_store_are_the_synthetic_markets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nope.db'}"
    got = choose_symbols(tmp_path / "models", load_strategy(STRATEGY), url)
    assert got == (DEMO_SYMBOLS, "the synthetic market (no store yet)")
    assert not (tmp_path / "nope.db").exists()  # read only: no store made


def test_symbols_of_a_store_of_synthetic_symbols_are_the_synthetic_markets(tmp_path: Path) -> None:
    url = _store(tmp_path, synthetic=["DEMO-BTC"])
    got = choose_symbols(tmp_path / "models", load_strategy(STRATEGY), url)
    assert got == (DEMO_SYMBOLS, "the synthetic market (the store holds no real data)")


def test_symbols_of_a_store_of_real_data_are_never_the_synthetic_markets(tmp_path: Path) -> None:
    """Nothing names the symbols and the store holds real data: refused (a retrain would
    generate DEMO-* bars beside it and train on them); backtest rows and another strategy's
    live decisions name none."""
    url = _store(tmp_path, real=["BTC-USD", "ETH"], live={"other": ["ETH"]}, backtest=["BTC-USD"])
    with pytest.raises(RetrainError) as err:
        choose_symbols(tmp_path / "models", load_strategy(STRATEGY), url)
    assert str(err.value) == (
        "no symbols given; neither a model nor live decisions of strategy baseline_v1 name any, "
        "and the default is the synthetic market (DEMO-BTC, DEMO-ETH, DEMO-SOL): a retrain "
        "would generate them beside the store's real data (BTC-USD, ETH); expected the symbols "
        "to train on with --symbol"
    )


def test_symbols_are_those_of_the_strategys_live_decisions(tmp_path: Path) -> None:
    url = _store(
        tmp_path, real=["B", "A", "C"], live={"baseline_v1": ["B", "A"], "other": ["C"]},
        backtest=["C"],
    )  # fmt: skip
    got = choose_symbols(tmp_path / "models", load_strategy(STRATEGY), url)
    assert got == (("A", "B"), "the symbols of strategy baseline_v1's live decisions")
    with get_session(url) as session:  # the reader itself: sorted, each once
        assert live_symbols(session, "baseline_v1") == ["A", "B"]
        assert live_symbols(session, "other") == ["C"]
        assert live_symbols(session, "none") == []


def test_symbols_are_those_the_model_in_service_was_trained_on(tmp_path: Path) -> None:
    """The model in service wins over the strategy's live decisions."""
    _version(tmp_path / "models" / "20260101T000000Z", ["A", "Z"], promote=True)
    url = _store(tmp_path, real=["A", "B"], live={"baseline_v1": ["B"]})
    got = choose_symbols(tmp_path / "models", load_strategy(STRATEGY), url)
    assert got == (
        ("A", "Z"),
        "the training symbols of 20260101T000000Z, the model in service",
    )


def test_symbols_are_those_the_strategys_rl_model_was_trained_on(tmp_path: Path) -> None:
    """Nothing in service under the model folder: the strategy's own (pinned) RL model names
    them, and the note says a promotion there does not reach that strategy."""
    version = _version(tmp_path / "models" / "rl_bc" / "20260101T000000Z", ["BTC-USD", "X"])
    strategy = _serving(tmp_path, "models/rl_bc/20260101T000000Z")
    url = _store(tmp_path, real=["BTC-USD", "X"], live={"live_x": ["X"]})
    got = choose_symbols(tmp_path / "models" / "rl_bc", strategy, url)
    assert got == (("BTC-USD", "X"), f"the training symbols of {version}, the strategy's RL model")
    note = serving_note(tmp_path / "models" / "rl_bc", strategy)
    assert note == (
        f"note: strategy live_x serves {version / 'policy_best.onnx'} (model_path "
        f"'models/rl_bc/20260101T000000Z'), not the version in service under "
        f"{tmp_path / 'models' / 'rl_bc'}: a model promoted there reaches its daemon only when "
        f"model_path names {tmp_path / 'models' / 'rl_bc'}"
    )
    (version.parent / "latest").write_text(version.name + "\n")  # now the one in service
    assert serving_note(tmp_path / "models" / "rl_bc", strategy) is None
    assert serving_note(tmp_path / "models" / "rl_bc", load_strategy(STRATEGY)) is None  # RL off


def test_a_synthetic_rl_models_symbols_are_refused_beside_real_data(tmp_path: Path) -> None:
    """The strategy's RL model was trained on the demo: its DEMO-* symbols are not generated
    into a store of real data that lacks them, and are taken where the store holds them."""
    _version(tmp_path / "models" / "rl_bc" / "20260101T000000Z", ["DEMO-BTC", "DEMO-ETH"])
    strategy = _serving(tmp_path, "models/rl_bc/20260101T000000Z")
    url = _store(tmp_path, real=["BTC-USD"], synthetic=["DEMO-BTC"])
    with pytest.raises(RetrainError, match=r"are synthetic \(DEMO-ETH\) and not in the store"):
        choose_symbols(tmp_path / "models" / "rl_bc", strategy, url)
    with get_session(url) as session:
        get_or_create_symbol(session, "DEMO-ETH", source="test", is_synthetic=True)
        session.commit()
    symbols, _ = choose_symbols(tmp_path / "models" / "rl_bc", strategy, url)
    assert symbols == ("DEMO-BTC", "DEMO-ETH")


def test_retrain_beside_real_data_without_symbols_is_refused_writing_nothing(
    tmp_path: Path,
) -> None:
    """The command: exit 2, one error line, nothing trained or generated (the store's symbols
    as they were, no model, no report)."""
    url = _store(tmp_path, real=["BTC-USD"])
    out = subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "retrain", "--strategy-path", STRATEGY],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: no symbols given; neither a model nor live decisions")
    assert len(out.stderr.strip().splitlines()) == 1
    with get_session(url) as session:
        assert [s.name for s in list_symbols(session)] == ["BTC-USD"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
