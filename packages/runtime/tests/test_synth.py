"""The synthetic market: determinism, bar consistency, regimes, sentiment and storage."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import func, select, update

from otonom_runtime._errors import DataImportError
from otonom_runtime.importers import import_sentiment_csv
from otonom_runtime.store import (
    SYNTHETIC_SOURCE,
    USER_SOURCE,
    Bar,
    MacroSentiment,
    NewsSentiment,
    Symbol,
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
    SyntheticMarket,
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
    # another process with another hash seed; the rest of the environment kept (an interpreter
    # may need its variables to start, e.g. a GPU machine's image)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
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
    """Prices revert to an anchor (about 10,000 for BTC names, 700 for ETH names): over six
    years their geometric mean stays within a factor 5 of it, and over 130 years every close
    within a factor 50 (seen: at most 33)."""
    for symbol, anchor in (("DEMO-BTC", 10_000.0), ("DEMO-ETH", 700.0)):
        for seed in (1, 2, 3, 7):
            close = generate_market(symbol, START, END, seed).history.close
            assert anchor / 5 < np.exp(np.log(close).mean()) < anchor * 5, (symbol, seed)
            ages = generate_market(symbol, dt.date(1970, 1, 1), dt.date(2100, 1, 1), seed)
            assert anchor / 50 < ages.history.close.min(), (symbol, seed)
            assert ages.history.close.max() < anchor * 50, (symbol, seed)
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


def _columns(m: SyntheticMarket) -> dict[str, npt.NDArray[Any]]:
    h = m.history
    return {
        "dates": h.dates,
        "open": h.open,
        "high": h.high,
        "low": h.low,
        "close": h.close,
        "volume": h.volume,
        "news": m.news.scores,
        "macro": m.macro.scores,
        "regimes": m.regimes,
    }


# (start, end) pairs inside 2015-01-01 .. 2030-12-31: single days, leap days, ranges that end
# inside and across the generator's 512-day blocks, the full span's first and last day.
RANGES = [
    (dt.date(2015, 1, 1), dt.date(2015, 1, 1)),
    (dt.date(2015, 1, 1), dt.date(2016, 5, 26)),
    (dt.date(2016, 2, 29), dt.date(2016, 3, 1)),
    (dt.date(2017, 6, 30), dt.date(2018, 6, 11)),
    (dt.date(2018, 1, 1), dt.date(2022, 12, 31)),
    (dt.date(2018, 1, 1), dt.date(2024, 1, 1)),
    (dt.date(2021, 1, 1), dt.date(2022, 12, 31)),
    (dt.date(2024, 1, 2), dt.date(2030, 12, 30)),
    (dt.date(2030, 12, 31), dt.date(2030, 12, 31)),
]


@pytest.mark.parametrize(("symbol", "seed"), [("DEMO-BTC", 7), ("DEMO-ETH", 1), ("X", 12345)])
def test_a_day_depends_only_on_symbol_seed_and_date(symbol: str, seed: int) -> None:
    """Any range is a bit-identical slice of a longer one: another --start or --end never
    changes a day (every stream is drawn day by day from 1970-01-01)."""
    first = dt.date(2015, 1, 1)
    full = _columns(generate_market(symbol, first, dt.date(2030, 12, 31), seed))
    for start, end in RANGES:
        part = _columns(generate_market(symbol, start, end, seed))
        i = (start - first).days
        n = (end - start).days + 1
        for name, values in part.items():
            assert len(values) == n
            expected = full[name][i : i + n]
            assert values.dtype == expected.dtype
            assert values.tobytes() == expected.tobytes(), (start, end, name)


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


def _dump(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored bar, news score, macro score and symbol row, for before/after checks."""
    with get_session(db_url) as session:
        return {
            "bars": [
                tuple(r)
                for r in session.execute(
                    select(
                        Bar.id,
                        Bar.symbol_id,
                        Bar.date,
                        Bar.open,
                        Bar.high,
                        Bar.low,
                        Bar.close,
                        Bar.volume,
                    ).order_by(Bar.id)
                )
            ],
            "news": [
                tuple(r)
                for r in session.execute(
                    select(
                        NewsSentiment.id,
                        NewsSentiment.symbol_id,
                        NewsSentiment.date,
                        NewsSentiment.score,
                    ).order_by(NewsSentiment.id)
                )
            ],
            "macro": [
                tuple(r)
                for r in session.execute(
                    select(MacroSentiment.date, MacroSentiment.score).order_by(MacroSentiment.date)
                )
            ],
            "symbols": [
                (r.name, r.source, r.is_synthetic, r.meta)
                for r in session.execute(select(Symbol).order_by(Symbol.id)).scalars()
            ],
        }


