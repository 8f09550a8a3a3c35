"""Performance metrics of a backtest (numpy only, no torch, no pandas).

The backtester hands over, for one symbol or for the whole portfolio:

* ``equity``: the equity marked to market at each close, after costs, shape ``(N,)``;
* ``positions``: the position held at each close as a signed fraction of equity (``+0.5`` long
  half the equity, ``-1`` short all of it), shape ``(N,)``;
* ``trades``: the closed trades, as :class:`Trade` objects or as their pnl after costs.

:func:`compute_metrics` turns them into a :class:`Metrics`. The definitions, with
``e = equity``, ``p = positions``, ``ppy = periods_per_year`` and ``rf`` the annual risk-free
rate:

=========================  ==================================================================
``r_t``                    ``e_t / e_{t-1} - 1`` for ``t = 1 .. N-1`` (simple returns, N-1 of
                           them; :func:`returns_from_equity`)
total_return               ``e_{N-1} / e_0 - 1``
cagr                       ``(e_{N-1} / e_0) ** (ppy / (N - 1)) - 1`` (N-1 periods of
                           ``1 / ppy`` years each; ``inf`` if the power overflows a float)
sharpe                     ``mean(r - rf/ppy) / std(r, ddof=1) * sqrt(ppy)``; ``None`` when it
                           is undefined: fewer than two returns, or ``std(r, ddof=1)`` is zero
                           (``<= 1e-12``, float noise on a flat or constant-growth curve)
sortino                    ``mean(r - rf/ppy) / dd * sqrt(ppy)`` with the downside deviation
                           ``dd = sqrt(mean(min(r_t, 0) ** 2))`` taken over ALL N-1 periods
                           (the common definition; target 0, not ``rf``); ``None`` when
                           ``dd <= 1e-12``, i.e. no losing period (a monotonic rise has no
                           finite Sortino: it is reported as ``None``, not ``inf``)
max_drawdown               ``max_t (1 - e_t / max_{s<=t} e_s)``, a positive fraction
                           (0.25 for a fall of 25 % from the running peak; 0 if none)
max_drawdown_duration      the longest stretch, in bars, from a running peak to the first bar
                           at which equity is back at that peak, or to the last bar if it
                           never is (a peak at bar 3, back at bar 7: 4 bars)
n_trades                   the number of closed trades given
win_rate                   the fraction of them with ``pnl > 0``; ``None`` with no trade
exposure                   the fraction of the N bars with ``p_t != 0``
turnover                   ``mean_{t=1..N-1} |p_t - p_{t-1}| * ppy``: the mean absolute change
                           of the position per bar, annualised (1.0 = one equity's worth traded
                           per year). ``p_0`` is the starting state (its opening is not
                           counted). As ``p`` is a fraction of equity, a position held in
                           units drifts with the price and that drift counts as change too.
=========================  ==================================================================

``fallbacks`` (how often the ensemble fell back to its default action) is passed through.

Validation raises ``ValueError`` saying what was received and what was expected: ``equity``
finite and > 0 with ``N >= 2``, ``positions`` finite and of the same length,
``periods_per_year`` any positive integer (252 for trading days, 365 for calendar days, 52,
12, ...), ``risk_free`` finite, ``fallbacks`` a non-negative integer, trade pnl finite.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Final, Literal, cast

import numpy as np
import numpy.typing as npt

from otonom_runtime._text import counted

__all__ = [
    "ANNUALISED",
    "FEW_RETURNS_MARK",
    "Metrics",
    "Trade",
    "compute_metrics",
    "drawdown_series",
    "few_returns_note",
    "returns_from_equity",
]

ZERO_DISPERSION: Final = 1e-12
"""A standard or downside deviation (per period) at or below this counts as zero."""

ANNUALISED: Final = frozenset({"cagr", "sharpe", "sortino", "turnover"})
"""The :class:`Metrics` figures scaled by ``periods_per_year``."""
FEW_RETURNS_MARK: Final = " ?"
"""Put after each :data:`ANNUALISED` figure of a curve that :func:`few_returns_note` has a
note for."""

TradeSide = Literal["long", "short"]
MetricValue = float | int | None


@dataclass(frozen=True)
class Trade:
    """One closed trade, as the backtester records it.

    ``side`` is ``"long"`` or ``"short"``; ``size`` the (positive) size traded, in the
    backtester's unit; ``pnl`` the profit or loss after costs, in money. Entry and exit are
    fills at the open of their day (a decision on day t's close fills at day t+1's open).
    """

    symbol: str
    side: TradeSide
    entry_date: dt.date
    exit_date: dt.date
    entry_price: float
    exit_price: float
    size: float
    pnl: float

    def __post_init__(self) -> None:
        if self.side not in ("long", "short"):
            raise ValueError(f"Trade.side must be 'long' or 'short', got {self.side!r}")
        if self.exit_date < self.entry_date:
            raise ValueError(
                f"Trade.exit_date ({self.exit_date}) is before entry_date ({self.entry_date})"
            )
        for name in ("entry_price", "exit_price", "size"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Trade.{name} must be finite and > 0, got {value!r}")
        if not math.isfinite(self.pnl):
            raise ValueError(f"Trade.pnl must be finite, got {self.pnl!r}")

    def to_dict(self) -> dict[str, str | float]:
        """The trade as JSON-able values (dates in ISO format)."""
        return {
            "symbol": self.symbol,
            "side": self.side,
            "entry_date": self.entry_date.isoformat(),
            "exit_date": self.exit_date.isoformat(),
            "entry_price": self.entry_price,
            "exit_price": self.exit_price,
            "size": self.size,
            "pnl": self.pnl,
        }


@dataclass(frozen=True)
class Metrics:
    """The performance figures of one backtest; see the module docstring for the definitions.

    ``None`` marks a figure that is undefined for the input (``sharpe`` with zero volatility,
    ``sortino`` with no losing period, ``win_rate`` with no trade).
    """

    total_return: float
    cagr: float
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_duration: int
    n_trades: int
    win_rate: float | None
    exposure: float
    turnover: float
    fallbacks: int
    n_bars: int
    periods_per_year: int

    def to_dict(self) -> dict[str, MetricValue]:
        """The figures as plain Python values, fit for ``json.dumps(..., allow_nan=False)``.

        A non-finite float (only ``cagr`` can be one, ``inf`` on overflow) becomes ``None``.
        """
        out: dict[str, MetricValue] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
            else:
                out[key] = value
        return out


def few_returns_note(n_bars: int, periods_per_year: int) -> str | None:
    """The line that explains the :data:`FEW_RETURNS_MARK` on the annualised figures of a
    curve of ``n_bars`` bars (``Metrics.n_bars``), or ``None`` when it needs none.

    A curve with fewer returns (``n_bars - 1``) than a quarter of ``periods_per_year`` gets
    one: a Sharpe ratio over ``n`` returns has a standard error near ``sqrt(ppy / n)``,
    above 2 there. ``otonom backtest`` and ``otonom runs show`` both print it.
    """
    returns = max(n_bars - 1, 0)
    if returns * 4 >= periods_per_year:
        return None
    se = (periods_per_year / max(returns, 1)) ** 0.5
    return (
        f"? annualised from {counted(returns, 'daily return')} (less "
        f"than a quarter of {periods_per_year} bars a year): a Sharpe's standard error "
        f"is about {se:.1f} there, so these figures say little"
    )


def _as_1d_float(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of numbers, got {values!r:.80}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per bar), got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{name} must be finite, got {arr[bad[0]]} at index {bad[0]} "
            f"({bad.size} non-finite value(s))"
        )
    return arr


def _check_equity(equity: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = _as_1d_float(equity, "equity")
    if arr.size < 2:
        raise ValueError(f"equity needs at least 2 bars (N >= 2), got {arr.size}")
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise ValueError(
            f"equity must be > 0 at every bar, got {arr[bad[0]]} at index {bad[0]} "
            f"({bad.size} value(s) <= 0)"
        )
    return arr


def returns_from_equity(equity: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Simple returns ``r_t = equity_t / equity_{t-1} - 1`` for ``t = 1 .. N-1`` (N-1 values).

    ``equity`` must be 1-D, finite, > 0 and hold at least 2 bars (else ``ValueError``).
    """
    arr = _check_equity(equity)
    out: npt.NDArray[np.float64] = arr[1:] / arr[:-1] - 1.0
    return out


