"""The embedded default market: deterministic synthetic daily bars and sentiment (numpy only).

``generate_market(symbol, start, end, seed)`` draws one crypto-like market:

* a bar for every calendar day from ``start`` to ``end`` inclusive (no weekends off);
* volatility from a three-state Markov chain (calm / normal / turbulent; daily log-return vol
  1.2 % / 2.5 % / 5.5 %, spells of about 6 / 8 / 4 weeks on average);
* a trend from a slowly switching drift (bear / flat / bull, spells of about 3 months) plus a
  small pull from the shared macro factor and a weak pull back to an anchor level per symbol
  (about 10,000 for names containing BTC, 700 for ETH, else 10 .. 1,000), so prices stay
  within a plausible band over decades;
* fat-tailed returns (Student t, 5 degrees of freedom, scaled to unit variance);
* OHLC that always hold ``high >= max(open, close)`` and ``low <= min(open, close)``, with the
  open within a small gap of the previous close;
* volume (units of the asset) that rises with the volatility regime and with |return|;
* news sentiment (per symbol) in [-1, 1]: tanh of the last 5 days' return in units of its
  volatility, plus noise;
* macro sentiment (market-wide) in [-1, 1]: a slow AR(1) factor plus noise that depends on the
  seed and the calendar only, so every symbol of one seed sees the same macro series.

Determinism and stability: each random stream of a symbol (anchor, regime, trend, shocks,
bar noise, volume, news) has its own generator seeded by ``(seed, crc32(symbol),
crc32(stream name))``, the macro generator by ``(seed, fixed tag)``, and every stream is drawn
day by day from ``MACRO_EPOCH`` (1970-01-01) on, with the price path starting at the anchor
that day. The bar, news and macro scores of a date therefore depend only on ``(symbol, seed,
date)``: a shorter range is a bit-identical slice of a longer one, so extending a stored
market never changes a stored day. (Every array is computed on whole blocks of days from the
epoch, so numpy's vector kernels treat a day the same way whatever the range.) Python's
``hash()`` is never used: the market is the same in every process and on every machine (for
the same numpy version). ``GENERATOR_VERSION`` is bumped whenever this output changes.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from otonom_runtime._demo import DEMO_SEED
from otonom_runtime._errors import DataImportError
from otonom_runtime.importers import check_symbol_name
from otonom_runtime.store import (
    SYNTHETIC_SOURCE,
    Symbol,
    delete_symbol_data,
    find_symbol,
    get_or_create_symbol,
    insert_bars,
    insert_news,
    insert_shared_macro,
    macro_dates,
    news_dates,
    stored_bars,
)
from otonom_schema import MarketHistory, SentimentSeries, to_date

__all__ = [
    "DEMO_SEED",
    "GENERATOR_VERSION",
    "MACRO_EPOCH",
    "REGIME_NAMES",
    "TREND_NAMES",
    "SynthReport",
    "SyntheticMarket",
    "generate_macro",
    "generate_market",
    "hidden_drift",
    "hidden_trend",
    "write_synthetic",
]

GENERATOR_VERSION: Final = 2
"""Bumped whenever the generator's output for the same arguments changes (2: every stream is
drawn day by day from ``MACRO_EPOCH``, so a date's bar no longer depends on the range)."""

REGIME_NAMES: Final = ("calm", "normal", "turbulent")
_REGIME_VOL: Final = np.array([0.012, 0.025, 0.055])
_REGIME_SPELL_DAYS: Final = np.array([42.0, 56.0, 28.0])
_DRIFTS: Final = np.array([-0.0015, 0.0, 0.0015])  # bear / flat / bull, log return per day
TREND_NAMES: Final = ("down", "flat", "up")
"""The hidden trend states (``hidden_trend``), in the order of the drifts."""
_DRIFT_SPELL_DAYS: Final = 90.0
_REVERSION: Final = 0.002  # daily pull of log price towards the anchor level
_MACRO_BETA: Final = 0.002  # daily drift per unit of the macro factor
_MACRO_TAG: Final = 0x6D6163  # "mac"
MACRO_EPOCH: Final = dt.date(1970, 1, 1)
"""The first day a synthetic market may start: every random stream (macro and per symbol) is
drawn day by day from this day on."""
_MACRO_PHI: Final = 0.97
_T_DF: Final = 5.0
_MAX_DAYS: Final = 200 * 366
_BLOCK: Final = 512
_START_PRICES: Final = {"BTC": 10_000.0, "ETH": 700.0}  # the anchor level of the price
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


