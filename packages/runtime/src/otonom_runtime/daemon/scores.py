"""Dated scores a tick's cache keeps (``daemon.cache.TickCache``): ``Dated``, a series' scores
oldest first (a macro series; a symbol's news dated after its newest bar), and ``LatestNews``,
each cache row's latest news score dated on or before its newest bar as two arrays, so that a
steady tick of thousands of symbols updates and reads them without a loop over the symbols."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from otonom_schema import SentimentSeries

__all__ = ["NONE", "Dated", "LatestNews", "dated", "latest_of"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
NONE: Final = np.iinfo(np.int64).min
"""No score: NaT's bits as a day number."""


@dataclass(slots=True)
class Dated:
    """Dated scores, oldest first, as day numbers (a macro series; a symbol's news dated after
    its newest bar)."""

    days: list[int]
    scores: list[float]

    def add(self, day: int, score: float) -> None:
        """Add a score in date order; one of a day held replaces it."""
        if not self.days or day > self.days[-1]:  # the usual case: a newer score
            self.days.append(day)
            self.scores.append(score)
            return
        at = bisect.bisect_left(self.days, day)
        if at < len(self.days) and self.days[at] == day:
            self.scores[at] = score
        else:
            self.days.insert(at, day)
            self.scores.insert(at, score)

    def latest(self, day: int) -> tuple[int, float]:
        """The day and score of the latest score dated on or before ``day`` (``NONE``,
        0.0: none)."""
        at = bisect.bisect_right(self.days, day) - 1
        return (NONE, 0.0) if at < 0 else (self.days[at], self.scores[at])


def dated(series: SentimentSeries | None) -> Dated:
    """``series`` as a ``Dated`` (an empty one for None)."""
    if series is None:
        return Dated([], [])
    return Dated(series.dates.astype(np.int64).tolist(), series.scores.tolist())


def latest_of(series: list[Dated], days: list[int]) -> tuple[npt.NDArray[np.datetime64], F64]:
    """Row i's latest score of ``series[i]`` dated on or before ``days[i]``, as the panel takes
    them: the dates (NaT: none) and scores; a series many rows share (the macro) looked up
    once a distinct day."""
    if len({id(s) for s in series}) == 1 and len(set(days)) == 1:  # one series, one day
        day, score = series[0].latest(days[0])
        found = [(day, score)] * len(days)
    else:
        seen: dict[tuple[int, int], tuple[int, float]] = {}
        found = [
            seen[key] if (key := (id(s), d)) in seen else seen.setdefault(key, s.latest(d))
            for s, d in zip(series, days, strict=True)
        ]
    dates = np.array([d for d, _ in found], dtype=np.int64).view("datetime64[D]")  # NONE: NaT
    return dates, np.array([score for _, score in found], dtype=np.float64)


class LatestNews:
    """Each cache row's latest news score dated on or before its newest bar: ``day`` (``NONE``:
    none) and ``score`` (0.0 there), one entry a row; the scores dated after a row's newest bar
    (few: a symbol whose bar is late) kept apart by symbol id until a bar comes (``settle``).
    What ``market_feature_panel`` takes as each row's news."""

    def __init__(self) -> None:
        self.day = np.zeros(0, dtype=np.int64)
        self.score = np.zeros(0)
        self._later: dict[int, Dated] = {}

    def grow(self, k: int) -> None:
        """``k`` rows more, without a score."""
        self.day = np.concatenate([self.day, np.full(k, NONE)])
        self.score = np.concatenate([self.score, np.zeros(k)])

    def keep(self, sid: int, row: int, newest: int, news: SentimentSeries | None) -> None:
        """Row ``row`` is symbol ``sid``'s anew, its newest bar on day ``newest``: its latest
        score of ``news`` on or before that day, the later ones apart."""
        self.day[row], self.score[row] = NONE, 0.0
        self._later.pop(sid, None)
        if news is None or not news.dates.size:
            return
        days = news.dates.astype(np.int64)
        due = int(np.searchsorted(days, newest, side="right"))
        if due:
            self.day[row], self.score[row] = days[due - 1], news.scores[due - 1]
        if due < days.size:
            self._later[sid] = Dated(days[due:].tolist(), news.scores[due:].tolist())

    def forget(self, sid: int) -> None:
        """Symbol ``sid`` left the cache (its row is reused through ``keep``)."""
        self._later.pop(sid, None)

    def add(self, sids: I64, rows: I64, days: I64, scores: F64, newest: I64) -> None:
        """New scores (by symbol id, then date; ``rows``: their symbols' rows, ``newest``: those
        rows' newest bar days): each symbol's newest one dated on or before its newest bar
        becomes its latest when it is not older than the one held (a score of the same day
        replaces it; an older one arriving late is never the latest again); those dated after
        that bar are kept apart (``settle``)."""
        due = days <= newest
        for i in np.flatnonzero(~due).tolist():  # dated after the symbol's newest bar: rare
            self._later.setdefault(int(sids[i]), Dated([], [])).add(int(days[i]), float(scores[i]))
        at = np.flatnonzero(due)
        if at.size:
            at = at[np.r_[sids[at][1:] != sids[at][:-1], True]]  # each symbol's newest due
            row, day = rows[at], days[at]
            newer = day >= self.day[row]
            self.day[row[newer]] = day[newer]
            self.score[row[newer]] = scores[at][newer]

    def settle(self, row_of: Mapping[int, int], newest: I64) -> None:
        """The scores kept apart that are now dated on or before their symbol's newest bar
        (``row_of``: each symbol's row; ``newest``: each row's newest bar day): the newest of
        them its latest (unless an as new one is held), the others dropped."""
        for sid in list(self._later):
            kept, row = self._later[sid], row_of[sid]
            at = bisect.bisect_right(kept.days, int(newest[row]))
            if at == 0:
                continue
            if kept.days[at - 1] >= self.day[row]:
                self.day[row], self.score[row] = kept.days[at - 1], kept.scores[at - 1]
            del kept.days[:at], kept.scores[:at]
            if not kept.days:
                del self._later[sid]
