"""Dates from the stored bars (``otonom_runtime.ranges``): the rules on dates, then on a real
SQLite store. The trainer's split and windows on top of them: ``packages/trainer/tests``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from otonom_runtime import DataRangeError, OtonomRuntimeError, UnknownSymbolError
from otonom_runtime.ranges import WARMUP_DAYS, bar_dates, bar_ranges, common_range, warmed_up
from otonom_runtime.store import get_session, init_db
from otonom_runtime.synth import write_synthetic
from otonom_schema import LOOKBACK
from otonom_schema.testing import calendar_days

D = dt.date


def test_daily_bars_wait_warmup_days() -> None:
    days = calendar_days(D(2020, 1, 1), D(2020, 12, 31), weekdays=False)
    r = bar_ranges({"C": days})
    assert (r.data_start, r.first_decision, r.end) == (
        D(2020, 1, 1),
        D(2020, 1, 1) + dt.timedelta(days=WARMUP_DAYS),
        D(2020, 12, 31),
    )
    assert r.decision_days == r.days.size == 366 - WARMUP_DAYS
    assert r.warmup_bars == WARMUP_DAYS
    assert r.decisions_line() == "decisions: 2020-06-29 .. 2020-12-31 (186 days)"
    assert r.calendar_line() == "calendar: 365 bars a year (inferred: bars on (almost) every day)"


def test_weekday_bars_wait_lookback_bars() -> None:
    days = calendar_days(D(1990, 1, 1), D(1990, 12, 31), weekdays=True)
    r = bar_ranges({"S": days})
    assert r.first_decision == days[LOOKBACK].astype(object)
    assert r.warmup_bars == LOOKBACK
    assert r.periods_per_year == 252
    assert r.warmup_line().endswith(
        f"({LOOKBACK} bars before the first decision; needs >= {LOOKBACK} bars and >= "
        f"{WARMUP_DAYS} days)"
    )


@pytest.mark.parametrize("weekdays", [False, True])
def test_one_symbol_warms_up_on_the_backtests_first_decision_day(weekdays: bool) -> None:
    """``warmed_up`` (the daemon's per-symbol rule) first holds on the day ``bar_ranges`` makes
    a one-symbol backtest's first decision: the warm-up rule is the same rule."""
    days = calendar_days(D(2020, 1, 1), D(2020, 12, 31), weekdays=weekdays)
    ready = warmed_up(np.arange(days.size), np.full(days.size, days[0]), days)
    assert ready.dtype == np.bool_
    first = int(np.argmax(ready))
    assert ready[first:].all()
    assert not ready[:first].any()
    assert days[first].astype(object) == bar_ranges({"S": days}).first_decision


def test_warmed_up_needs_both_bars_and_days() -> None:
    first = np.datetime64("2021-01-01")
    day = first + np.timedelta64(WARMUP_DAYS, "D")
    assert warmed_up(LOOKBACK, first, day)
    assert not warmed_up(LOOKBACK - 1, first, day)
    assert not warmed_up(LOOKBACK, first, day - np.timedelta64(1, "D"))
    # day numbers (days since 1970-01-01) read as dates
    as_numbers = [int(first.astype(np.int64))], [int(day.astype(np.int64))]
    assert warmed_up([LOOKBACK], *as_numbers).tolist() == [True]


def test_the_common_range_binds() -> None:
    early = calendar_days(D(2019, 1, 1), D(2020, 12, 31), weekdays=False)
    late = calendar_days(D(2020, 2, 1), D(2021, 6, 30), weekdays=False)
    r = bar_ranges({"OLD": early, "NEW": late}, end=D(2020, 11, 30))
    assert (r.data_start, r.first_decision, r.end) == (
        D(2020, 2, 1),
        D(2020, 7, 30),
        D(2020, 11, 30),
    )
    assert common_range({"OLD": early, "NEW": late}) == (D(2020, 2, 1), D(2020, 12, 31))
    assert common_range({"OLD": early}, start=D(2020, 3, 1)) == (D(2020, 3, 1), D(2020, 12, 31))


def test_too_few_bars_are_refused_in_one_line() -> None:
    days = calendar_days(D(2020, 1, 1), D(2020, 6, 1), weekdays=False)
    with pytest.raises(DataRangeError) as err:
        bar_ranges({"SHORT": days})
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("SHORT has 153 bars (2020-01-01 .. 2020-06-01)")
    assert "the backtest needs at least 182 bars: 180 of warm-up" in text
    assert "+ 2 decision days (at 365 bars a year)" in text
    assert text.endswith("pass a longer series")
    assert isinstance(err.value, OtonomRuntimeError)
    assert isinstance(err.value, ValueError)
    weekdays = calendar_days(D(1990, 1, 1), D(1990, 12, 31), weekdays=True)
    with pytest.raises(DataRangeError, match=r"^X has 100 bars .* the check needs at least 392"):
        bar_ranges({"X": weekdays[:100]}, what="the check", min_decision_days=None)
    with pytest.raises(DataRangeError, match=r"pass a longer series or a wider --start-date"):
        bar_ranges({"X": weekdays}, end=D(1990, 3, 1))


def test_no_overlap_no_bars_no_symbols() -> None:
    a = calendar_days(D(2010, 1, 1), D(2010, 12, 31), weekdays=False)
    b = calendar_days(D(2012, 1, 1), D(2012, 12, 31), weekdays=False)
    with pytest.raises(DataRangeError, match="the symbols' bars do not overlap: A has 365 bars"):
        common_range({"A": a, "B": b})
    with pytest.raises(DataRangeError, match=r"^A has no bar in 2011-01-01 \.\. the last bar"):
        bar_ranges({"A": a, "B": b}, start=D(2011, 1, 1))
    with pytest.raises(DataRangeError, match="no symbols"):
        bar_ranges({})


def test_bar_dates_reads_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, ["DEMO-BTC"], D(2020, 1, 1), D(2020, 12, 31), seed=1)
        dates = bar_dates(session, ["DEMO-BTC"], end=D(2020, 11, 30))
        with pytest.raises(UnknownSymbolError):
            bar_dates(session, ["NOPE"])
    assert dates["DEMO-BTC"][[0, -1]].tolist() == [D(2020, 1, 1), D(2020, 11, 30)]
    assert bar_ranges(dates).first_decision == D(2020, 6, 29)
