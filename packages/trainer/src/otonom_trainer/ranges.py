"""Date ranges from the data: what ``pipeline``, ``walk-forward`` and ``check`` use when their
date flags are not given. The rules, in one place:

* **bars**: each symbol's bars dated in ``start .. end`` (a bound not given: all of them); the
  symbols' common range runs from the latest first bar to the earliest last bar.
* **warm-up**: the first decision day is the first day on which every symbol has at least
  ``LOOKBACK`` (140) bars before it (the state's longest window, ``otonom_schema.LOOKBACK``)
  and which lies at least ``WARMUP_DAYS`` (180) days after the common range's first bar (the
  rule before this module; the demo's 2018-01-01 .. 2023-12-31 thus keeps its first decision
  on 2018-06-30). Weekday-only data: 140 bars, about 196 days; daily data: 180 bars.
* **decision days**: the days any symbol has a bar on, first decision .. end of the common range.
* **split** (pipeline and check): the last ``HELD_OUT_SHARE`` (25 %) of the decision days are
  held out: ``test_start`` is decision day ``int(0.75 n)``, ``train_end`` the day before. The
  check's default period is the pipeline's held-out period of the same store.
* **minimum**: one year of decision days (``periods_per_year`` of them) after the warm-up;
  shorter series are refused with how many bars they have and how many are needed.
* **calendar**: the strategy's ``calendar.periods_per_year``, or for ``auto``
  ``otonom_runtime.strategy.infer_periods_per_year`` over every bar of the symbols up to the
  end (the same dates ``run_backtest`` infers it from): 252 for weekday-only data, 365 when
  the bars cover (almost) every day.
* **walk-forward windows** (``fit_windows``): the sizes given, or the first of
  ``WALK_FORWARD_SIZES`` (3 years + 6 months, then 2 y + 6 m, 1 y + 6 m, 1 y + 3 m) that gives
  at least two windows, else the first that gives one.

``DEMO_START .. DEMO_END`` is only where missing ``DEMO-*`` symbols are generated when no
dates are given; after that the ranges come from the stored bars like any others.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from otonom_schema import LOOKBACK, to_date
from otonom_trainer._errors import OtonomTrainerError

if TYPE_CHECKING:
    from otonom_trainer.walkforward import Window

__all__ = [
    "DEMO_END",
    "DEMO_START",
    "HELD_OUT_SHARE",
    "WALK_FORWARD_SIZES",
    "WARMUP_DAYS",
    "DataRanges",
    "RangeError",
    "data_ranges",
    "fit_windows",
    "ranges_from_dates",
]

WARMUP_DAYS: Final = 180
HELD_OUT_SHARE: Final = 0.25
DEMO_START: Final = dt.date(2018, 1, 1)
DEMO_END: Final = dt.date(2023, 12, 31)
WALK_FORWARD_SIZES: Final = ((3, 6), (2, 6), (1, 6), (1, 3))
"""(train years, test months) tried in order when ``walk-forward`` is given neither size."""


class RangeError(OtonomTrainerError, ValueError):
    """The stored bars cannot give the ranges asked for (too short, no overlap, none at all);
    the message says what the store holds and what is needed."""


def _dt64(day: dt.date) -> np.datetime64:
    return np.datetime64(day, "D")


@dataclass(frozen=True)
class DataRanges:
    """The ranges for ``symbols`` (all dates inclusive). ``bars``: per symbol, the number of
    bars in the range considered and their first and last date; ``warmup_bars``: the fewest
    bars any symbol has before the first decision (>= ``LOOKBACK``)."""

    symbols: tuple[str, ...]
    data_start: dt.date
    first_decision: dt.date
    end: dt.date
    decision_days: int
    train_end: dt.date
    test_start: dt.date
    periods_per_year: int
    calendar: str
    bars: Mapping[str, tuple[int, dt.date, dt.date]]
    warmup_bars: int

    def warmup_line(self) -> str:
        return (
            f"warm-up:  {self.data_start} .. {self.first_decision - dt.timedelta(days=1)} "
            f"({self.warmup_bars} bars before the first decision; needs >= {LOOKBACK} bars "
            f"and >= {WARMUP_DAYS} days)"
        )

    def decisions_line(self) -> str:
        return f"decisions: {self.first_decision} .. {self.end} ({self.decision_days} days)"

    def split_lines(self, train_end: dt.date, test_start: dt.date) -> list[str]:
        return [
            f"train:    {self.first_decision} .. {train_end}",
            f"held-out: {test_start} .. {self.end}"
            + (
                f" (the last {HELD_OUT_SHARE:.0%} of the decision days)"
                if (train_end, test_start) == (self.train_end, self.test_start)
                else ""
            ),
        ]

    def calendar_line(self) -> str:
        return f"calendar: {self.periods_per_year} bars a year ({self.calendar})"


def _describe(
    bars: Mapping[str, tuple[int, dt.date, dt.date]], start: dt.date | None, end: dt.date | None
) -> str:
    where = ""
    if start is not None or end is not None:
        where = f" in {start or '...'} .. {end or '...'}"
    parts = [f"{name} has {n} bars ({a} .. {b}){where}" for name, (n, a, b) in bars.items()]
    return "; ".join(parts)


def ranges_from_dates(
    dates: Mapping[str, npt.ArrayLike],
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    periods_per_year: int | str = "auto",
    what: str = "the pipeline",
    min_decision_days: int | None = None,
) -> DataRanges:
    """The ranges (see the module docstring) from each symbol's bar dates (sorted or not).

    ``periods_per_year``: 252 or 365 as the strategy sets it, or ``"auto"`` (inferred from
    ``dates`` up to ``end``). ``min_decision_days``: the decision days needed after the
    warm-up (default: one year of them, ``periods_per_year``). ``what`` names the command in
    messages. Raises ``RangeError``.
    """
    if not dates:
        raise RangeError("no symbols; expected at least one")
    if start is not None and end is not None and start >= end:
        raise RangeError(f"start {start} is not before end {end}; expected start < end")
    kept, upto = _clip_dates(dates, start, end)
    bars = {name: (int(d.size), to_date(d[0]), to_date(d[-1])) for name, d in kept.items()}
    ppy, calendar = _calendar(periods_per_year, upto)
    need_days = ppy if min_decision_days is None else min_decision_days
    need_warm = max(LOOKBACK, math.ceil(WARMUP_DAYS * ppy / 365))
    first = max(d[0] for d in kept.values())
    last = min(d[-1] for d in kept.values())

    def too_short(detail: str) -> RangeError:
        share = (
            f"; {1 - HELD_OUT_SHARE:.0%} to train, {HELD_OUT_SHARE:.0%} held out"
            if min_decision_days is None
            else ""
        )
        year = "one year " if min_decision_days is None else ""
        return RangeError(
            f"{_describe(bars, start, end)}{detail}; {what} needs at least "
            f"{need_warm + need_days} bars: {need_warm} of warm-up (>= {LOOKBACK} bars, the "
            f"state's longest window, and >= {WARMUP_DAYS} days) + {need_days} decision days "
            f"({year}at {ppy} bars a year{share}); pass a longer series"
            + (" or a wider --start-date .. --end-date" if start or end else "")
        )

    if first >= last:
        raise RangeError(
            f"the symbols' bars do not overlap: {_describe(bars, start, end)}; expected "
            "symbols with a common date range"
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
    k = int(days.size * (1 - HELD_OUT_SHARE))
    test_start = to_date(days[k])
    return DataRanges(
        symbols=tuple(kept),
        data_start=to_date(first),
        first_decision=to_date(days[0]),
        end=to_date(last),
        decision_days=int(days.size),
        train_end=test_start - dt.timedelta(days=1),
        test_start=test_start,
        periods_per_year=ppy,
        calendar=calendar,
        bars=bars,
        warmup_bars=min(int(np.searchsorted(d, days[0])) for d in common.values()),
    )


def _clip_dates(
    dates: Mapping[str, npt.ArrayLike], start: dt.date | None, end: dt.date | None
) -> tuple[dict[str, npt.NDArray[np.datetime64]], list[npt.NDArray[np.datetime64]]]:
    """Each symbol's sorted unique days within ``start .. end`` (``RangeError`` for a symbol
    with none), and each symbol's days up to ``end`` (what the calendar is inferred from)."""
    lo = None if start is None else _dt64(start)
    hi = None if end is None else _dt64(end)
    kept: dict[str, npt.NDArray[np.datetime64]] = {}
    upto: list[npt.NDArray[np.datetime64]] = []
    for name, raw in dates.items():
        d = np.unique(np.asarray(raw, dtype="datetime64[D]"))
        if hi is not None:
            d = d[d <= hi]
        upto.append(d)
        if lo is not None:
            d = d[d >= lo]
        if d.size == 0:
            where = f"{start or 'the first bar'} .. {end or 'the last bar'}"
            raise RangeError(
                f"{name} has no bar in {where}; expected bars there (otonom data list shows "
                "what the store holds)"
            )
        kept[name] = d
    return kept, upto


