"""The feature maths: vectorised == single date, causality, warm-up, DSI, hand-checked values."""

from __future__ import annotations

import math

import numpy as np
import pytest

import otonom_schema as s
from otonom_schema.testing import adversarial_histories, random_history, random_sentiment

L = s.LOOKBACK
IDX = s.feature_index


def _tail(h: s.MarketHistory, t: int) -> s.MarketHistory:
    """Only the bars the live builder would query: the last LOOKBACK bars up to t."""
    start = max(0, t - L + 1)
    return s.MarketHistory(
        h.dates[start : t + 1],
        h.open[start : t + 1],
        h.high[start : t + 1],
        h.low[start : t + 1],
        h.close[start : t + 1],
        h.volume[start : t + 1],
        symbol=h.symbol,
    )


def _assert_paths_identical(
    h: s.MarketHistory,
    news: s.SentimentSeries | None = None,
    macro: s.SentimentSeries | None = None,
) -> np.ndarray:
    states = s.compute_states(h, news=news, macro=macro)
    assert states.shape == (len(h), 34)
    assert states.dtype == np.float32
    for t in range(len(h)):
        at = h.dates[t]
        whole = s.compute_state(h, at=at, news=news, macro=macro).to_array()
        tail = s.compute_state(_tail(h, t), news=news, macro=macro).to_array()
        np.testing.assert_array_equal(whole, states[t], err_msg=f"{h.symbol} t={t} (whole)")
        np.testing.assert_array_equal(tail, states[t], err_msg=f"{h.symbol} t={t} (tail)")
    return states


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_equals_single_date_on_random_series(seed: int) -> None:
    h = random_history(420, seed=seed, gap_every=53 if seed == 2 else 0)
    news = random_sentiment(h.dates, seed=seed)
    macro = random_sentiment(h.dates, seed=seed + 100, keep=0.3)
    states = _assert_paths_identical(h, news, macro)
    # the series is rich enough to exercise every regime and both sentiment states
    assert states[L:, 28:31].sum(axis=0).min() > 0
    assert (states[:, IDX("news_sentiment")] == 0).any()
    assert (states[:, IDX("news_sentiment")] != 0).any()


@pytest.mark.parametrize("name", sorted(adversarial_histories()))
def test_vectorised_equals_single_date_on_adversarial_series(name: str) -> None:
    h = adversarial_histories()[name]
    states = _assert_paths_identical(h)
    s.validate_states(states)  # bounded, finite, one-hot


def test_states_stay_in_range_on_extreme_moves() -> None:
    h = adversarial_histories()["crash_and_spike"]
    states = s.compute_states(h)
    crash = 150  # close 1000 -> 100
    assert states[crash, IDX("ret_lag0")] == pytest.approx(math.tanh(math.log(0.1) / 0.05))
    assert states[crash, IDX("ret_lag0")] >= -1.0
    assert states[crash, IDX("volume_ratio")] > 0.9  # 1e9 against a mean near 1
    assert states[crash + 1, IDX("volume_ratio")] < -0.9  # zero volume, floored


@pytest.mark.parametrize("t", [0, 1, 20, 139, 140, 250, 398])
def test_causality_future_bars_cannot_change_the_past(t: int) -> None:
    h = random_history(400, seed=5)
    before = s.compute_states(h)
    rng = np.random.default_rng(t)
    n = len(h)
    k = n - t - 1
    close = h.close.copy()
    volume = h.volume.copy()
    close[t + 1 :] *= np.exp(rng.normal(0, 0.3, k))
    volume[t + 1 :] *= rng.uniform(0, 10, k)
    changed = s.MarketHistory(h.dates, close, close * 1.05, close * 0.95, close, volume)
    after = s.compute_states(changed)
    cut = s.compute_states(
        _tail(h, t)
        if t >= L
        else s.MarketHistory(
            h.dates[: t + 1],
            h.open[: t + 1],
            h.high[: t + 1],
            h.low[: t + 1],
            h.close[: t + 1],
            h.volume[: t + 1],
        )
    )
    np.testing.assert_array_equal(after[: t + 1], before[: t + 1])
    np.testing.assert_array_equal(cut[-1], before[t])
    if k:
        assert not np.array_equal(after[t + 1 :], before[t + 1 :])


