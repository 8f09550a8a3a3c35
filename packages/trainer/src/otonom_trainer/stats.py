"""Honest statistics of return series (numpy and the standard library only, no scipy).

A Sharpe ratio over a year or two has a standard error near ``sqrt(1 / years)``, so "with RL
beats without RL" read off two point estimates is mostly noise. This module says how sure one
can be:

- :func:`sharpe_ratio`: the annualised Sharpe ``mean(r) / std(r, ddof=1) * sqrt(ppy)`` (the
  runtime's definition with ``risk_free = 0``); None when undefined (< 2 returns, or
  ``std <= 1e-12``).
- :func:`sharpe_difference`: ``Sharpe(with) - Sharpe(without)`` of two aligned return series
  with a paired circular block bootstrap interval (Politis & Romano 1992; Ledoit & Wolf 2008
  for Sharpe ratios): blocks of ``block_length(n)`` (~``n ** (1/3)``) consecutive days,
  wrapping around the end, drawn at the same positions in both series (so the days' common
  shocks stay paired); the percentile interval at ``confidence``; a flat resample's Sharpe
  counts as 0.
- :func:`probabilistic_sharpe_ratio`: PSR (Bailey & López de Prado 2012), ``P[true Sharpe >
  SR*]`` = ``Φ((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR²))`` with the
  per-period Sharpe ``SR`` (``ddof = 1``), the returns' skewness ``g3`` and (non-excess)
  kurtosis ``g4`` (population moments, ``ddof = 0``).
- :func:`expected_max_sharpe`: the Sharpe the best of ``N`` trials reaches by luck alone
  (Bailey & López de Prado 2014), ``sqrt(V) ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)))``
  with ``V`` the variance of the trials' Sharpes and ``γ`` the Euler-Mascheroni constant;
  0 for ``N = 1``. :func:`deflated_sharpe_ratio` (DSR) is the PSR against it.
- :func:`equity_sharpe_test`: the gate's view of two equity curves: the difference, its
  interval and verdict, and the PSR of the curve with RL against the Sharpe without it.

The verdict of a difference at level ``c``: "significant improvement" when the whole interval
is above 0, "significant harm" when it is below 0, "no evidence either way" otherwise.
Sharpes given and returned are annualised with ``periods_per_year`` (252 trading days, 365
calendar days); the skewness and kurtosis are the population moments (``ddof = 0``).

Bad input (unequal lengths, a NaN or infinity, fewer than ``MIN_ROWS`` returns, a level outside
(0, 1)) raises :class:`StatsError` with a one-line message. The trial count of the deflated
Sharpe comes from the trials ledger (``otonom_trainer.trials.count_trials``: every training run,
tuning trial and fine-tuning run records itself); the trials' Sharpe variance, unknown for runs
that were never backtested, is taken as the sampling variance of a zero-skill Sharpe over the
same number of returns (:func:`null_sharpe_variance`, ``ppy / (n - 1)``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from otonom_runtime.metrics import ZERO_DISPERSION, returns_from_equity
from otonom_trainer._errors import OtonomTrainerError

__all__ = [
    "EULER_GAMMA",
    "MIN_ROWS",
    "SharpeDifference",
    "SharpeTest",
    "StatsError",
    "Verdict",
    "block_length",
    "deflated_sharpe_ratio",
    "equity_sharpe_test",
    "expected_max_sharpe",
    "normal_cdf",
    "null_sharpe_variance",
    "probabilistic_sharpe_ratio",
    "sharpe_difference",
    "sharpe_ratio",
]

Verdict = Literal["significant improvement", "no evidence either way", "significant harm"]
EULER_GAMMA: Final = 0.5772156649015329
MIN_ROWS: Final = 20
"""The fewest returns a bootstrap interval or a PSR is computed from (a month of trading days)."""


class StatsError(OtonomTrainerError, ValueError):
    """Return series the statistics cannot use: unequal lengths, a NaN or infinity, too few
    rows, a level or count out of its range."""


def normal_cdf(x: float) -> float:
    """The standard normal CDF ``Φ(x) = (1 + erf(x / sqrt(2))) / 2``."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _series(values: npt.ArrayLike, name: str, min_rows: int = 2) -> npt.NDArray[np.float64]:
    """``values`` as a 1-D float array of at least ``min_rows`` finite returns (else one line)."""
    r = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(r.ravel()))
    if r.ndim == 1 and r.size >= min_rows and not bad.size:
        return r
    if r.ndim != 1:
        got = f"shape {r.shape}"
    elif bad.size:
        got = f"{r[bad[0]]} at row {bad[0]} ({bad.size} not finite)"
    else:
        got = f"{r.size} returns"
    least = f" (at least {min_rows})" if min_rows > 1 else ""
    raise StatsError(f"{name}: got {got}; expected a 1-D series of finite returns{least}")


def _ppy(periods_per_year: int) -> int:
    if isinstance(periods_per_year, bool) or not isinstance(periods_per_year, (int, np.integer)):
        raise StatsError(f"periods_per_year: got {periods_per_year!r}; expected an integer >= 1")
    if periods_per_year < 1:
        raise StatsError(f"periods_per_year: got {periods_per_year}; expected an integer >= 1")
    return int(periods_per_year)


