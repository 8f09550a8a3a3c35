"""Date ranges from the stored bars: what ``otonom backtest`` runs over when its dates are not
given, and the rules the trainer's ``otonom_trainer.ranges`` builds on (it adds the held-out
split, the walk-forward windows and the demo's dates). The rules, in one place:

* **bars**: each symbol's bars dated in ``start .. end`` (a bound not given: all of them); the
  symbols' common range runs from the latest first bar to the earliest last bar.
* **warm-up**: the first decision day is the first day on which every symbol has at least
  ``LOOKBACK`` (140) bars before it (the state's longest window, ``otonom_schema.LOOKBACK``)
  and which lies at least ``WARMUP_DAYS`` (180) days after the common range's first bar (the
  demo's 2018-01-01 .. 2023-12-31 thus has its first decision on 2018-06-30). Weekday-only
  data: 140 bars, about 196 days; daily data: 180 bars.
* **decision days**: the days any symbol has a bar on, first decision .. end of the common range.
* **minimum**: ``min_decision_days`` decision days after the warm-up (at least 2: the metrics
  need two points of the equity curve; None: one year of them, ``periods_per_year``); shorter
  series are refused with how many bars each symbol has and how many are needed.
* **calendar**: the strategy's ``calendar.periods_per_year``, or for ``auto``
  ``otonom_runtime.strategy.infer_periods_per_year`` over every bar of the symbols up to the
  end (the same dates ``run_backtest`` infers it from): 252 for weekday-only data, 365 when
  the bars cover (almost) every day. It sets how many bars the warm-up's days are.

``bar_ranges`` applies them to dates; ``bar_dates`` reads each symbol's dates from the store.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import DataRangeError
from otonom_schema import LOOKBACK, to_date

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "WARMUP_DAYS",
    "BarRanges",
    "DataRangeError",
    "bar_dates",
    "bar_ranges",
    "common_range",
    "warmed_up",
]

_SPARSE: Final = 0.4  # bars on fewer of the calendar days (weekday-only: ~69 %): not daily
WARMUP_DAYS: Final = 180
"""The fewest days between the common range's first bar and the first decision."""

Days = npt.NDArray[np.datetime64]


def warmed_up(
    bars_before: npt.ArrayLike, first_bar: npt.ArrayLike, day: npt.ArrayLike
) -> npt.NDArray[np.bool_]:
    """The warm-up rule of a symbol's decision on ``day``: at least ``LOOKBACK`` bars before
    it (``bars_before``) and at least ``WARMUP_DAYS`` days after the symbol's first bar
    (``first_bar``; days as datetime64[D] or day numbers since 1970-01-01), elementwise. What
    ``bar_ranges`` asks of the first decision day of every symbol of a backtest (from their
    common range's first bar), asked of each symbol alone: the daemon's tick decides a
    symbol's newest bar only when it holds (``otonom_runtime.daemon.run_tick``)."""
    first = np.asarray(first_bar, dtype="datetime64[D]").astype(np.int64)
    days = np.asarray(day, dtype="datetime64[D]").astype(np.int64)
    enough: npt.NDArray[np.bool_] = (np.asarray(bars_before) >= LOOKBACK) & (
        days - first >= WARMUP_DAYS
    )
    return enough


BarCounts = Mapping[str, tuple[int, dt.date, dt.date]]


@dataclass(frozen=True)
class BarRanges:
    """The ranges for ``symbols`` (all dates inclusive). ``bars``: per symbol, the number of
    bars in the range considered and their first and last date; ``warmup_bars``: the fewest
    bars any symbol has before the first decision (>= ``LOOKBACK``); ``days``: the decision
    days themselves (``decision_days`` of them)."""

    symbols: tuple[str, ...]
    data_start: dt.date
    first_decision: dt.date
    end: dt.date
    decision_days: int
    periods_per_year: int
    calendar: str
    bars: BarCounts
    warmup_bars: int
    days: Days = field(compare=False, repr=False)

    def warmup_line(self) -> str:
        return (
            f"warm-up:  {self.data_start} .. {self.first_decision - dt.timedelta(days=1)} "
            f"({self.warmup_bars} bars before the first decision; needs >= {LOOKBACK} bars "
            f"and >= {WARMUP_DAYS} days)"
        )

    def decisions_line(self) -> str:
        return f"decisions: {self.first_decision} .. {self.end} ({self.decision_days} days)"

    def calendar_line(self) -> str:
        return f"calendar: {self.periods_per_year} bars a year ({self.calendar})"


def _describe(bars: BarCounts, start: dt.date | None, end: dt.date | None) -> str:
    where = ""
    if start is not None or end is not None:
        where = f" in {start or '...'} .. {end or '...'}"
    parts = [f"{name} has {n} bars ({a} .. {b}){where}" for name, (n, a, b) in bars.items()]
    return "; ".join(parts)


def common_range(
    dates: Mapping[str, npt.ArrayLike], *, start: dt.date | None = None, end: dt.date | None = None
) -> tuple[dt.date, dt.date]:
    """The symbols' common range in ``start .. end``: (the latest first bar, the earliest last
    bar). ``DataRangeError`` for no symbols, a symbol without a bar there, or bars that do not
    overlap."""
    kept, _ = _clip_dates(dates, start, end)
    first, last = _common(kept, start, end)
    return to_date(first), to_date(last)


