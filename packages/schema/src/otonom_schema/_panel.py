"""The newest bar's market features of many symbols at once (``market_feature_panel``).

A daemon's tick decides the newest bar of thousands of symbols; ``market_feature_matrix`` per
symbol would spend the tick in per-call overhead. The panel lays every symbol's last
``LOOKBACK`` bars end to end, each as the last ``LOOKBACK`` positions of ``compute_state``'s
padded arrays (the padding repeating the first real bar where a history is shorter; at each
segment's start the diffs are 0 and the bar before is no real bar, as there), and runs the one
feature code (``_market._market_block``) once at the last position of each. The last bar's
features read no position more than ``LOOKBACK - 1`` before it (``LOOKBACK`` is the largest
``min_bars``; a window reaching further would trip ``_windows``' bound on the first segment),
and every window is gathered into its own row and reduced along it, so each row is bit for bit
the last row of ``market_feature_matrix`` of that symbol's history (tested). Nothing here
computes a feature; it only lays the bars out.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from otonom_schema._errors import SchemaError
from otonom_schema._features import _sentiment_rule
from otonom_schema._market import _Grid, _Layout, _market_block
from otonom_schema._spec import LOOKBACK, STATE_DIM

__all__ = ["market_feature_panel"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_COLUMNS: Final = ("dates", "close", "high", "low", "volume")


def _latest(
    latest: tuple[npt.ArrayLike, npt.ArrayLike] | None, as_of: I64, what: str
) -> F64 | float:
    """The sentiment feature of each row from its latest score dated on or before the row's
    bar (``latest``: their dates, NaT for none, and scores), by the one sentiment rule."""
    if latest is None:
        return 0.0
    dates = np.asarray(latest[0], dtype="datetime64[D]")
    scores = np.asarray(latest[1], dtype=np.float64)
    if dates.shape != as_of.shape or scores.shape != as_of.shape:
        raise SchemaError(
            f"{what} has shapes {dates.shape} and {scores.shape}; expected {as_of.shape} each "
            "(one latest score a symbol)"
        )
    known = ~np.isnat(dates)
    days = np.where(known, dates.astype(np.int64), 0)
    if (known & (days > as_of)).any():
        row = int(np.argmax(known & (days > as_of)))
        raise SchemaError(f"{what}: row {row}'s latest score is dated after its bar")
    return _sentiment_rule(days, np.where(known, scores, 0.0), as_of, known)


def market_feature_panel(
    dates: npt.ArrayLike,
    close: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    volume: npt.ArrayLike,
    bars: npt.ArrayLike,
    *,
    news: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    macro: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
) -> F64:
    """The market features of N symbols' newest bars, shape (N, 34), float64: row i equals,
    bit for bit, the last row of ``market_feature_matrix`` of symbol i's history.

    ``dates`` .. ``volume``: (N, LOOKBACK) arrays, row i the last bars of symbol i's history
    (a validated ``MarketHistory``'s values), oldest first and right-aligned: its last
    ``min(bars[i], LOOKBACK)`` entries are real, those before are ignored. ``bars``: (N,) the
    number of bars in each history (>= 1). ``news``/``macro``: per row the date of the latest
    score dated on or before its newest bar (NaT: none) and that score; None: no series.
    Portfolio columns are neutral.
    """
    count = np.asarray(bars, dtype=np.int64)
    if count.ndim != 1 or (count < 1).any():
        raise SchemaError(f"bars has shape {count.shape} or a value < 1; expected (N,) counts >= 1")
    n = count.shape[0]
    if n == 0:
        return np.empty((0, STATE_DIM), dtype=np.float64)
    day_rows = np.asarray(dates, dtype="datetime64[D]").astype(np.int64)
    values = [np.asarray(x, dtype=np.float64) for x in (close, high, low, volume)]
    for name, arr in zip(_COLUMNS, [day_rows, *values], strict=True):
        if arr.shape != (n, LOOKBACK):
            raise SchemaError(f"{name} has shape {arr.shape}; expected ({n}, {LOOKBACK})")
    real = np.minimum(count, LOOKBACK)
    width = LOOKBACK
    # each position's column in the rows: the padding repeats the first real bar
    column = np.maximum(np.arange(width)[None, :], (LOOKBACK - real)[:, None])
    days = np.take_along_axis(day_rows, column, axis=1).ravel()
    c, h, lo, v = (np.take_along_axis(a, column, axis=1).ravel() for a in values)
    as_of = day_rows[:, -1]
    at = _Layout(
        ends=_Grid(width - 1, n, width, 1),
        starts=np.arange(n, dtype=np.int64) * width,
        real=(np.arange(width)[None, :] >= (width - real)[:, None]).ravel(),
        n_avail=real,
        as_of=as_of,
    )
    news_v = _latest(news, as_of, "news")
    macro_v = _latest(macro, as_of, "macro")
    return _market_block(days, c, h, lo, v, at, news_v, macro_v)
