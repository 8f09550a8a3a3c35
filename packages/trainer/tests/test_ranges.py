"""Dates from the data (``otonom_trainer.ranges``): the rule on its own, then the real
``otonom-train pipeline`` on CSV series of several eras with no date flags."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from otonom_runtime.strategy import infer_periods_per_year
from otonom_schema import LOOKBACK
from otonom_schema.testing import calendar_days
from otonom_trainer.ranges import RangeError, fit_windows, ranges_from_dates
from otonom_trainer.walkforward import WalkForwardError

ROOT = Path(__file__).resolve().parents[3]
STRATEGY = str(ROOT / "strategies" / "baseline_v1.yaml")
D = dt.date


# --- the calendar --------------------------------------------------------------------------------


def test_calendar_is_inferred_from_the_dates() -> None:
    daily = calendar_days(D(2020, 1, 1), D(2022, 12, 31), weekdays=False)
    weekdays = calendar_days(D(1990, 1, 1), D(1992, 12, 31), weekdays=True)
    assert infer_periods_per_year(daily) == 365
    assert infer_periods_per_year(weekdays) == 252
    # holidays off a weekday series keep it at 252; a few missing days keep crypto at 365
    assert infer_periods_per_year(weekdays[::10].tolist() + weekdays.tolist()) == 252
    assert infer_periods_per_year(np.delete(daily, np.arange(0, daily.size, 20))) == 365
    assert infer_periods_per_year(daily[:1]) == 365  # nothing to infer from
    r = ranges_from_dates({"S": weekdays})
    assert (r.periods_per_year, r.calendar) == (252, "inferred: weekday-only bars")
    assert r.calendar_line() == "calendar: 252 bars a year (inferred: weekday-only bars)"
    assert ranges_from_dates({"C": daily}).periods_per_year == 365


def test_monthly_bars_are_named_as_no_daily_bars() -> None:
    """Bars a month apart (backtesting.py's BTCUSD.csv) are read as trading days, and the
    calendar line says so instead of calling them weekday-only bars."""
    months = np.arange("1980-01", "2020-01", dtype="datetime64[M]").astype("datetime64[D]")
    r = ranges_from_dates({"M": months})
    assert r.calendar == (
        "inferred, but the bars cover only 3% of the days: no daily bars? every bar is read "
        "as one trading day"
    )
    weekdays = calendar_days(D(1990, 1, 1), D(1992, 12, 31), weekdays=True)
    gappy = np.delete(weekdays, np.arange(0, weekdays.size, 10))  # a holiday in ten weekdays
    assert ranges_from_dates({"S": gappy}).calendar == "inferred: weekday-only bars"


def test_the_strategy_calendar_wins_over_the_inference() -> None:
    weekdays = calendar_days(D(1990, 1, 1), D(1992, 12, 31), weekdays=True)
    r = ranges_from_dates({"S": weekdays}, periods_per_year=365)
    assert r.periods_per_year == 365
    assert "the strategy's calendar.periods_per_year" in r.calendar_line()


def test_a_stock_and_a_crypto_symbol_share_the_crypto_calendar() -> None:
    """The portfolio has a day wherever one symbol has a bar: the union of the dates."""
    r = ranges_from_dates(
        {
            "STOCK": calendar_days(D(2019, 1, 1), D(2022, 12, 31), weekdays=True),
            "COIN": calendar_days(D(2019, 1, 1), D(2022, 12, 31), weekdays=False),
        }
    )
    assert r.periods_per_year == 365


# --- warm-up and split ---------------------------------------------------------------------------


def test_the_demo_history_keeps_its_documented_dates() -> None:
    """The embedded default (three DEMO symbols, 2018-01-01 .. 2023-12-31, every day)."""
    days = calendar_days(D(2018, 1, 1), D(2023, 12, 31), weekdays=False)
    r = ranges_from_dates({"DEMO-BTC": days, "DEMO-ETH": days, "DEMO-SOL": days})
    assert (r.data_start, r.first_decision, r.end) == (
        D(2018, 1, 1),
        D(2018, 6, 30),
        D(2023, 12, 31),
    )
    assert (r.train_end, r.test_start) == (D(2022, 8, 15), D(2022, 8, 16))
    assert r.warmup_bars == 180  # 180 days, more than LOOKBACK bars
    assert r.split_lines(r.train_end, r.test_start) == [
        "train:    2018-06-30 .. 2022-08-15",
        "held-out: 2022-08-16 .. 2023-12-31 (the last 25% of the decision days)",
    ]


def test_weekday_data_waits_for_lookback_bars_and_holds_out_a_quarter() -> None:
    days = calendar_days(D(1986, 1, 1), D(1989, 12, 31), weekdays=True)
    r = ranges_from_dates({"IBM": days})
    # 180 days would leave fewer than LOOKBACK weekday bars: the bars decide
    assert r.first_decision == days[LOOKBACK].astype(object)
    assert r.warmup_bars == LOOKBACK
    assert r.first_decision > r.data_start + dt.timedelta(days=180)
    decisions = days[LOOKBACK:]
    assert r.decision_days == decisions.size
    held = decisions[decisions >= np.datetime64(r.test_start, "D")]
    assert held.size == decisions.size - int(decisions.size * 0.75)
    assert r.train_end == r.test_start - dt.timedelta(days=1)
    assert r.end == D(1989, 12, 29)  # the last weekday


def test_start_and_end_restrict_the_bars() -> None:
    days = calendar_days(D(2015, 1, 1), D(2024, 6, 30), weekdays=False)
    r = ranges_from_dates({"C": days}, start=D(2019, 1, 1), end=D(2022, 12, 31))
    assert (r.data_start, r.first_decision, r.end) == (
        D(2019, 1, 1),
        D(2019, 6, 30),
        D(2022, 12, 31),
    )


def test_common_range_of_several_symbols() -> None:
    early = calendar_days(D(2010, 1, 1), D(2023, 12, 31), weekdays=False)
    late = calendar_days(D(2019, 1, 1), D(2024, 6, 30), weekdays=False)
    r = ranges_from_dates({"OLD": early, "NEW": late})
    # the newer symbol's warm-up binds; the older one's last bar ends the range
    assert (r.data_start, r.first_decision, r.end) == (
        D(2019, 1, 1),
        D(2019, 6, 30),
        D(2023, 12, 31),
    )


# --- too short, no overlap -----------------------------------------------------------------------


def test_a_too_short_series_says_what_it_has_and_what_it_needs() -> None:
    days = calendar_days(D(2022, 1, 3), D(2023, 2, 14), weekdays=False)
    with pytest.raises(RangeError) as err:
        ranges_from_dates({"BTC-USD": days})
    text = str(err.value)
    assert text.startswith(f"BTC-USD has {days.size} bars (2022-01-03 .. 2023-02-14)")
    assert "the pipeline needs at least 545 bars: 180 of warm-up" in text
    assert "+ 365 decision days" in text
    assert text.endswith("pass a longer series")
    assert isinstance(err.value, ValueError)
    weekdays = calendar_days(D(2022, 1, 3), D(2023, 2, 14), weekdays=True)
    with pytest.raises(
        RangeError, match=r"needs at least 392 bars: 140 of warm-up .* 252 decision"
    ):
        ranges_from_dates({"SPY": weekdays}, what="the check")
    with pytest.raises(RangeError, match=r"^X has 100 bars .*the check needs"):
        ranges_from_dates({"X": weekdays[:100]}, what="the check")


def test_symbols_without_a_common_range_or_without_bars_are_refused() -> None:
    a = calendar_days(D(2010, 1, 1), D(2014, 12, 31), weekdays=False)
    b = calendar_days(D(2016, 1, 1), D(2020, 12, 31), weekdays=False)
    with pytest.raises(RangeError, match="the symbols' bars do not overlap: A has 1826 bars"):
        ranges_from_dates({"A": a, "B": b})
    with pytest.raises(RangeError, match=r"^A has no bar in 2021-01-01 \.\. the last bar"):
        ranges_from_dates({"A": a, "B": b}, start=D(2021, 1, 1))
    with pytest.raises(RangeError, match=r"^B has no bar in the first bar \.\. 2015-06-30"):
        ranges_from_dates({"A": a, "B": b}, end=D(2015, 6, 30))


# --- walk-forward windows ------------------------------------------------------------------------


def test_walk_forward_keeps_its_defaults_when_they_fit() -> None:
    windows, years, months = fit_windows(D(2018, 6, 30), D(2023, 12, 31))
    assert (years, months, len(windows)) == (3, 6, 5)


@pytest.mark.parametrize(
    ("first", "years", "months", "count"),
    [
        (D(2020, 6, 1), 2, 6, 3),  # 3 y + 6 m gives one window: two years give three
        (D(2021, 12, 28), 1, 6, 2),  # 3 years of crypto: 2 y + 6 m would give a single window
        (D(2022, 3, 1), 1, 3, 3),
        (D(2022, 9, 15), 1, 3, 1),  # no size gives two: the largest giving one
    ],
)
def test_walk_forward_shrinks_to_fit(first: dt.date, years: int, months: int, count: int) -> None:
    windows, got_years, got_months = fit_windows(first, D(2023, 12, 31))
    assert (got_years, got_months, len(windows)) == (years, months, count)
    assert windows[0].train_start >= first


def test_walk_forward_explains_when_nothing_fits() -> None:
    with pytest.raises(WalkForwardError) as err:
        fit_windows(D(2023, 3, 1), D(2023, 12, 31))
    assert "the history is too short for one window" in str(err.value)
    assert "tried 3 y + 6 m, 2 y + 6 m, 1 y + 6 m, 1 y + 3 m" in str(err.value)


def test_walk_forward_sizes_given_are_kept() -> None:
    with pytest.raises(WalkForwardError, match="too short for one window"):
        fit_windows(D(2021, 12, 28), D(2023, 12, 31), train_years=3, test_months=6)
    windows, years, months = fit_windows(D(2018, 6, 30), D(2023, 12, 31), test_months=3)
    assert (years, months, len(windows)) == (3, 3, 10)


# --- the real pipeline on CSV series of several eras, no date flags ------------------------------


def _write_csv(path: Path, last: dt.date, years: int, *, weekdays: bool, seed: int) -> int:
    """A geometric random walk, Yahoo columns; weekday-only or every day. Returns the rows."""
    rng = random.Random(seed)
    day, price, rows = last - dt.timedelta(days=round(365.25 * years)), 50.0, 0
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"])
        while day <= last:
            if not weekdays or day.weekday() < 5:
                before = price
                price *= math.exp(rng.gauss(0.0003, 0.02))
                high, low = max(before, price) * 1.01, min(before, price) * 0.99
                prices = (f"{x:.4f}" for x in (before, high, low, price, price))
                out.writerow([day.isoformat(), *prices, rng.randint(1000, 9000)])
                rows += 1
            day += dt.timedelta(days=1)
    return rows


def _pipeline(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "pipeline", "--strategy-path", STRATEGY, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("symbol", "last", "weekdays", "calendar"),
    [
        ("IBM", D(1995, 12, 29), True, 252),  # a stock of the 1990s
        ("INDEX", D(2013, 6, 28), True, 252),  # index data
        ("STOCK", D(2018, 3, 30), True, 252),  # ends before the demo's first decision
        ("COIN-USD", D(2024, 6, 30), False, 365),  # crypto: every day
    ],
)
def test_pipeline_without_dates_on_any_era(
    tmp_path: Path, symbol: str, last: dt.date, weekdays: bool, calendar: int
) -> None:
    csv_path = tmp_path / f"{symbol}.csv"
    _write_csv(csv_path, last, 3, weekdays=weekdays, seed=last.year)
    # the dates are under test, not the model: a small one
    out = _pipeline(
        tmp_path, "--import-csv", csv_path.name, "--symbol", symbol, "--epochs", "1",
        "--teacher-rows", "2000",
    )  # fmt: skip
    # the gate decides the exit code (0: promoted, 1: rejected); anything else is a failure
    assert out.returncode in (0, 1), out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    text = out.stdout
    assert "dates (from the bars in the store):" in text
    for head in ("warm-up:", "train:", "held-out:", "calendar:"):
        assert f"\n  {head}" in text, head
    assert f"calendar: {calendar} bars a year (inferred: " in text
    held = next(line for line in text.splitlines() if line.startswith("  held-out: "))
    test_start, end = held.split()[1], held.split()[3]
    assert end == str(last)  # the last bar of the file (a weekday in every case here)
    assert all(f"[{n}/7]" in text for n in range(1, 8))
    table_path = next(tmp_path.glob("reports/**/table.json"))  # per-run folders or not
    table = json.loads(table_path.read_text(encoding="utf-8"))
    assert table["test_period"] == [test_start, end]
    model = tmp_path / table["model"]
    assert model.name == "policy_best.onnx"
    assert model.is_file()
    assert (model.parent / "check.md").is_file()


def test_pipeline_refuses_a_too_short_series_in_one_line(tmp_path: Path) -> None:
    csv_path = tmp_path / "short.csv"
    rows = _write_csv(csv_path, D(2023, 2, 14), 1, weekdays=False, seed=3)
    out = _pipeline(tmp_path, "--import-csv", csv_path.name, "--symbol", "BTC-USD")
    assert out.returncode not in (0, None)
    assert out.returncode < 3  # the CLI's error exit, not a crash
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: BTC-USD has ")
    assert f"BTC-USD has {rows} bars (" in lines[0]
    assert "the pipeline needs at least 545 bars" in lines[0]
    assert "pass a longer series" in lines[0]
    assert not list(tmp_path.glob("models/**/*.onnx"))
    assert not list(tmp_path.glob("reports/**/table.json"))


def test_walk_forward_and_check_without_dates(tmp_path: Path) -> None:
    """Three years of weekday bars ending in 2013: walk-forward shrinks its windows to fit,
    and check defaults to the period the pipeline would hold out."""
    csv_path = tmp_path / "INDEX.csv"
    _write_csv(csv_path, D(2013, 6, 28), 3, weekdays=True, seed=11)
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    env["MPLBACKEND"] = "Agg"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    out = run("-m", "otonom_runtime", "data", "import-csv", csv_path.name, "--symbol", "INDEX")
    assert out.returncode == 0, out.stderr
    with csv_path.open(encoding="utf-8") as f:
        dates = np.array([row["Date"] for row in csv.DictReader(f)], dtype="datetime64[D]")
    expected = ranges_from_dates({"INDEX": dates})
    trainer = ("-m", "otonom_trainer")
    strategy = ("--strategy-path", STRATEGY, "--symbol", "INDEX")
    out = run(*trainer, "walk-forward", *strategy, "--epochs", "1", "--hidden-dim", "8")
    assert out.returncode == 0, out.stderr[-3000:]
    # 3 y + 6 m and 2 y + 6 m do not fit in ~2.4 years of decisions; 1 y + 6 m gives windows
    assert "window(s) of 1 year(s) train + 6 month(s) test" in out.stdout
    assert f"first decision {expected.first_decision}" in out.stdout
    assert "  calendar: 252 bars a year (inferred: weekday-only bars)" in out.stdout
    report = json.loads((tmp_path / "reports" / "walk-forward" / "walk_forward.json").read_text())
    assert len(report["windows"]) >= 2
    assert report["windows"][-1]["test_end"] == "2013-06-28"
    model = tmp_path / "reports" / "walk-forward" / "window_01" / "model"
    out = run(*trainer, "check", str(model), *strategy, "--out", str(tmp_path / "check"))
    assert out.returncode in (0, 1), out.stderr[-3000:]
    assert f"  held-out: {expected.test_start} .. 2013-06-28" in out.stdout
    assert f"on INDEX {expected.test_start} .. 2013-06-28" in out.stdout
