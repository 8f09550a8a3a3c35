"""The embedded default market: deterministic synthetic daily bars and sentiment (numpy only).

``generate_market(symbol, start, end, seed)`` draws one crypto-like market:

* a bar for every calendar day from ``start`` to ``end`` inclusive (no weekends off);
* volatility from a three-state Markov chain (calm / normal / turbulent; daily log-return vol
  1.2 % / 2.5 % / 5.5 %, spells of about 6 / 8 / 4 weeks on average);
* a trend from a slowly switching drift (bear / flat / bull, spells of about 3 months) plus a
  small pull from the shared macro factor and a weak pull back to the start level, so prices
  stay within a plausible band over years;
* fat-tailed returns (Student t, 5 degrees of freedom, scaled to unit variance);
* OHLC that always hold ``high >= max(open, close)`` and ``low <= min(open, close)``, with the
  open within a small gap of the previous close;
* volume (units of the asset) that rises with the volatility regime and with |return|;
* news sentiment (per symbol) in [-1, 1]: tanh of the last 5 days' return in units of its
  volatility, plus noise;
* macro sentiment (market-wide) in [-1, 1]: a slow AR(1) factor plus noise that depends on the
  seed and the calendar only, so every symbol of one seed sees the same macro series.

Determinism: the random generator of a symbol is seeded by ``(seed, crc32(symbol))``, so a
market is a function of ``(symbol, seed, start, end)``; the macro generator is seeded by
``(seed, fixed tag)`` and drawn day by day from ``MACRO_EPOCH`` (1970-01-01), so macro scores of
one seed agree on every shared day whatever the range. Python's ``hash()`` is never used: the
market is the same in every process and on every machine (for the same numpy version).
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from otonom_runtime._errors import DataImportError
from otonom_runtime.importers import check_symbol_name
from otonom_runtime.store import (
    SYNTHETIC_SOURCE,
    Bar,
    MacroSentiment,
    NewsSentiment,
    get_or_create_symbol,
)
from otonom_schema import MarketHistory, SentimentSeries

__all__ = [
    "GENERATOR_VERSION",
    "MACRO_EPOCH",
    "REGIME_NAMES",
    "SynthReport",
    "SyntheticMarket",
    "generate_macro",
    "generate_market",
    "write_synthetic",
]

GENERATOR_VERSION: Final = 1
"""Bumped whenever the generator's output for the same arguments changes."""

REGIME_NAMES: Final = ("calm", "normal", "turbulent")
_REGIME_VOL: Final = np.array([0.012, 0.025, 0.055])
_REGIME_SPELL_DAYS: Final = np.array([42.0, 56.0, 28.0])
_DRIFTS: Final = np.array([-0.0015, 0.0, 0.0015])  # bear / flat / bull, log return per day
_DRIFT_SPELL_DAYS: Final = 90.0
_REVERSION: Final = 0.002  # daily pull of log price towards the start level
_MACRO_BETA: Final = 0.002  # daily drift per unit of the macro factor
_MACRO_TAG: Final = 0x6D6163  # "mac"
MACRO_EPOCH: Final = dt.date(1970, 1, 1)
"""The first day a synthetic market may start (the macro series is drawn from this day on)."""
_MACRO_PHI: Final = 0.97
_T_DF: Final = 5.0
_MAX_DAYS: Final = 200 * 366
_START_PRICES: Final = {"BTC": 10_000.0, "ETH": 700.0}
_BASE_VOLUME: Final = 20_000.0


@dataclass(frozen=True)
class SyntheticMarket:
    """One generated market: bars, news and macro sentiment, and the hidden vol regime.

    ``regimes[i]`` is the index into ``REGIME_NAMES`` of bar i's volatility state.
    """

    symbol: str
    history: MarketHistory
    news: SentimentSeries
    macro: SentimentSeries
    regimes: npt.NDArray[np.int64]


def _check_range(start: dt.date, end: dt.date) -> int:
    if start < MACRO_EPOCH:
        raise DataImportError(
            f"synthetic range starts {start}; expected a start on or after {MACRO_EPOCH}"
        )
    days = (end - start).days + 1
    if days < 1:
        raise DataImportError(f"synthetic range {start} .. {end} is empty; expected start <= end")
    if days > _MAX_DAYS:
        raise DataImportError(
            f"synthetic range {start} .. {end} spans {days} days; expected at most {_MAX_DAYS}"
        )
    return days