def _calendar(
    periods_per_year: int | str, upto: list[npt.NDArray[np.datetime64]]
) -> tuple[int, str]:
    """``(bars a year, how that was decided)``: the strategy's number, or inferred."""
    from otonom_runtime.strategy import infer_periods_per_year

    if isinstance(periods_per_year, int):
        return periods_per_year, "the strategy's calendar.periods_per_year"
    ppy = infer_periods_per_year(np.concatenate(upto))
    calendar = (
        "inferred: bars on (almost) every day" if ppy == 365 else "inferred: weekday-only bars"
    )
    return ppy, calendar


def data_ranges(
    session: Any,
    symbols: Sequence[str],
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    periods_per_year: int | str = "auto",
    what: str = "the pipeline",
    min_decision_days: int | None = None,
) -> DataRanges:
    """``ranges_from_dates`` on the bars the store holds for ``symbols`` (up to ``end``)."""
    from otonom_runtime._errors import StateBuildError
    from otonom_runtime.store import load_history

    dates: dict[str, npt.NDArray[np.datetime64]] = {}
    for name in symbols:
        try:
            dates[name] = load_history(session, name, end=end).dates
        except StateBuildError:
            dates[name] = np.array([], dtype="datetime64[D]")
    return ranges_from_dates(
        dates,
        start=start,
        end=end,
        periods_per_year=periods_per_year,
        what=what,
        min_decision_days=min_decision_days,
    )


