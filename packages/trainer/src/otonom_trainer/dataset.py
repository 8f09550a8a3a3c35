"""The offline dataset: (state, action, strength) rows from the decisions of complete backtests.

Rules (each one tested):

* **Complete runs only.** A run whose status is ``running`` or ``failed`` is never read: by
  default it is skipped, and asking for it by id is a ``DatasetGenerationError``.
* **Which run (the teacher).** ``run_id=None`` takes, for each symbol on its own, the newest
  (``created_at``, then id) run that is complete, was made with the RL analyst off
  (``params["rl_enabled"]`` false), is not internal (``params["purpose"]`` not in
  ``otonom_runtime.backtest.INTERNAL_PURPOSES``: the gate's and the evaluation backtests) and
  *covers* the request for the symbol: its ``symbols`` hold it and its date range holds the
  first and the last bar the store has for the symbol in ``start_date .. end_date`` (when the
  store has none there, every run holding the symbol covers it, and the read below says that
  there is no decision). No such run is a ``DatasetGenerationError`` that lists every run
  holding the symbol with why it was passed over, and the ``otonom backtest`` command that
  makes one. A given ``run_id`` is used for every symbol and must be complete, hold each of
  them, not be internal (unless ``allow_internal_run``: the gate labels its own held-out run)
  and have the RL analyst off (unless ``allow_rl_run``: a policy trained on its predecessor's
  votes learns to copy that model, not the ensemble). The runs chosen are logged (INFO,
  ``otonom_trainer.dataset``), stored in the metadata as ``teacher`` (one line: run id,
  strategy, RL off/on, dates, symbols) and printed by ``save_dataset``.
* **Rows.** One row per decision of the run for the symbol dated in ``start_date ..
  end_date`` (both inclusive), symbols in the order given, dates ascending. ``action`` and
  ``strength`` are the decision's. The state is exactly what
  ``RlStateBuilder(session).build_state(symbol, date, current_position=position,
  leverage=leverage, cash=cash_fraction * equity, portfolio_equity=equity,
  days_since_last_trade=days)`` builds, with the portfolio stored on the decision row (the one
  the decision was made with; ``days_since_last_trade`` NULL = never traded = ``inf``); for a
  run whose strategy named sentiment sources, the builder made with those
  (``RlStateBuilder(session, news_source=..., macro_source=...)``).
* **Vectorised.** Per symbol: one query for the decisions, one for the bars from ``LOOKBACK -
  1`` bars before the first decision to the last decision (older bars are never read by any
  row's state), one for the news from ``SENTIMENT_MAX_AGE_DAYS`` days before the first decision
  (an older score is stale for every row; the states of the bars before it are computed but are
  no row); one macro query per macro source over the union of those ranges. ``compute_states``
  then computes the features of every bar read at once (the schema's batch path, proven equal
  to the builder's one-date path) and the rows are picked by date. Every decision date must be
  a bar date in the store (the backtest only decides on bar dates): anything else means the
  bars were changed after the run, and is refused.
* **Sentiment sources.** Each symbol's news and macro come from the sources its run read
  (``params["sentiment_sources"]``, recorded by the backtest); for a run that recorded none
  (made before sentiment had sources) the kind rule the backtest applies by default
  (``otonom_runtime.store.sentiment_source``: ``"synthetic"`` for a synthetic symbol, ``"user"``
  for a real one).
* **Metadata.** ``source="backtest"``, ``run_ids`` (sorted), ``symbol_runs`` ({symbol: run
  id}, which also maps each row to its run), ``runs`` (id, strategy name and hash, the run's own
  range, ``rl_enabled``, ``purpose``), ``teacher`` (the line above),
  ``strategy_names``/``strategy_hashes`` (sorted, distinct), ``symbols``,
  ``sentiment_sources`` ({symbol: {"news": source, "macro": source}}) and the requested
  ``start_date``/``end_date`` (ISO).

This module does not import torch.
"""

from __future__ import annotations

import bisect
import datetime as dt
import gc
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import Date, Integer, String, TextClause, bindparam, select, text
from sqlalchemy.orm import Session

