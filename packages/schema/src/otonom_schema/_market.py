"""The windowed market maths behind every state (numpy only): the feature columns' indices,
the window helpers and ``_market_block``, which computes the market and sentiment features of
padded bar arrays. ``otonom_schema._features`` (histories, portfolios, ``compute_states``,
``compute_state``) is its one caller; see its docstring for how the offline and live paths
stay identical and causal."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from otonom_schema._spec import (
    BB_PERIOD,
    BB_SCALE,
    BB_STDS,
    DSI_WINDOW,
    EMA_FAST_LEN,
    EMA_SIGNAL_LEN,
    EMA_SLOW_LEN,
    FEATURES,
    FLAT_BAR_WEIGHT,
    LOOKBACK,
    MACD_FAST,
    MACD_SCALE,
    MACD_SIGNAL,
    MACD_SLOW,
    MAX_GAP_DAYS,
    N_RETURNS,
    REGIME_HIGH_PCT,
    REGIME_LOW_PCT,
    REGIME_WINDOW,
    RETURN_SCALE,
    RSI_PERIOD,
    STALE_GRACE_DAYS,
    STALE_HALF_LIFE_DAYS,
    STATE_DIM,
    VOL_WINDOW,
    VOLUME_FLOOR,
    VOLUME_PERIOD,
    VOLUME_SCALE,
    feature_index,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

PORTFOLIO_COLUMNS: Final = slice(
    feature_index("position"), feature_index("days_since_last_trade") + 1
)
"""Columns of the state vector filled from the portfolio (position .. days_since_last_trade)."""

_RSI: Final = feature_index("rsi")
_MACD: Final = feature_index("macd_signal")
_BB: Final = feature_index("bb_width")
_VOL: Final = feature_index("volume_ratio")
_REG: Final = feature_index("regime_low_vol")
_DSI: Final = feature_index("dsi")
_NEWS: Final = feature_index("news_sentiment")
_MACRO: Final = feature_index("macro_sentiment")
_MIN_BARS: Final = np.array([f.min_bars for f in FEATURES], dtype=np.int64)
_NEUTRAL: Final = np.array([f.neutral for f in FEATURES], dtype=np.float64)
_PAD: Final = LOOKBACK - 1
if not (_MIN_BARS.max() == LOOKBACK and REGIME_WINDOW < 2**16):  # what _market_block relies on
    raise AssertionError("LOOKBACK must be the largest min_bars and REGIME_WINDOW < 65536")
_REACH: Final = max(N_RETURNS, RSI_PERIOD, BB_PERIOD, VOLUME_PERIOD, VOL_WINDOW, DSI_WINDOW) + 1
"""The positions ending at an output that ``_market_block`` reads outside its two windowed
series (and that the realised vol at the output reads): its windows of returns, changes,
closes, volumes and DSI flags, and the bar before the oldest (returns, changes and flags are
diffs with the bar before). A caller with one output per history may lay out only these."""


# --- the windowed maths --------------------------------------------------------------------
#
# Every windowed quantity is computed at output positions (a ``_Grid`` of indices into the
# padded bar arrays): one run of consecutive positions for one history (the rows of
# ``market_feature_matrix``), or one run per history for a panel of histories laid end to end
# (``market_feature_panel``). Each window is gathered into a C-contiguous row, oldest first, and
# reduced along it, so a position's features are the same floats however many positions are
# computed with it and whatever lies before its window.


@dataclass(frozen=True)
class _Grid:
    """The positions ``first + i * step + j`` for ``i < runs``, ``j < run`` (in that order)."""

    first: int
    runs: int
    step: int
    run: int

    @property
    def size(self) -> int:
        return self.runs * self.run

    def positions(self) -> I64:
        at = np.arange(self.runs, dtype=np.int64)[:, None] * self.step + np.arange(self.run)
        out: I64 = (at + self.first).ravel()
        return out

    def spans(self, width: int) -> tuple[_Grid, _Grid]:
        """The ``width`` positions ending at each of these (each run widened in front), and
        where these lie among them once they are computed into an array of their own: the
        output positions of a quantity that is itself windowed (the MACD line, the vol)."""
        run = self.run + width - 1
        return (
            _Grid(self.first - width + 1, self.runs, self.step, run),
            _Grid(width - 1, self.runs, run, self.run),
        )


def _windows(x: F64, at: _Grid, width: int) -> F64:
    """Row k is ``x[end - width + 1 .. end]`` (oldest first) for the k-th position ``end`` of
    ``at``: a read-only strided view (no copy) of the 1-d contiguous array ``x`` for one run,
    a C-contiguous copy for several (the same floats in the same order)."""
    lo = at.first - width + 1
    last = at.first + (at.runs - 1) * at.step + at.run - 1
    if at.size and (lo < 0 or last >= x.shape[0] or x.ndim != 1):
        raise AssertionError(f"windows from {lo} of width {width} over {x.shape}")  # never
    if at.size == 0:
        return np.empty((0, width), dtype=x.dtype)
    step = x.strides[0]
    view: F64 = np.lib.stride_tricks.as_strided(
        x[lo:],
        shape=(at.runs, at.run, width),
        strides=(step * at.step, step, step),
        writeable=False,
    )
    rows: F64 = view[0] if at.runs == 1 else view.reshape(at.size, width)
    return rows


def _window(x: F64, at: _Grid, width: int) -> F64:
    """``_windows`` as a fresh C-contiguous array that callers may overwrite."""
    win = _windows(x, at, width)
    if win.flags.writeable and win.flags.c_contiguous:
        return win
    out: F64 = win.copy(order="C")
    return out


@functools.lru_cache(maxsize=8)
def _ema_weights(span: int, length: int) -> F64:
    """Truncated, renormalised EMA kernel, oldest weight first (matches ``_window`` columns)."""
    alpha = 2.0 / (span + 1.0)
    w = alpha * (1.0 - alpha) ** np.arange(length, dtype=np.float64)
    kernel: F64 = (w / w.sum())[::-1].copy()
    kernel.flags.writeable = False
    return kernel


def _ema(x: F64, ends: _Grid, span: int, length: int) -> F64:
    # the window copied, then scaled in place: the same products, and a multiply over
    # contiguous rows is faster than one that reads the overlapping strided view
    prod = _window(x, ends, length)
    prod *= _ema_weights(span, length)
    out: F64 = prod.sum(axis=1)
    return out


def _mean_std(win: F64) -> tuple[F64, F64]:
    """Mean and (population) standard deviation of each row of a C-contiguous window.

    ``win`` is overwritten (with the squared deviations): callers pass a fresh copy."""
    n = win.shape[1]
    mean: F64 = win.sum(axis=1) / n
    dev = np.subtract(win, mean[:, None], out=win)
    std: F64 = np.sqrt(np.multiply(dev, dev, out=dev).sum(axis=1) / n)
    return mean, std


def _std(win: F64) -> F64:
    return _mean_std(win)[1]


def _window_share(flags: npt.NDArray[np.bool_], at: _Grid, width: int) -> F64:
    """The share of True among ``flags[end - width + 1 .. end]`` for each of ``ends``.

    Equal, bit for bit, to summing each window of the flags as 0.0/1.0 floats and dividing by
    ``width``: every partial sum of such a window is a small whole number, exact in float64 in
    any order, so the count is taken from integer running totals instead (no window copies).
    """
    ends = at.positions()
    if ends.size and (int(ends[0]) - width + 1 < 0 or int(ends[-1]) >= flags.shape[0]):
        raise AssertionError(f"windows of width {width} over {flags.shape}")  # never
    totals = np.zeros(flags.shape[0] + 1, dtype=np.int64)
    np.cumsum(flags, out=totals[1:])
    counts = totals[ends + 1] - totals[ends + 1 - width]
    out: F64 = counts.astype(np.float64) / width
    return out


@dataclass(frozen=True)
class _Layout:
    """Where the output rows are in padded bar arrays: ``ends``, their positions; ``starts``,
    the first position of each history laid in the arrays (its diffs with the bar before are
    0, as at position 0); ``real``, the positions holding real bars (not padding);
    ``n_avail[k]``, the real bars up to row k (capped at LOOKBACK); ``as_of[k]``, the day the
    row's sentiment and freshness are taken at."""

    ends: _Grid
    starts: I64
    real: npt.NDArray[np.bool_]
    n_avail: I64
    as_of: I64


