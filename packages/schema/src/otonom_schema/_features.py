"""Causal feature maths (numpy only): the one implementation behind datasets and live states.

Two entry points share every line of arithmetic:

* ``compute_states(history, ...)``: every bar of a history at once (offline datasets, backtests).
* ``compute_state(history, at=...)``: one date (the live state builder).

How identity is guaranteed. The features at bar t depend on at most ``LOOKBACK`` bars ending at
t. Both paths pad the bar arrays in front with ``LOOKBACK - 1`` copies of the first bar, and
every windowed quantity is computed by gathering its window into a fresh C-contiguous array and
reducing along the last axis, so each row sees the same floats in the same order whatever the
length of the history (the DSI shares, counts of 0/1 flags, are exact in any order and are
taken from integer running totals). The single-date path runs the same code on the last
``LOOKBACK`` bars.

Warm-up rule (one rule, both paths). A feature whose ``FeatureSpec.min_bars`` exceeds the bars
available up to t takes its ``neutral`` value; DSI is multiplied by the coverage
``min(1, bars available / LOOKBACK)`` so a model can tell a warm-up state from a real one.

Causality. Nothing at t reads a bar after t: the history is cut at t before anything is
computed, and all windows end at t.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_schema._dates import DateLike
from otonom_schema._errors import SchemaError
from otonom_schema._market import _NEUTRAL, _PAD, PORTFOLIO_COLUMNS, _Grid, _Layout, _market_block
from otonom_schema._spec import (
    DAYS_SCALE,
    LOOKBACK,
    MAX_LEVERAGE,
    RETURN_SCALE,
    SENTIMENT_MAX_AGE_DAYS,
)
from otonom_schema._state import RlState, validate_states

__all__ = [
    "PORTFOLIO_COLUMNS",
    "MarketHistory",
    "PortfolioSnapshot",
    "SentimentSeries",
    "compute_state",
    "compute_states",
    "log_returns_from_features",
    "market_feature_matrix",
    "portfolio_feature_matrix",
    "sentiment_feature",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def _to_days(values: object, what: str) -> I64:
    try:
        arr = np.asarray(values, dtype="datetime64[D]")
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{what}: cannot read as dates ({exc}); expected ISO dates") from None
    if arr.ndim != 1:
        raise SchemaError(f"{what} has shape {arr.shape}; expected a 1-d sequence of dates")
    if np.isnat(arr).any():
        row = int(np.argmax(np.isnat(arr)))
        raise SchemaError(f"{what}: row {row} is not a date (NaT)")
    return arr.astype(np.int64)


def _day(value: DateLike, what: str) -> int:
    days = _to_days([value], what)
    return int(days[0])


def _iso(day: int) -> str:
    return str(np.datetime64(day, "D"))


def _check_increasing(days: I64, what: str) -> None:
    bad = np.flatnonzero(np.diff(days) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        kind = "duplicate" if days[i] == days[i - 1] else "out-of-order"
        raise SchemaError(
            f"{what}: row {i} has {kind} date {_iso(int(days[i]))} after {_iso(int(days[i - 1]))};"
            " expected strictly increasing dates"
        )


def _column(values: object, name: str, n: int, what: str) -> F64:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{what}: column {name!r} is not numeric ({exc})") from None
    if arr.shape != (n,):
        raise SchemaError(f"{what}: column {name!r} has shape {arr.shape}; expected ({n},)")
    if not np.isfinite(arr).all():
        row = int(np.argmin(np.isfinite(arr)))
        raise SchemaError(f"{what}: {name} at row {row} is {arr[row]}; expected a finite number")
    return arr


@dataclass(frozen=True)
class MarketHistory:
    """Daily OHLCV bars of one symbol, oldest first, validated when made.

    Any array-likes are accepted (dates as ``datetime64``, ``datetime.date`` or ISO strings);
    after construction ``dates`` is read-only ``datetime64[D]`` and the rest read-only float64.

    ``dates`` are strictly increasing calendar days (gaps allowed; they lower DSI). Prices are
    finite and > 0, ``high >= low``, volume finite and >= 0. Errors name the row and value.
    """

    dates: npt.NDArray[Any]
    open: npt.NDArray[Any]
    high: npt.NDArray[Any]
    low: npt.NDArray[Any]
    close: npt.NDArray[Any]
    volume: npt.NDArray[Any]
    symbol: str = ""

    def __post_init__(self) -> None:
        what = f"history {self.symbol!r}" if self.symbol else "history"
        days = _to_days(self.dates, f"{what} dates")
        n = days.shape[0]
        if n == 0:
            raise SchemaError(f"{what} is empty; expected at least one bar")
        _check_increasing(days, what)
        cols = {
            name: _column(getattr(self, name), name, n, what)
            for name in ("open", "high", "low", "close", "volume")
        }
        for name in ("open", "high", "low", "close"):
            bad = np.flatnonzero(cols[name] <= 0)
            if bad.size:
                i = int(bad[0])
                raise SchemaError(
                    f"{what}: {name} at row {i} ({_iso(int(days[i]))}) is {cols[name][i]}; "
                    "expected a price > 0"
                )
        bad = np.flatnonzero(cols["high"] < cols["low"])
        if bad.size:
            i = int(bad[0])
            raise SchemaError(
                f"{what}: row {i} ({_iso(int(days[i]))}) has high {cols['high'][i]} < "
                f"low {cols['low'][i]}"
            )
        bad = np.flatnonzero(cols["volume"] < 0)
        if bad.size:
            i = int(bad[0])
            raise SchemaError(
                f"{what}: volume at row {i} ({_iso(int(days[i]))}) is {cols['volume'][i]}; "
                "expected >= 0"
            )
        object.__setattr__(self, "dates", days.astype("datetime64[D]"))
        for name, col in cols.items():
            col.flags.writeable = False
            object.__setattr__(self, name, col)
        self.dates.flags.writeable = False

    def __len__(self) -> int:
        return int(self.dates.shape[0])

    def _slice(self, start: int, stop: int) -> MarketHistory:
        """A sub-history without re-validation (its rows were validated already)."""
        sub = object.__new__(MarketHistory)
        for name in ("dates", "open", "high", "low", "close", "volume"):
            object.__setattr__(sub, name, getattr(self, name)[start:stop])
        object.__setattr__(sub, "symbol", self.symbol)
        return sub

    def upto(self, at: DateLike) -> MarketHistory:
        """The bars dated on or before ``at`` (raises if there are none)."""
        day = _day(at, "at")
        stop = int(np.searchsorted(self.dates.astype(np.int64), day, side="right"))
        if stop == 0:
            raise SchemaError(
                f"no bar of {self.symbol or 'the history'} on or before {_iso(day)}; "
                f"the first bar is {self.dates[0]}"
            )
        return self._slice(0, stop)


@dataclass(frozen=True)
class SentimentSeries:
    """Dated sentiment scores in [-1, 1] (news for one symbol, or macro), oldest first.

    A score dated d is taken as known at the close of d. The feature at t is the latest score
    dated <= t if it is at most ``SENTIMENT_MAX_AGE_DAYS`` old, else 0 (neutral).
    """

    dates: npt.NDArray[Any]
    scores: npt.NDArray[Any]

    def __post_init__(self) -> None:
        days = _to_days(self.dates, "sentiment dates")
        _check_increasing(days, "sentiment")
        scores = _column(self.scores, "score", days.shape[0], "sentiment")
        bad = np.flatnonzero(np.abs(scores) > 1.0)
        if bad.size:
            i = int(bad[0])
            raise SchemaError(
                f"sentiment: score at row {i} ({_iso(int(days[i]))}) is {scores[i]}; "
                "expected a value in [-1, 1]"
            )
        object.__setattr__(self, "dates", days.astype("datetime64[D]"))
        object.__setattr__(self, "scores", scores)

    def at(self, days: I64) -> F64:
        """The feature value for each day in ``days`` (int days since epoch)."""
        sdays = self.dates.astype(np.int64)
        if sdays.size == 0:
            return np.zeros(days.shape[0], dtype=np.float64)
        idx = np.searchsorted(sdays, days, side="right") - 1
        known = idx >= 0
        safe = np.where(known, idx, 0)
        return _sentiment_rule(sdays[safe], self.scores[safe], days, known)


def _sentiment_rule(score_days: I64, scores: F64, days: I64, known: npt.NDArray[np.bool_]) -> F64:
    """The one sentiment rule: the latest score dated <= t counts while at most
    ``SENTIMENT_MAX_AGE_DAYS`` old, else 0. ``score_days``/``scores`` are that latest score."""
    fresh = known & ((days - score_days) <= SENTIMENT_MAX_AGE_DAYS)
    out: F64 = np.where(fresh, scores, 0.0)
    return out


def _day_number(value: DateLike) -> int:
    """Days since 1970-01-01; a fast path for ``datetime.date`` (the live builder's type)."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.toordinal() - _EPOCH_ORDINAL
    return _day(value, "date")


_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()


def sentiment_feature(score_date: DateLike | None, score: float | None, at: DateLike) -> float:
    """The sentiment feature at ``at`` given the latest score dated <= ``at`` (or None).

    The rule of ``SentimentSeries.at`` (and so of ``compute_states``) for a caller that fetched
    only the latest score (the live state builder); a test keeps the two equal.
    """
    if score_date is None or score is None:
        return 0.0
    age = _day_number(at) - _day_number(score_date)
    if age < 0:
        raise SchemaError(f"score dated {score_date} is after {at}; expected <= {at}")
    if not (math.isfinite(score) and -1.0 <= score <= 1.0):
        raise SchemaError(f"sentiment score is {score}; expected a value in [-1, 1]")
    return float(score) if age <= SENTIMENT_MAX_AGE_DAYS else 0.0


@dataclass(frozen=True)
class PortfolioSnapshot:
    """The portfolio at one decision, in raw units.

    * ``position``: signed holding as a fraction of the allowed size, in [-1, 1]
    * ``leverage``: gross exposure / equity, in [0, ``MAX_LEVERAGE``]
    * ``cash_fraction``: free cash / equity, in [0, 1]
    * ``days_since_last_trade``: >= 0; ``math.inf`` means never traded
    """

    position: float = 0.0
    leverage: float = 0.0
    cash_fraction: float = 1.0
    days_since_last_trade: float = float("inf")

    _features: F64 | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Scalar checks (one snapshot per symbol of a tick); the features are made when first
        # read (a tick reads the raw values: ``portfolio_feature_matrix`` of all its rows).
        # Numbers in their bounds pass at once; anything else is checked by the loop below,
        # which names what is wrong (the same bounds: ``_PORTFOLIO_BOUNDS``).
        (_, lo0, hi0), (_, lo1, hi1), (_, lo2, hi2), (_, lo3, hi3) = _PORTFOLIO_BOUNDS
        if (
            type(self.position) is float
            and type(self.leverage) is float
            and type(self.cash_fraction) is float
            and type(self.days_since_last_trade) is float
            and lo0 <= self.position <= hi0
            and lo1 <= self.leverage <= hi1
            and lo2 <= self.cash_fraction <= hi2
            and lo3 <= self.days_since_last_trade <= hi3
        ):
            return
        for name, lo, hi in _PORTFOLIO_BOUNDS:
            raw = getattr(self, name)
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise SchemaError(f"portfolio {name} is {raw!r}; expected a number") from None
            if not lo <= value <= hi:
                raise _portfolio_error(name, 0, value, lo, hi)

    def features(self) -> F64:
        """The four portfolio feature values, shape (4,) (a read-only array): the same bounds
        and the same np.tanh as ``portfolio_feature_matrix``, so both give bit-identical
        features."""
        if self._features is None:
            values = [float(getattr(self, name)) for name, _, _ in _PORTFOLIO_BOUNDS]
            values[3] = float(np.tanh(np.float64(values[3]) / DAYS_SCALE))
            row: F64 = np.array(values, dtype=np.float64)
            row.flags.writeable = False
            object.__setattr__(self, "_features", row)
            return row
        return self._features


_PORTFOLIO_BOUNDS: Final = (
    ("position", -1.0, 1.0),
    ("leverage", 0.0, MAX_LEVERAGE),
    ("cash_fraction", 0.0, 1.0),
    ("days_since_last_trade", 0.0, math.inf),
)


def _portfolio_error(name: str, row: int, value: float, lo: float, hi: float) -> SchemaError:
    return SchemaError(
        f"portfolio {name} at row {row} is {value}; expected a value in [{lo}, {hi}]"
    )


def portfolio_feature_matrix(
    position: npt.ArrayLike,
    leverage: npt.ArrayLike,
    cash_fraction: npt.ArrayLike,
    days_since_last_trade: npt.ArrayLike,
) -> F64:
    """Portfolio features for N decisions at once, shape (N, 4), validated (errors name the row).

    Each raw value must lie in its range (NaN never does); days become ``tanh(days / 10)``.
    """
    cols = [
        np.atleast_1d(np.asarray(v, dtype=np.float64))
        for v in (position, leverage, cash_fraction, days_since_last_trade)
    ]
    n = cols[0].shape[0]
    for col, (name, lo, hi) in zip(cols, _PORTFOLIO_BOUNDS, strict=True):
        if col.shape != (n,):
            raise SchemaError(f"portfolio {name} has shape {col.shape}; expected ({n},)")
        ok = (col >= lo) & (col <= hi)
        if not ok.all():
            i = int(np.argmin(ok))
            raise _portfolio_error(name, i, float(col[i]), lo, hi)
    days = np.tanh(cols[3] / DAYS_SCALE)
    return np.stack([cols[0], cols[1], cols[2], days], axis=1)


def log_returns_from_features(values: npt.ArrayLike) -> F64:
    """Undo the return features' scaling: ``RETURN_SCALE * artanh(value)``, the daily log return.

    Values are clipped to +-(1 - 1e-6) first, so a saturated feature (a move beyond ~36 %
    in a day) decodes to about +-0.36 rather than infinity. Shape is kept; float64 out.
    """
    x = np.clip(np.asarray(values, dtype=np.float64), -1.0 + 1e-6, 1.0 - 1e-6)
    out: F64 = RETURN_SCALE * np.arctanh(x)
    return out


def _padded(history: MarketHistory, start: int) -> tuple[I64, F64, F64, F64, F64]:
    """Bar arrays from ``start`` on, padded in front with ``_PAD`` copies of bar ``start``."""

    def pad(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        x = x[start:]
        return np.concatenate([np.repeat(x[:1], _PAD), x])

    days = pad(history.dates.astype(np.int64))
    return days, pad(history.close), pad(history.high), pad(history.low), pad(history.volume)


def market_feature_matrix(
    history: MarketHistory,
    news: SentimentSeries | None = None,
    macro: SentimentSeries | None = None,
    *,
    first: int = 0,
) -> F64:
    """Features for every bar of ``history`` at once, shape (N, 34), float64.

    Row t uses bars <= t only. Portfolio columns (``PORTFOLIO_COLUMNS``) hold the neutral
    (flat, never traded) portfolio; fill them with ``portfolio_feature_matrix``. ``first``:
    only the rows of bars ``first ..`` (shape (N - first, 34), equal to those rows of the
    whole matrix; the bars before still count as their lookback).
    """
    n = len(history)
    first = _first_row(first, n)
    days, close, high, low, volume = _padded(history, 0)
    n_avail = np.minimum(np.arange(first + 1, n + 1, dtype=np.int64), LOOKBACK)
    as_of = history.dates[first:].astype(np.int64)
    at = _one_history(days.shape[0], _PAD + first, n_avail, as_of)
    return _market_block(days, close, high, low, volume, at, *_sentiment(news, macro, as_of))


def _one_history(m: int, first_out: int, n_avail: I64, as_of: I64) -> _Layout:
    """The layout of one history padded with ``_PAD`` bars, rows ``first_out .. m - 1``."""
    return _Layout(
        ends=_Grid(first_out, 1, 0, m - first_out),
        starts=np.zeros(1, dtype=np.int64),
        real=np.arange(m) >= _PAD,
        n_avail=n_avail,
        as_of=as_of,
    )


def _sentiment(
    news: SentimentSeries | None, macro: SentimentSeries | None, as_of: I64
) -> tuple[F64 | float, F64 | float]:
    """The news and macro features at the days ``as_of`` (0 without a series)."""
    return (
        news.at(as_of) if news is not None else 0.0,
        macro.at(as_of) if macro is not None else 0.0,
    )


def _first_row(first: object, n: int) -> int:
    if isinstance(first, bool) or not isinstance(first, (int, np.integer)) or not 0 <= first < n:
        raise SchemaError(f"first is {first!r}; expected a bar index in 0 .. {n - 1}")
    return int(first)


def _portfolio_matrix(portfolio: object, n: int) -> F64:
    if portfolio is None:
        return np.tile(_NEUTRAL[PORTFOLIO_COLUMNS], (n, 1))
    if isinstance(portfolio, PortfolioSnapshot):
        return np.tile(portfolio.features(), (n, 1))
    raise SchemaError(
        f"portfolio is {type(portfolio).__name__}; expected None, a PortfolioSnapshot, "
        "or use portfolio_feature_matrix() for one row per bar"
    )


def compute_states(
    history: MarketHistory,
    portfolio: PortfolioSnapshot | F64 | None = None,
    *,
    news: SentimentSeries | None = None,
    macro: SentimentSeries | None = None,
    first: int = 0,
) -> npt.NDArray[np.float32]:
    """The state of every bar of ``history``, shape (N, 34), float32 (the vectorised path).

    ``portfolio``: ``None`` (flat, never traded), one ``PortfolioSnapshot`` for every row, or an
    (N - first, 4) array from ``portfolio_feature_matrix`` with one portfolio per bar.
    ``first``: only the states of bars ``first ..`` (shape (N - first, 34), equal to those
    rows of the whole result; the bars before are only their lookback).
    """
    feats = market_feature_matrix(history, news, macro, first=first)
    rows = feats.shape[0]
    if isinstance(portfolio, np.ndarray):
        if portfolio.shape != (rows, 4):
            raise SchemaError(
                f"portfolio features have shape {portfolio.shape}; expected ({rows}, 4)"
            )
        feats[:, PORTFOLIO_COLUMNS] = portfolio
    else:
        feats[:, PORTFOLIO_COLUMNS] = _portfolio_matrix(portfolio, rows)
    return validate_states(feats)


def compute_state(
    history: MarketHistory,
    portfolio: PortfolioSnapshot | None = None,
    *,
    at: DateLike | None = None,
    news: SentimentSeries | None = None,
    macro: SentimentSeries | None = None,
) -> RlState:
    """The state at date ``at`` (default: the last bar), from bars dated <= ``at`` only.

    ``history`` may be the whole history or just its last ``LOOKBACK`` bars up to ``at``: the
    result is the same, and equal to ``compute_states(history)`` at that bar. When the last bar
    is older than ``at`` the state is that bar's, with DSI lowered for staleness and sentiment
    looked up at ``at``.
    """
    cut = history if at is None else history.upto(at)
    as_of_day = int(cut.dates[-1].astype(np.int64)) if at is None else _day(at, "at")
    n = len(cut)
    start = max(0, n - LOOKBACK)
    days, close, high, low, volume = _padded(cut, start)
    n_avail = np.array([min(n, LOOKBACK)], dtype=np.int64)
    as_of = np.array([as_of_day], dtype=np.int64)
    layout = _one_history(days.shape[0], days.shape[0] - 1, n_avail, as_of)
    row = _market_block(days, close, high, low, volume, layout, *_sentiment(news, macro, as_of))[0]
    row[PORTFOLIO_COLUMNS] = _portfolio_matrix(portfolio, 1)[0]
    return RlState.from_array(row)