def _sharpes(r: npt.NDArray[np.float64], ppy: int) -> npt.NDArray[np.float64]:
    """Annualised Sharpe along the last axis; NaN where the std is <= ``ZERO_DISPERSION``."""
    sd = r.std(axis=-1, ddof=1)
    flat = sd <= ZERO_DISPERSION
    out: npt.NDArray[np.float64] = np.where(
        flat, np.nan, r.mean(axis=-1) / np.where(flat, 1.0, sd) * math.sqrt(ppy)
    )
    return out


def sharpe_ratio(returns: npt.ArrayLike, periods_per_year: int = 252) -> float | None:
    """Annualised Sharpe of ``returns``; None with fewer than 2 returns or no variance."""
    r = _series(returns, "returns", min_rows=0)
    if r.size < 2:
        return None
    s = float(_sharpes(r, _ppy(periods_per_year)))
    return None if math.isnan(s) else s


def block_length(n: int) -> int:
    """The bootstrap's block length for ``n`` returns: ``round(n ** (1/3))``, at least 1."""
    return max(1, round(math.pow(n, 1.0 / 3.0)))


def _level(confidence: float) -> float:
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise StatsError(f"confidence: got {confidence!r}; expected a level in (0, 1), e.g. 0.9")
    return float(confidence)


@dataclass(frozen=True)
class SharpeDifference:
    """``Sharpe(with) - Sharpe(without)`` (annualised) and its bootstrap interval."""

    difference: float
    low: float
    high: float
    confidence: float
    block: int
    samples: int
    rows: int

    @property
    def verdict(self) -> Verdict:
        """Improvement / harm when the interval lies wholly above / below 0."""
        if self.low > 0.0:
            return "significant improvement"
        if self.high < 0.0:
            return "significant harm"
        return "no evidence either way"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"verdict": self.verdict}