from otonom_runtime.backtest import INTERNAL_PURPOSES
from otonom_runtime.store import BacktestRun, Symbol, fetch_raw, get_symbol, sentiment_source
from otonom_schema import (
    LOOKBACK,
    MATHS_PARAMS,
    STATE_DIM,
    MarketHistory,
    OfflineDataset,
    SchemaError,
    SentimentSeries,
    compute_states,
    portfolio_feature_matrix,
)
from otonom_schema import save_dataset as _write_npz

__all__ = [
    "DatasetGenerationError",
    "OfflineDatasetGenerator",
    "generate_dataset",
    "save_dataset",
]

DateLike = dt.date | str
log = logging.getLogger(__name__)
_SHOWN_RUNS: Final = 8  # runs listed (newest first) in the "no teacher" error, per symbol
_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()
_N = TypeVar("_N", bound=np.generic)


# The reads as plain SQL (valid on SQLite and PostgreSQL), run through the driver (see
# ``OfflineDatasetGenerator._fetch``). Same tables and order as the store's readers. Only the
# columns the rows need: the decision's JSON ``signals`` and ``equity`` are never read.
_DECISIONS: Final = text(
    """
    SELECT d.date, d.action, d.strength, d.position, d.leverage, d.cash_fraction,
           d.days_since_last_trade
    FROM decisions d JOIN symbols s ON d.symbol_id = s.id
    WHERE d.run_id = :run_id AND s.name = :symbol AND d.date >= :start AND d.date <= :end
    ORDER BY d.date
    """
).bindparams(
    bindparam("run_id", type_=Integer),
    bindparam("symbol", type_=String),
    bindparam("start", type_=Date),
    bindparam("end", type_=Date),
)
# The bars from the ``:back``-th bar before ``:first`` (or the oldest, if there are fewer) to
# ``:end``: all that the states from ``:first`` on read (the subquery walks the unique index).
_BARS: Final = text(
    """
    SELECT b.date, b.open, b.high, b.low, b.close, b.volume
    FROM bars b JOIN symbols s ON b.symbol_id = s.id
    WHERE s.name = :symbol AND b.date <= :end AND b.date >= COALESCE(
        (SELECT MIN(w.date) FROM (
            SELECT p.date FROM bars p JOIN symbols ps ON p.symbol_id = ps.id
            WHERE ps.name = :symbol AND p.date < :first
            ORDER BY p.date DESC LIMIT :back
        ) w),
        :first)
    ORDER BY b.date
    """
).bindparams(
    bindparam("symbol", type_=String),
    bindparam("first", type_=Date),
    bindparam("end", type_=Date),
    bindparam("back", type_=Integer),
)
# The first and last bar of a symbol inside a range: what a teacher run must cover.
_BAR_RANGE: Final = text(
    """
    SELECT MIN(b.date), MAX(b.date)
    FROM bars b JOIN symbols s ON b.symbol_id = s.id
    WHERE s.name = :symbol AND b.date >= :start AND b.date <= :end
    """
).bindparams(
    bindparam("symbol", type_=String), bindparam("start", type_=Date), bindparam("end", type_=Date)
)
# For the error message only: what the store holds for a symbol up to a date.
_BAR_SPAN: Final = text(
    """
    SELECT COUNT(*), MIN(b.date), MAX(b.date)
    FROM bars b JOIN symbols s ON b.symbol_id = s.id
    WHERE s.name = :symbol AND b.date <= :end
    """
).bindparams(bindparam("symbol", type_=String), bindparam("end", type_=Date))
_NEWS: Final = text(
    """
    SELECT n.date, n.score
    FROM news_sentiment n JOIN symbols s ON n.symbol_id = s.id
    WHERE s.name = :symbol AND n.source = :source AND n.date >= :start AND n.date <= :end
    ORDER BY n.date
    """
).bindparams(
    bindparam("symbol", type_=String),
    bindparam("source", type_=String),
    bindparam("start", type_=Date),
    bindparam("end", type_=Date),
)
_MACRO: Final = text(
    """
    SELECT m.date, m.score
    FROM macro_sentiment m
    WHERE m.source = :source AND m.date >= :start AND m.date <= :end
    ORDER BY m.date
    """
).bindparams(
    bindparam("source", type_=String), bindparam("start", type_=Date), bindparam("end", type_=Date)
)
# A sentiment score older than this is 0 for every later date (the schema's rule).
_SENTIMENT_AGE: Final = dt.timedelta(days=int(MATHS_PARAMS["SENTIMENT_MAX_AGE_DAYS"]))


