"""Provenance: the demo's synthetic sentiment never reaches a real symbol, a user's never the
demo's. A store holding both gives each exactly what a store holding only it gives."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from otonom_runtime.backtest import run_backtest
from otonom_runtime.builder import RlStateBuilder
from otonom_runtime.cli import main
from otonom_runtime.importers import import_ohlcv_csv, import_sentiment_csv
from otonom_runtime.store import (
    SIGNAL_COLUMNS,
    BacktestRun,
    Decision,
    MacroSentiment,
    get_session,
    init_db,
)
from otonom_runtime.strategy import load_strategy, parse_strategy
from otonom_runtime.synth import write_synthetic
from otonom_schema import feature_index
from otonom_schema.testing import random_history

ROOT = Path(__file__).resolve().parents[3]
BASELINE = ROOT / "strategies" / "baseline_v1.yaml"
REAL = "REAL-USD"
DEMO = ["DEMO-BTC", "DEMO-ETH"]
START, END = dt.date(2020, 1, 1), dt.date(2021, 6, 30)
TEST_START = dt.date(2020, 7, 1)  # after the warm-up
N_DAYS = (END - START).days + 1
MACRO = feature_index("macro_sentiment")
NEWS = feature_index("news_sentiment")


def _url(path: Path) -> str:
    url = f"sqlite:///{path.as_posix()}"
    init_db(url)
    return url


@pytest.fixture
def real_files(tmp_path: Path) -> dict[str, Path]:
    """A real symbol as a user has it: daily bars, its news and macro sentiment, as CSVs
    (a random walk, not the synthetic market's generator; strong sentiment, so it matters)."""
    h = random_history(N_DAYS, seed=11, start=START.isoformat(), symbol=REAL)
    rng = np.random.default_rng(5)
    days = [str(d) for d in h.dates]
    folder = tmp_path / "user"
    folder.mkdir()
    bars = folder / "real.csv"
    bars.write_text(
        "Date,Open,High,Low,Close,Volume\n"
        + "".join(
            f"{d},{o!r},{hi!r},{lo!r},{c!r},{v!r}\n"
            for d, o, hi, lo, c, v in zip(
                days, *(a.tolist() for a in (h.open, h.high, h.low, h.close, h.volume)), strict=True
            )
        )
    )
    news, macro = folder / "news.csv", folder / "macro.csv"
    news.write_text("date,score\n" + "".join(f"{d},{float(rng.uniform(-1, 1))!r}\n" for d in days))
    macro.write_text("date,score\n" + "".join(f"{d},{float(rng.uniform(-1, 1))!r}\n" for d in days))
    return {"bars": bars, "news": news, "macro": macro}


def _add_real(url: str, files: dict[str, Path]) -> None:
    with get_session(url) as session:
        import_ohlcv_csv(session, files["bars"], REAL)
        import_sentiment_csv(session, files["news"], REAL)
        import_sentiment_csv(session, files["macro"])


def _add_demo(url: str) -> None:
    with get_session(url) as session:
        write_synthetic(session, DEMO, START, END, 7)


def _decisions(url: str, symbols: list[str], strategy: Any = None) -> list[tuple[Any, ...]]:
    """Backtest ``symbols`` (RL off) and return every decision row of the run, without ids."""
    cfg = strategy if strategy is not None else load_strategy(BASELINE)
    columns = [
        Decision.date,
        Decision.action,
        Decision.strength,
        Decision.position,
        Decision.leverage,
        Decision.cash_fraction,
        Decision.days_since_last_trade,
        Decision.equity,
        *(getattr(Decision, c) for c in SIGNAL_COLUMNS),
    ]
    with get_session(url) as session:
        report = run_backtest(session, cfg, symbols, TEST_START, END, use_rl=False)
        rows = session.execute(
            select(*columns)
            .where(Decision.run_id == report.run_id)
            .order_by(Decision.symbol_id, Decision.date)
        ).all()
    return [tuple(r) for r in rows]


def test_a_real_symbol_backtests_the_same_in_a_fresh_store_and_beside_the_demo(
    tmp_path: Path, real_files: dict[str, Path]
) -> None:
    alone, mixed = _url(tmp_path / "alone.db"), _url(tmp_path / "mixed.db")
    _add_real(alone, real_files)
    _add_demo(mixed)  # the demo first: its synthetic macro is in the store before the import
    _add_real(mixed, real_files)
    expected = _decisions(alone, [REAL])
    assert len(expected) == (END - TEST_START).days + 1
    assert _decisions(mixed, [REAL]) == expected
    # the test can fail: the demo's macro, read by the real symbol, changes its decisions
    demo_macro = parse_strategy({"data": {"macro_source": "synthetic"}})
    assert _decisions(mixed, [REAL], demo_macro) != expected


def test_the_demo_backtests_the_same_in_a_demo_store_and_beside_a_users_data(
    tmp_path: Path, real_files: dict[str, Path]
) -> None:
    alone, mixed = _url(tmp_path / "demo.db"), _url(tmp_path / "mixed.db")
    _add_demo(alone)
    _add_demo(mixed)
    _add_real(mixed, real_files)  # the user's macro import comes after the demo's
    expected = _decisions(alone, DEMO)
    assert _decisions(mixed, DEMO) == expected
    user_macro = parse_strategy({"data": {"macro_source": "user"}})
    assert _decisions(mixed, DEMO, user_macro) != expected


def test_a_run_records_the_sources_each_symbol_read(
    tmp_path: Path, real_files: dict[str, Path]
) -> None:
    url = _url(tmp_path / "mixed.db")
    _add_demo(url)
    _add_real(url, real_files)
    _decisions(url, [REAL, DEMO[0]])
    _decisions(url, [REAL, DEMO[0]], parse_strategy({"data": {"news_source": "vendor"}}))
    with get_session(url) as session:
        params = session.execute(select(BacktestRun.params).order_by(BacktestRun.id)).scalars()
        recorded = [p["sentiment_sources"] for p in params]
    assert recorded == [
        {
            REAL: {"news": "user", "macro": "user"},
            DEMO[0]: {"news": "synthetic", "macro": "synthetic"},
        },
        {
            REAL: {"news": "vendor", "macro": "user"},
            DEMO[0]: {"news": "vendor", "macro": "synthetic"},
        },
    ]


def test_a_named_source_that_holds_nothing_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = _url(tmp_path / "demo.db")
    _add_demo(url)
    with caplog.at_level(logging.WARNING, logger="otonom_runtime.backtest"):
        _decisions(url, DEMO[:1])
        assert not caplog.records
        _decisions(url, DEMO[:1], parse_strategy({"data": {"macro_source": "vendr"}}))
    (record,) = caplog.records
    assert record.getMessage() == (
        "the strategy's data.macro_source is 'vendr', but the store holds no macro sentiment of "
        f"that source for DEMO-BTC (up to {END}): the macro sentiment feature is 0 there"
    )


def test_the_live_builder_of_a_real_symbol_ignores_the_demo(
    tmp_path: Path, real_files: dict[str, Path]
) -> None:
    alone, mixed = _url(tmp_path / "alone.db"), _url(tmp_path / "mixed.db")
    _add_real(alone, real_files)
    _add_demo(mixed)
    _add_real(mixed, real_files)
    days = [TEST_START + dt.timedelta(days=i) for i in range(0, 300, 7)]
    states = {}
    for name, url in (("alone", alone), ("mixed", mixed)):
        with get_session(url) as session:
            builder = RlStateBuilder(session)
            one_by_one = np.stack([builder.build_state(REAL, d).to_array() for d in days])
            together = builder.build_states(REAL, days)
            np.testing.assert_array_equal(one_by_one, together)
            states[name] = together
            assert builder.sources(REAL) == ("user", "user")
            if name == "mixed":
                assert builder.sources(DEMO[0]) == ("synthetic", "synthetic")
    np.testing.assert_array_equal(states["mixed"], states["alone"])
    assert np.abs(states["mixed"][:, MACRO]).max() > 0  # the user's macro is read
    with get_session(mixed) as session:  # and the override reads the demo's instead
        demo = RlStateBuilder(session, macro_source="synthetic").build_states(REAL, days)
    assert not np.array_equal(demo[:, MACRO], states["mixed"][:, MACRO])
    np.testing.assert_array_equal(demo[:, NEWS], states["mixed"][:, NEWS])


def test_importing_macro_changes_no_synthetic_symbols_state(
    tmp_path: Path, real_files: dict[str, Path]
) -> None:
    url = _url(tmp_path / "demo.db")
    _add_demo(url)
    days = [TEST_START + dt.timedelta(days=i) for i in range(0, 300, 5)]

    def states(**sources: str) -> Any:
        with get_session(url) as session:
            builder = RlStateBuilder(session, **sources)
            return builder.build_states(DEMO[0], days), np.stack(
                [builder.build_state(DEMO[0], d).to_array() for d in days]
            )

    before, before_live = states()
    with get_session(url) as session:
        report = import_sentiment_csv(session, real_files["macro"])
        assert report.kind == "macro"
        assert report.inserted == N_DAYS  # nothing of the demo's was updated
    after, after_live = states()
    np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(after_live, before_live)
    user, _ = states(macro_source="user")  # the import is there, for whoever names it
    assert not np.array_equal(user[:, MACRO], before[:, MACRO])
    with get_session(url) as session:
        sources = session.execute(select(MacroSentiment.source).distinct()).scalars()
        assert sorted(sources) == ["synthetic", "user"]


def test_builder_refuses_a_bad_source_name(tmp_path: Path) -> None:
    url = _url(tmp_path / "s.db")
    with (
        get_session(url) as session,
        pytest.raises(ValueError, match=r"sentiment source 'a b' is not a source name"),
    ):
        RlStateBuilder(session, news_source="a b")


def test_import_sentiment_source_flag(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    real_files: dict[str, Path],
) -> None:
    url = _url(tmp_path / "cli.db")
    monkeypatch.setenv("OTONOM_DATABASE_URL", url)
    macro = tmp_path / "m.csv"
    macro.write_text("date,score\n2020-01-01,0.5\n")
    assert main(["data", "import-sentiment", str(macro), "--source", "vendor.v1"]) == 0
    assert capsys.readouterr().out.strip().endswith("; source 'vendor.v1'")
    assert main(["data", "import-sentiment", str(macro)]) == 0
    assert main(["data", "import-sentiment", str(macro)]) == 0  # again: changes nothing
    assert "(0 inserted, 0 updated, 1 unchanged); source 'user'" in capsys.readouterr().out
    assert main(["data", "import-sentiment", str(macro), "--source", "a b"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: m.csv: sentiment source 'a b' is not a source name; expected")
    assert len(err.strip().splitlines()) == 1
    with get_session(url) as session:
        rows = session.execute(
            select(MacroSentiment.source, MacroSentiment.score).order_by(MacroSentiment.source)
        ).all()
    assert [tuple(r) for r in rows] == [("user", 0.5), ("vendor.v1", 0.5)]
