"""Forward labels for a generated dataset (``otonom-train dataset --horizon H``): the targets of
the multi-task heads, from the bars after each row's decision.

``with_forward_labels(session, dataset, horizon, end)`` reads, per symbol, the bars from its
first row's date to ``end`` (the dataset's end date) through the store's reader
(``otonom_runtime.store.load_history``: no SQL here) and computes, for every row, the forward
log return and realised volatility over ``horizon`` bars and the date of the last bar read
(``otonom_schema.forward_labels``). Bars after ``end`` are never read, so no label reaches past
the dataset's period; a row without ``horizon`` bars after it up to ``end`` (the series' end)
has no label. The risk level is the volatility's tercile, cut on every labelled row of the
dataset (the rows of its period; the trainer cuts again on its train split only). The result
is the same dataset with ``labels`` (format version 2). Torch-free.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
from sqlalchemy.orm import Session

from otonom_runtime.store import load_history
from otonom_schema import ForwardLabels, OfflineDataset, forward_labels
from otonom_trainer._errors import OtonomTrainerError

__all__ = ["LabelError", "check_horizon", "with_forward_labels"]


class LabelError(OtonomTrainerError, ValueError):
    """Forward labels cannot be made as asked (horizon, or rows off the store's bars)."""


def check_horizon(horizon: object) -> int:
    """``horizon`` as an int >= 1; ``LabelError`` otherwise."""
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise LabelError(f"horizon: got {horizon!r}; expected an integer >= 1 (bars ahead)")
    return int(horizon)


def with_forward_labels(
    session: Session, dataset: OfflineDataset, horizon: int, end: dt.date
) -> OfflineDataset:
    """``dataset`` with its forward labels over ``horizon`` bars, reading bars dated up to
    ``end`` only (module docstring). Raises ``LabelError`` for a bad horizon or a row dated
    off its symbol's bars."""
    h = check_horizon(horizon)
    n = len(dataset)
    returns = np.full(n, np.nan, dtype=np.float32)
    vol = np.full(n, np.nan, dtype=np.float32)
    ends = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    for name in dict.fromkeys(dataset.symbols.tolist()):
        rows = np.flatnonzero(dataset.symbols == name)
        dates = dataset.dates[rows]
        bars = load_history(session, name, start=dates.min().item(), end=end)
        pos = np.searchsorted(bars.dates, dates)
        found = bars.dates[np.minimum(pos, bars.dates.size - 1)]
        on_bar = (pos < bars.dates.size) & (found == dates)
        if not on_bar.all():
            day = dates[int(np.argmin(on_bar))]
            raise LabelError(
                f"the row of {name!r} dated {day} has no bar of that date up to {end}; "
                "expected rows on bar dates (regenerate the dataset from the store)"
            )
        returns[rows], vol[rows], ends[rows] = forward_labels(bars.close, bars.dates, pos, h)
    if n and np.isnan(returns).all():
        raise LabelError(
            f"horizon {h}: no row has {h} bars after it up to {end} (the dataset's end); "
            "expected a shorter horizon or a later end date"
        )
    return dataclasses.replace(dataset, labels=ForwardLabels.make(h, returns, vol, ends))