class DatasetGenerationError(ValueError):
    """A dataset cannot be made from the store as asked (run, symbol or date range)."""


@dataclass(frozen=True)
class _Run:
    """The columns of a ``BacktestRun`` that dataset generation needs."""

    id: int
    strategy_name: str
    strategy_hash: str
    symbols: tuple[str, ...]
    start: dt.date
    end: dt.date
    status: str
    error: str | None
    rl_enabled: bool
    purpose: str

    def describe(self) -> str:
        return (
            f"run {self.id} ({self.strategy_name}, {self.start.isoformat()} .. "
            f"{self.end.isoformat()}, symbols {', '.join(self.symbols)})"
        )

    def short(self) -> str:
        """``run 3 (baseline_v1, RL off, 2018-06-01 .. 2023-12-31)``."""
        return (
            f"run {self.id} ({self.strategy_name}, RL {'on' if self.rl_enabled else 'off'}, "
            f"{self.start.isoformat()} .. {self.end.isoformat()})"
        )

    @property
    def internal(self) -> bool:
        return self.purpose in INTERNAL_PURPOSES

    def covers(self, need: tuple[dt.date, dt.date] | None) -> bool:
        """Whether the run's range holds ``need`` (the symbol's first and last bar in the
        requested range; None: no bar there, anything covers it)."""
        return need is None or (self.start <= need[0] and self.end >= need[1])

    def passed_over(self, need: tuple[dt.date, dt.date] | None) -> list[str]:
        """Why this run (holding the symbol) is not a default teacher; empty when it is one."""
        why = []
        if self.status != "complete":
            why.append(f"not complete ({self.status})")
        if self.rl_enabled:
            why.append("RL analyst on")
        if self.internal:
            why.append(f"internal ({self.purpose})")
        if not self.covers(need):
            assert need is not None
            why.append(f"does not cover {need[0].isoformat()} .. {need[1].isoformat()}")
        return why


