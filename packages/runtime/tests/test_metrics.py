"""Tests of otonom_runtime.metrics: hand-computed cases and a cross-check against backtesting.py.

The cross-check runs one position plan (a moving-average rule: long / flat / short, filled at
the next open, no costs) through backtesting.py (a test-only dependency of the dev env, never of
otonom-runtime) and through a few lines of simulation written here, then compares what
``compute_metrics`` says about either equity curve with the library's own report.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from backtesting import Backtest, Strategy

from otonom_runtime.metrics import (
    Metrics,
    Trade,
    compute_metrics,
    drawdown_series,
    returns_from_equity,
)

# --- hand-computed cases --------------------------------------------------------------------

# equity 100 -> 110 -> 99 -> 108.9: returns +10 %, -10 %, +10 %.
EQ_A = [100.0, 110.0, 99.0, 108.9]


def test_returns_and_drawdown_helpers_by_hand() -> None:
    # r = [110/100 - 1, 99/110 - 1, 108.9/99 - 1] = [0.1, -0.1, 0.1]
    np.testing.assert_allclose(returns_from_equity(EQ_A), [0.1, -0.1, 0.1], rtol=0, atol=1e-15)
    # running peak [100, 110, 110, 110] -> drawdown [0, 0, 1 - 99/110, 1 - 108.9/110]
    #                                              = [0, 0, 0.1, 0.01]
    np.testing.assert_allclose(drawdown_series(EQ_A), [0, 0, 0.1, 0.01], rtol=0, atol=1e-15)


def test_metrics_by_hand() -> None:
    m = compute_metrics(EQ_A, [0.0, 1.0, 1.0, 0.0], [], 252)
    # total return 108.9 / 100 - 1 = 0.089
    assert m.total_return == pytest.approx(0.089, abs=1e-15)
    # CAGR: 3 periods of 1/252 year -> 1.089 ** (252 / 3) - 1 = 1.089 ** 84 - 1
    assert m.cagr == pytest.approx(1.089**84 - 1, rel=1e-12)
    # mean r = 0.1 / 3; deviations (2/30, -4/30, 2/30) -> sum sq = 24/900, / (3 - 1) = 0.04 / 3
    # -> std = 0.2 / sqrt(3); Sharpe = (0.1/3) / (0.2/sqrt 3) * sqrt(252) = sqrt(3*252) / 6
    #  = sqrt(756 / 36) = sqrt(21)
    assert m.sharpe == pytest.approx(math.sqrt(21), rel=1e-12)
    # downside deviation over ALL 3 periods: sqrt((0 + 0.01 + 0) / 3) = 0.1 / sqrt(3)
    # Sortino = (0.1/3) / (0.1/sqrt 3) * sqrt(252) = sqrt(252 / 3) = sqrt(84)
    assert m.sortino == pytest.approx(math.sqrt(84), rel=1e-12)
    # running peak 110 (bar 1), trough 99: 1 - 99/110 = 0.1; never back to 110 -> 3 - 1 = 2 bars
    assert m.max_drawdown == pytest.approx(0.1, abs=1e-15)
    assert m.max_drawdown_duration == 2
    # positions [0, 1, 1, 0]: 2 of 4 bars exposed; |diff| = 1, 0, 1 -> mean 2/3 -> * 252 = 168
    assert m.exposure == 0.5
    assert m.turnover == pytest.approx(168.0, rel=1e-12)
    assert (m.n_trades, m.win_rate, m.fallbacks, m.n_bars, m.periods_per_year) == (
        0,
        None,
        0,
        4,
        252,
    )


def test_risk_free_is_taken_off_per_period() -> None:
    # rf 2.52 % a year over 252 periods = 0.0001 a period off the mean return (0.1/3)
    m = compute_metrics(EQ_A, [0.0] * 4, [], 252, risk_free=0.0252)
    excess = 0.1 / 3 - 0.0001
    assert m.sharpe == pytest.approx(excess / (0.2 / math.sqrt(3)) * math.sqrt(252), rel=1e-12)
    assert m.sortino == pytest.approx(excess / (0.1 / math.sqrt(3)) * math.sqrt(252), rel=1e-12)
    # the other figures do not depend on rf
    base = compute_metrics(EQ_A, [0.0] * 4, [], 252)
    assert (m.total_return, m.cagr, m.max_drawdown) == (
        base.total_return,
        base.cagr,
        base.max_drawdown,
    )


def test_drawdown_duration_counts_bars_to_recovery_and_to_the_end() -> None:
    # peaks (drawdown 0) at bars 0, 1, 4, 5; bars 2-3 under the peak of bar 1, back at bar 4:
    # 4 - 1 = 3 bars; bar 6 under the peak of bar 5, never back: 6 - 5 = 1 bar.
    eq = [100.0, 120.0, 90.0, 100.0, 120.0, 130.0, 125.0]
    m = compute_metrics(eq, [0.0] * 7, [], 365)
    assert m.max_drawdown_duration == 3
    # deepest: 1 - 90/120 = 0.25
    assert m.max_drawdown == pytest.approx(0.25, abs=1e-15)
    # a long unrecovered tail wins: peak at bar 1, last bar 6 -> 5 bars
    m2 = compute_metrics([100.0, 120.0, 119.0, 118.0, 117.0, 116.0, 115.0], [0.0] * 7, [], 365)
    assert m2.max_drawdown_duration == 5


def test_flat_equity_has_no_sharpe_no_sortino_no_drawdown() -> None:
    # returns [0, 0, 0]: std 0 -> Sharpe None; no losing period -> Sortino None
    m = compute_metrics([100.0] * 4, [0.0] * 4, [], 252)
    assert (m.total_return, m.cagr, m.max_drawdown, m.max_drawdown_duration) == (0, 0, 0, 0)
    assert m.sharpe is None
    assert m.sortino is None
    assert (m.exposure, m.turnover) == (0.0, 0.0)


def test_constant_growth_counts_float_noise_as_zero_volatility() -> None:
    # 1 % a bar: the returns are all 0.01 up to rounding; their std is float noise, not risk
    eq = 100.0 * 1.01 ** np.arange(50)
    r = returns_from_equity(eq)
    assert 0 < np.std(r, ddof=1) < 1e-12  # the noise is there ...
    m = compute_metrics(eq, np.zeros(50), [], 252)
    assert m.sharpe is None  # ... and is not turned into a Sharpe of 1e14
    assert m.sortino is None
    assert m.cagr == pytest.approx(1.01**252 - 1, rel=1e-12)


def test_monotonic_rise_has_sharpe_but_no_sortino() -> None:
    # returns 1 %, 2/101, 0.5/103, 6.5/103.5: all > 0 -> downside deviation 0 -> Sortino None
    eq = [100.0, 101.0, 103.0, 103.5, 110.0]
    m = compute_metrics(eq, [1.0] * 5, [], 252)
    r = np.array([0.01, 2 / 101, 0.5 / 103, 6.5 / 103.5])
    assert m.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252), rel=1e-12)
    assert m.sortino is None
    assert (m.max_drawdown, m.max_drawdown_duration) == (0.0, 0)
    assert m.exposure == 1.0


def test_two_bars_have_no_sharpe_but_a_sortino() -> None:
    # one return (-0.05): std with ddof=1 needs two -> Sharpe None
    # downside sqrt(0.05**2 / 1) = 0.05 -> Sortino = -0.05 / 0.05 * sqrt(252) = -sqrt(252)
    m = compute_metrics([100.0, 95.0], [0.0, 0.0], [], 252)
    assert m.sharpe is None
    assert m.sortino == pytest.approx(-math.sqrt(252), rel=1e-12)
    assert m.max_drawdown == pytest.approx(0.05, abs=1e-15)
    assert m.max_drawdown_duration == 1
    assert m.turnover == 0.0


def test_exposure_and_turnover_on_a_hand_made_position_series() -> None:
    # positions 0, +0.5, +0.5, -1, 0, 0: non-zero on 3 of 6 bars -> exposure 0.5
    # |diff| = 0.5, 0, 1.5, 1, 0 -> sum 3.0 over 5 changes -> mean 0.6 -> * 252 = 151.2
    pos = [0.0, 0.5, 0.5, -1.0, 0.0, 0.0]
    m = compute_metrics([100.0, 101, 102, 101, 100, 100], pos, [], 252)
    assert m.exposure == 0.5
    assert m.turnover == pytest.approx(151.2, rel=1e-12)
    # per calendar day the same changes annualise over 365 periods: 0.6 * 365 = 219
    assert compute_metrics([100.0] * 6, pos, [], 365).turnover == pytest.approx(219.0, rel=1e-12)


def _trade(pnl: float, side: Any = "long") -> Trade:
    return Trade(
        symbol="BTC",
        side=side,
        entry_date=dt.date(2024, 1, 2),
        exit_date=dt.date(2024, 1, 5),
        entry_price=100.0,
        exit_price=101.0,
        size=1.0,
        pnl=pnl,
    )


def test_win_rate_from_pnls_and_from_trade_objects() -> None:
    # pnl 10, -5, 0, 3: wins are pnl > 0 (a break-even trade is no win) -> 2 / 4 = 0.5
    pnls = [10.0, -5.0, 0.0, 3.0]
    eq, pos = [100.0, 101.0, 102.0], [0.0, 1.0, 0.0]
    from_numbers = compute_metrics(eq, pos, pnls, 252)
    from_array = compute_metrics(eq, pos, np.array(pnls), 252)
    from_trades = compute_metrics(eq, pos, [_trade(p) for p in pnls], 252)
    for m in (from_numbers, from_array, from_trades):
        assert (m.n_trades, m.win_rate) == (4, 0.5)
    # all losers -> 0.0 (defined), no trade -> None (undefined)
    assert compute_metrics(eq, pos, [-1.0], 252).win_rate == 0.0
    assert compute_metrics(eq, pos, (), 252).win_rate is None
    assert compute_metrics(eq, pos, np.array([]), 252).n_trades == 0


def test_fallbacks_are_passed_through() -> None:
    assert compute_metrics(EQ_A, [0.0] * 4, [], 252, fallbacks=7).fallbacks == 7


def test_to_dict_is_strict_json() -> None:
    m = compute_metrics(EQ_A, [0.0, 1.0, 1.0, 0.0], [1.0, -1.0], 252, fallbacks=2)
    d = m.to_dict()
    assert set(d) == set(Metrics.__dataclass_fields__)
    back = json.loads(json.dumps(d, allow_nan=False))
    assert back["sharpe"] == pytest.approx(math.sqrt(21), rel=1e-12)
    assert (back["win_rate"], back["fallbacks"], back["n_bars"]) == (0.5, 2, 4)
    # undefined figures are null, not NaN
    flat = compute_metrics([1.0, 1.0], [0.0, 0.0], [], 252).to_dict()
    assert (flat["sharpe"], flat["sortino"], flat["win_rate"]) == (None, None, None)
    json.dumps(flat, allow_nan=False)


def test_cagr_overflow_is_inf_and_null_in_json() -> None:
    # 1e10 in one day, over 365 days a year: (1e10) ** 365 overflows a float
    m = compute_metrics([1.0, 1e10], [0.0, 0.0], [], 365)
    assert m.cagr == math.inf
    assert m.to_dict()["cagr"] is None
    json.dumps(m.to_dict(), allow_nan=False)


def test_trade_to_dict_and_validation() -> None:
    t = _trade(1.5, side="short")
    assert t.to_dict() == {
        "symbol": "BTC",
        "side": "short",
        "entry_date": "2024-01-02",
        "exit_date": "2024-01-05",
        "entry_price": 100.0,
        "exit_price": 101.0,
        "size": 1.0,
        "pnl": 1.5,
    }
    with pytest.raises(ValueError, match=r"side must be 'long' or 'short', got 'buy'"):
        _trade(1.0, side="buy")
    with pytest.raises(ValueError, match=r"pnl must be finite, got nan"):
        _trade(math.nan)
    kwargs: dict[str, Any] = t.to_dict() | {
        "entry_date": dt.date(2024, 1, 5),
        "exit_date": dt.date(2024, 1, 2),
    }
    with pytest.raises(ValueError, match=r"exit_date \(2024-01-02\) is before entry_date"):
        Trade(**kwargs)
    kwargs = kwargs | {"exit_date": dt.date(2024, 1, 5), "entry_price": 0.0}
    with pytest.raises(ValueError, match=r"entry_price must be finite and > 0, got 0.0"):
        Trade(**kwargs)


@pytest.mark.parametrize(
    ("equity", "positions", "match"),
    [
        ([100.0], [0.0], r"at least 2 bars \(N >= 2\), got 1"),
        ([100.0, 0.0, 90.0], [0.0] * 3, r"> 0 at every bar, got 0.0 at index 1"),
        ([100.0, -5.0], [0.0] * 2, r"> 0 at every bar, got -5.0 at index 1"),
        ([100.0, math.nan], [0.0] * 2, r"equity must be finite, got nan at index 1"),
        ([100.0, math.inf], [0.0] * 2, r"equity must be finite, got inf at index 1"),
        ([[100.0, 101.0]], [0.0] * 2, r"equity must be 1-D .*got shape \(1, 2\)"),
        (["a", "b"], [0.0] * 2, r"equity must be a 1-D array of numbers"),
        ([100.0, 101.0, 102.0], [0.0] * 2, r"one value per equity bar: expected 3, got 2"),
        ([100.0, 101.0], [0.0, math.nan], r"positions must be finite, got nan at index 1"),
    ],
)
def test_bad_series_are_rejected(equity: Any, positions: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_metrics(equity, positions, [], 252)


@pytest.mark.parametrize("ppy", [0, -252, 252.0, True, "252"])
def test_periods_per_year_must_be_a_positive_int(ppy: Any) -> None:
    with pytest.raises(ValueError, match=r"periods_per_year must be a positive integer.*got"):
        compute_metrics(EQ_A, [0.0] * 4, [], ppy)


def test_periods_per_year_accepts_any_positive_int() -> None:
    # weekly bars: 3 periods of 1/52 year -> 1.089 ** (52/3) - 1
    m = compute_metrics(EQ_A, [0.0] * 4, [], np.int64(52))
    assert m.cagr == pytest.approx(1.089 ** (52 / 3) - 1, rel=1e-12)
    assert type(m.periods_per_year) is int


def test_other_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"fallbacks must be a non-negative integer, got -1"):
        compute_metrics(EQ_A, [0.0] * 4, [], 252, fallbacks=-1)
    with pytest.raises(ValueError, match=r"risk_free must be a finite annual rate.*got nan"):
        compute_metrics(EQ_A, [0.0] * 4, [], 252, risk_free=math.nan)
    with pytest.raises(ValueError, match=r"trades \(pnl numbers\) must be finite, got nan"):
        compute_metrics(EQ_A, [0.0] * 4, [1.0, math.nan], 252)
    with pytest.raises(ValueError, match=r"all Trade objects or all pnl numbers.*float at index 1"):
        compute_metrics(EQ_A, [0.0] * 4, [_trade(1.0), 2.0], 252)
    with pytest.raises(ValueError, match=r"returns_from_equity|at least 2 bars"):
        returns_from_equity([1.0])
    with pytest.raises(ValueError, match=r"> 0 at every bar"):
        drawdown_series([1.0, -1.0])


# --- cross-check against backtesting.py -----------------------------------------------------

N_BARS = 500
CASH = 100_000.0
PPY = 365  # a bar every calendar day: backtesting.py then annualises over 365 days too


def _market() -> pd.DataFrame:
    """A seeded random walk with daily OHLC on every calendar day."""
    rng = np.random.default_rng(20240601)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, N_BARS)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.004, N_BARS))
    index = pd.date_range("2022-01-01", periods=N_BARS, freq="D")
    return pd.DataFrame(
        {
            "Open": open_,
            "High": np.maximum(open_, close) * 1.005,
            "Low": np.minimum(open_, close) * 0.995,
            "Close": close,
        },
        index=index,
    )


def _plan(df: pd.DataFrame) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The moving-average rule and our own simulation of it (fill at next open, no costs).

    Signal on the close of bar t: long if SMA10 > SMA40 by more than 1 %, short if below by
    more than 1 %, flat otherwise (and flat over the 40-bar warm-up and the last 2 bars, so
    every trade is closed inside the data). On a change of side the new position is
    ``floor(0.9 * equity_t / close_t)`` units, kept constant until the next change (one trade
    per run, as backtesting.py counts them). Returns ``units[t]`` (held over bar t, i.e. filled
    at open t) and the equity at each close: ``cash -= Δunits_t * open_t``,
    ``equity_t = cash + units_t * close_t``.
    """
    close = df["Close"].to_numpy()
    open_ = df["Open"].to_numpy()
    fast = df["Close"].rolling(10).mean().to_numpy()
    slow = df["Close"].rolling(40).mean().to_numpy()
    with np.errstate(invalid="ignore"):
        gap = fast / slow - 1.0
    signal = np.where(gap > 0.01, 1, np.where(gap < -0.01, -1, 0))
    signal[np.isnan(slow)] = 0
    signal[-2:] = 0
    units = np.zeros(N_BARS, dtype=np.int64)
    equity = np.empty(N_BARS)
    cash, held = CASH, 0
    for t in range(N_BARS):
        if t >= 2:  # backtesting.py's first decision is on the close of bar 1
            side = signal[t - 1]
            if side == 0:
                held = 0
            elif np.sign(held) != side:
                held = int(side * math.floor(0.9 * equity[t - 1] / close[t - 1]))
        cash -= (held - units[t - 1] if t else held) * open_[t]
        units[t] = held
        equity[t] = cash + held * close[t]
    return units, equity