def fit_windows(
    first_decision: dt.date,
    end: dt.date,
    *,
    train_years: int | None = None,
    test_months: int | None = None,
    step_months: int | None = None,
) -> tuple[list[Window], int, int]:
    """The walk-forward windows and the sizes used: ``(windows, train_years, test_months)``.

    Sizes given are used as given (``plan_windows`` explains when none fits). A size not
    given takes the first of ``WALK_FORWARD_SIZES`` (with the given one kept) that gives at
    least two windows (a walk-forward compares windows), else the first that gives one;
    ``WalkForwardError`` says how much history the smallest needs.
    """
    from otonom_trainer.walkforward import WalkForwardError, plan_windows

    if train_years is not None and test_months is not None:
        step = test_months if step_months is None else step_months
        windows = plan_windows(
            first_decision, end, train_years=train_years, test_months=test_months, step_months=step
        )
        return windows, train_years, test_months
    sizes = list(
        dict.fromkeys((train_years or ty, test_months or tm) for ty, tm in WALK_FORWARD_SIZES)
    )
    fits: list[tuple[list[Window], int, int]] = []
    for ty, tm in sizes:
        step = tm if step_months is None else step_months
        try:
            windows = plan_windows(
                first_decision, end, train_years=ty, test_months=tm, step_months=step
            )
        except WalkForwardError as exc:
            error = exc
            continue
        if len(windows) >= 2:
            return windows, ty, tm
        fits.append((windows, ty, tm))
    if fits:  # no size gives two windows: the largest that gives one
        return fits[0]
    raise WalkForwardError(
        f"{error} (tried {', '.join(f'{ty} y + {tm} m' for ty, tm in sizes)})"
    ) from None