def test_warm_up_rule_neutral_until_enough_bars() -> None:
    h = random_history(200, seed=7)
    states = s.compute_states(h)
    for j, spec in enumerate(s.FEATURES):
        if spec.min_bars <= 1 or spec.group == "portfolio":
            continue
        early = states[: spec.min_bars - 1, j]
        assert (early == np.float32(spec.neutral)).all(), spec.name
    # once the window is full the features move
    assert states[L:, IDX("macd_signal")].std() > 0
    assert states[L:, 28:31].std(axis=0).sum() > 0


def test_dsi_reports_warm_up_coverage() -> None:
    h = random_history(200, seed=8)
    dsi = s.compute_states(h)[:, IDX("dsi")]
    expected = np.minimum(np.arange(1, 201) / L, 1.0).astype(np.float32)
    np.testing.assert_allclose(dsi, expected, rtol=1e-6)
    assert dsi[L - 1 :].min() == 1.0


def test_dsi_drops_for_gaps_zero_volume_and_flat_bars() -> None:
    n = 200
    base = random_history(n, seed=9)
    clean = s.compute_states(base)[-1, IDX("dsi")]
    assert clean == 1.0

    dates = base.dates.copy()
    dates[-5:] += 10  # one 11-day interval inside the last 20 bars
    gapped = s.MarketHistory(dates, base.open, base.high, base.low, base.close, base.volume)
    assert s.compute_states(gapped)[-1, IDX("dsi")] == pytest.approx(1 - 1 / 20)

    vol = base.volume.copy()
    vol[-4:] = 0.0
    quiet = s.MarketHistory(base.dates, base.open, base.high, base.low, base.close, vol)
    assert s.compute_states(quiet)[-1, IDX("dsi")] == pytest.approx(1 - 4 / 20)

    close = base.close.copy()
    close[-3:] = close[-4]
    flat = s.MarketHistory(base.dates, close, close, close, close, base.volume)
    assert s.compute_states(flat)[-1, IDX("dsi")] == pytest.approx(1 - 0.5 * 3 / 20)


def test_stale_data_lowers_dsi_in_the_single_date_path() -> None:
    h = random_history(200, seed=10)
    last = h.dates[-1]
    assert s.compute_state(h, at=last).dsi == 1.0
    assert s.compute_state(h, at=last + 1).dsi == 1.0  # within the grace day
    six_days = s.compute_state(h, at=last + 6).dsi
    assert six_days == pytest.approx(0.5, rel=1e-6)  # grace 1 day + one 5-day half-life
    assert s.compute_state(h, at=last + 30).dsi < six_days
    # the market features are those of the last bar
    np.testing.assert_array_equal(
        s.compute_state(h, at=last + 6).to_array()[:24], s.compute_states(h)[-1, :24]
    )


def test_sentiment_lookup_respects_age_and_cut_off() -> None:
    h = random_history(30, seed=11)
    news = s.SentimentSeries(h.dates[[5, 20]], [0.8, -0.4])
    col = s.compute_states(h, news=news)[:, IDX("news_sentiment")]
    assert (col[:5] == 0).all()  # nothing known yet
    np.testing.assert_allclose(col[5:9], 0.8)  # days 0..3 old
    assert (col[9:20] == 0).all()  # older than 3 days
    np.testing.assert_allclose(col[20:24], -0.4)
    # the live path looks sentiment up at `at`, even past the last bar
    later = s.SentimentSeries(np.array([h.dates[-1] + 2]), [0.5])
    assert s.compute_state(h, at=h.dates[-1] + 2, macro=later).macro_sentiment == 0.5
    assert s.compute_state(h, at=h.dates[-1] + 1, macro=later).macro_sentiment == 0.0


def test_hand_checked_returns_and_rsi() -> None:
    close = np.array([100.0, 110.0, 99.0, 99.0, 108.9] + [108.9] * 15)
    n = close.shape[0]
    h = s.MarketHistory(
        np.datetime64("2022-01-01") + np.arange(n),
        close,
        close * 1.01,
        close * 0.99,
        close,
        np.full(n, 10.0),
    )
    st = s.compute_states(h)
    assert st[1, IDX("ret_lag0")] == pytest.approx(math.tanh(math.log(1.1) / 0.05), rel=1e-6)
    assert st[2, IDX("ret_lag1")] == st[1, IDX("ret_lag0")]
    assert st[2, IDX("ret_lag0")] == pytest.approx(math.tanh(math.log(0.9) / 0.05), rel=1e-6)
    # RSI at bar 14 (15 bars): gains 10 + 9.9, losses 11 -> 19.9 / 30.9
    assert st[14, IDX("rsi")] == pytest.approx(19.9 / 30.9, rel=1e-6)
    assert st[13, IDX("rsi")] == 0.5  # warm-up