def _assert_stored_is_generated(db_url: str, symbol: str, start: dt.date, end: dt.date) -> None:
    """The stored bars and news of ``symbol`` are exactly ``generate_market(start, end)``."""
    expected = generate_market(symbol, start, end, get_meta(db_url, symbol)["seed"])
    with get_session(db_url) as session:
        history = load_history(session, symbol)
        news = load_news(session, symbol)
    assert news is not None
    for name in ("dates", "open", "high", "low", "close", "volume"):
        assert getattr(history, name).tobytes() == getattr(expected.history, name).tobytes()
    assert news.dates.tolist() == expected.news.dates.tolist()
    assert news.scores.tobytes() == expected.news.scores.tobytes()


def get_meta(db_url: str, symbol: str) -> dict[str, Any]:
    with get_session(db_url) as session:
        return dict(get_symbol(session, symbol).meta)


def test_write_synthetic_is_idempotent(db_url: str) -> None:
    with get_session(db_url) as session:
        write_synthetic(session, ["DEMO-BTC"], S, E, 7)
    before = _dump(db_url)
    with get_session(db_url) as session:
        again = write_synthetic(session, ["DEMO-BTC"], S, E, 7)
    assert (again.bars, again.news, again.macro, again.unchanged) == (0, 0, 0, ("DEMO-BTC",))
    assert _dump(db_url) == before


def test_extending_adds_only_new_days_and_changes_none(db_url: str) -> None:
    """Another range (an earlier start overlapping the stored days, then a later range after a
    gap) only adds days: every stored row keeps its id and its values, and the stored series
    is the one a single call over the whole span generates."""
    with get_session(db_url) as session:
        write_synthetic(session, ["DEMO-BTC", "DEMO-ETH"], dt.date(2020, 7, 1), E, 7)
    first = _dump(db_url)
    with get_session(db_url) as session:
        report = write_synthetic(session, ["DEMO-BTC"], S, dt.date(2020, 9, 30), 7)
    assert (report.bars, report.news, report.macro) == (182, 182, 182)  # 2020-01-01 .. 06-30
    assert report.unchanged == ()
    grown = _dump(db_url)
    for kind in ("bars", "news", "macro"):
        assert set(first[kind]) <= set(grown[kind]), kind  # nothing changed, nothing removed
    _assert_stored_is_generated(db_url, "DEMO-BTC", S, E)
    assert get_meta(db_url, "DEMO-BTC") == {
        "generator": "otonom_runtime.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": 7,
        "start": "2020-01-01",
        "end": "2020-12-31",
    }
    with get_session(db_url) as session:  # a later range, with a gap: still the same series
        later = write_synthetic(session, ["DEMO-BTC"], dt.date(2021, 3, 1), dt.date(2021, 3, 31), 7)
        tail = load_history(session, "DEMO-BTC", start=dt.date(2021, 3, 1))
    assert later.bars == 31
    assert set(grown["bars"]) <= set(_dump(db_url)["bars"])
    expected = generate_market("DEMO-BTC", S, dt.date(2021, 3, 31), 7).history
    assert tail.close.tobytes() == expected.close[-31:].tobytes()
    assert get_meta(db_url, "DEMO-BTC")["end"] == "2021-03-31"


def test_another_seed_or_generator_version_is_refused_and_nothing_written(db_url: str) -> None:
    with get_session(db_url) as session:
        write_synthetic(session, ["DEMO-BTC"], S, E, 7)
    before = _dump(db_url)
    tail = "; nothing was written; add --replace to delete its stored bars and news sentiment"
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        write_synthetic(session, ["NEW", "DEMO-BTC"], S, dt.date(2020, 6, 30), 8)
    assert str(info.value) == (
        f"symbol 'DEMO-BTC': 182 stored bars differ from generator version {GENERATOR_VERSION} "
        f"seed 8 (they were made by generator version {GENERATOR_VERSION} seed 7): 2020-01-01, "
        f"2020-01-02, 2020-01-03 and 179 more{tail} and generate 2020-01-01 .. 2020-06-30 anew"
    )
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        write_synthetic(session, ["DEMO-BTC"], dt.date(2021, 1, 1), dt.date(2021, 1, 31), 8)
    assert str(info.value) == (
        "symbol 'DEMO-BTC': its stored bars 2020-01-01 .. 2020-12-31 were made by generator "
        f"version {GENERATOR_VERSION} seed 7; adding 2021-01-01 .. 2021-01-31 from generator "
        f"version {GENERATOR_VERSION} seed 8 would not continue that series{tail} and generate "
        "2021-01-01 .. 2021-01-31 anew"
    )
    assert _dump(db_url) == before

    # a store written by an older generator: its meta names version 1 and some bars differ
    with get_session(db_url) as session:
        row = get_symbol(session, "DEMO-BTC")
        row.meta = {**row.meta, "generator_version": 1}
        session.execute(
            update(Bar)
            .where(Bar.date.in_([dt.date(2020, 3, 1), dt.date(2020, 2, 1)]))
            .values(close=Bar.close * 1.01)
        )
    old = _dump(db_url)
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        write_synthetic(session, ["DEMO-BTC"], S, E, 7)
    assert str(info.value) == (
        f"symbol 'DEMO-BTC': 2 stored bars differ from generator version {GENERATOR_VERSION} "
        "seed 7 (they were made by generator version 1 seed 7): 2020-02-01, 2020-03-01"
        f"{tail} and generate 2020-01-01 .. 2020-12-31 anew"
    )
    with get_session(db_url) as session, pytest.raises(DataImportError, match="version 1 seed 7"):
        write_synthetic(session, ["DEMO-BTC"], dt.date(2021, 1, 1), dt.date(2021, 1, 31), 7)
    assert _dump(db_url) == old
    with get_session(db_url) as session:  # same version and seed, yet a bar differs
        get_symbol(session, "DEMO-BTC").meta = before["symbols"][0][3]
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        write_synthetic(session, ["DEMO-BTC"], dt.date(2020, 2, 1), dt.date(2020, 2, 29), 7)
    assert str(info.value).startswith(
        f"symbol 'DEMO-BTC': 1 stored bar differs from generator version {GENERATOR_VERSION} "
        "seed 7 (made by the same version and seed: another numpy version?): 2020-02-01; "
    )