Series = Callable[[F64, F64], tuple[F64, F64]]
"""(close, log returns) -> (MACD line, realised vol) as ``_market_block`` takes them."""


def _market_block(
    days: I64,
    close: F64,
    high: F64,
    low: F64,
    volume: F64,
    at: _Layout,
    news: F64 | float,
    macro: F64 | float,
    series: Series | None = None,
) -> F64:
    """Feature rows for padded bar arrays at the positions of ``at`` (see ``_Layout``).

    Every history laid in the arrays is padded in front with at least ``_PAD`` copies of its
    first bar; ``news`` and ``macro``: each row's sentiment features (the one sentiment rule,
    applied by the caller). Portfolio columns are neutral. ``series``: what gives the two
    windowed series the features are taken from (the MACD line at ``at.ends.spans(
    EMA_SIGNAL_LEN)[0]``, the realised vol at ``at.ends.spans(REGIME_WINDOW)[0]``, laid out
    as ``spans`` lays them), from the close and the log returns; None: ``_macd_line`` and
    ``_realised_vol`` at those positions (a panel carried from tick to tick computes them
    there only where they are new, from its own bars: its arrays here may then hold only the
    last ``_REACH`` positions of each history, the rest being read by the series alone).
    """
    m = close.shape[0]
    out = at.ends
    rows = out.size
    feats = np.empty((rows, STATE_DIM), dtype=np.float64)

    logret = _log_returns(close, at.starts)
    change = np.zeros(m)
    change[1:] = close[1:] - close[:-1]
    change[at.starts] = 0.0

    # market: 20 returns, oldest first
    # (elementwise, so scaling each return once and then windowing gives the same floats)
    feats[:, :N_RETURNS] = _windows(np.tanh(logret / RETURN_SCALE), out, N_RETURNS)

    # RSI (simple averages: the ratio of sums)
    win = _window(change, out, RSI_PERIOD)
    gains = np.maximum(win, 0.0).sum(axis=1)
    losses = np.maximum(np.negative(win, out=win), 0.0, out=win).sum(axis=1)
    moves = gains + losses
    feats[:, _RSI] = np.where(moves > 0, gains / np.where(moves > 0, moves, 1.0), 0.5)

    # MACD histogram: MACD line on the signal window, then its signal EMA
    line_at, line_ends = out.spans(EMA_SIGNAL_LEN)
    vol_at, vol_ends = out.spans(REGIME_WINDOW)
    if series is None:
        line, vol = _macd_line(close, line_at), _realised_vol(logret, vol_at)
    else:
        line, vol = series(close, logret)
    signal = _ema(line, line_ends, MACD_SIGNAL, EMA_SIGNAL_LEN)
    hist = line[line_ends.positions()] - signal
    rel = hist / close[out.positions()]
    # On a flat market both EMAs equal the price only up to rounding, and how the rounding falls
    # depends on the CPU's SIMD width (seen: -1.6e-30 on one machine, 0.0 on another). A
    # histogram below 1e-12 of the price is that float noise: it is 0, on every machine.
    rel[np.abs(rel) < 1e-12] = 0.0
    feats[:, _MACD] = np.tanh(rel / MACD_SCALE)

    # Bollinger Band width
    mean_c, std_c = _mean_std(_window(close, out, BB_PERIOD))
    width = 2.0 * BB_STDS * std_c / mean_c
    feats[:, _BB] = np.tanh(width / BB_SCALE)

    # volume ratio (log scale)
    mean_v = _window(volume, out, VOLUME_PERIOD).sum(axis=1) / VOLUME_PERIOD
    today = volume[out.positions()]
    safe_mean = np.where(mean_v > 0, mean_v, 1.0)
    ratio = np.maximum(today, VOLUME_FLOOR * safe_mean) / safe_mean
    feats[:, _VOL] = np.where(mean_v > 0, np.tanh(np.log(ratio) / VOLUME_SCALE), 0.0)

    _regime_columns(feats, vol, vol_ends)

    feats[:, _DSI] = _dsi(days, close, high, low, volume, at)

    # warm-up: too few bars -> neutral (DSI itself only needs one bar); only rows with fewer
    # than LOOKBACK (the largest min_bars) bars can have such a feature
    warm = np.flatnonzero(at.n_avail < LOOKBACK)
    if warm.size:
        short = at.n_avail[warm, None] < _MIN_BARS[None, :]
        feats[warm] = np.where(short, _NEUTRAL[None, :], feats[warm])

    # sentiment and neutral portfolio columns
    feats[:, _NEWS] = news
    feats[:, _MACRO] = macro
    feats[:, PORTFOLIO_COLUMNS] = _NEUTRAL[PORTFOLIO_COLUMNS]
    return feats