def _as_date(value: object, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise DatasetGenerationError(
        f"{what} is {value!r}; expected a datetime.date or an ISO date string YYYY-MM-DD"
    )


def _symbols(symbol: str | Sequence[str]) -> list[str]:
    names = [symbol] if isinstance(symbol, str) else list(symbol)
    if not names:
        raise DatasetGenerationError("no symbols given; expected a symbol or a list of symbols")
    bad = [s for s in names if not isinstance(s, str) or not s.strip()]
    if bad:
        raise DatasetGenerationError(f"symbols {bad!r} are not names; expected non-empty strings")
    dupes = sorted({s for s in names if names.count(s) > 1})
    if dupes:
        raise DatasetGenerationError(f"symbols repeated: {', '.join(dupes)}; expected each once")
    return names


def _column(values: Sequence[Any], dtype: type[_N]) -> npt.NDArray[_N]:
    """A NOT NULL numeric result column as an array (``np.fromiter``: no shape discovery)."""
    return np.fromiter(values, dtype=dtype, count=len(values))


def _day_array(days: Sequence[Any]) -> npt.NDArray[np.datetime64]:
    """A date column as datetime64[D]: ISO text (SQLite; numpy parses it in C) or
    ``datetime.date`` values (other drivers; through ordinals, much faster than np.array)."""
    if days and isinstance(days[0], str):
        return np.array(days, dtype="datetime64[D]")
    ordinals = np.fromiter((d.toordinal() for d in days), dtype=np.int64, count=len(days))
    out: npt.NDArray[np.datetime64] = (ordinals - _EPOCH_ORDINAL).astype("datetime64[D]")
    return out


@dataclass(frozen=True)
class _Symbol:
    """What the store holds for one symbol's rows: its decisions and the bars and news their
    states read (``pos``: each decision's bar in ``history``, a slice when they are consecutive
    bars, as when the run decided on every bar)."""

    history: MarketHistory
    news: SentimentSeries | None
    pos: slice | npt.NDArray[np.intp]
    portfolio: npt.NDArray[np.float64]
    actions: npt.NDArray[np.int64]
    strengths: npt.NDArray[np.float32]
    dates: npt.NDArray[np.datetime64]


@dataclass(frozen=True)
class _Rows:
    states: npt.NDArray[np.float32]
    actions: npt.NDArray[np.int64]
    strengths: npt.NDArray[np.float32]
    dates: npt.NDArray[np.datetime64]


class OfflineDatasetGenerator:
    """Makes ``otonom_schema.OfflineDataset`` objects from the decisions of complete backtests.

    ``session``: an open SQLAlchemy session on the store (``otonom_runtime.store.get_session``).
    The constructor only stores it; see the module docstring for every rule.
    """

    def __init__(self, session: Session) -> None:
        self.session = session

    # --- runs ----------------------------------------------------------------------------------

    def _runs(self) -> list[_Run]:
        """Every run, newest first (created_at, then id)."""
        stmt = select(
            BacktestRun.id,
            BacktestRun.strategy_name,
            BacktestRun.strategy_hash,
            BacktestRun.symbols,
            BacktestRun.start_date,
            BacktestRun.end_date,
            BacktestRun.status,
            BacktestRun.error,
            BacktestRun.params,
        ).order_by(BacktestRun.created_at.desc(), BacktestRun.id.desc())
        return [
            _Run(
                id=int(r[0]),
                strategy_name=str(r[1]),
                strategy_hash=str(r[2]),
                symbols=tuple(r[3] or ()),
                start=r[4],
                end=r[5],
                status=str(r[6]),
                error=r[7],
                rl_enabled=bool((r[8] or {}).get("rl_enabled")),
                purpose=str((r[8] or {}).get("purpose") or "user"),
            )
            for r in self.session.execute(stmt).all()
        ]

    def _need(self, name: str, start: dt.date, end: dt.date) -> tuple[dt.date, dt.date] | None:
        """The first and last bar of ``name`` in ``start .. end`` (None: no bar there)."""
        lo, hi = self._fetch(_BAR_RANGE, {"symbol": name, "start": start, "end": end})[0]
        if lo is None:
            return None
        return _as_date(lo, "bar date"), _as_date(hi, "bar date")

    def _resolve_runs(
        self,
        names: list[str],
        run_id: int | None,
        start: dt.date,
        end: dt.date,
        *,
        allow_rl_run: bool = False,
        allow_internal_run: bool = False,
    ) -> dict[str, _Run]:
        runs = self._runs()
        complete = [r for r in runs if r.status == "complete"]
        if run_id is not None:
            if isinstance(run_id, bool) or not isinstance(run_id, (int, np.integer)):
                raise DatasetGenerationError(
                    f"run_id is {run_id!r}; expected an integer run id or None"
                )
            found = next((r for r in runs if r.id == int(run_id)), None)
            if found is None:
                raise DatasetGenerationError(
                    f"no backtest run with id {run_id}; complete runs: {_ids(complete)}"
                )
            if found.status != "complete":
                why = f" ({found.error})" if found.error else ""
                raise DatasetGenerationError(
                    f"run {found.id} has status {found.status!r}{why}; expected a complete run "
                    f"(only complete runs are read). Complete runs: {_ids(complete)}"
                )
            if found.internal and not allow_internal_run:
                raise DatasetGenerationError(
                    f"{found.short()} is an internal run ({found.purpose}: made to judge a "
                    "model, not to teach one); expected a run of your own: `otonom backtest "
                    "... --no-rl`, or no --run-id for the newest one that qualifies"
                )
            if found.rl_enabled and not allow_rl_run:
                raise DatasetGenerationError(
                    f"{found.short()} was made with the RL analyst on: its decisions hold a "
                    "policy's own votes, and a policy trained on its own votes learns nothing; "
                    "expected an RL-off run (`otonom backtest ... --no-rl`); to use it anyway "
                    "pass --allow-rl-run (allow_rl_run=True)"
                )
            missing = [s for s in names if s not in found.symbols]
            if missing:
                raise DatasetGenerationError(
                    f"{found.describe()} does not hold {', '.join(map(repr, missing))}; expected "
                    "symbols of that run"
                )
            return dict.fromkeys(names, found)
        chosen: dict[str, _Run] = {}
        for name in names:
            need = self._need(name, start, end)
            holding = [r for r in runs if name in r.symbols]
            run = next((r for r in holding if not r.passed_over(need)), None)
            if run is None:
                get_symbol(self.session, name)  # UnknownSymbolError naming the known symbols
                raise DatasetGenerationError(_no_teacher(name, need or (start, end), holding, runs))
            chosen[name] = run
        return chosen

    # --- rows ----------------------------------------------------------------------------------

    def _fetch(self, stmt: TextClause, values: dict[str, Any]) -> list[Any]:
        """Rows of a plain-SQL statement through the session's own DBAPI connection
        (``otonom_runtime.store.fetch_raw``): SQLAlchemy's result layer costs about as much as
        the driver itself on these wide reads (tens of thousands of rows)."""
        return fetch_raw(self.session, stmt, values)

    def _read(
        self, name: str, run: _Run, start: dt.date, end: dt.date, news_source: str
    ) -> _Symbol:
        """The decisions of ``run`` for ``name`` dated ``start .. end``, checked, with the bars
        and news (from ``news_source``) their states read (three queries)."""
        rows = self._fetch(
            _DECISIONS, {"run_id": run.id, "symbol": name, "start": start, "end": end}
        )
        if not rows:
            raise DatasetGenerationError(
                f"{run.describe()} has no decision for {name!r} dated {start.isoformat()} .. "
                f"{end.isoformat()}; expected a range that overlaps the run's "
                f"{run.start.isoformat()} .. {run.end.isoformat()}"
            )
        cols = list(zip(*rows, strict=True))
        span = _day_array([cols[0][0], cols[0][-1]])
        first, last = span[0].item(), span[-1].item()
        history, bar_values = self._history(name, first, last)
        picked = None if history is None else _decision_bars(history, bar_values, cols[0])
        if history is None or picked is None:
            raise self._no_bar(run, name, history, _day_array(cols[0]))
        pos, dates = picked
        days = np.asarray(cols[6], dtype=np.float64)  # NULL (never traded) reads as NaN here
        days[np.isnan(days)] = np.inf
        try:
            portfolio = portfolio_feature_matrix(
                _column(cols[3], np.float64),
                _column(cols[4], np.float64),
                _column(cols[5], np.float64),
                days,
            )
        except SchemaError as exc:
            raise DatasetGenerationError(
                f"run {run.id}, {name!r}: a stored portfolio is outside the schema: {exc}"
            ) from None
        return _Symbol(
            history=history,
            news=self._news(name, news_source, first - _SENTIMENT_AGE, last),
            pos=pos,
            portfolio=portfolio,
            actions=_column(cols[1], np.int64),
            strengths=_column(cols[2], np.float32),
            dates=dates,
        )

    def _no_bar(
        self, run: _Run, name: str, history: MarketHistory | None, dates: npt.NDArray[Any]
    ) -> DatasetGenerationError:
        """The error for the first of ``dates`` (a run's decisions) without a bar in
        ``history``, saying what the store holds for ``name``."""
        has_bar = np.isin(dates, history.dates) if history is not None else np.zeros(1, bool)
        last = dates[-1].item()
        count, oldest, newest = self._fetch(_BAR_SPAN, {"symbol": name, "end": last})[0]
        held = (
            f"{count} bars, {_as_date(oldest, 'bar date')} .. {_as_date(newest, 'bar date')}"
            if count
            else f"no bar on or before {last.isoformat()}"
        )
        return DatasetGenerationError(
            f"the decision of run {run.id} for {name!r} on {dates[int(np.argmin(has_bar))]} "
            f"has no bar of that date in the store ({held}); expected every decision date to "
            "be a bar date (were the bars replaced after the run? re-run the backtest)"
        )

    def _history(
        self, name: str, first: dt.date, end: dt.date
    ) -> tuple[MarketHistory | None, Sequence[Any]]:
        """Bars of ``name`` dated <= ``end`` from ``LOOKBACK - 1`` bars before ``first`` on
        (None if there are none), and their dates as the driver returned them; one query."""
        values = {"symbol": name, "first": first, "end": end, "back": LOOKBACK - 1}
        rows = self._fetch(_BARS, values)
        if not rows:
            return None, ()
        cols = list(zip(*rows, strict=True))
        history = MarketHistory(
            dates=_day_array(cols[0]),
            open=_column(cols[1], np.float64),
            high=_column(cols[2], np.float64),
            low=_column(cols[3], np.float64),
            close=_column(cols[4], np.float64),
            volume=_column(cols[5], np.float64),
            symbol=name,
        )
        return history, cols[0]

    def _news(self, name: str, source: str, start: dt.date, end: dt.date) -> SentimentSeries | None:
        """News sentiment of ``name`` from ``source`` dated ``start .. end`` (None if none);
        one query."""
        values = {"symbol": name, "source": source, "start": start, "end": end}
        return _series(self._fetch(_NEWS, values))

    def _macro(self, source: str, start: dt.date, end: dt.date) -> SentimentSeries | None:
        """Macro sentiment from ``source`` dated ``start .. end`` (None if none); one query."""
        return _series(self._fetch(_MACRO, {"source": source, "start": start, "end": end}))

    def _sentiment_sources(self, chosen: dict[str, _Run]) -> dict[str, dict[str, str]]:
        """{symbol: {"news": source, "macro": source}}: what each symbol's run read (its
        ``params["sentiment_sources"]``), else the kind rule (runs made before sources)."""
        ids = sorted({run.id for run in chosen.values()})
        params: dict[int, dict[str, Any] | None] = dict(
            self.session.execute(
                select(BacktestRun.id, BacktestRun.params).where(BacktestRun.id.in_(ids))
            ).all()
        )
        kinds: dict[str, bool] = dict(
            self.session.execute(
                select(Symbol.name, Symbol.is_synthetic).where(Symbol.name.in_(list(chosen)))
            ).all()
        )
        out: dict[str, dict[str, str]] = {}
        for name, run in chosen.items():
            recorded = (params.get(run.id) or {}).get("sentiment_sources") or {}
            mine = recorded.get(name) if isinstance(recorded, dict) else None
            out[name] = {
                kind: (
                    mine[kind]
                    if isinstance(mine, dict) and isinstance(mine.get(kind), str)
                    else sentiment_source(bool(kinds.get(name, False)))
                )
                for kind in ("news", "macro")
            }
        return out

    # --- public --------------------------------------------------------------------------------

    def generate_dataset(
        self,
        symbol: str | Sequence[str],
        start_date: DateLike,
        end_date: DateLike,
        run_id: int | None = None,
        *,
        allow_rl_run: bool = False,
        allow_internal_run: bool = False,
    ) -> OfflineDataset:
        """The dataset of ``symbol`` (one name or a list) for decisions dated in
        ``start_date .. end_date`` (inclusive), from complete backtest runs.

        ``run_id``: None takes, per symbol, the newest complete, RL-off, non-internal run that
        covers the range for it (module docstring); an id uses that run for every symbol.
        ``allow_rl_run``: accept a run made with the RL analyst on as ``run_id``.
        ``allow_internal_run``: accept an internal run (the gate's) as ``run_id``. Returns an
        ``OfflineDataset`` (``len()`` is the number of rows; ``metadata["teacher"]`` names the
        runs used). Raises ``DatasetGenerationError`` (a ``ValueError``) for bad arguments, a
        run that is missing, not complete, internal, RL-on or does not hold a symbol, no run
        that can teach a symbol (listing why each was passed over), no decision in the range, a
        decision date without a bar, or a stored portfolio outside the schema;
        ``otonom_runtime.UnknownSymbolError`` (a ``KeyError``) for a symbol that is not in the
        store at all.
        """
        names = _symbols(symbol)
        start = _as_date(start_date, "start_date")
        end = _as_date(end_date, "end_date")
        if start > end:
            raise DatasetGenerationError(
                f"start_date {start.isoformat()} is after end_date {end.isoformat()}; expected "
                "start_date <= end_date"
            )
        chosen = self._resolve_runs(
            names,
            run_id,
            start,
            end,
            allow_rl_run=allow_rl_run,
            allow_internal_run=allow_internal_run,
        )
        sources = self._sentiment_sources(chosen)
        with _collector_paused():
            reads = {
                name: self._read(name, chosen[name], start, end, sources[name]["news"])
                for name in names
            }
            macros = {}
            for source in sorted({s["macro"] for s in sources.values()}):
                users = [reads[name] for name in names if sources[name]["macro"] == source]
                macros[source] = self._macro(
                    source,
                    min(r.dates[0].item() for r in users) - _SENTIMENT_AGE,
                    max(r.dates[-1].item() for r in users),
                )
        parts = [_rows(reads[name], macros[sources[name]["macro"]]) for name in names]
        n_rows = [p.states.shape[0] for p in parts]
        runs = sorted({r.id: r for r in chosen.values()}.values(), key=lambda r: r.id)
        teacher = "; ".join(
            f"{r.short()} for {', '.join(n for n in names if chosen[n].id == r.id)}" for r in runs
        )
        log.info("dataset teacher: %s", teacher)
        metadata: dict[str, Any] = {
            "source": "backtest",
            "run_ids": [r.id for r in runs],
            "symbol_runs": {name: chosen[name].id for name in names},
            "runs": [
                {
                    "run_id": r.id,
                    "strategy_name": r.strategy_name,
                    "strategy_hash": r.strategy_hash,
                    "start_date": r.start.isoformat(),
                    "end_date": r.end.isoformat(),
                    "rl_enabled": r.rl_enabled,
                    "purpose": r.purpose,
                }
                for r in runs
            ],
            "teacher": teacher,
            "strategy_names": sorted({r.strategy_name for r in runs}),
            "strategy_hashes": sorted({r.strategy_hash for r in runs}),
            "symbols": names,
            "sentiment_sources": sources,
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
        }
        return OfflineDataset(
            states=np.concatenate([p.states for p in parts]).reshape(-1, STATE_DIM),
            actions=np.concatenate([p.actions for p in parts]),
            strengths=np.concatenate([p.strengths for p in parts]),
            symbols=np.repeat(np.array(names, dtype=np.str_), n_rows),
            dates=np.concatenate([p.dates for p in parts]),
            metadata=metadata,
        )

    def save_dataset(
        self, experiences: OfflineDataset, output_path: str | os.PathLike[str]
    ) -> Path:
        """Write ``experiences`` (see the module function ``save_dataset``); return the path."""
        return save_dataset(experiences, output_path)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (restored after, also on error).

    The reads turn ~100k result rows into tuples (one per row, none in a reference cycle) on
    their way into numpy; each allocation counts towards the collector's thresholds, so with it
    on, its passes over the whole heap (no garbage to find: tuples are freed by reference
    counting) cost about a third of the dataset's time. Process-wide, but only for the reads.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _series(rows: Sequence[Any]) -> SentimentSeries | None:
    if not rows:
        return None
    cols = list(zip(*rows, strict=True))
    return SentimentSeries(dates=_day_array(cols[0]), scores=_column(cols[1], np.float64))


def _decision_bars(
    history: MarketHistory, bar_values: Sequence[Any], decision_values: Sequence[Any]
) -> tuple[slice | npt.NDArray[np.intp], npt.NDArray[np.datetime64]] | None:
    """Each decision's bar in ``history`` and the decision dates: ``(pos, dates)``; None if a
    decision date is not a bar date.

    ``bar_values``/``decision_values``: the date columns as the driver returned them (ISO text
    on SQLite, ``datetime.date`` elsewhere), both ascending. When the decisions are dated on
    consecutive bars (the backtest decides on every bar) the two columns hold the same values
    from the first decision's bar on: found by comparing them (``pos`` is then a slice), so the
    dates are not parsed twice. Otherwise the dates are parsed and looked up.
    """
    n = len(decision_values)
    i = bisect.bisect_left(bar_values, decision_values[0])
    if tuple(bar_values[i : i + n]) == tuple(decision_values):
        return slice(i, i + n), history.dates[i : i + n]
    dates = _day_array(decision_values)
    bar_days = history.dates.astype(np.int64)
    want = dates.astype(np.int64)
    pos = np.searchsorted(bar_days, want)
    on_bar = (pos < bar_days.size) & (bar_days[np.minimum(pos, bar_days.size - 1)] == want)
    return (pos, dates) if on_bar.all() else None


def _rows(read: _Symbol, macro: SentimentSeries | None) -> _Rows:
    """The rows of one symbol: the features of every bar read at once, one portfolio per bar
    (the first decision's where there is no decision), then the decision rows picked out."""
    per_bar = np.repeat(read.portfolio[:1], len(read.history), axis=0)
    per_bar[read.pos] = read.portfolio
    states = compute_states(read.history, per_bar, news=read.news, macro=macro)[read.pos]
    return _Rows(states=states, actions=read.actions, strengths=read.strengths, dates=read.dates)


def _no_teacher(
    name: str, need: tuple[dt.date, dt.date], holding: Sequence[_Run], runs: Sequence[_Run]
) -> str:
    """The error when no run can teach ``name`` over ``need``: every run holding it (newest
    first, the first ``_SHOWN_RUNS``) with why it was passed over, and the command that makes
    one."""
    first, last = need[0].isoformat(), need[1].isoformat()
    wanted = (
        f"no backtest run can teach {name!r} over {first} .. {last} (expected a complete run "
        "with the RL analyst off, not internal, whose dates cover that range)"
    )
    if holding:
        shown = [f"{r.short()}: {', '.join(r.passed_over(need))}" for r in holding[:_SHOWN_RUNS]]
        more = len(holding) - _SHOWN_RUNS
        listed = "; ".join(shown) + (f"; and {more} older" if more > 0 else "")
        found = f"; passed over: {listed}"
    else:
        found = f"; no run holds it (runs in the store: {_ids(runs)})"
    return (
        f"{wanted}{found}. Make one: otonom backtest --strategy-path "
        f"strategies/baseline_v1.yaml --symbol {name} --start-date {first} --end-date {last} "
        "--no-rl"
    )


def _ids(runs: Sequence[_Run]) -> str:
    return ", ".join(str(i) for i in sorted(r.id for r in runs)) if runs else "none"


def generate_dataset(
    session: Session,
    symbol: str | Sequence[str],
    start_date: DateLike,
    end_date: DateLike,
    run_id: int | None = None,
    *,
    allow_rl_run: bool = False,
    allow_internal_run: bool = False,
) -> OfflineDataset:
    """``OfflineDatasetGenerator(session).generate_dataset(...)`` in one call."""
    return OfflineDatasetGenerator(session).generate_dataset(
        symbol,
        start_date,
        end_date,
        run_id,
        allow_rl_run=allow_rl_run,
        allow_internal_run=allow_internal_run,
    )


def save_dataset(experiences: OfflineDataset, output_path: str | os.PathLike[str]) -> Path:
    """Write ``experiences`` to ``output_path`` (``.npz``, atomic, folders created) and print
    ``Teacher: <runs>`` (when the metadata names them), ``Saved to: <path>``, a blank line and
    the action distribution; return the path.

    The guide's caller prints ``Generated N training samples`` itself.
    """
    if not isinstance(experiences, OfflineDataset):
        raise TypeError(
            f"experiences is a {type(experiences).__name__}; expected an "
            "otonom_schema.OfflineDataset (from generate_dataset)"
        )
    path = _write_npz(experiences, output_path)
    teacher = experiences.metadata.get("teacher")
    if teacher:
        print(f"Teacher: {teacher}")
    print(f"Saved to: {output_path}")
    print()
    print(experiences.summary())
    return path