def drawdown_series(equity: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Drawdown at each bar, ``1 - equity_t / max_{s<=t} equity_s`` (N values, each >= 0).

    A positive fraction: 0 at a running peak, 0.25 for 25 % below it. ``equity`` must be 1-D,
    finite, > 0 and hold at least 2 bars (else ``ValueError``).
    """
    arr = _check_equity(equity)
    out: npt.NDArray[np.float64] = 1.0 - arr / np.maximum.accumulate(arr)
    return out


def _max_drawdown_duration(drawdown: npt.NDArray[np.float64]) -> int:
    """Longest bars from a running peak to the first bar back at it (or to the last bar)."""
    # Bar 0 is always a peak; the last bar closes an underwater stretch that never recovered.
    ends = np.unique(np.r_[np.flatnonzero(drawdown == 0.0), drawdown.size - 1])
    gaps = np.diff(ends)
    # Two peaks in a row (gap 1) enclose no underwater bar, unless the second is the last bar
    # and is itself under water.
    underwater = (gaps > 1) | (drawdown[ends[1:]] > 0.0)
    return int(np.max(gaps[underwater], initial=0))


def _trade_pnls(trades: Sequence[Trade] | npt.ArrayLike) -> npt.NDArray[np.float64]:
    if isinstance(trades, Sequence) and any(isinstance(t, Trade) for t in trades):
        pnls: list[float] = []
        for i, trade in enumerate(trades):
            if not isinstance(trade, Trade):
                raise ValueError(
                    "trades must be all Trade objects or all pnl numbers, got a mix: "
                    f"{type(trade).__name__} at index {i}"
                )
            pnls.append(trade.pnl)
        return np.asarray(pnls, dtype=np.float64)
    # Not a sequence holding a Trade: pnl numbers (an empty sequence is no trade).
    return _as_1d_float(cast("npt.ArrayLike", trades), "trades (pnl numbers)")


def compute_metrics(
    equity: npt.ArrayLike,
    positions: npt.ArrayLike,
    trades: Sequence[Trade] | npt.ArrayLike,
    periods_per_year: int,
    *,
    fallbacks: int = 0,
    risk_free: float = 0.0,
) -> Metrics:
    """The :class:`Metrics` of one equity curve; definitions in the module docstring.

    Args:
        equity: equity at each close after costs, shape ``(N,)``, finite and > 0, ``N >= 2``.
        positions: position held at each close as a signed fraction of equity, shape ``(N,)``.
        trades: the closed trades, as :class:`Trade` objects or as their pnl (numbers).
        periods_per_year: bars per year, any positive integer (252 trading days, 365 days).
        fallbacks: passed through to :attr:`Metrics.fallbacks` (a non-negative integer).
        risk_free: annual risk-free rate (0.03 for 3 %), taken off each period as
            ``risk_free / periods_per_year`` in Sharpe and Sortino.

    Raises:
        ValueError: an input out of its domain; the message says what was received and what
            was expected.
    """
    if (
        isinstance(periods_per_year, bool)
        or not isinstance(periods_per_year, (int, np.integer))
        or periods_per_year <= 0
    ):
        raise ValueError(
            "periods_per_year must be a positive integer (252 trading days, 365 calendar "
            f"days, ...), got {periods_per_year!r}"
        )
    ppy = int(periods_per_year)
    if isinstance(fallbacks, bool) or not isinstance(fallbacks, (int, np.integer)) or fallbacks < 0:
        raise ValueError(f"fallbacks must be a non-negative integer, got {fallbacks!r}")
    if not (isinstance(risk_free, (int, float)) and math.isfinite(risk_free)):
        raise ValueError(f"risk_free must be a finite annual rate (e.g. 0.03), got {risk_free!r}")

    eq = _check_equity(equity)
    pos = _as_1d_float(positions, "positions")
    if pos.shape != eq.shape:
        raise ValueError(
            f"positions must have one value per equity bar: expected {eq.size}, got {pos.size}"
        )
    pnls = _trade_pnls(trades)

    n = int(eq.size)
    r = eq[1:] / eq[:-1] - 1.0
    growth = float(eq[-1] / eq[0])
    total_return = growth - 1.0
    try:
        cagr = growth ** (ppy / (n - 1)) - 1.0
    except OverflowError:
        cagr = math.inf

    excess_mean = float(np.mean(r - risk_free / ppy))
    sharpe: float | None = None
    if r.size >= 2:
        std = float(np.std(r, ddof=1))
        if std > ZERO_DISPERSION:
            sharpe = excess_mean / std * math.sqrt(ppy)
    downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    sortino = excess_mean / downside * math.sqrt(ppy) if downside > ZERO_DISPERSION else None

    drawdown = 1.0 - eq / np.maximum.accumulate(eq)

    n_trades = int(pnls.size)
    win_rate = float(np.mean(pnls > 0)) if n_trades else None

    return Metrics(
        total_return=total_return,
        cagr=cagr,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=float(np.max(drawdown)),
        max_drawdown_duration=_max_drawdown_duration(drawdown),
        n_trades=n_trades,
        win_rate=win_rate,
        exposure=float(np.mean(pos != 0.0)),
        turnover=float(np.mean(np.abs(np.diff(pos)))) * ppy,
        fallbacks=int(fallbacks),
        n_bars=n,
        periods_per_year=ppy,
    )