def sharpe_difference(
    with_returns: npt.ArrayLike,
    without_returns: npt.ArrayLike,
    periods_per_year: int = 252,
    *,
    confidence: float = 0.90,
    samples: int = 2000,
    block: int | None = None,
    seed: int = 0,
) -> SharpeDifference:
    """The Sharpe difference of two aligned return series with a paired circular block
    bootstrap interval (see the module docstring); the same ``seed`` gives the same interval.

    The resampled positions are drawn once as a ``(samples, n)`` index array; a flat series
    or resample has Sharpe 0 (as the gate compares an undefined Sharpe)."""
    on = _series(with_returns, "with_returns", MIN_ROWS)
    off = _series(without_returns, "without_returns", MIN_ROWS)
    if on.size != off.size:
        raise StatsError(
            f"with_returns has {on.size} rows and without_returns {off.size}; expected aligned "
            "series of the same days"
        )
    ppy, level, n = _ppy(periods_per_year), _level(confidence), int(on.size)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 100:
        raise StatsError(f"samples: got {samples!r}; expected an integer >= 100")
    size = block_length(n) if block is None else block
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= n:
        raise StatsError(f"block: got {size!r}; expected an integer in [1, {n}] (the rows)")
    rng = np.random.default_rng(seed)
    blocks = -(-n // size)
    starts = rng.integers(0, n, size=(samples, blocks))
    index = ((starts[:, :, None] + np.arange(size)) % n).reshape(samples, -1)[:, :n]
    boot = np.nan_to_num(_sharpes(on[index], ppy)) - np.nan_to_num(_sharpes(off[index], ppy))
    low, high = np.quantile(boot, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    point = float(np.nan_to_num(_sharpes(on, ppy)) - np.nan_to_num(_sharpes(off, ppy)))
    return SharpeDifference(point, float(low), float(high), level, size, samples, n)


def probabilistic_sharpe_ratio(
    returns: npt.ArrayLike, benchmark: float = 0.0, periods_per_year: int = 252
) -> float | None:
    """PSR: the probability that the true Sharpe of ``returns`` exceeds ``benchmark`` (both
    annualised), from the sample's Sharpe, length, skewness and kurtosis (Bailey & López de
    Prado 2012); None for a flat series."""
    r = _series(returns, "returns", MIN_ROWS)
    ppy = _ppy(periods_per_year)
    if not math.isfinite(benchmark):
        raise StatsError(f"benchmark: got {benchmark!r}; expected a finite annualised Sharpe")
    sd = float(r.std(ddof=1))
    if sd <= ZERO_DISPERSION:
        return None
    sr = float(r.mean()) / sd  # per period
    centred = r - r.mean()
    m2 = float(np.mean(centred**2))
    skew = float(np.mean(centred**3)) / m2**1.5
    kurt = float(np.mean(centred**4)) / m2**2
    # >= (1 - skew sr / 2) ** 2 >= 0, as kurt >= 1 + skew ** 2 for any sample
    spread = max(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2, ZERO_DISPERSION)
    z = (sr - benchmark / math.sqrt(ppy)) * math.sqrt(r.size - 1) / math.sqrt(spread)
    return normal_cdf(z)


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """The expected maximum Sharpe of ``n_trials`` trials whose true Sharpes are all 0 and
    whose estimated Sharpes have variance ``variance`` (same units: annualised Sharpes give an
    annualised answer); 0 for a single trial."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise StatsError(f"n_trials: got {n_trials!r}; expected an integer >= 1")
    if not (math.isfinite(variance) and variance >= 0.0):
        raise StatsError(f"variance: got {variance!r}; expected a finite number >= 0")
    if n_trials == 1:
        return 0.0
    inv = NormalDist().inv_cdf
    return math.sqrt(variance) * (
        (1.0 - EULER_GAMMA) * inv(1.0 - 1.0 / n_trials)
        + EULER_GAMMA * inv(1.0 - 1.0 / (n_trials * math.e))
    )


def deflated_sharpe_ratio(
    returns: npt.ArrayLike, n_trials: int, trial_variance: float, periods_per_year: int = 252
) -> float | None:
    """DSR (Bailey & López de Prado 2014): the PSR of ``returns`` against the Sharpe the best
    of ``n_trials`` configurations would reach by luck, ``trial_variance`` being the variance
    of those trials' annualised Sharpes. Falls as ``n_trials`` grows; None for a flat series."""
    benchmark = expected_max_sharpe(n_trials, trial_variance)
    return probabilistic_sharpe_ratio(returns, benchmark, periods_per_year)


def null_sharpe_variance(rows: int, periods_per_year: int = 252) -> float:
    """The sampling variance of the annualised Sharpe of ``rows`` returns of a zero-skill
    strategy, ``ppy / (rows - 1)`` (Lo 2002 at Sharpe 0): the spread of the Sharpes of trials
    that found nothing, the deflated Sharpe's ``trial_variance`` when no better one is known."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 2:
        raise StatsError(f"rows: got {rows!r}; expected an integer >= 2")
    return _ppy(periods_per_year) / (rows - 1)


@dataclass(frozen=True)
class SharpeTest:
    """The gate's test of a with-RL equity curve against the without-RL one: the difference
    (None with fewer than ``MIN_ROWS`` returns: too short to tell) and the PSR of the curve
    with RL against the Sharpe without RL."""

    difference: SharpeDifference | None
    psr: float | None
    psr_benchmark: float
    confidence: float
    n_trials: int | None = None
    dsr: float | None = None

    @property
    def verdict(self) -> Verdict:
        return "no evidence either way" if self.difference is None else self.difference.verdict

    def summary(self) -> str:
        """One line: the difference, its interval and the verdict, and the PSR."""
        psr = "-" if self.psr is None else f"{self.psr:.2f}"
        d = self.difference
        if d is None:
            return f"too few days to tell ({self.verdict}); PSR {psr}"
        deflated = ""
        if self.n_trials is not None:
            dsr = "-" if self.dsr is None else f"{self.dsr:.2f}"
            trials = f"{self.n_trials} trial{'' if self.n_trials == 1 else 's'}"
            deflated = f"; deflated Sharpe {dsr} ({trials} in the ledger)"
        return (
            f"difference {d.difference:+.2f}, {d.confidence:.0%} interval [{d.low:+.2f}, "
            f"{d.high:+.2f}]: {d.verdict}; PSR {psr} (P[Sharpe with RL > "
            f"{self.psr_benchmark:.2f}])" + deflated
        )

    def to_dict(self) -> dict[str, Any]:
        d = self.difference
        return {
            "verdict": self.verdict,
            "confidence": self.confidence,
            "difference": None if d is None else d.to_dict(),
            "psr_with_rl": self.psr,
            "psr_benchmark": self.psr_benchmark,
            "n_trials": self.n_trials,
            "dsr_with_rl": self.dsr,
        }


def equity_sharpe_test(
    with_equity: npt.ArrayLike,
    without_equity: npt.ArrayLike,
    periods_per_year: int,
    confidence: float = 0.90,
    *,
    samples: int = 2000,
    seed: int = 0,
    n_trials: int | None = None,
) -> SharpeTest:
    """:func:`sharpe_difference` and :func:`probabilistic_sharpe_ratio` of two equity curves
    of the same days, their returns as the runtime computes them
    (``otonom_runtime.metrics.returns_from_equity``); with ``n_trials`` also the deflated
    Sharpe of the curve with RL (trial variance :func:`null_sharpe_variance`)."""
    on, off = returns_from_equity(with_equity), returns_from_equity(without_equity)
    level, ppy = _level(confidence), _ppy(periods_per_year)
    benchmark = sharpe_ratio(off, ppy) or 0.0
    if on.size < MIN_ROWS:
        return SharpeTest(None, None, benchmark, level)
    diff = sharpe_difference(on, off, ppy, confidence=level, samples=samples, seed=seed)
    psr = probabilistic_sharpe_ratio(on, benchmark, ppy)
    if n_trials is None:
        return SharpeTest(diff, psr, benchmark, level)
    dsr = deflated_sharpe_ratio(on, n_trials, null_sharpe_variance(int(on.size), ppy), ppy)
    return SharpeTest(diff, psr, benchmark, level, n_trials, dsr)