def bar_ranges(
    dates: Mapping[str, npt.ArrayLike],
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    periods_per_year: int | str = "auto",
    what: str = "the backtest",
    min_decision_days: int | None = 2,
    need_note: str = "",
) -> BarRanges:
    """The ranges (see the module docstring) from each symbol's bar dates (sorted or not).

    ``periods_per_year``: 252 or 365 as the strategy sets it, or ``"auto"`` (inferred from
    ``dates`` up to ``end``). ``min_decision_days``: the decision days needed after the warm-up
    (None: one year of them). ``what`` names the command in messages; ``need_note`` is added
    to the decision days' explanation there. Raises ``DataRangeError``.
    """
    if dates and start is not None and end is not None and start >= end:
        raise DataRangeError(f"start {start} is not before end {end}; expected start < end")
    kept, upto = _clip_dates(dates, start, end)
    bars = {name: (int(d.size), to_date(d[0]), to_date(d[-1])) for name, d in kept.items()}
    ppy, calendar = _calendar(periods_per_year, upto)
    need_days = ppy if min_decision_days is None else min_decision_days
    need_warm = max(LOOKBACK, math.ceil(WARMUP_DAYS * ppy / 365))
    first, last = _common(kept, start, end)

    def too_short(detail: str) -> DataRangeError:
        year = "one year " if min_decision_days is None else ""
        return DataRangeError(
            f"{_describe(bars, start, end)}{detail}; {what} needs at least "
            f"{need_warm + need_days} bars: {need_warm} of warm-up (>= {LOOKBACK} bars, the "
            f"state's longest window, and >= {WARMUP_DAYS} days) + {need_days} decision days "
            f"({year}at {ppy} bars a year{need_note}); pass a longer series"
            + (" or a wider --start-date .. --end-date" if start or end else "")
        )

    common = {name: d[(d >= first) & (d <= last)] for name, d in kept.items()}
    span = "" if len(kept) == 1 else f" (common range {to_date(first)} .. {to_date(last)})"
    if any(d.size <= LOOKBACK for d in common.values()):
        raise too_short(span)
    floor = max(max(d[LOOKBACK] for d in common.values()), first + np.timedelta64(WARMUP_DAYS, "D"))
    union = np.unique(np.concatenate(list(common.values())))
    days = union[union >= floor]
    if days.size < max(need_days, 2):
        raise too_short(f"{span}, {days.size} decision days after the warm-up")
    return BarRanges(
        symbols=tuple(kept),
        data_start=to_date(first),
        first_decision=to_date(days[0]),
        end=to_date(last),
        decision_days=int(days.size),
        periods_per_year=ppy,
        calendar=calendar,
        bars=bars,
        warmup_bars=min(int(np.searchsorted(d, days[0])) for d in common.values()),
        days=days,
    )


def _common(
    kept: Mapping[str, Days], start: dt.date | None, end: dt.date | None
) -> tuple[np.datetime64, np.datetime64]:
    """(latest first bar, earliest last bar) of days already clipped; refused unless they
    overlap."""
    first = max(d[0] for d in kept.values())
    last = min(d[-1] for d in kept.values())
    if first >= last:
        bars = {name: (int(d.size), to_date(d[0]), to_date(d[-1])) for name, d in kept.items()}
        raise DataRangeError(
            f"the symbols' bars do not overlap: {_describe(bars, start, end)}; expected "
            "symbols with a common date range"
        )
    return first, last


def _clip_dates(
    dates: Mapping[str, npt.ArrayLike], start: dt.date | None, end: dt.date | None
) -> tuple[dict[str, Days], list[Days]]:
    """Each symbol's sorted unique days within ``start .. end`` (``DataRangeError`` for a
    symbol with none), and each symbol's days up to ``end`` (what the calendar is inferred
    from)."""
    if not dates:
        raise DataRangeError("no symbols; expected at least one")
    lo = None if start is None else np.datetime64(start, "D")
    hi = None if end is None else np.datetime64(end, "D")
    kept: dict[str, Days] = {}
    upto: list[Days] = []
    for name, raw in dates.items():
        d = np.unique(np.asarray(raw, dtype="datetime64[D]"))
        if hi is not None:
            d = d[d <= hi]
        upto.append(d)
        if lo is not None:
            d = d[d >= lo]
        if d.size == 0:
            where = f"{start or 'the first bar'} .. {end or 'the last bar'}"
            raise DataRangeError(
                f"{name} has no bar in {where}; expected bars there (otonom data list shows "
                "what the store holds)"
            )
        kept[name] = d
    return kept, upto


def _calendar(periods_per_year: int | str, upto: list[Days]) -> tuple[int, str]:
    """``(bars a year, how that was decided)``: the strategy's number, or inferred."""
    from otonom_runtime.strategy import infer_periods_per_year

    if isinstance(periods_per_year, int):
        return periods_per_year, "the strategy's calendar.periods_per_year"
    dates = np.unique(np.concatenate(upto).astype("datetime64[D]"))
    ppy = infer_periods_per_year(dates)
    calendar = (
        "inferred: bars on (almost) every day" if ppy == 365 else "inferred: weekday-only bars"
    )
    span = int((dates[-1] - dates[0]).astype(np.int64)) + 1 if dates.size else 0
    if dates.size >= 2 and dates.size < _SPARSE * span:  # weekday-only bars: ~69 % of days
        calendar = (
            f"inferred, but the bars cover only {dates.size / span:.0%} of the days: no daily "
            "bars? every bar is read as one trading day"
        )
    return ppy, calendar


def bar_dates(
    session: Session, symbols: Sequence[str], *, end: dt.date | None = None
) -> dict[str, Days]:
    """Each symbol's bar dates in the store, up to ``end`` (empty for a symbol without bars;
    ``UnknownSymbolError`` for one not in the store)."""
    from otonom_runtime._errors import StateBuildError
    from otonom_runtime.store import load_history

    dates: dict[str, Days] = {}
    for name in symbols:
        try:
            dates[name] = load_history(session, name, end=end).dates
        except StateBuildError:
            dates[name] = np.array([], dtype="datetime64[D]")
    return dates