def _run_backtesting(df: pd.DataFrame, units: npt.NDArray[np.int64]) -> Any:
    """backtesting.py trading exactly ``units``: on bar i's close, order units[i+1] - held."""

    class FollowPlan(Strategy):
        def init(self) -> None:
            pass

        def next(self) -> None:
            i = len(self.data) - 1
            if i + 1 >= len(units):
                return
            delta = int(units[i + 1]) - int(self.position.size)
            if delta > 0:
                self.buy(size=delta)
            elif delta < 0:
                self.sell(size=-delta)

    bt = Backtest(df, FollowPlan, cash=CASH, commission=0.0, spread=0.0)
    with warnings.catch_warnings():
        # backtesting 0.6.6 calls DatetimeIndex.dayofweek, deprecated in pandas 3
        warnings.filterwarnings(
            "ignore", message=r"DatetimeIndex\.dayofweek is deprecated", category=DeprecationWarning
        )
        return bt.run()


def _our_trades(df: pd.DataFrame, units: npt.NDArray[np.int64]) -> list[Trade]:
    """One Trade per run of constant non-zero units: in at the run's first open, out at the next."""
    open_ = df["Open"].to_numpy()
    dates = [ts.date() for ts in df.index]
    trades = []
    start = None
    for t in range(1, N_BARS):
        if units[t] != units[t - 1]:
            if units[t - 1] != 0 and start is not None:
                u = int(units[t - 1])
                trades.append(
                    Trade(
                        symbol="RW",
                        side="long" if u > 0 else "short",
                        entry_date=dates[start],
                        exit_date=dates[t],
                        entry_price=float(open_[start]),
                        exit_price=float(open_[t]),
                        size=float(abs(u)),
                        pnl=u * float(open_[t] - open_[start]),
                    )
                )
            start = t if units[t] != 0 else None
    return trades


