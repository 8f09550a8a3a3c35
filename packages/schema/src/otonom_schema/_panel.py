"""The newest bar's market features of many symbols at once (``market_feature_panel``).

A daemon's tick decides the newest bar of thousands of symbols; ``market_feature_matrix`` per
symbol would spend the tick in per-call overhead. The panel reads every symbol's last
``LOOKBACK`` bars as the last ``LOOKBACK`` positions of ``compute_state``'s padded arrays (the
padding repeating the first real bar where a history is shorter; at a row's first position
the diffs are 0 and the bar before is no real bar, as there), and runs the one feature code
(``_market._market_block``) once at the last position of each. With one output a row, the
block is given only each row's last ``_market._REACH`` positions, laid end to end (its
returns, flags and running counts over those, not over every bar); the two windowed series it
takes the MACD and regime features from, which read further back, are computed by the same
``_market._macd_line`` / ``_realised_vol`` from the rows' own ``LOOKBACK`` bars
(``_stepped``). The last bar's features read no position more than ``LOOKBACK - 1`` before it
(``LOOKBACK`` is the largest ``min_bars``), every elementwise value is taken from the same
bars by the same operation, and every window is gathered into its own row and reduced along
it, so each row is bit for bit the last row of ``market_feature_matrix`` of that symbol's
history (tested). Nothing here computes a feature; it only lays the bars out.

``market_feature_panel_step`` is the panel for a caller that steps the same symbols one bar at
a time (a daemon's tick): the two windowed series most of the work goes into, the MACD line
at each row's last ``EMA_SIGNAL_LEN`` positions and the realised vol at its last
``REGIME_WINDOW``, come back as a ``PanelCarry``; given the previous step's, a row whose
newest bar is one after the carried one computes each series at its newest position only and
takes the older values from the carry (``_market._macd_line`` / ``_realised_vol`` at the
positions of the same bars: a window's value depends only on the bars in it, gathered and
reduced alike however many positions are computed with it, so the rows are the same floats,
tested against ``market_feature_matrix`` bar after bar).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from otonom_schema._errors import SchemaError
from otonom_schema._features import _sentiment_rule
from otonom_schema._market import (
    _REACH,
    _Grid,
    _Layout,
    _log_returns,
    _macd_line,
    _market_block,
    _realised_vol,
)
from otonom_schema._spec import (
    EMA_FAST_LEN,
    EMA_SIGNAL_LEN,
    EMA_SLOW_LEN,
    LOOKBACK,
    REGIME_WINDOW,
    STATE_DIM,
)

__all__ = ["PanelCarry", "market_feature_panel", "market_feature_panel_step"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_T = TypeVar("_T", np.int64, np.float64)
_CHUNK: Final = 256
"""How many rows ``_stepped`` computes the series of whole at once: their windows (each row's
EMA_SIGNAL_LEN x EMA_SLOW_LEN closes, REGIME_WINDOW x VOL_WINDOW returns; some 5 MB) stay in
the cache between the copy, the products and the sums (about 1.5x faster than 5,000 rows at
once; each row's windows are the same floats either way)."""
_COLUMNS: Final = ("dates", "close", "high", "low", "volume")
_NONE: Final = np.iinfo(np.int64).min  # no carry: NaT's bits as a day number


@dataclass(frozen=True)
class PanelCarry:
    """What ``market_feature_panel_step`` carries from one step to the next, per row: ``line``
    (N, EMA_SIGNAL_LEN), the MACD line at the row's last positions (oldest first); ``vol``
    (N, REGIME_WINDOW), the realised vol there; ``day`` (N,), the day number of the newest bar
    they end at (``PanelCarry.none(n)``'s minimum int64: nothing carried)."""

    line: F64
    vol: F64
    day: I64

    @classmethod
    def none(cls, n: int) -> PanelCarry:
        """A carry of ``n`` rows holding nothing."""
        return cls(np.zeros((n, EMA_SIGNAL_LEN)), np.zeros((n, REGIME_WINDOW)), np.full(n, _NONE))


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
    return market_feature_panel_step(dates, close, high, low, volume, bars, news=news, macro=macro)[
        0
    ]


def market_feature_panel_step(
    dates: npt.ArrayLike,
    close: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    volume: npt.ArrayLike,
    bars: npt.ArrayLike,
    *,
    news: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    macro: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    carry: PanelCarry | None = None,
) -> tuple[F64, PanelCarry]:
    """``market_feature_panel`` (the same rows, bit for bit) and the carry of this step (see
    the module docstring). ``carry``: the previous step's, row i the same symbol's; it is used
    for a row with ``bars[i] >= 2`` whose second newest bar is dated ``carry.day[i]`` (one bar
    added since: its window the previous one shifted by that bar), and ignored for the others
    (computed whole). The caller keeps rows and symbols together and drops a row's carry when
    its bars change otherwise (a bar re-read, inserted or changed)."""
    count = np.asarray(bars, dtype=np.int64)
    if count.ndim != 1 or (count < 1).any():
        raise SchemaError(f"bars has shape {count.shape} or a value < 1; expected (N,) counts >= 1")
    n = count.shape[0]
    if n == 0:
        return np.empty((0, STATE_DIM), dtype=np.float64), PanelCarry.none(0)
    day_rows = np.asarray(dates, dtype="datetime64[D]").view(np.int64)
    values = [np.asarray(x, dtype=np.float64) for x in (close, high, low, volume)]
    for name, arr in zip(_COLUMNS, [day_rows, *values], strict=True):
        if arr.shape != (n, LOOKBACK):
            raise SchemaError(f"{name} has shape {arr.shape}; expected ({n}, {LOOKBACK})")
    real = np.minimum(count, LOOKBACK)
    # the block reads each row's last _REACH positions; the series read further (_stepped)
    width = _REACH
    days = _trailing(day_rows, real, width).ravel()
    c, h, lo, v = (_trailing(a, real, width).ravel() for a in values)
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
    if carry is not None and carry.day.shape != (n,):
        raise SchemaError(f"carry has {carry.day.shape} days; expected ({n},)")
    kept = (
        np.zeros(n, dtype=bool)
        if carry is None
        else (count >= 2) & (carry.day == day_rows[:, -2]) & (carry.day != _NONE)
    )
    out: list[PanelCarry] = []

    def series(_: F64, logret: F64) -> tuple[F64, F64]:
        step = _stepped(values[0], real, logret, kept, carry)
        out.append(step)
        return step.line.ravel(), step.vol.ravel()

    feats = _market_block(days, c, h, lo, v, at, news_v, macro_v, series)
    return feats, PanelCarry(out[0].line, out[0].vol, as_of.copy())


def _trailing(rows: npt.NDArray[_T], real: I64, width: int) -> npt.NDArray[_T]:
    """The last ``width`` columns of ``rows`` (N, LOOKBACK) as they are laid out for the
    windows: a C-contiguous copy, the padding before a row's last ``real`` entries repeating
    its first real one (as ``compute_state`` pads a history)."""
    out = np.array(rows[:, LOOKBACK - width :], order="C")
    short = np.flatnonzero(real < width)
    if short.size:
        column = np.maximum(
            np.arange(LOOKBACK - width, LOOKBACK), (LOOKBACK - real[short])[:, None]
        )
        out[short] = np.take_along_axis(rows[short], column, axis=1)
    return out


def _reaching(rows: F64, real: I64, width: int) -> F64:
    """Rows whose last ``width`` columns are laid out for the windows: ``rows`` themselves
    where they already are (C-contiguous, no row padded there), else ``_trailing``."""
    if rows.flags.c_contiguous and not (real < width).any():
        return rows
    return _trailing(rows, real, width)


def _stepped(
    close: F64, real: I64, logret: F64, kept: npt.NDArray[np.bool_], carry: PanelCarry | None
) -> PanelCarry:
    """The MACD line and realised vol of each row of ``close`` (N, LOOKBACK; ``real`` bars
    each), at its last ``EMA_SIGNAL_LEN`` / ``REGIME_WINDOW`` positions: for the rows ``kept``,
    the carry's values shifted by one and the newest position's computed (the vol from
    ``logret``, the block's log returns, laid ``_REACH`` apart); for the others, all computed
    from the row's own log returns."""
    n, s, r = close.shape[0], EMA_SIGNAL_LEN, REGIME_WINDOW
    line, vol = np.empty((n, s)), np.empty((n, r))
    if carry is not None and kept.any():
        rows = slice(None) if kept.all() else kept  # every row kept: no copies of the carry
        line[rows, :-1], vol[rows, :-1] = carry.line[rows, 1:], carry.vol[rows, 1:]
        x = _reaching(close, real, max(EMA_FAST_LEN, EMA_SLOW_LEN))
        w = x.shape[1]
        line[rows, -1] = _macd_line(x.ravel(), _Grid(w - 1, n, w, 1))[rows]
        vol[rows, -1] = _realised_vol(logret, _Grid(_REACH - 1, n, _REACH, 1))[rows]
    fresh = np.flatnonzero(~kept)
    whole = fresh.size == n  # no row carried: the rows as they are, a chunk at a time
    for first in range(0, fresh.size, _CHUNK):
        at: slice | I64 = slice(first, first + _CHUNK) if whole else fresh[first : first + _CHUNK]
        x = _reaching(close[at], real[at], LOOKBACK)
        k = x.shape[0]
        c = x.ravel()
        ret = _log_returns(c, np.arange(k, dtype=np.int64) * LOOKBACK)
        line[at] = _macd_line(c, _Grid(LOOKBACK - s, k, LOOKBACK, s)).reshape(k, s)
        vol[at] = _realised_vol(ret, _Grid(LOOKBACK - r, k, LOOKBACK, r)).reshape(k, r)
    return PanelCarry(line, vol, np.empty(0, dtype=np.int64))
