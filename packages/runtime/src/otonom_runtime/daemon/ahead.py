"""Rows a tick's cache read before they were due (``daemon.cache.TickCache``): ``Ahead``.

A cache reads each symbol's bars and news a stretch past the tick's date (its horizon), so
that a later tick finds what is new by row id alone (one range of the integer primary key)
instead of searching every symbol's (symbol, date) index: the rows dated after the tick are
held here, as columns, until a tick's date reaches them (``take``)."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import numpy.typing as npt

from otonom_runtime.store.ticks import NewRows

__all__ = ["Ahead"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class Ahead:
    """Rows held until they are due: ``keys`` (symbol ids), ``days`` (day numbers) and
    ``values`` (``width`` numbers a row: a bar's open, high, low, close and volume; a news
    score), by day then key, one row a (key, day): a row put again replaces the one held."""

    __slots__ = ("days", "keys", "values")

    def __init__(self, width: int) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        self.days = np.zeros(0, dtype=np.int64)
        self.values = np.zeros((width, 0))

    def __len__(self) -> int:
        return int(self.keys.size)

    def put(self, keys: I64, days: I64, values: F64) -> None:
        """Hold these rows (``values``: (width, rows)); one of a (key, day) held already
        replaces it."""
        if not keys.size:
            return
        if (
            not self.keys.size
            and bool((days == days[0]).all())
            and bool((keys[1:] > keys[:-1]).all())
        ):  # a steady tick's rows (one day, one each key, by key): held as they are
            self.keys, self.days, self.values = keys, days, values
            return
        keys = np.concatenate([self.keys, keys])
        days = np.concatenate([self.days, days])
        values = np.concatenate([self.values, values], axis=1)
        order = np.lexsort((keys, days))  # stable: of two equal rows the one put later last
        keys, days, values = keys[order], days[order], values[:, order]
        last = np.r_[(keys[1:] != keys[:-1]) | (days[1:] != days[:-1]), True]
        if not last.all():
            keys, days, values = keys[last], days[last], values[:, last]
        self.keys, self.days, self.values = keys, days, values

    def put_rows(self, rows: NewRows, among: I64 | None = None) -> None:
        """``put`` the rows a read gave (``NewRows``); ``among``: only those of these keys."""
        keys, days, values = np.asarray(rows.keys, dtype=np.int64), rows.days, rows.values
        if among is not None and keys.size:
            kept = np.isin(keys, among)
            keys, days, values = keys[kept], days[kept], values[:, kept]
        self.put(keys, days.astype(np.int64), values)

    def take(self, day: int) -> tuple[I64, I64, F64]:
        """The rows dated on or before ``day``, by key then day, no longer held."""
        cut = int(np.searchsorted(self.days, day, side="right"))
        keys, days, values = self.keys[:cut], self.days[:cut], self.values[:, :cut]
        self.keys, self.days, self.values = self.keys[cut:], self.days[cut:], self.values[:, cut:]
        if cut and days[0] != days[-1]:  # more than one day: by key, then day
            order = np.lexsort((days, keys))
            keys, days, values = keys[order], days[order], values[:, order]
        return keys, days, values

    def drop(self, keys: Collection[int]) -> None:
        """Forget the rows of ``keys``."""
        if not keys or not self.keys.size:
            return
        kept = ~np.isin(self.keys, np.fromiter(keys, dtype=np.int64, count=len(keys)))
        self.keys, self.days, self.values = self.keys[kept], self.days[kept], self.values[:, kept]