def _log_returns(close: F64, starts: I64) -> F64:
    """The log return at each position of padded bar arrays: 0 at each history's first
    position (``starts``; the position before is no bar of it)."""
    logret = np.zeros(close.shape[0])
    logret[1:] = np.log(close[1:] / close[:-1])
    logret[starts] = 0.0
    return logret


def _macd_line(close: F64, at: _Grid) -> F64:
    """The MACD line (fast EMA - slow EMA of the close) at the positions ``at``."""
    line: F64 = _ema(close, at, MACD_FAST, EMA_FAST_LEN) - _ema(close, at, MACD_SLOW, EMA_SLOW_LEN)
    return line


def _realised_vol(logret: F64, at: _Grid) -> F64:
    """The realised vol (population std of the last VOL_WINDOW log returns) at ``at``."""
    return _std(_window(logret, at, VOL_WINDOW))


def _regime_columns(feats: F64, vol: F64, vol_ends: _Grid) -> None:
    """The regime one-hot: the rank of the 20-bar realised vol (``vol``, its values at the
    positions ``vol_ends`` and the REGIME_WINDOW - 1 before each) among its last
    REGIME_WINDOW values, written into ``feats``' three regime columns."""
    ranks = _windows(vol, vol_ends, REGIME_WINDOW)  # compared, not summed
    # count of the True (1-byte) flags per row, summed in 16-bit ints (exact: <= REGIME_WINDOW)
    below = (ranks < ranks[:, -1:]).view(np.uint8).sum(axis=1, dtype=np.uint16) / REGIME_WINDOW
    calm = below < REGIME_LOW_PCT
    turbulent = below > REGIME_HIGH_PCT
    feats[:, _REG] = calm
    feats[:, _REG + 1] = ~(calm | turbulent)
    feats[:, _REG + 2] = turbulent