def _padded(days: int) -> int:
    """``days`` rounded up to whole blocks of ``_BLOCK``: every array is computed on a padded
    length, so numpy's vector kernels never treat a day as a loop tail in one call and as a
    full lane in another (bit-identical days whatever the range)."""
    return -(-days // _BLOCK) * _BLOCK


def _stream(seed: int, symbol: str, name: str) -> np.random.Generator:
    """The random stream ``name`` of ``symbol``, keyed by ``(seed, crc32(symbol), crc32(name))``."""
    return np.random.default_rng(
        [seed, zlib.crc32(symbol.encode("utf-8")), zlib.crc32(name.encode("ascii"))]
    )


def _markov(
    uniforms: npt.NDArray[np.float64], spell_days: npt.NDArray[np.float64], first: int
) -> npt.NDArray[np.int64]:
    """A Markov chain over len(spell_days) states from ``uniforms`` (n x 2): day i leaves state
    k when ``uniforms[i, 0] > 1 - 1/spell_days[k]``, for another state chosen by
    ``uniforms[i, 1]``. Day by day: day i depends on rows 0..i only."""
    k = spell_days.shape[0]
    stay = (1.0 - 1.0 / spell_days).tolist()
    leave = uniforms[:, 0].tolist()
    jump = (1 + np.floor(uniforms[:, 1] * (k - 1)).astype(np.int64)).tolist()
    out = np.empty(len(leave), dtype=np.int64)
    state = first
    for i, (u, j) in enumerate(zip(leave, jump, strict=True)):
        if i > 0 and u > stay[state]:
            state = (state + j) % k
        out[i] = state
    return out


def _macro_draws(seed: int, days: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The latent macro factor (unit-variance AR(1)) and the macro noise of every day from
    ``MACRO_EPOCH`` on (at least ``days`` days, padded to whole blocks).

    Both are drawn day by day, so two calls with the same seed agree on every day they share.
    """
    total = _padded(days)
    rng = np.random.default_rng([seed, _MACRO_TAG])
    draws = rng.standard_normal((total, 2))
    shocks = draws[:, 0] * np.sqrt(1.0 - _MACRO_PHI**2)
    factor = np.empty(total)
    level = 0.0
    for i, shock in enumerate(shocks.tolist()):
        level = _MACRO_PHI * level + shock
        factor[i] = level
    return factor, np.ascontiguousarray(draws[:, 1])


def _dates(start: dt.date, n: int) -> npt.NDArray[Any]:
    return np.datetime64(start.isoformat(), "D") + np.arange(n)


def generate_macro(start: dt.date, end: dt.date, seed: int) -> SentimentSeries:
    """Macro sentiment in [-1, 1] for every day of ``start`` .. ``end`` (depends on seed only)."""
    n = _check_range(start, end)
    _check_seed(seed)
    offset = (start - MACRO_EPOCH).days
    factor, noise = _macro_draws(seed, offset + n)
    scores = np.clip(np.tanh(0.8 * factor + 0.25 * noise), -1.0, 1.0)[offset : offset + n]
    return SentimentSeries(dates=_dates(start, n), scores=scores)


def _anchor_price(symbol: str, seed: int) -> float:
    rng = _stream(seed, symbol, "anchor")
    upper = symbol.upper()
    for key, price in _START_PRICES.items():
        if key in upper:
            return price * float(np.exp(rng.normal(0.0, 0.05)))
    return float(10.0 ** rng.uniform(1.0, 3.0))


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise DataImportError(f"seed {seed} is out of range; expected 0 <= seed < 2**63")


def generate_market(symbol: str, start: dt.date, end: dt.date, seed: int) -> SyntheticMarket:
    """The synthetic market of ``symbol`` from ``start`` to ``end`` inclusive (see module doc).

    The series on a date depends only on ``(symbol, seed, date)``: every random stream is drawn
    day by day from ``MACRO_EPOCH``, so a shorter range is an exact (bit-identical) slice of a
    longer one. Raises ``DataImportError`` for an empty or absurdly long range, a negative
    seed or an invalid symbol name.
    """
    symbol = check_symbol_name(symbol)
    n = _check_range(start, end)
    _check_seed(seed)
    offset = (start - MACRO_EPOCH).days
    total = _padded(offset + n)
    anchor = _anchor_price(symbol, seed)

    regimes = _markov(_stream(seed, symbol, "regime").random((total, 2)), _REGIME_SPELL_DAYS, 1)
    trend = _markov(
        _stream(seed, symbol, "trend").random((total, 2)), np.full(3, _DRIFT_SPELL_DAYS), 1
    )
    sigma = _REGIME_VOL[regimes]
    macro_factor = _macro_draws(seed, total)[0]

    shocks = _stream(seed, symbol, "shock").standard_t(_T_DF, size=total) * np.sqrt(
        (_T_DF - 2.0) / _T_DF
    )
    drift = _DRIFTS[trend] + _MACRO_BETA * macro_factor - 0.5 * sigma**2
    step = (drift + sigma * shocks).tolist()
    log_close = np.empty(total)
    anchor_log = math.log(anchor)
    level = anchor_log
    for i, move in enumerate(step):
        level += move - _REVERSION * (level - anchor_log)
        log_close[i] = level
    close = np.exp(log_close)
    prev_close = np.concatenate([[anchor], close[:-1]])
    bar_noise = _stream(seed, symbol, "bar").standard_normal((total, 3))
    gap, up, down = (np.ascontiguousarray(bar_noise[:, k]) for k in range(3))
    open_ = prev_close * np.exp(0.1 * gap * sigma)
    high = np.maximum(open_, close) * np.exp(np.abs(0.5 * up) * sigma)
    low = np.minimum(open_, close) * np.exp(-np.abs(0.5 * down) * sigma)

    returns = np.log(close / prev_close)
    activity = 0.8 * (sigma / _REGIME_VOL[1] - 1.0) + 0.35 * np.abs(returns) / sigma
    volume_noise = _stream(seed, symbol, "volume").standard_normal(total)
    volume = _BASE_VOLUME * np.exp(activity + 0.3 * volume_noise)

    window = 5
    before = np.concatenate([np.full(window, anchor_log), log_close[:-window]])
    recent = log_close - before
    news_noise = _stream(seed, symbol, "news").standard_normal(total)
    news = np.clip(np.tanh(0.6 * recent / (sigma * np.sqrt(window)) + 0.4 * news_noise), -1.0, 1.0)

    days = slice(offset, offset + n)
    dates = _dates(start, n)
    history = MarketHistory(
        dates=dates,
        open=open_[days],
        high=high[days],
        low=low[days],
        close=close[days],
        volume=volume[days],
        symbol=symbol,
    )
    return SyntheticMarket(
        symbol=symbol,
        history=history,
        news=SentimentSeries(dates=dates, scores=news[days]),
        macro=generate_macro(start, end, seed),
        regimes=regimes[days],
    )


def hidden_trend(symbol: str, start: dt.date, end: dt.date, seed: int) -> npt.NDArray[np.int64]:
    """The hidden trend state of ``symbol``'s synthetic market on each day ``start .. end``
    (an index into ``TREND_NAMES``: the drift ``generate_market`` drew that day's return
    with), for an upper bound that is told what no causal policy can know. The same stream as
    the generator's, so it matches ``generate_market`` for the same arguments."""
    symbol = check_symbol_name(symbol)
    n = _check_range(start, end)
    _check_seed(seed)
    offset = (start - MACRO_EPOCH).days
    total = _padded(offset + n)
    trend = _markov(
        _stream(seed, symbol, "trend").random((total, 2)), np.full(3, _DRIFT_SPELL_DAYS), 1
    )
    return trend[offset : offset + n]


def hidden_drift(symbol: str, start: dt.date, end: dt.date, seed: int) -> npt.NDArray[np.float64]:
    """The expected log return of the day after each day ``start .. end`` given that day's
    hidden state: its trend drift, the macro factor's pull, the volatility regime's
    ``-sigma**2 / 2`` and the pull back to the anchor from that day's close (the next day's
    trend, macro and regime taken as today's: they persist for weeks). What an observer told
    every hidden variable of ``generate_market`` would expect; the noise stays unknown."""
    market = generate_market(symbol, start, end, seed)
    symbol, n = market.symbol, market.history.close.size
    offset = (start - MACRO_EPOCH).days
    total = _padded(offset + n)
    days = slice(offset, offset + n)
    regimes = _markov(_stream(seed, symbol, "regime").random((total, 2)), _REGIME_SPELL_DAYS, 1)
    macro = _macro_draws(seed, total)[0][days]
    sigma = _REGIME_VOL[regimes[days]]
    trend = hidden_trend(symbol, start, end, seed)
    level = np.log(market.history.close) - math.log(_anchor_price(symbol, seed))
    out: npt.NDArray[np.float64] = (
        _DRIFTS[trend] + _MACRO_BETA * macro - 0.5 * sigma**2 - _REVERSION * level
    )
    return out


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
    return [to_date(d) for d in values]


_LISTED_DATES: Final = 3


def _listing(days: list[dt.date]) -> str:
    """``2018-01-01, 2018-01-02, 2018-01-03 and 5 more``."""
    shown = ", ".join(d.isoformat() for d in days[:_LISTED_DATES])
    more = len(days) - _LISTED_DATES
    return shown + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class _Plan:
    """What ``write_synthetic`` writes for one symbol (``row`` None: a new symbol)."""

    name: str
    row: Symbol | None
    market: SyntheticMarket
    bars: list[int]  # indices into the market of the bars to insert
    news: list[int]  # indices of the news scores to insert
    first: dt.date  # the symbol's stored range after the write
    last: dt.date


def _made_by(row: Symbol) -> str:
    meta = row.meta or {}
    version = meta.get("generator_version", "unknown")
    seed = meta.get("seed", "unknown")
    return f"generator version {version} seed {seed}"


def _plan(
    session: Session,
    name: str,
    start: dt.date,
    end: dt.date,
    seed: int,
    replace: bool,
) -> _Plan:
    """Check ``name`` against the store and plan its writes; raises before anything is written.

    Only missing days are added; a stored bar that differs from the generated one, or stored
    bars made by another generator version or seed, refuse the symbol unless ``replace``.
    """
    market = generate_market(name, start, end, seed)
    days = _py_dates(market.history.dates)
    everything = list(range(len(days)))
    row = find_symbol(session, name)
    if row is None:
        return _Plan(name, None, market, everything, everything, start, end)
    if not row.is_synthetic:
        raise DataImportError(
            f"symbol {name!r} holds imported data ({row.source}); choose another name "
            "for synthetic data"
        )
    if replace:
        return _Plan(name, row, market, everything, everything, start, end)
    stored = {
        day: (b.open, b.high, b.low, b.close, b.volume)
        for day, b in stored_bars(session, row.id).items()
    }
    h = market.history
    made = _made_by(row)
    this = f"generator version {GENERATOR_VERSION} seed {seed}"
    again = (
        f"; nothing was written; add --replace to delete its stored bars and news sentiment "
        f"and generate {start} .. {end} anew"
    )
    differ = [
        d
        for d, *values in zip(days, h.open, h.high, h.low, h.close, h.volume, strict=True)
        if d in stored and stored[d] != tuple(float(v) for v in values)
    ]
    if differ:
        by = (
            f" (they were made by {made})"
            if made != this
            else " (made by the same version and seed: another numpy version?)"
        )
        raise DataImportError(
            f"symbol {name!r}: {len(differ)} stored "
            f"bar{' differs' if len(differ) == 1 else 's differ'} from {this}{by}: "
            f"{_listing(differ)}" + again
        )
    if stored and made != this:
        raise DataImportError(
            f"symbol {name!r}: its stored bars {min(stored)} .. {max(stored)} were made by "
            f"{made}; adding {start} .. {end} from {this} would not continue that series" + again
        )
    have_news = news_dates(session, row.id, SYNTHETIC_SOURCE, start, end)
    return _Plan(
        name,
        row,
        market,
        [i for i, d in enumerate(days) if d not in stored],
        [i for i, d in enumerate(days) if d not in have_news],
        min([start, *stored]),
        max([end, *stored]),
    )


def _write_plan(session: Session, plan: _Plan, symbol_id: int, *, replace: bool) -> None:
    """Write one symbol's planned bars and news (after deleting its stored ones when
    ``replace`` and the symbol existed)."""
    if replace and plan.row is not None:
        delete_symbol_data(session, symbol_id, SYNTHETIC_SOURCE)
    market = plan.market
    h = market.history
    days = _py_dates(h.dates)
    if plan.bars:
        insert_bars(
            session,
            [
                {
                    "symbol_id": symbol_id,
                    "date": days[i],
                    "open": float(h.open[i]),
                    "high": float(h.high[i]),
                    "low": float(h.low[i]),
                    "close": float(h.close[i]),
                    "volume": float(h.volume[i]),
                }
                for i in plan.bars
            ],
        )
    if plan.news:
        insert_news(
            session,
            [
                {
                    "symbol_id": symbol_id,
                    "source": SYNTHETIC_SOURCE,
                    "date": days[i],
                    "score": float(market.news.scores[i]),
                }
                for i in plan.news
            ],
        )


def _write_macro(session: Session, start: dt.date, end: dt.date, seed: int) -> int:
    """Store the synthetic macro scores of the days in ``start`` .. ``end`` that have none (the
    series is shared by every symbol and seed); returns how many rows were added."""
    macro = generate_macro(start, end, seed)
    have = macro_dates(session, SYNTHETIC_SOURCE, start, end)
    new_macro = [
        {"source": SYNTHETIC_SOURCE, "date": d, "score": float(s)}
        for d, s in zip(_py_dates(macro.dates), macro.scores, strict=True)
        if d not in have
    ]
    return insert_shared_macro(session, new_macro)


def write_synthetic(
    session: Session,
    symbols: list[str],
    start: dt.date,
    end: dt.date,
    seed: int,
    *,
    replace: bool = False,
) -> SynthReport:
    """Generate and store the markets of ``symbols`` (``Symbol.is_synthetic=True``).

    Rules: stored bars are never changed. Only days without a bar get one (and days without a
    news score get one), so a repeated call writes nothing and another range extends the
    stored series seamlessly (a date's bar depends only on symbol, seed and date). A symbol
    whose stored bars differ from the generated ones on a shared day, or were made by another
    generator version or seed, is refused with ``DataImportError`` naming the first differing
    dates and ``--replace``; with ``replace=True`` its stored bars and news are deleted and
    ``start`` .. ``end`` is written anew. A symbol holding imported (non-synthetic) data is
    refused. Every symbol is checked before anything is written. Every sentiment row
    written has source ``SYNTHETIC_SOURCE`` (read only by synthetic symbols, unless a
    strategy names it); sentiment of other sources is never touched. The symbol's ``meta`` records
    the generator version, the seed and the stored range. Macro sentiment is shared
    by every seed: only days without a synthetic macro score get one.
    """
    if not symbols:
        raise DataImportError("no symbols given; expected at least one, e.g. DEMO-BTC")
    names = [check_symbol_name(s) for s in symbols]
    dupes = sorted({s for s in names if names.count(s) > 1})
    if dupes:
        raise DataImportError(f"symbols repeated: {', '.join(dupes)}; expected each once")
    _check_range(start, end)
    _check_seed(seed)
    plans = [_plan(session, name, start, end, seed, replace) for name in names]
    bars_written = news_written = 0
    unchanged: list[str] = []
    for plan in plans:
        name, row = plan.name, plan.row
        if row is not None and not plan.bars and not plan.news:
            unchanged.append(name)
            continue
        meta = _meta(plan.first, plan.last, seed)
        if row is None:
            row, created = get_or_create_symbol(
                session, name, source="synthetic", is_synthetic=True, meta=meta
            )
            if not created:  # another writer made the symbol meanwhile: plan against its rows
                plan = _plan(session, name, start, end, seed, replace)
                row, meta = plan.row, _meta(plan.first, plan.last, seed)
                assert row is not None
                if not plan.bars and not plan.news:
                    unchanged.append(name)
                    continue
        _write_plan(session, plan, row.id, replace=replace)
        row.meta = meta
        bars_written += len(plan.bars)
        news_written += len(plan.news)

    written_macro = _write_macro(session, start, end, seed)
    session.flush()
    return SynthReport(
        symbols=tuple(names),
        start=start,
        end=end,
        seed=seed,
        bars=bars_written,
        news=news_written,
        macro=written_macro,
        unchanged=tuple(unchanged),
    )