def test_flat_market_is_neutral_and_low_vol() -> None:
    h = adversarial_histories()["flat_prices"]
    last = s.compute_states(h)[-1]
    assert (last[:20] == 0).all()
    assert last[IDX("rsi")] == 0.5
    assert last[IDX("macd_signal")] == 0.0
    assert last[IDX("bb_width")] == 0.0
    assert last[IDX("volume_ratio")] == 0.0
    assert tuple(last[28:31]) == (1.0, 0.0, 0.0)


def test_portfolio_features() -> None:
    h = random_history(10, seed=12)
    snap = s.PortfolioSnapshot(
        position=-0.5, leverage=2.0, cash_fraction=0.25, days_since_last_trade=10
    )
    st = s.compute_state(h, snap)
    assert (st.position, st.leverage, st.cash_fraction) == (-0.5, 2.0, 0.25)
    assert st.days_since_last_trade == pytest.approx(math.tanh(1.0), rel=1e-6)
    flat = s.compute_state(h)
    assert (flat.position, flat.leverage, flat.cash_fraction, flat.days_since_last_trade) == (
        0.0,
        0.0,
        1.0,
        1.0,
    )
    per_bar = s.portfolio_feature_matrix(
        np.linspace(-1, 1, 10), np.zeros(10), np.ones(10), np.arange(10)
    )
    states = s.compute_states(h, per_bar)
    np.testing.assert_allclose(states[:, s.PORTFOLIO_COLUMNS], per_bar, rtol=1e-6)
    np.testing.assert_array_equal(s.compute_states(h, snap)[-1], st.to_array())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"position": 1.5}, r"position at row 0 is 1.5; expected a value in \[-1.0, 1.0\]"),
        ({"leverage": 5.0}, r"leverage at row 0 is 5.0; expected a value in \[0.0, 4.0\]"),
        ({"cash_fraction": -0.1}, "cash_fraction at row 0 is -0.1"),
        ({"days_since_last_trade": -1}, "days_since_last_trade at row 0 is -1.0"),
        ({"days_since_last_trade": math.nan}, "days_since_last_trade at row 0 is nan"),
        ({"position": math.inf}, "position at row 0 is inf"),
    ],
)
def test_bad_portfolio(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(s.SchemaError, match=message):
        s.PortfolioSnapshot(**kwargs)


def test_bad_portfolio_argument_type() -> None:
    h = random_history(5)
    with pytest.raises(s.SchemaError, match="portfolio is dict"):
        s.compute_states(h, {"position": 0})  # type: ignore[arg-type]
    with pytest.raises(s.SchemaError, match=r"shape \(4, 4\); expected \(5, 4\)"):
        s.compute_states(h, np.zeros((4, 4)))


def _bars(**over: object) -> dict[str, object]:
    n = 5
    bars: dict[str, object] = {
        "dates": np.datetime64("2022-01-01") + np.arange(n),
        "open": np.full(n, 10.0),
        "high": np.full(n, 11.0),
        "low": np.full(n, 9.0),
        "close": np.full(n, 10.0),
        "volume": np.full(n, 1.0),
    }
    bars.update(over)
    return bars


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {
                "dates": np.array(
                    ["2022-01-01", "2022-01-02", "2022-01-02", "2022-01-04", "2022-01-05"],
                    dtype="datetime64[D]",
                )
            },
            "row 2 has duplicate date 2022-01-02",
        ),
        (
            {
                "dates": np.array(
                    ["2022-01-01", "2022-01-03", "2022-01-02", "2022-01-04", "2022-01-05"],
                    dtype="datetime64[D]",
                )
            },
            "row 2 has out-of-order date",
        ),
        ({"dates": ["2022-01-01", "nope", "x", "y", "z"]}, "cannot read as dates"),
        ({"close": np.array([10.0, -1, 10, 10, 10])}, r"close at row 1 \(2022-01-02\) is -1.0"),
        ({"open": np.array([10.0, 10, 0, 10, 10])}, "open at row 2 .* expected a price > 0"),
        ({"high": np.array([11.0, 11, 11, 8, 11])}, r"row 3 \(2022-01-04\) has high 8.0 < low 9.0"),
        ({"volume": np.array([1.0, 1, 1, 1, -5])}, "volume at row 4 .* is -5.0; expected >= 0"),
        ({"close": np.array([10.0, np.nan, 10, 10, 10])}, "close at row 1 is nan"),
        ({"close": np.full(4, 10.0)}, r"column 'close' has shape \(4,\); expected \(5,\)"),
        (
            {
                "dates": np.array([], dtype="datetime64[D]"),
                "open": [],
                "high": [],
                "low": [],
                "close": [],
                "volume": [],
            },
            "is empty",
        ),
    ],
)
def test_bad_history(over: dict[str, object], message: str) -> None:
    with pytest.raises(s.SchemaError, match=message):
        s.MarketHistory(**_bars(**over))  # type: ignore[arg-type]


