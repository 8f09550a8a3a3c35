"""Synthetic market data (numpy only): random daily histories and sentiment series.

Production code uses them where it needs plausible states without a store (``otonom bench``'s
demo states, the export's parity states when no held-out states are given); the test suites
use them through ``otonom_schema.testing``, which re-exports them. Every generator is
deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

from otonom_schema._features import MarketHistory, SentimentSeries

__all__ = ["random_history", "random_sentiment"]


def random_history(
    n: int,
    *,
    seed: int = 0,
    start: str = "2020-01-01",
    vol: float = 0.03,
    symbol: str = "TEST",
    gap_every: int = 0,
) -> MarketHistory:
    """A geometric random walk of ``n`` daily bars (optionally a 7-day gap every ``gap_every``)."""
    rng = np.random.default_rng(seed)
    # volatility switches between calm, normal and turbulent spells, so every regime appears
    levels = np.array([0.4, 1.0, 2.5]) * vol
    spells = rng.integers(0, 3, size=n // 30 + 1)
    scale = levels[np.repeat(spells, 30)[:n]]
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1.0, n) * scale))
    open_ = close * np.exp(rng.normal(0.0, 0.005, n))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.02, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.02, n))
    volume = rng.lognormal(10.0, 0.5, n)
    step = np.ones(n, dtype=np.int64)
    if gap_every:
        step[::gap_every] = 7
    step[0] = 0
    dates = np.datetime64(start, "D") + np.cumsum(step)
    return MarketHistory(dates, open_, high, low, close, volume, symbol=symbol)


def random_sentiment(dates: np.ndarray, *, seed: int = 0, keep: float = 0.6) -> SentimentSeries:
    """Scores in [-1, 1] on a random ``keep`` share of ``dates`` (so some lookups are stale)."""
    rng = np.random.default_rng(seed)
    mask = np.asarray(rng.uniform(size=dates.shape[0]) < keep)
    return SentimentSeries(dates[mask], np.tanh(rng.normal(0.0, 0.7, int(mask.sum()))))
