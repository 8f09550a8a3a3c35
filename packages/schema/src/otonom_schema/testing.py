"""Test helpers shipped as public API (numpy only): random and adversarial market histories,
calendars of bar dates.

``random_history`` and ``random_sentiment`` live in ``otonom_schema.synthetic`` (production
code may use them; it may not import this module) and are re-exported here.

Used by the test suites of all three packages; also handy in notebooks. Every generator is
deterministic for a given seed.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt

from otonom_schema._features import MarketHistory
from otonom_schema.synthetic import random_history, random_sentiment

__all__ = ["adversarial_histories", "calendar_days", "random_history", "random_sentiment"]


def calendar_days(
    first: dt.date, last: dt.date, *, weekdays: bool = False
) -> npt.NDArray[np.datetime64]:
    """The bar dates of ``first .. last`` as datetime64[D]: every day (a crypto calendar), or
    with ``weekdays`` Monday to Friday only (a stock calendar without holidays)."""
    days = np.arange(np.datetime64(first, "D"), np.datetime64(last, "D") + 1)
    if weekdays:  # 1970-01-01 was a Thursday: day number + 3 mod 7 is Monday = 0
        days = days[(days.astype(np.int64) + 3) % 7 < 5]
    return days


def adversarial_histories() -> dict[str, MarketHistory]:
    """Edge cases for the feature maths: each must give valid, bounded, causal features."""
    base = np.datetime64("2021-03-01", "D")
    out: dict[str, MarketHistory] = {}

    def make(
        name: str,
        close: np.ndarray,
        volume: np.ndarray,
        dates: np.ndarray | None = None,
        spread: float = 0.01,
    ) -> None:
        n = close.shape[0]
        d = base + np.arange(n) if dates is None else dates
        out[name] = MarketHistory(
            d, close, close * (1 + spread), close * (1 - spread), close, volume, symbol=name
        )

    make("single_bar", np.array([100.0]), np.array([10.0]))
    make("two_bars", np.array([100.0, 101.0]), np.array([10.0, 12.0]))
    make("flat_prices", np.full(300, 50.0), np.full(300, 5.0), spread=0.0)
    make("zero_volume", 100 * np.exp(np.linspace(0, 0.5, 300)), np.zeros(300))
    rng = np.random.default_rng(3)
    walk = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 400)))
    vol = rng.lognormal(5, 1, 400)
    vol[::17] = 0.0
    gaps = base + np.cumsum(rng.choice([1, 1, 1, 2, 3, 10, 40], size=400))
    make("gaps_and_zero_volume", walk, vol, dates=gaps)
    crash = np.concatenate([np.full(150, 1000.0), [100.0, 5.0, 4000.0], np.full(150, 4000.0)])
    make(
        "crash_and_spike",
        crash,
        np.concatenate([np.full(150, 1.0), [1e9, 0.0, 1e-9], np.full(150, 1.0)]),
    )
    make("exactly_lookback", walk[:140], vol[:140])
    make("tiny_prices", 1e-8 * np.exp(np.cumsum(rng.normal(0, 0.05, 200))), np.full(200, 1e12))
    return out