def test_date_before_history() -> None:
    h = random_history(5, start="2022-01-10", symbol="BTC")
    with pytest.raises(
        s.SchemaError, match="no bar of BTC on or before 2022-01-09; the first bar is 2022-01-10"
    ):
        s.compute_state(h, at="2022-01-09")


def test_bad_sentiment() -> None:
    with pytest.raises(s.SchemaError, match=r"score at row 1 \(2022-01-02\) is 1.5"):
        s.SentimentSeries(np.array(["2022-01-01", "2022-01-02"], dtype="datetime64[D]"), [0.1, 1.5])
    with pytest.raises(s.SchemaError, match="duplicate date"):
        s.SentimentSeries(np.array(["2022-01-01", "2022-01-01"], dtype="datetime64[D]"), [0.1, 0.2])


def test_history_is_immutable() -> None:
    h = random_history(5)
    with pytest.raises(ValueError, match="read-only"):
        h.close[0] = 1.0


def test_sentiment_feature_matches_the_series_rule() -> None:
    h = random_history(60, seed=13)
    news = random_sentiment(h.dates, seed=13, keep=0.3)
    col = s.compute_states(h, news=news)[:, IDX("news_sentiment")]
    sdays = news.dates
    for t, day in enumerate(h.dates):
        k = int(np.searchsorted(sdays, day, side="right")) - 1
        latest = (sdays[k], float(news.scores[k])) if k >= 0 else (None, None)
        assert np.float32(s.sentiment_feature(latest[0], latest[1], day)) == col[t]
    with pytest.raises(s.SchemaError, match="is after"):
        s.sentiment_feature("2022-01-05", 0.1, "2022-01-04")
    with pytest.raises(s.SchemaError, match=r"score is 2.0; expected a value in \[-1, 1\]"):
        s.sentiment_feature("2022-01-04", 2.0, "2022-01-04")


def test_snapshot_and_matrix_portfolio_paths_agree_bit_for_bit() -> None:
    rng = np.random.default_rng(14)
    pos = rng.uniform(-1, 1, 500)
    lev = rng.uniform(0, 4, 500)
    cash = rng.uniform(0, 1, 500)
    days = np.concatenate([rng.uniform(0, 400, 499), [math.inf]])
    matrix = s.portfolio_feature_matrix(pos, lev, cash, days)
    for i in range(500):
        snap = s.PortfolioSnapshot(float(pos[i]), float(lev[i]), float(cash[i]), float(days[i]))
        np.testing.assert_array_equal(snap.features(), matrix[i])
    with pytest.raises(s.SchemaError, match="portfolio position is 'x'; expected a number"):
        s.PortfolioSnapshot(position="x")  # type: ignore[arg-type]


def test_return_features_decode_to_log_returns() -> None:
    h = random_history(100, seed=15)
    states = s.compute_states(h)
    decoded = s.log_returns_from_features(states[1:, IDX("ret_lag0")])
    np.testing.assert_allclose(decoded, np.diff(np.log(h.close)), rtol=1e-4, atol=1e-6)
    assert np.isfinite(s.log_returns_from_features([1.0, -1.0])).all()