def _dsi(days: I64, close: F64, high: F64, low: F64, volume: F64, at: _Layout) -> F64:
    """The data-sufficiency index of the output rows: coverage x (1 - gap share) x (1 - zero
    volume share) x (1 - weighted flat-bar share) x freshness."""
    m = close.shape[0]
    out, real = at.ends, at.real
    prev_real = np.zeros(m, dtype=bool)
    prev_real[1:] = real[:-1]
    prev_real[at.starts] = False
    interval = np.zeros(m, dtype=np.int64)
    interval[1:] = days[1:] - days[:-1]
    gap = real & prev_real & (interval > MAX_GAP_DAYS)
    zero_vol = real & (volume <= 0)
    unchanged = np.zeros(m, dtype=bool)
    unchanged[1:] = close[1:] == close[:-1]
    flat = real & prev_real & unchanged & (high == low)
    gap_share = _window_share(gap, out, DSI_WINDOW)
    zero_share = _window_share(zero_vol, out, DSI_WINDOW)
    flat_share = _window_share(flat, out, DSI_WINDOW)
    stale = (at.as_of - days[out.positions()]).astype(np.float64)
    freshness = np.where(
        stale <= STALE_GRACE_DAYS, 1.0, 0.5 ** ((stale - STALE_GRACE_DAYS) / STALE_HALF_LIFE_DAYS)
    )
    coverage = np.minimum(at.n_avail / LOOKBACK, 1.0)
    return (
        coverage
        * (1.0 - gap_share)
        * (1.0 - zero_share)
        * (1.0 - FLAT_BAR_WEIGHT * flat_share)
        * freshness
    )
