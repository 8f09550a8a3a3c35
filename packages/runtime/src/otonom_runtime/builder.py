"""The live state builder: the store's bars + a portfolio -> the ``RlState`` the policy sees.

All feature maths is ``otonom_schema``'s (``compute_state`` / ``compute_states``), so a state
built here equals the offline dataset's row for the same symbol, date and portfolio.

Per call, ``build_state`` costs one SQL round trip (plus one, the first time a symbol is seen,
for its kind): a single statement reads the newest bar date on or before the decision date, the
first bar date, and the latest news and macro scores of the symbol's sentiment sources
(``otonom_runtime.store.sentiment_source``, the rule the backtest and the dataset use). The
bar-derived features are cached per (symbol, newest bar date, decision date): a new bar changes
the key, so the cache is invalidated by new bars without re-reading any history, and a daemon
that ticks many times a day recomputes nothing but the portfolio and sentiment columns.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final, NoReturn

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from otonom_runtime._errors import StateBuildError
from otonom_runtime.store import (
    check_source_name,
    get_symbol,
    load_history,
    load_macro,
    load_news,
    probe_latest,
    sentiment_source,
)
from otonom_schema import (
    LOOKBACK,
    PORTFOLIO_COLUMNS,
    DateError,
    DateLike,
    PortfolioSnapshot,
    RlState,
    SchemaError,
    compute_state,
    compute_states,
    feature_index,
    sentiment_feature,
    to_date,
    validate_states,
)

__all__ = ["DEFAULT_MAX_STALENESS_DAYS", "RlStateBuilder"]

DEFAULT_MAX_STALENESS_DAYS: Final = 7
"""The newest bar may be this many days older than the decision date (DSI drops meanwhile)."""

_NEWS: Final = feature_index("news_sentiment")
_MACRO: Final = feature_index("macro_sentiment")
_CACHE_SIZE: Final = 256


def _as_date(value: DateLike, what: str = "date") -> dt.date:
    try:
        return to_date(value)
    except DateError as exc:
        raise StateBuildError(f"{what}: {exc}") from None


class RlStateBuilder:
    """Builds states for a symbol and date from the store, with bars dated <= that date only.

    ``session``: an open SQLAlchemy session on the store (``otonom_runtime.store.get_session``).
    ``max_staleness_days``: how old the newest bar may be before ``build_state`` refuses
    ("no bar near the date"); within it, DSI is lowered as ``docs/schema.md`` documents.
    ``news_source`` / ``macro_source``: the sentiment source to read (a strategy's
    ``data.news_source`` / ``data.macro_source``); None (default) = by the symbol's kind,
    ``"synthetic"`` for a synthetic symbol and ``"user"`` for a real one, as the backtest
    reads, so a live state equals the dataset row of the same symbol, date and portfolio.
    """

    def __init__(
        self,
        session: Session,
        *,
        max_staleness_days: int = DEFAULT_MAX_STALENESS_DAYS,
        news_source: str | None = None,
        macro_source: str | None = None,
    ) -> None:
        if max_staleness_days < 0:
            raise ValueError(f"max_staleness_days is {max_staleness_days}; expected >= 0")
        self.session = session
        self.max_staleness_days = max_staleness_days
        self.news_source = None if news_source is None else check_source_name(news_source)
        self.macro_source = None if macro_source is None else check_source_name(macro_source)
        self._sources: dict[str, tuple[str, str]] = {}
        self._market: OrderedDict[tuple[str, dt.date, dt.date], npt.NDArray[np.float32]] = (
            OrderedDict()
        )

    # --- one date ------------------------------------------------------------------------------

    def build_state(
        self,
        symbol: str,
        current_date: DateLike,
        current_position: float = 0.0,
        portfolio_equity: float = 10000.0,
        cash: float | None = None,
        leverage: float | None = None,
        days_since_last_trade: float | None = None,
    ) -> RlState:
        """The state of ``symbol`` at the close of ``current_date`` for the given portfolio.

        Portfolio defaults: ``leverage`` = ``abs(current_position)``; cash fraction =
        ``cash / portfolio_equity`` when ``cash`` is given, else ``1 - leverage`` (floored at 0);
        ``days_since_last_trade`` None = never traded / unknown (the feature saturates at 1).

        Raises ``UnknownSymbolError`` for a symbol not in the store, ``StateBuildError`` for a
        date before the first bar or with no bar within ``max_staleness_days``, and
        ``otonom_schema.SchemaError`` for a portfolio outside the schema's ranges.
        """
        day = _as_date(current_date, "current_date")
        portfolio = self._portfolio(
            current_position, portfolio_equity, cash, leverage, days_since_last_trade
        )
        probe = self._probe(symbol, day)
        if probe is None:  # pragma: no cover (_sources already refused an unknown symbol)
            get_symbol(self.session, symbol)  # raises UnknownSymbolError naming known symbols
            raise AssertionError("unreachable")
        last, first, news_day, news, macro_day, macro = probe
        if last is None:
            self._raise_no_bar(symbol, day, first)
        self._check_staleness(symbol, day, last)
        row = self._market_row(symbol, last, day).copy()
        row[_NEWS] = sentiment_feature(news_day, news, day)
        row[_MACRO] = sentiment_feature(macro_day, macro, day)
        row[PORTFOLIO_COLUMNS] = portfolio.features()
        return RlState.from_array(row)

    def _probe(self, symbol: str, day: dt.date) -> tuple[Any, ...] | None:
        """The store's per-tick read (``otonom_runtime.store.probe_latest``) for ``symbol``'s
        sentiment sources: newest bar <= day, first bar, latest news and macro scores <= day;
        None when the symbol is not in the store."""
        news_source, macro_source = self.sources(symbol)
        return probe_latest(self.session, symbol, day, news_source, macro_source)

    def sources(self, symbol: str) -> tuple[str, str]:
        """The (news, macro) sentiment sources ``symbol`` reads here (its kind is read once).

        Raises ``UnknownSymbolError`` for a symbol not in the store.
        """
        found = self._sources.get(symbol)
        if found is None:
            row = get_symbol(self.session, symbol)
            found = (
                sentiment_source(row, self.news_source),
                sentiment_source(row, self.macro_source),
            )
            self._sources[symbol] = found
        return found

    @staticmethod
    def _raise_no_bar(symbol: str, day: dt.date, first: dt.date | None) -> NoReturn:
        if first is None:
            raise StateBuildError(f"{symbol!r} has no bars in the store")
        raise StateBuildError(
            f"{day.isoformat()} is before the first bar of {symbol!r} ({first.isoformat()}); "
            "expected a date on or after it"
        )

    def _check_staleness(self, symbol: str, day: dt.date, last: dt.date) -> None:
        age = (day - last).days
        if age > self.max_staleness_days:
            raise StateBuildError(
                f"no bar of {symbol!r} near {day.isoformat()}: the newest bar on or before it is "
                f"{last.isoformat()}, {age} days older; max_staleness_days is "
                f"{self.max_staleness_days}"
            )

    def _market_row(self, symbol: str, last: dt.date, day: dt.date) -> npt.NDArray[np.float32]:
        key = (symbol, last, day)
        row = self._market.get(key)
        if row is not None:
            self._market.move_to_end(key)
            return row
        tail = load_history(self.session, symbol, end=last, last_n=LOOKBACK)
        row = compute_state(tail, at=day).to_array()
        row.flags.writeable = False
        self._market[key] = row
        if len(self._market) > _CACHE_SIZE:
            self._market.popitem(last=False)
        return row

    @staticmethod
    def _portfolio(
        position: float,
        equity: float,
        cash: float | None,
        leverage: float | None,
        days: float | None,
    ) -> PortfolioSnapshot:
        if not (math.isfinite(equity) and equity > 0):
            raise SchemaError(f"portfolio_equity is {equity}; expected a finite amount > 0")
        lev = abs(position) if leverage is None else leverage
        cash_fraction = max(0.0, 1.0 - lev) if cash is None else cash / equity
        return PortfolioSnapshot(
            position=position,
            leverage=lev,
            cash_fraction=cash_fraction,
            days_since_last_trade=math.inf if days is None else days,
        )

    def clear_cache(self) -> None:
        """Forget the cached bar features (e.g. after bars were corrected in place)."""
        self._market.clear()

    # --- many dates -----------------------------------------------------------------------------

    def build_states(
        self,
        symbol: str,
        dates: Sequence[DateLike] | npt.NDArray[Any],
        portfolio: PortfolioSnapshot | npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float32]:
        """States for many dates of one symbol, shape (N, 34) float32, in the order given.

        Bars, news and macro are read once (three queries) and the features of every bar are
        computed together (``compute_states``); a date that is not a bar date gets the one-date
        path with staleness. ``portfolio``: None (flat, never traded), one
        ``PortfolioSnapshot`` for all rows, or an (N, 4) array from
        ``otonom_schema.portfolio_feature_matrix`` (one portfolio per date).
        """
        days = [_as_date(d) for d in dates]
        n = len(days)
        if n == 0:
            return np.empty((0, 34), dtype=np.float32)
        end = max(days)
        history = load_history(self.session, symbol, end=end)
        news_source, macro_source = self.sources(symbol)
        news = load_news(self.session, symbol, source=news_source, end=end)
        macro = load_macro(self.session, source=macro_source, end=end)
        bar_days = history.dates
        wanted = np.array(days, dtype="datetime64[D]")
        pos = np.searchsorted(bar_days, wanted, side="right") - 1
        if (pos < 0).any():
            i = int(np.argmax(pos < 0))
            raise StateBuildError(
                f"{days[i].isoformat()} (row {i}) is before the first bar of {symbol!r} "
                f"({bar_days[0]}); expected dates on or after it"
            )
        on_bar = bar_days[pos] == wanted
        out = np.empty((n, 34), dtype=np.float64)
        if on_bar.any():
            every = compute_states(history, news=news, macro=macro)
            out[on_bar] = every[pos[on_bar]]
        for k in np.flatnonzero(~on_bar).tolist():
            last = to_date(bar_days[pos[k]])
            self._check_staleness(symbol, days[k], last)
            out[k] = compute_state(history, at=days[k], news=news, macro=macro).to_array()
        out[:, PORTFOLIO_COLUMNS] = self._portfolio_rows(portfolio, n)
        return validate_states(out)

    @staticmethod
    def _portfolio_rows(
        portfolio: PortfolioSnapshot | npt.NDArray[np.float64] | None, n: int
    ) -> npt.NDArray[np.float64]:
        if portfolio is None:
            portfolio = PortfolioSnapshot()
        if isinstance(portfolio, PortfolioSnapshot):
            return np.tile(portfolio.features(), (n, 1))
        rows = np.asarray(portfolio, dtype=np.float64)
        if rows.shape != (n, 4):
            raise SchemaError(
                f"portfolio features have shape {rows.shape}; expected ({n}, 4) from "
                "otonom_schema.portfolio_feature_matrix"
            )
        return rows