@pytest.fixture(scope="module")
def crosscheck() -> dict[str, Any]:
    df = _market()
    units, our_equity = _plan(df)
    stats = _run_backtesting(df, units)
    return {"df": df, "units": units, "our_equity": our_equity, "stats": stats}


def test_plan_is_a_real_long_flat_short_strategy(crosscheck: dict[str, Any]) -> None:
    units = crosscheck["units"]
    stats = crosscheck["stats"]
    assert (units > 0).sum() > 50
    assert (units < 0).sum() > 50
    assert (units == 0).sum() > 50
    assert units[-1] == 0
    assert stats["# Trades"] >= 8
    assert 0 < stats["Win Rate [%]"] < 100


def test_library_trades_exactly_our_positions(crosscheck: dict[str, Any]) -> None:
    stats = crosscheck["stats"]
    lib_equity = stats["_equity_curve"]["Equity"].to_numpy()
    np.testing.assert_allclose(lib_equity, crosscheck["our_equity"], rtol=1e-12, atol=0)
    lib_trades = stats["_trades"]
    ours = _our_trades(crosscheck["df"], crosscheck["units"])
    assert len(ours) == len(lib_trades)
    np.testing.assert_allclose([t.entry_price for t in ours], lib_trades["EntryPrice"], rtol=1e-15)
    np.testing.assert_allclose([t.exit_price for t in ours], lib_trades["ExitPrice"], rtol=1e-15)
    np.testing.assert_allclose(
        [t.size if t.side == "long" else -t.size for t in ours], lib_trades["Size"], rtol=0
    )
    np.testing.assert_allclose([t.pnl for t in ours], lib_trades["PnL"], rtol=1e-12)