def test_states_from_a_first_bar_are_those_rows_of_the_whole() -> None:
    """``first=k`` computes only the rows of bars k.. (the bars before are their lookback):
    bit for bit those rows of the whole result, with news, macro and one portfolio per row."""
    histories = [random_history(420, seed=i) for i in range(3)]
    histories += list(adversarial_histories().values())
    rng = np.random.default_rng(5)
    for h in histories:
        news, macro = random_sentiment(h.dates, seed=1), random_sentiment(h.dates, seed=2)
        n = len(h)
        portfolio = s.portfolio_feature_matrix(
            rng.uniform(-1, 1, n), rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.uniform(0, 9, n)
        )
        whole = s.compute_states(h, portfolio, news=news, macro=macro)
        market = s.market_feature_matrix(h, news, macro)
        for first in sorted({0, 1, 7, s.LOOKBACK - 1, s.LOOKBACK, n // 2, n - 1} & set(range(n))):
            part = s.compute_states(h, portfolio[first:], news=news, macro=macro, first=first)
            assert part.tobytes() == whole[first:].tobytes(), first
            again = s.market_feature_matrix(h, news, macro, first=first)
            assert again.tobytes() == market[first:].tobytes(), first
    h = histories[0]
    for bad in (-1, len(h), 1.5, True, "3"):
        with pytest.raises(s.SchemaError, match=r"first is .*; expected a bar index in 0 \.\. "):
            s.compute_states(h, first=bad)  # type: ignore[arg-type]
    with pytest.raises(s.SchemaError, match=r"shape \(420, 4\); expected \(400, 4\)"):
        s.compute_states(h, np.zeros((420, 4)), first=20)


def _head(h: s.MarketHistory, n: int) -> s.MarketHistory:
    """The first ``n`` bars of ``h``."""
    return (
        _tail(h, n - 1)
        if n <= L
        else s.MarketHistory(
            h.dates[:n],
            h.open[:n],
            h.high[:n],
            h.low[:n],
            h.close[:n],
            h.volume[:n],
            symbol=h.symbol,
        )
    )


def _panel_inputs(
    histories: list[s.MarketHistory], news: list[s.SentimentSeries | None]
) -> tuple[list[np.ndarray], np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Each history's last LOOKBACK bars right-aligned (garbage before the real ones: they must
    be ignored), its length, and its latest news score dated on or before its newest bar."""
    n = len(histories)
    cols = [np.full((n, L), np.datetime64("1999-01-01"), dtype="datetime64[D]")]
    cols += [np.full((n, L), 7.5) for _ in range(4)]
    latest_d = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    latest_s = np.zeros(n)
    for i, (h, ns) in enumerate(zip(histories, news, strict=True)):
        k = min(len(h), L)
        for col, name in zip(cols, ("dates", "close", "high", "low", "volume"), strict=True):
            col[i, L - k :] = getattr(h, name)[-k:]
        if ns is not None:
            j = int(np.searchsorted(ns.dates, h.dates[-1], side="right")) - 1
            if j >= 0:
                latest_d[i], latest_s[i] = ns.dates[j], ns.scores[j]
    return cols, np.array([len(h) for h in histories]), (latest_d, latest_s)


def test_panel_rows_are_the_last_row_of_each_history_bit_for_bit() -> None:
    """``market_feature_panel``: N symbols' newest bars in one call, each row bit for bit the
    last row of ``market_feature_matrix`` (and so of ``compute_states``) of that history: long,
    short (warm-up), one-bar, gapped, flat and adversarial histories, with news and macro."""
    histories = [random_history(n, seed=i, gap_every=37 if i % 3 == 0 else 0)
                 for i, n in enumerate([420, L, L + 1, L - 1, 30, 1, 2, 250])]  # fmt: skip
    histories += list(adversarial_histories().values())
    news: list[s.SentimentSeries | None] = [
        random_sentiment(h.dates, seed=i) if i % 2 else None for i, h in enumerate(histories)
    ]
    macro_all = random_sentiment(
        np.arange("2019-01-01", "2026-01-01", dtype="datetime64[D]"), seed=9, keep=0.3
    )
    cols, bars, latest = _panel_inputs(histories, news)
    _, _, macro_latest = _panel_inputs(histories, [macro_all] * len(histories))
    panel = s.market_feature_panel(*cols, bars, news=latest, macro=macro_latest)
    assert panel.shape == (len(histories), 34)
    for i, h in enumerate(histories):
        want = s.market_feature_matrix(h, news[i], macro_all, first=len(h) - 1)[0]
        assert panel[i].tobytes() == want.tobytes(), (i, h.symbol, panel[i] - want)
        state = s.compute_states(h, news=news[i], macro=macro_all)[-1]
        assert panel[i].astype(np.float32).tobytes() == state.tobytes(), i
    # one symbol alone, or in another order: the same rows
    alone = s.market_feature_panel(*(c[3:4] for c in cols), bars[3:4])
    assert (
        alone[0].tobytes()
        == s.market_feature_matrix(histories[3], first=len(histories[3]) - 1)[0].tobytes()
    )
    order = np.arange(len(histories))[::-1]
    again = s.market_feature_panel(
        *(c[order] for c in cols), bars[order], news=(latest[0][order], latest[1][order]),
        macro=(macro_latest[0][order], macro_latest[1][order]),
    )  # fmt: skip
    assert again.tobytes() == panel[order].tobytes()
    assert s.market_feature_panel(*(c[:0] for c in cols), bars[:0]).shape == (0, 34)


def test_panel_refuses_wrong_shapes_and_counts() -> None:
    h = random_history(200, seed=1)
    cols, bars, _ = _panel_inputs([h], [None])
    with pytest.raises(s.SchemaError, match=r"close has shape \(1, 3\); expected \(1, "):
        s.market_feature_panel(cols[0], cols[1][:, :3], *cols[2:], bars)
    with pytest.raises(s.SchemaError, match=r"expected \(N,\) counts >= 1"):
        s.market_feature_panel(*cols, np.array([0]))
    late = (np.array([h.dates[-1] + 1]), np.array([0.5]))
    with pytest.raises(s.SchemaError, match=r"news: row 0's latest score is dated after its bar"):
        s.market_feature_panel(*cols, bars, news=late)


def test_panel_step_carried_bar_after_bar_equals_the_whole_history() -> None:
    """``market_feature_panel_step`` stepped one bar at a time with its carry (a daemon's
    ticks): each step's rows are bit for bit the last row of ``market_feature_matrix`` of the
    history so far (histories starting short, through warm-up, past LOOKBACK, gapped and
    adversarial), and the same as the panel computed whole; a carry of another day, or none,
    is ignored row by row."""
    full = [random_history(n, seed=20 + i, gap_every=11 if i % 2 else 0)
            for i, n in enumerate([L + 40, L + 3, 60, 2])]  # fmt: skip
    full += [h for h in adversarial_histories().values() if len(h) >= 2]
    cut = [_head(h, max(1, len(h) - (L + 5))) for h in full]
    carry = None
    steps = 0
    while True:
        histories = [_head(f, min(len(f), len(h) + steps)) for h, f in zip(cut, full, strict=True)]
        cols, bars, _ = _panel_inputs(histories, [None] * len(histories))
        panel, carry = s.market_feature_panel_step(*cols, bars, carry=carry)
        assert panel.tobytes() == s.market_feature_panel(*cols, bars).tobytes(), steps
        for i, h in enumerate(histories):
            want = s.market_feature_matrix(h, first=len(h) - 1)[0]
            assert panel[i].tobytes() == want.tobytes(), (steps, i, h.symbol)
        if all(len(h) == len(f) for h, f in zip(histories, full, strict=True)):
            break
        steps += 1
    assert steps > L
    # a carry of other days (or none) for some rows: those rows are computed whole
    other = s.PanelCarry(carry.line + 1.0, carry.vol + 1.0, carry.day.copy())
    other.day[::2] -= 5
    cols, bars, _ = _panel_inputs(full, [None] * len(full))
    again, _ = s.market_feature_panel_step(*cols, bars, carry=s.PanelCarry.none(len(full)))
    assert again.tobytes() == s.market_feature_panel(*cols, bars).tobytes()
    moved, _ = s.market_feature_panel_step(*cols, bars, carry=other)
    assert moved[::2].tobytes() == again[::2].tobytes()
    with pytest.raises(s.SchemaError, match=r"carry has \(1,\) days; expected \("):
        s.market_feature_panel_step(*cols, bars, carry=s.PanelCarry.none(1))


def _rough(h: s.MarketHistory, seed: int) -> s.MarketHistory:
    """``h`` with zero volumes and flat bars (the close unchanged, high == low) here and there."""
    rng = np.random.default_rng(seed)
    close, high, low = h.close.copy(), h.high.copy(), h.low.copy()
    volume = np.where(rng.uniform(size=len(h)) < 0.1, 0.0, h.volume)
    for i in np.flatnonzero(rng.uniform(size=len(h)) < 0.1):
        close[i] = high[i] = low[i] = close[i - 1] if i else close[i]
    return s.MarketHistory(h.dates, h.open, high, low, close, volume, symbol=h.symbol)


@pytest.mark.parametrize("chunk", [0, 4])
def test_panel_step_rows_kept_and_fresh_at_every_reach_boundary(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows one bar on from their carry and rows computed whole, side by side, with histories
    of every length around the spans the step lays out (the DSI and return windows, the MACD
    EMAs, LOOKBACK), gaps over MAX_GAP_DAYS, zero volumes, flat bars and news NaT for some:
    each row bit for bit the last row of ``market_feature_matrix``, the carry the same floats
    as a step computed whole, from strided (non-contiguous) inputs that are left unchanged;
    also with the rows computed whole a few at a time (``chunk``: ``_panel._CHUNK``, the last
    chunk short; 0: as shipped)."""
    if chunk:
        from otonom_schema import _panel

        monkeypatch.setattr(_panel, "_CHUNK", chunk)
    lengths = [1, 2, 3, 19, 20, 21, 22, 23, 41, 42, 43, 89, 90, 91, 92, 119, 120, 121, 122]
    lengths += [L - 2, L - 1, L, L + 1, L + 2, 300]
    full = [_rough(random_history(n + 1, seed=40 + i, gap_every=9 if i % 2 else 0), i)
            for i, n in enumerate(lengths)]  # fmt: skip
    news = [
        random_sentiment(h.dates, seed=i, keep=0.2) if i % 3 else None for i, h in enumerate(full)
    ]
    macro = random_sentiment(np.arange("2019-01-01", "2022-01-01", dtype="datetime64[D]"), seed=7)
    n = len(full)
    # each symbol's last LOOKBACK + 1 bars: the step before reads [:, :-1], this step [:, 1:]
    wide = [np.zeros((n, L + 1), dtype=np.int64)] + [np.full((n, L + 1), 3.0) for _ in range(4)]
    for i, h in enumerate(full):
        k = min(len(h), L + 1)
        wide[0][i, -k:] = h.dates[-k:].astype(np.int64)
        for col, name in zip(wide[1:], ("close", "high", "low", "volume"), strict=True):
            col[i, -k:] = getattr(h, name)[-k:]
    before = [c.copy() for c in wide]
    bars = np.array([len(h) for h in full])
    cols = [wide[0][:, 1:].view("datetime64[D]"), *(c[:, 1:] for c in wide[1:])]
    previous = [wide[0][:, :-1].view("datetime64[D]"), *(c[:, :-1] for c in wide[1:])]
    _, carry = s.market_feature_panel_step(*previous, bars - 1)
    assert (carry.day == wide[0][:, -2]).all()
    carry.day[::3] -= 1  # another day: computed whole
    _, _, latest = _panel_inputs(full, news)
    _, _, macro_latest = _panel_inputs(full, [macro] * n)
    step, after = s.market_feature_panel_step(
        *cols, bars, news=latest, macro=macro_latest, carry=carry
    )
    whole, fresh = s.market_feature_panel_step(*cols, bars, news=latest, macro=macro_latest)
    assert step.tobytes() == whole.tobytes()
    for i, h in enumerate(full):
        want = s.market_feature_matrix(h, news[i], macro, first=len(h) - 1)[0]
        assert step[i].tobytes() == want.tobytes(), (i, len(h))
    assert after.line.tobytes() == fresh.line.tobytes()
    assert after.vol.tobytes() == fresh.vol.tobytes()
    assert after.day.tobytes() == fresh.day.tobytes() == wide[0][:, -1].tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(wide, before, strict=True))
