"""The synthetic market: determinism, bar consistency, regimes, sentiment and storage."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from otonom_runtime._errors import DataImportError
from otonom_runtime.importers import import_sentiment_csv
from otonom_runtime.store import (
    SYNTHETIC_SOURCE,
    USER_SOURCE,
    Bar,
    NewsSentiment,
    get_or_create_symbol,
    get_session,
    get_symbol,
    list_symbols,
    load_history,
    load_macro,
    load_news,
)
from otonom_runtime.synth import (
    GENERATOR_VERSION,
    generate_macro,
    generate_market,
    write_synthetic,
)
from otonom_schema import LOOKBACK, compute_states, feature_index

START, END = dt.date(2018, 1, 1), dt.date(2024, 1, 1)
N_DAYS = (END - START).days + 1


def _digest(symbol: str, seed: int) -> float:
    m = generate_market(symbol, START, END, seed)
    return float(m.history.close.sum() + m.history.volume.sum() + m.news.scores.sum())


def test_same_arguments_same_market_in_another_process() -> None:
    code = (
        "import datetime as dt; from otonom_runtime.synth import generate_market as g;"
        "m = g('DEMO-BTC', dt.date(2018, 1, 1), dt.date(2024, 1, 1), 7);"
        "print(repr(float(m.history.close.sum() + m.history.volume.sum() + m.news.scores.sum())))"
    )
    env = {"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert float(out.stdout) == _digest("DEMO-BTC", 7)


def test_seed_and_symbol_change_the_market() -> None:
    base = _digest("DEMO-BTC", 7)
    assert _digest("DEMO-BTC", 8) != base
    assert _digest("DEMO-BTC2", 7) != base


def test_every_calendar_day_and_consistent_ohlc() -> None:
    m = generate_market("DEMO-BTC", START, END, 7)
    h = m.history
    assert len(h) == N_DAYS
    assert h.dates[0] == np.datetime64(START)
    assert h.dates[-1] == np.datetime64(END)
    assert (np.diff(h.dates.astype(np.int64)) == 1).all()
    assert (h.high >= np.maximum(h.open, h.close)).all()
    assert (h.low <= np.minimum(h.open, h.close)).all()
    assert (h.low > 0).all()
    gap = np.abs(np.log(h.open[1:] / h.close[:-1]))
    assert gap.max() < 0.05  # the open is near the previous close
    assert np.median(gap) < 0.005


def test_plausible_price_level() -> None:
    btc = generate_market("DEMO-BTC", START, END, 7).history.close
    assert 8_000 < btc[0] < 12_000
    eth = generate_market("DEMO-ETH", START, END, 7).history.close
    assert 500 < eth[0] < 900
    for symbol in ("DEMO-BTC", "DEMO-ETH", "OTHER"):
        for seed in (1, 2, 3):
            close = generate_market(symbol, START, END, seed).history.close
            assert close.max() / close.min() < 100  # no runaway over six years


def test_all_three_volatility_regimes_occur_in_the_state_features() -> None:
    low, high = feature_index("regime_low_vol"), feature_index("regime_high_vol")
    for symbol, seed in [("DEMO-BTC", 7), ("DEMO-ETH", 7), ("OTHER", 3)]:
        m = generate_market(symbol, START, END, seed)
        states = compute_states(m.history, news=m.news, macro=m.macro)[LOOKBACK:]
        shares = states[:, low : high + 1].mean(axis=0)
        assert (shares >= 0.10).all(), (symbol, seed, shares)
        assert shares.sum() == pytest.approx(1.0)


def test_hidden_regimes_last_weeks_and_drive_volatility() -> None:
    m = generate_market("DEMO-BTC", START, END, 7)
    changes = np.flatnonzero(np.diff(m.regimes)) + 1
    spells = np.diff(np.concatenate([[0], changes, [len(m.regimes)]]))
    assert 14 <= spells.mean() <= 90
    returns = np.diff(np.log(m.history.close))
    reg = m.regimes[1:]
    vols = [returns[reg == k].std() for k in range(3)]
    assert vols[0] < vols[1] < vols[2]
    assert vols[2] > 2.5 * vols[0]


def test_trends_switch_between_up_and_down() -> None:
    close = generate_market("DEMO-BTC", START, END, 7).history.close
    quarterly = np.log(close[90::90] / close[:-90:90])
    assert (quarterly > 0.15).any()
    assert (quarterly < -0.15).any()


def test_volume_reacts_to_volatility_and_absolute_returns() -> None:
    m = generate_market("DEMO-BTC", START, END, 7)
    volume = m.history.volume
    assert (volume > 0).all()
    abs_ret = np.abs(np.diff(np.log(m.history.close)))
    assert np.corrcoef(np.log(volume[1:]), abs_ret)[0, 1] > 0.3
    assert volume[m.regimes == 2].mean() > 1.5 * volume[m.regimes == 0].mean()


def test_news_follows_recent_returns_and_macro_is_shared() -> None:
    btc = generate_market("DEMO-BTC", START, END, 7)
    eth = generate_market("DEMO-ETH", START, END, 7)
    for m in (btc, eth):
        for series in (m.news, m.macro):
            assert series.dates.tolist() == m.history.dates.tolist()
            assert np.abs(series.scores).max() <= 1.0
            assert series.scores.std() > 0.2
    close = btc.history.close
    recent = np.log(close[5:] / close[:-5])
    assert np.corrcoef(recent, btc.news.scores[5:])[0, 1] > 0.3
    assert abs(np.corrcoef(btc.news.scores, eth.news.scores)[0, 1]) < 0.2
    np.testing.assert_array_equal(btc.macro.scores, eth.macro.scores)
    other = generate_market("DEMO-BTC", START, END, 8).macro.scores
    assert not np.array_equal(other, btc.macro.scores)


def test_macro_agrees_across_ranges() -> None:
    full = generate_macro(START, END, 7)
    part = generate_macro(dt.date(2020, 3, 1), dt.date(2020, 6, 1), 7)
    i = int((np.datetime64("2020-03-01") - full.dates[0]).astype(int))
    np.testing.assert_array_equal(part.scores, full.scores[i : i + len(part.scores)])


@pytest.mark.parametrize(
    ("start", "end", "fragment"),
    [
        (dt.date(2020, 1, 2), dt.date(2020, 1, 1), "is empty; expected start <= end"),
        (dt.date(1970, 1, 1), dt.date(2190, 1, 1), "expected at most"),
        (dt.date(1969, 12, 31), dt.date(2000, 1, 1), "expected a start on or after 1970-01-01"),
    ],
)
def test_bad_ranges(start: dt.date, end: dt.date, fragment: str) -> None:
    with pytest.raises(DataImportError, match=fragment):
        generate_market("X", start, end, 1)


def test_a_single_day_market() -> None:
    m = generate_market("X", START, START, 1)
    assert len(m.history) == 1


# --- storage ---------------------------------------------------------------------------------

S, E = dt.date(2020, 1, 1), dt.date(2020, 12, 31)


def test_write_synthetic_stores_bars_news_and_macro(db_url: str) -> None:
    with get_session(db_url) as session:
        report = write_synthetic(session, ["DEMO-BTC", "DEMO-ETH"], S, E, 7)
    n = (E - S).days + 1
    assert (report.bars, report.news, report.macro, report.unchanged) == (2 * n, 2 * n, n, ())
    assert "synthetic DEMO-BTC, DEMO-ETH 2020-01-01 .. 2020-12-31 seed 7" in report.summary()
    expected = generate_market("DEMO-BTC", S, E, 7)
    with get_session(db_url) as session:
        symbol = get_symbol(session, "DEMO-BTC")
        assert (symbol.is_synthetic, symbol.source) == (True, "synthetic")
        assert symbol.meta["seed"] == 7
        assert symbol.meta["generator_version"] == GENERATOR_VERSION
        history = load_history(session, "DEMO-BTC")
        news = load_news(session, "DEMO-BTC")
        macro = load_macro(session, source=SYNTHETIC_SOURCE)
        infos = list_symbols(session)
    for name in ("dates", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(history, name), getattr(expected.history, name))
    assert news is not None
    assert macro is not None
    np.testing.assert_array_equal(news.scores, expected.news.scores)
    np.testing.assert_array_equal(macro.scores, expected.macro.scores)
    assert [(i.name, i.bars, i.is_synthetic, i.health) for i in infos] == [
        ("DEMO-BTC", n, True, 1.0),
        ("DEMO-ETH", n, True, 1.0),
    ]


def test_write_synthetic_is_idempotent_and_replaces_on_new_arguments(db_url: str) -> None:
    with get_session(db_url) as session:
        write_synthetic(session, ["DEMO-BTC"], S, E, 7)
    with get_session(db_url) as session:
        again = write_synthetic(session, ["DEMO-BTC"], S, E, 7)
    assert (again.bars, again.news, again.macro, again.unchanged) == (0, 0, 0, ("DEMO-BTC",))
    with get_session(db_url) as session:
        other = write_synthetic(session, ["DEMO-BTC"], S, dt.date(2020, 6, 30), 8)
        assert other.bars == 182
        history = load_history(session, "DEMO-BTC")
        assert get_symbol(session, "DEMO-BTC").meta["seed"] == 8
        assert session.execute(select(func.count(NewsSentiment.id))).scalar_one() == 182
    expected = generate_market("DEMO-BTC", S, dt.date(2020, 6, 30), 8).history
    np.testing.assert_array_equal(history.close, expected.close)


def test_write_synthetic_refuses_imported_symbols_and_bad_lists(db_url: str) -> None:
    with get_session(db_url) as session:
        get_or_create_symbol(session, "BTC-USD", source="csv:x.csv")
    with get_session(db_url) as session, pytest.raises(DataImportError, match="imported data"):
        write_synthetic(session, ["BTC-USD"], S, E, 7)
    with get_session(db_url) as session, pytest.raises(DataImportError, match="repeated: A"):
        write_synthetic(session, ["A", "A"], S, E, 7)
    with get_session(db_url) as session, pytest.raises(DataImportError, match="no symbols"):
        write_synthetic(session, [], S, E, 7)
    with get_session(db_url) as session:
        assert session.execute(select(func.count(Bar.id))).scalar_one() == 0


def test_write_synthetic_and_imported_macro_live_side_by_side(db_url: str, tmp_path: Path) -> None:
    """Imported macro (source "user") and the synthetic market's never overwrite each other,
    whichever comes first; only days without a synthetic score get one."""
    path = tmp_path / "macro.csv"
    path.write_text("date,score\n2020-01-02,0.123\n")
    with get_session(db_url) as session:
        import_sentiment_csv(session, path)
    with get_session(db_url) as session:
        report = write_synthetic(session, ["DEMO-BTC"], S, dt.date(2020, 1, 5), 7)
        macro = load_macro(session, source=SYNTHETIC_SOURCE)
    assert report.macro == 5
    assert macro is not None
    assert macro.scores.tolist() == generate_macro(S, dt.date(2020, 1, 5), 7).scores.tolist()
    path.write_text("date,score\n2020-01-02,0.5\n2020-01-03,-0.5\n")
    with get_session(db_url) as session:
        import_sentiment_csv(session, path)  # updates the user's 01-02, adds 01-03
        report = write_synthetic(session, ["DEMO-BTC"], S, dt.date(2020, 1, 7), 7)
        assert report.macro == 2  # 01-06 and 01-07: the synthetic days so far are kept
        user = load_macro(session, source=USER_SOURCE)
        again = load_macro(session, source=SYNTHETIC_SOURCE)
    assert user is not None
    assert user.scores.tolist() == [0.5, -0.5]
    assert again is not None
    assert again.scores.tolist() == generate_macro(S, dt.date(2020, 1, 7), 7).scores.tolist()


def test_regenerating_keeps_a_users_news_of_a_synthetic_symbol(db_url: str, tmp_path: Path) -> None:
    """Only the synthetic market's own rows are replaced; the user's stay (source "user")."""
    with get_session(db_url) as session:
        write_synthetic(session, ["DEMO-BTC"], S, dt.date(2020, 1, 5), 7)
    path = tmp_path / "news.csv"
    path.write_text("date,score\n2020-01-02,0.125\n")
    with get_session(db_url) as session:
        import_sentiment_csv(session, path, "DEMO-BTC")
    with get_session(db_url) as session:
        write_synthetic(session, ["DEMO-BTC"], S, dt.date(2020, 1, 9), 8)  # other arguments
        user = load_news(session, "DEMO-BTC", source=USER_SOURCE)
        synthetic = load_news(session, "DEMO-BTC")
    assert user is not None
    assert user.scores.tolist() == [0.125]
    assert synthetic is not None
    assert len(synthetic.scores) == 9