def test_replace_regenerates_the_symbol(db_url: str, tmp_path: Path) -> None:
    with get_session(db_url) as session:
        write_synthetic(session, ["DEMO-BTC", "DEMO-ETH"], S, E, 7)
    eth = _dump(db_url)
    with get_session(db_url) as session:
        report = write_synthetic(session, ["DEMO-BTC"], S, dt.date(2020, 6, 30), 8, replace=True)
        assert session.execute(select(func.count(NewsSentiment.id))).scalar_one() == 366 + 182
    assert (report.bars, report.news, report.macro) == (182, 182, 0)
    _assert_stored_is_generated(db_url, "DEMO-BTC", S, dt.date(2020, 6, 30))
    assert get_meta(db_url, "DEMO-BTC")["seed"] == 8
    assert get_meta(db_url, "DEMO-BTC")["end"] == "2020-06-30"
    after = _dump(db_url)
    eth_id = 2
    for kind in ("bars", "news"):
        assert [r for r in after[kind] if r[1] == eth_id] == [
            r for r in eth[kind] if r[1] == eth_id
        ]
    assert after["macro"] == eth["macro"]  # macro is shared: never replaced
    with get_session(db_url) as session:  # now seed 8 extends it
        assert write_synthetic(session, ["DEMO-BTC"], S, E, 8).bars == 184


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
        write_synthetic(session, ["DEMO-BTC"], S, dt.date(2020, 1, 9), 8, replace=True)
        user = load_news(session, "DEMO-BTC", source=USER_SOURCE)
        synthetic = load_news(session, "DEMO-BTC")
    assert user is not None
    assert user.scores.tolist() == [0.125]
    assert synthetic is not None
    assert len(synthetic.scores) == 9


def test_hidden_trend_is_the_drift_the_bars_were_drawn_with() -> None:
    """``hidden_trend`` slices like the generator (a sub-range is a slice) and its states
    carry the drift: over 20 years the mean log return of up days exceeds down days'."""
    from otonom_runtime.synth import TREND_NAMES, generate_market, hidden_trend

    start, end = dt.date(2000, 1, 1), dt.date(2019, 12, 31)
    states = hidden_trend("DEMO-T", start, end, 11)
    assert states.shape == ((end - start).days + 1,)
    assert set(states.tolist()) == {0, 1, 2}
    part = hidden_trend("DEMO-T", dt.date(2005, 3, 1), dt.date(2005, 6, 30), 11)
    first = (dt.date(2005, 3, 1) - start).days
    assert (part == states[first : first + part.size]).all()
    close = generate_market("DEMO-T", start, end, 11).history.close
    moves = np.diff(np.log(close))
    by_state = {TREND_NAMES[k]: moves[states[1:] == k].mean() for k in range(3)}
    assert by_state["up"] > by_state["flat"] > by_state["down"]


def test_hidden_drift_predicts_the_next_day() -> None:
    """``hidden_drift`` is the generator's expected next log return: over 20 years its
    correlation with the realised next-day move is clearly positive and its mean matches."""
    from otonom_runtime.synth import generate_market, hidden_drift

    start, end = dt.date(2000, 1, 1), dt.date(2019, 12, 31)
    drift = hidden_drift("DEMO-T", start, end, 11)
    moves = np.diff(np.log(generate_market("DEMO-T", start, end, 11).history.close))
    assert np.corrcoef(drift[:-1], moves)[0, 1] > 0.03
    assert abs(drift[:-1].mean() - moves.mean()) < 0.001
