"""Date ranges from the data: what ``pipeline``, ``walk-forward`` and ``check`` use when their
date flags are not given. The bars, the common range, the warm-up (``LOOKBACK`` bars and
``WARMUP_DAYS`` days), the decision days, the minimum and the calendar are the runtime's rules
(``otonom_runtime.ranges``, also ``otonom backtest``'s); this module adds:

* **minimum**: one year of decision days (``periods_per_year`` of them) after the warm-up
  unless a command asks for fewer; shorter series are refused with how many bars they have
  and how many are needed.
* **split** (pipeline and check): the last ``HELD_OUT_SHARE`` (25 %) of the decision days are
  held out: ``test_start`` is decision day ``int(0.75 n)``, ``train_end`` the day before. The
  check's default period is the pipeline's held-out period of the same store.
* **walk-forward windows** (``fit_windows``): the sizes given, or the first of
  ``WALK_FORWARD_SIZES`` (3 years + 6 months, then 2 y + 6 m, 1 y + 6 m, 1 y + 3 m) that gives
  at least two windows, else the first that gives one.

The demo's 2018-01-01 .. 2023-12-31 has its first decision on 2018-06-30. ``DEMO_START ..
DEMO_END`` is only where missing ``DEMO-*`` symbols are generated when no dates are given;
after that the ranges come from the stored bars like any others.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final

import numpy.typing as npt

from otonom_runtime.ranges import WARMUP_DAYS, BarRanges, DataRangeError, bar_dates, bar_ranges
from otonom_schema import to_date
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

HELD_OUT_SHARE: Final = 0.25
DEMO_START: Final = dt.date(2018, 1, 1)
DEMO_END: Final = dt.date(2023, 12, 31)
WALK_FORWARD_SIZES: Final = ((3, 6), (2, 6), (1, 6), (1, 3))
"""(train years, test months) tried in order when ``walk-forward`` is given neither size."""


class RangeError(OtonomTrainerError, DataRangeError):
    """The stored bars cannot give the ranges asked for (too short, no overlap, none at all);
    the message says what the store holds and what is needed. Also the runtime's
    ``DataRangeError``, whose message it carries."""


@dataclass(frozen=True)
class DataRanges(BarRanges):
    """The runtime's ``BarRanges`` and the held-out split of its decision days."""

    train_end: dt.date
    test_start: dt.date

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
    share = (
        f"; {1 - HELD_OUT_SHARE:.0%} to train, {HELD_OUT_SHARE:.0%} held out"
        if min_decision_days is None
        else ""
    )
    try:
        r = bar_ranges(
            dates,
            start=start,
            end=end,
            periods_per_year=periods_per_year,
            what=what,
            min_decision_days=min_decision_days,
            need_note=share,
        )
    except DataRangeError as exc:
        raise RangeError(str(exc)) from None
    test_start = to_date(r.days[int(r.days.size * (1 - HELD_OUT_SHARE))])
    base = {f.name: getattr(r, f.name) for f in fields(r)}
    return DataRanges(**base, train_end=test_start - dt.timedelta(days=1), test_start=test_start)


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
    return ranges_from_dates(
        bar_dates(session, symbols, end=end),
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