@pytest.mark.parametrize("source", ["library equity", "our equity"])
def test_metrics_agree_with_backtesting_py(crosscheck: dict[str, Any], source: str) -> None:
    """Our figures against backtesting.py's report on the same positions.

    Where the definitions agree the numbers are compared directly: total return
    (``Return [%]``), max drawdown (``Max. Drawdown [%]``, negative there), max drawdown
    duration (``Max. Drawdown Duration``: days, one bar a day here), trade count and win rate.
    Our CAGR ``(e_N/e_0) ** (ppy/(N-1)) - 1`` is backtesting.py's ``Return (Ann.) [%]``
    (``(1 + geometric mean daily return) ** 365 - 1``); its ``CAGR [%]`` uses calendar years
    of 365.25 days instead and is not compared.

    Where they differ, backtesting.py's figure is recomputed from ours:

    * Sharpe: backtesting.py divides the annualised geometric return by a compounded
      volatility ``sqrt((var + (1+g)^2)^365 - (1+g)^730)`` (var: daily return variance,
      ddof=1; g: geometric mean daily return); ours is the arithmetic
      ``mean(r) / std(r, ddof=1) * sqrt(365)``. From our Sharpe we get ``std`` back
      (``mean(r) * sqrt(365) / sharpe``), plug it into their formula and must land on their
      Sharpe; and pandas' own mean/std of the library's equity curve must give ours.
    * Sortino: backtesting.py uses the same downside deviation (all periods, target 0) but the
      annualised geometric return on top: ``CAGR / (dd * sqrt(365))``. We recover ``dd`` from
      our Sortino and must land on theirs.
    * Exposure: backtesting.py counts every bar a trade is open at any moment, from its entry
      bar to its exit bar inclusive (the exit fills at that bar's open); we count bars whose
      closing position is non-zero.
    """
    stats = crosscheck["stats"]
    units = crosscheck["units"]
    df = crosscheck["df"]
    lib_curve = stats["_equity_curve"]["Equity"]
    equity = lib_curve.to_numpy() if source == "library equity" else crosscheck["our_equity"]
    positions = units * df["Close"].to_numpy() / equity  # signed fraction of equity
    m = compute_metrics(equity, positions, stats["_trades"]["PnL"].to_numpy(), PPY)
    m_objects = compute_metrics(equity, positions, _our_trades(df, units), PPY)
    assert m_objects == m

    assert m.total_return == pytest.approx(stats["Return [%]"] / 100, rel=1e-10, abs=1e-12)
    assert m.cagr == pytest.approx(stats["Return (Ann.) [%]"] / 100, rel=1e-9)
    assert m.max_drawdown == pytest.approx(-stats["Max. Drawdown [%]"] / 100, rel=1e-10)
    assert m.max_drawdown > 0.01
    assert m.max_drawdown_duration == stats["Max. Drawdown Duration"].days
    assert m.n_trades == stats["# Trades"]
    assert m.win_rate == pytest.approx(stats["Win Rate [%]"] / 100, rel=1e-12)

    assert m.sharpe is not None
    assert m.sortino is not None
    mean_r = float(np.mean(returns_from_equity(equity)))
    assert abs(mean_r) > 1e-6
    g = (1 + m.cagr) ** (1 / PPY) - 1
    std = mean_r * math.sqrt(PPY) / m.sharpe
    lib_vol = math.sqrt((std**2 + (1 + g) ** 2) ** PPY - (1 + g) ** (2 * PPY))
    assert m.cagr / lib_vol == pytest.approx(stats["Sharpe Ratio"], rel=1e-8)
    pct = lib_curve.pct_change().dropna()
    assert m.sharpe == pytest.approx(pct.mean() / pct.std() * math.sqrt(PPY), rel=1e-9)
    downside = mean_r * math.sqrt(PPY) / m.sortino
    assert m.cagr / (downside * math.sqrt(PPY)) == pytest.approx(stats["Sortino Ratio"], rel=1e-8)

    assert m.exposure == pytest.approx(np.mean(units != 0), abs=1e-15)
    open_at_some_point = (units != 0) | (np.r_[0, units[:-1]] != 0)
    assert stats["Exposure Time [%]"] == pytest.approx(100 * np.mean(open_at_some_point))
