"""The decision tick's ensemble: many symbols decided at once, as the backtester decides them.

``Ensemble`` is a strategy's analysts and model, loaded once (``from_strategy``); ``decide``
reads every symbol's bars and sentiment in batched statements (``read_tick``), builds the
market states with ``otonom_schema.market_feature_matrix`` (the backtester's call), and
``decide_states`` votes on them: the three analysts vectorised over all symbols
(``teacher_votes``, the backtester's ``_prepare``), the policy once through ``rl_votes``
(``predict_batch``, with the fallback of each row), the vote by ``decide_rows`` (the one rule,
in the strategy's RL mode: voter, sole or filter). The ensemble keeps its reads between calls
(``cache``: ``daemon.cache.TickCache``, the newest bars' states through
``otonom_schema.market_feature_panel``). Nothing here is a second copy of a feature, an
analyst or the vote: a tick's decision equals
the backtester's for the same day and portfolio (tested bit for bit).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from otonom_runtime._errors import DaemonError, StateBuildError
from otonom_runtime.backtest.runner import _make_rl, _symbols, _with_rl
from otonom_runtime.daemon.cache import TickCache
from otonom_runtime.daemon.rows import Portfolios, Rows
from otonom_runtime.ensemble import ANALYSTS, RlAnalyst, Signal, decide_rows, rl_votes
from otonom_runtime.store import load_macro
from otonom_runtime.store.ticks import load_tick_bars, load_tick_news
from otonom_runtime.teacher import teacher_votes
from otonom_schema import (
    PORTFOLIO_COLUMNS,
    Action,
    MarketHistory,
    PortfolioSnapshot,
    SentimentSeries,
    market_feature_matrix,
    validate_states,
)

if TYPE_CHECKING:
    from otonom_runtime.policy import RlPolicy
    from otonom_runtime.strategy import StrategyConfig

__all__ = [
    "LATENCY_WINDOW",
    "Columns",
    "Decisions",
    "Ensemble",
    "RowSignals",
    "SymbolInputs",
    "TickDecision",
    "read_tick",
]

log = logging.getLogger("otonom_runtime.daemon")
F64 = npt.NDArray[np.float64]
_ACTIONS: Final[dict[float, Action]] = {int(a): a for a in Action}
LATENCY_WINDOW: Final = 1000
"""How many of the newest predict calls ``Ensemble.latencies_ms`` keeps."""


@dataclass(frozen=True, slots=True)
class TickDecision:
    """The ensemble's decision for one symbol at the close of its bar ``date``.

    ``signals``: every analyst's signal by name (``ANALYSTS`` order; None where it did not
    vote: the RL analyst off or fallen back), a read-only mapping (``decide_states`` gives one
    whose ``Signal``s are built when read, from the tick's columns); ``portfolio``: the
    portfolio the state saw.
    """

    symbol: str
    date: dt.date
    action: Action
    strength: float
    confidence: float
    signals: Mapping[str, Signal | None]
    portfolio: PortfolioSnapshot


Columns = dict[str, tuple[list[Any], list[Any], list[Any]] | None]
"""Each analyst's signals of a tick by name (``ANALYSTS`` order): their actions, strengths and
confidences, one entry a row (None where it did not vote); None for an analyst that is off."""


class RowSignals(Mapping[str, "Signal | None"]):
    """One row's signals of a tick's ``Columns`` (``TickDecision.signals``): each ``Signal``
    made when read (a tick of thousands of symbols builds none it does not read)."""

    __slots__ = ("_columns", "_row")

    def __init__(self, columns: Columns, row: int) -> None:
        self._columns, self._row = columns, row

    def __getitem__(self, name: str) -> Signal | None:
        column = self._columns[name]
        if column is None or column[0][self._row] is None:
            return None
        row = self._row
        return Signal(column[0][row], column[1][row], column[2][row])

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __repr__(self) -> str:
        return repr(dict(self))


class Decisions(Rows[TickDecision]):
    """A tick's decisions as columns (``Ensemble.decide_columns``): each ``TickDecision``
    made when read (its ``signals`` a ``RowSignals`` of ``signals``, its portfolio from
    ``portfolios``), so a tick of thousands of symbols builds none it does not read.
    ``actions``: ``decide_rows``' action numbers (``Action`` values)."""

    __slots__ = ("actions", "confidences", "dates", "portfolios", "signals", "strengths", "symbols")
    PLURAL_COLUMNS = True

    def __init__(
        self,
        symbols: Sequence[str],
        dates: Sequence[dt.date],
        actions: list[int],
        strengths: list[float],
        confidences: list[float],
        signals: Columns,
        portfolios: Portfolios,
    ) -> None:
        n = len(symbols)
        if not (n == len(dates) == len(actions) == len(strengths) == len(confidences)):
            raise ValueError("columns of different lengths; expected one entry per decision")
        self.symbols, self.dates, self.actions = symbols, dates, actions
        self.strengths, self.confidences = strengths, confidences
        self.signals, self.portfolios = signals, portfolios

    def __len__(self) -> int:
        return len(self.actions)

    def row(self, i: int) -> TickDecision:
        return TickDecision(
            self.symbols[i],
            self.dates[i],
            _ACTIONS[self.actions[i]],
            self.strengths[i],
            self.confidences[i],
            RowSignals(self.signals, i),
            self.portfolios.row(i),
        )


@dataclass(frozen=True)
class SymbolInputs:
    """One symbol's reads for a tick: its bars up to the tick's date, its news from its
    source and the market-wide macro of its source (None: none stored)."""

    symbol: str
    symbol_id: int
    history: MarketHistory
    news: SentimentSeries | None
    macro: SentimentSeries | None
    sources: dict[str, str]

    @property
    def newest(self) -> dt.date:
        """The date of the newest bar (the bar a tick decides)."""
        out: dt.date = self.history.dates[-1].item()
        return out

    def market(self, first: int) -> F64:
        """The market states of bars ``first ..`` (``market_feature_matrix``, the
        backtester's call; portfolio columns neutral)."""
        return market_feature_matrix(self.history, self.news, self.macro, first=first)


def read_tick(
    session: Session, config: StrategyConfig, symbols: Sequence[str], end: dt.date
) -> tuple[list[SymbolInputs], list[str]]:
    """Every symbol's reads up to ``end`` in batched statements (one for the symbols, one for
    all their bars, one for all their news, one per macro source): the inputs of the symbols
    with a bar on or before ``end``, in the order given, and the names of those without.
    ``UnknownSymbolError`` for a symbol not in the store."""
    ids, sources = _symbols(session, config, symbols)
    bars = load_tick_bars(session, {ids[name]: name for name in symbols}, end)
    news = load_tick_news(session, {ids[name]: sources[name]["news"] for name in symbols}, end)
    macros = {
        source: load_macro(session, source=source, end=end)
        for source in sorted({s["macro"] for s in sources.values()})
    }
    inputs = [
        SymbolInputs(
            name,
            ids[name],
            bars[ids[name]],
            news.get(ids[name]),
            macros[sources[name]["macro"]],
            sources[name],
        )
        for name in symbols
        if ids[name] in bars
    ]
    return inputs, [name for name in symbols if ids[name] not in bars]


class Ensemble:
    """A strategy's ensemble for a daemon's own loop: the analysts and the model, loaded once.

    ``use_rl``: None follows the strategy file, False switches the RL analyst off, True needs
    a model (``policy`` or the file's). A model that fails to load is a fallback, not an
    error (the backtester's rule): the ensemble decides without it, ``rl_error`` says why.
    ``fallbacks`` counts every decision made without the RL analyst while it is on;
    ``latencies_ms``: the wall time of the newest ``LATENCY_WINDOW`` policy calls (one per
    ``decide_states`` with a model in service), in milliseconds. ``serve`` swaps in another
    model (the daemon's hot reload, ``ModelWatch``); ``policy_given``: the policy was handed
    in, not loaded from the strategy's model path. ``cache``: the reads kept between calls
    (``TickCache``; ``cache.clear()`` reads everything again).
    """

    def __init__(
        self,
        config: StrategyConfig,
        *,
        use_rl: bool | None = None,
        policy: RlPolicy | None = None,
    ) -> None:
        rl_on = config.rl_enabled if use_rl is None else use_rl
        self.config, self.params = _with_rl(config, rl_on, policy)
        self.rl: RlAnalyst | None = _make_rl(self.config, policy) if rl_on else None
        self.fallbacks = 0
        self.last_error: str | None = None if self.rl is None else self.rl.last_error
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.policy_given = policy is not None
        self.cache = TickCache()

    @classmethod
    def from_strategy(
        cls,
        path: str | os.PathLike[str],
        *,
        use_rl: bool | None = None,
        policy: RlPolicy | None = None,
    ) -> Ensemble:
        """The ensemble of the strategy file at ``path`` (``load_strategy``; with ``use_rl``
        False its model is not looked for: a strategy whose model is missing runs without
        the RL analyst)."""
        from otonom_runtime.strategy import load_strategy

        config = load_strategy(path, with_rl=use_rl is not False)
        return cls(config, use_rl=use_rl, policy=policy)

    @property
    def name(self) -> str:
        """The strategy's name (the live decisions' key)."""
        return self.config.name

    def serve(self, policy: RlPolicy) -> None:
        """Put ``policy`` (loaded and checked: ``load_rl_policy``) in service as the RL
        analyst from the next decision on. ``DaemonError`` with the RL analyst off."""
        if self.rl is None:
            raise DaemonError(
                f"strategy {self.name!r} has the RL analyst off; expected it on to serve a model"
            )
        self.rl = RlAnalyst(policy)
        self.last_error = None

    @property
    def rl_error(self) -> str | None:
        """Why the RL analyst is not in service (None: it is, or it is off)."""
        if self.rl is None or self.rl.policy is not None:
            return None
        return self.rl.last_error

    def decide(
        self,
        session: Session,
        symbols: Sequence[str],
        date: dt.date,
        portfolios: Mapping[str, PortfolioSnapshot] | None = None,
    ) -> list[TickDecision]:
        """Decide ``symbols`` at the close of their newest bar on or before ``date``, each with
        its portfolio (``portfolios``; a symbol left out: flat, never traded): the reads and
        states of the ensemble's ``cache`` (``TickCache``: only what is new since the last
        call), then ``decide_states``. ``StateBuildError`` for a symbol without a bar on or
        before ``date``. Every symbol asked is decided, however short its history:
        ``run_tick`` decides only those past the backtester's warm-up
        (``otonom_runtime.ranges.warmed_up``)."""
        names = list(dict.fromkeys(symbols))
        cached, missing = self.cache.refresh(session, self.config, names, date)
        if missing:
            raise StateBuildError(
                f"no bar of {', '.join(map(repr, missing))} dated on or before "
                f"{date.isoformat()}; expected one per symbol decided"
            )
        given = portfolios or {}
        return self.decide_states(
            cached.symbols,
            cached.newest,
            self.cache.market(cached),
            [given.get(symbol, PortfolioSnapshot()) for symbol in cached.symbols],
        )

    def decide_states(
        self,
        symbols: Sequence[str],
        dates: Sequence[dt.date],
        market: F64,
        portfolios: Sequence[PortfolioSnapshot],
    ) -> list[TickDecision]:
        """Decide N symbols from their market states ``market`` (N, 34) (portfolio columns
        ignored: each row's are filled from ``portfolios``): the three analysts on all rows at
        once, the policy in one batch (a row whose model output fails is that symbol's
        fallback), the vote of ``decide_rows`` in the strategy's RL mode (a fallback row: the
        three analysts' vote, in every mode). A state out of the schema's bounds raises
        ``otonom_schema.SchemaError`` naming its row (with the RL analyst on)."""
        return list(self.decide_columns(symbols, dates, market, portfolios)[0])

    def decide_columns(
        self,
        symbols: Sequence[str],
        dates: Sequence[dt.date],
        market: F64,
        portfolios: Sequence[PortfolioSnapshot],
    ) -> tuple[Decisions, Columns]:
        """``decide_states`` as columns (``Decisions``, a ``TickDecision`` made when read;
        ``portfolios``: any sequence of snapshots, read as columns: ``Portfolios`` as it is)
        and every analyst's signals as columns (what the decisions' ``signals`` read; a tick
        records them as they are)."""
        n = len(symbols)
        if not (n == len(dates) == len(portfolios) == market.shape[0]):
            raise ValueError(
                f"{n} symbols, {len(dates)} dates, {len(portfolios)} portfolios and "
                f"{market.shape[0]} states; expected one of each per symbol"
            )
        given = Portfolios.of(portfolios)
        signals, totals, sums = teacher_votes(self.params, market)
        rl, votes = self._rl_votes(market, given)
        weight = self.params.weights[3] if self.rl is not None else 0.0
        decided = decide_rows(
            totals.ravel().tolist(),
            sums.ravel().tolist(),
            votes,
            weight,
            self.params.min_score,
            self.params.rl_mode,
        )
        found: Columns = {
            name: None
            if s is None
            else (s.actions.tolist(), s.strengths.tolist(), s.confidences.tolist())
            for name, s in signals.items()
        }
        found["rl"] = rl
        columns: Columns = {name: found.get(name) for name in ANALYSTS}
        actions = cast("list[int]", decided[0::3])  # decide_rows' actions: ints
        out = Decisions(symbols, dates, actions, decided[1::3], decided[2::3], columns, given)
        return out, columns

    def _rl_votes(
        self, market: F64, portfolios: Portfolios
    ) -> tuple[tuple[list[Any], list[Any], list[Any]] | None, list[float | None] | None]:
        """The RL analyst's signals as a ``Columns`` entry (None where a row fell back; None
        with the RL analyst off) and the votes as ``decide_rows`` takes them (three numbers a
        row, None for a row without a vote; None with the RL analyst off): the states with
        their portfolio columns, validated once (float32, as the model reads them), through
        ``rl_votes``."""
        n = market.shape[0]
        if self.rl is None:
            return None, None
        states = market.copy()
        if n:  # the snapshots' features, all rows at once (bit for bit ``features()``)
            states[:, PORTFOLIO_COLUMNS] = portfolios.features()
        rows = validate_states(states)
        # one analyst for every row: each failure counted once by it, in row order
        analyst = RlAnalyst(self.rl.policy, reason=self.rl.last_error, quiet=True)
        started = time.perf_counter()
        sig, voted = rl_votes([analyst] * n, rows, validated=True)
        if self.rl.policy is not None:
            self.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        every = bool(voted.all())  # the usual case: no row fell back, nothing to blank
        ok = voted.tolist()
        columns = tuple(
            values if every else [v if good else None for v, good in zip(values, ok, strict=True)]
            for values in (sig.actions.tolist(), sig.strengths.tolist(), sig.confidences.tolist())
        )
        flat: list[Any] = [None] * (3 * n)
        flat[0::3], flat[1::3], flat[2::3] = columns
        self.fallbacks += analyst.fallbacks
        if analyst.fallbacks:
            self.last_error = analyst.last_error
            if self.rl.policy is not None:
                log.warning(
                    "RL analyst failed on %d of %d symbols, decided without it there: %s",
                    analyst.fallbacks,
                    n,
                    self.last_error,
                )
        return (columns[0], columns[1], columns[2]), flat