def _markov(
    rng: np.random.Generator, n: int, spell_days: npt.NDArray[np.float64], first: int
) -> npt.NDArray[np.int64]:
    """A Markov chain over len(spell_days) states; leaving state k moves to another uniformly."""
    k = spell_days.shape[0]
    stay = 1.0 - 1.0 / spell_days
    leave = rng.random(n)
    jump = rng.integers(1, k, size=n)
    out = np.empty(n, dtype=np.int64)
    state = first
    for i in range(n):
        if i > 0 and leave[i] > stay[state]:
            state = int((state + jump[i]) % k)
        out[i] = state
    return out


def _macro_draws(
    seed: int, start: dt.date, n: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The latent macro factor (unit-variance AR(1)) and the macro noise for ``n`` days.

    Both are drawn day by day from ``MACRO_EPOCH`` on, so two calls with the same seed agree on
    every day they share, whatever their ranges.
    """
    offset = (start - MACRO_EPOCH).days
    total = offset + n
    rng = np.random.default_rng([seed, _MACRO_TAG])
    draws = rng.standard_normal((total, 2))
    shocks = draws[:, 0] * np.sqrt(1.0 - _MACRO_PHI**2)
    factor = np.empty(total)
    level = 0.0
    for i in range(total):
        level = _MACRO_PHI * level + shocks[i]
        factor[i] = level
    return factor[offset:], draws[offset:, 1]


def _dates(start: dt.date, n: int) -> npt.NDArray[Any]:
    return np.datetime64(start.isoformat(), "D") + np.arange(n)


def generate_macro(start: dt.date, end: dt.date, seed: int) -> SentimentSeries:
    """Macro sentiment in [-1, 1] for every day of ``start`` .. ``end`` (depends on seed only)."""
    n = _check_range(start, end)
    factor, noise = _macro_draws(seed, start, n)
    scores = np.clip(np.tanh(0.8 * factor + 0.25 * noise), -1.0, 1.0)
    return SentimentSeries(dates=_dates(start, n), scores=scores)


def _start_price(symbol: str, rng: np.random.Generator) -> float:
    upper = symbol.upper()
    for key, price in _START_PRICES.items():
        if key in upper:
            return price * float(np.exp(rng.normal(0.0, 0.05)))
    return float(10.0 ** rng.uniform(1.0, 3.0))


def generate_market(symbol: str, start: dt.date, end: dt.date, seed: int) -> SyntheticMarket:
    """The synthetic market of ``symbol`` from ``start`` to ``end`` inclusive (see module doc).

    Deterministic per ``(symbol, seed, start, end)``; raises ``DataImportError`` for an empty
    or absurdly long range or an invalid symbol name.
    """
    symbol = check_symbol_name(symbol)
    n = _check_range(start, end)
    rng = np.random.default_rng([seed, zlib.crc32(symbol.encode("utf-8"))])
    price0 = _start_price(symbol, rng)

    regimes = _markov(rng, n, _REGIME_SPELL_DAYS, first=1)
    trend = _markov(rng, n, np.full(3, _DRIFT_SPELL_DAYS), first=1)
    sigma = _REGIME_VOL[regimes]
    macro_factor = _macro_draws(seed, start, n)[0]

    shocks = rng.standard_t(_T_DF, size=n) * np.sqrt((_T_DF - 2.0) / _T_DF)
    drift = _DRIFTS[trend] + _MACRO_BETA * macro_factor - 0.5 * sigma**2
    log_close = np.empty(n)
    level = np.log(price0)
    anchor = level
    for i in range(n):
        level += drift[i] - _REVERSION * (level - anchor) + sigma[i] * shocks[i]
        log_close[i] = level
    close = np.exp(log_close)
    prev_close = np.concatenate([[price0], close[:-1]])
    open_ = prev_close * np.exp(rng.normal(0.0, 0.1, n) * sigma)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.5, n)) * sigma)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.5, n)) * sigma)

    returns = np.log(close / prev_close)
    activity = 0.8 * (sigma / _REGIME_VOL[1] - 1.0) + 0.35 * np.abs(returns) / sigma
    volume = _BASE_VOLUME * np.exp(activity + rng.normal(0.0, 0.3, n))

    window = 5
    cum = np.concatenate([[0.0], np.cumsum(returns)])
    idx = np.arange(n)
    recent = cum[idx + 1] - cum[np.maximum(idx + 1 - window, 0)]
    news = np.clip(
        np.tanh(0.6 * recent / (sigma * np.sqrt(window)) + 0.4 * rng.standard_normal(n)),
        -1.0,
        1.0,
    )

    dates = _dates(start, n)
    history = MarketHistory(
        dates=dates, open=open_, high=high, low=low, close=close, volume=volume, symbol=symbol
    )
    return SyntheticMarket(
        symbol=symbol,
        history=history,
        news=SentimentSeries(dates=dates, scores=news),
        macro=generate_macro(start, end, seed),
        regimes=regimes,
    )


@dataclass(frozen=True)
class SynthReport:
    """What ``write_synthetic`` did: rows written per kind, and the symbols left as they were."""

    symbols: tuple[str, ...]
    start: dt.date
    end: dt.date
    seed: int
    bars: int
    news: int
    macro: int
    unchanged: tuple[str, ...]

    def summary(self) -> str:
        """One line for people."""
        kept = f"; unchanged: {', '.join(self.unchanged)}" if self.unchanged else ""
        return (
            f"synthetic {', '.join(self.symbols)} {self.start} .. {self.end} seed {self.seed}: "
            f"{self.bars} bars, {self.news} news and {self.macro} macro scores written{kept}"
        )


def _meta(start: dt.date, end: dt.date, seed: int) -> dict[str, Any]:
    return {
        "generator": "otonom_runtime.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "start": start.isoformat(),
        "end": end.isoformat(),
    }


def _py_dates(values: npt.NDArray[Any]) -> list[dt.date]:
    return [dt.date.fromisoformat(str(d)) for d in values]


def write_synthetic(
    session: Session, symbols: list[str], start: dt.date, end: dt.date, seed: int
) -> SynthReport:
    """Generate and store the markets of ``symbols`` (``Symbol.is_synthetic=True``).

    Rules: a symbol already generated with the same seed, range and generator version is left
    as it is (so a repeated call writes nothing); a synthetic symbol made with other arguments
    has its bars and news replaced; a symbol holding imported (non-synthetic) data is refused
    with ``DataImportError``. Every sentiment row written has source ``SYNTHETIC_SOURCE``
    (read only by synthetic symbols, unless a strategy names it); sentiment of other sources
    is never touched. Macro sentiment is shared by every seed: only days without a synthetic
    macro score get one.
    """
    if not symbols:
        raise DataImportError("no symbols given; expected at least one, e.g. DEMO-BTC")
    names = [check_symbol_name(s) for s in symbols]
    dupes = sorted({s for s in names if names.count(s) > 1})
    if dupes:
        raise DataImportError(f"symbols repeated: {', '.join(dupes)}; expected each once")
    n_days = _check_range(start, end)
    meta = _meta(start, end, seed)
    bars_written = news_written = 0
    unchanged: list[str] = []
    for name in names:
        row, created = get_or_create_symbol(
            session, name, source="synthetic", is_synthetic=True, meta=meta
        )
        if not row.is_synthetic:
            raise DataImportError(
                f"symbol {name!r} holds imported data ({row.source}); choose another name "
                "for synthetic data"
            )
        if not created:
            count = session.execute(
                select(func.count(Bar.id)).where(Bar.symbol_id == row.id)
            ).scalar_one()
            if row.meta == meta and count == n_days:
                unchanged.append(name)
                continue
            session.execute(delete(Bar).where(Bar.symbol_id == row.id))
            session.execute(
                delete(NewsSentiment).where(
                    NewsSentiment.symbol_id == row.id, NewsSentiment.source == SYNTHETIC_SOURCE
                )
            )
            row.meta = meta
        market = generate_market(name, start, end, seed)
        h = market.history
        days = _py_dates(h.dates)
        session.execute(
            insert(Bar),
            [
                {
                    "symbol_id": row.id,
                    "date": d,
                    "open": float(o),
                    "high": float(hi),
                    "low": float(lo),
                    "close": float(c),
                    "volume": float(v),
                }
                for d, o, hi, lo, c, v in zip(
                    days, h.open, h.high, h.low, h.close, h.volume, strict=True
                )
            ],
        )
        session.execute(
            insert(NewsSentiment),
            [
                {"symbol_id": row.id, "source": SYNTHETIC_SOURCE, "date": d, "score": float(s)}
                for d, s in zip(days, market.news.scores, strict=True)
            ],
        )
        bars_written += n_days
        news_written += n_days

    macro = generate_macro(start, end, seed)
    have = set(
        session.execute(
            select(MacroSentiment.date).where(
                MacroSentiment.source == SYNTHETIC_SOURCE,
                MacroSentiment.date >= start,
                MacroSentiment.date <= end,
            )
        ).scalars()
    )
    new_macro = [
        {"source": SYNTHETIC_SOURCE, "date": d, "score": float(s)}
        for d, s in zip(_py_dates(macro.dates), macro.scores, strict=True)
        if d not in have
    ]
    if new_macro:
        session.execute(insert(MacroSentiment), new_macro)
    session.flush()
    return SynthReport(
        symbols=tuple(names),
        start=start,
        end=end,
        seed=seed,
        bars=bars_written,
        news=news_written,
        macro=len(new_macro),
        unchanged=tuple(unchanged),
    )
