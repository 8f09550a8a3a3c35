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
* **Vectorised.** Every read is a typed store reader (``otonom_runtime.store.datasets``: this
  module holds no SQL). Per symbol: one read of the decisions, one of the bars from
  ``LOOKBACK - 1`` bars before the first decision to the last decision (older bars are never
  read by any row's state; ``load_state_bars``: their opens, which no state reads, are
  checked, not fetched), one of the news from ``SENTIMENT_MAX_AGE_DAYS`` days before the
  first decision (an older score is stale for every row); one macro read per macro source
  over the union of those ranges (on SQLite each read is two queries: the numbers, and the
  dates as one text, parsed once: ``load_symbol_reads`` takes the decisions' and news' dates,
  and other symbols' bar dates, from a bars' text they are found in). ``compute_states``
  then computes the features of every bar from the first decision's on at once (``first=``;
  the schema's batch path, proven equal to the builder's one-date path) and the rows are
  picked by date. Every decision date must be a
  bar date in the store (the backtest only decides on bar dates): anything else means the
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
  ``start_date``/``end_date`` (ISO); with ``horizon``, the forward labels (``labels``).

This module does not import torch.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from otonom_runtime.backtest import INTERNAL_PURPOSES
from otonom_runtime.store import get_symbol, load_macro, sentiment_source
from otonom_runtime.store.datasets import (
    RunInfo,
    SharedDates,
    bar_range,
    bar_span,
    list_runs,
    load_symbol_reads,
    mapped_reads,
    synthetic_flags,
)
from otonom_schema import (
    MATHS_PARAMS,
    STATE_DIM,
    DateError,
    MarketHistory,
    OfflineDataset,
    SchemaError,
    SentimentSeries,
    compute_states,
    portfolio_feature_matrix,
    to_date,
)
from otonom_schema import save_dataset as _write_npz
from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.labels import with_forward_labels

__all__ = [
    "DatasetGenerationError",
    "OfflineDatasetGenerator",
    "generate_dataset",
    "save_dataset",
]

DateLike = dt.date | str
log = logging.getLogger(__name__)
_SHOWN_RUNS: Final = 8  # runs listed (newest first) in the "no teacher" error, per symbol


# A sentiment score older than this is 0 for every later date (the schema's rule).
_SENTIMENT_AGE: Final = dt.timedelta(days=int(MATHS_PARAMS["SENTIMENT_MAX_AGE_DAYS"]))


class DatasetGenerationError(OtonomTrainerError, ValueError):
    """A dataset cannot be made from the store as asked (run, symbol or date range)."""


@dataclass(frozen=True)
class _Run(RunInfo):
    """A backtest run as the store reads it (``RunInfo``), its ``params`` judged."""

    @classmethod
    def of(cls, info: RunInfo) -> _Run:
        return cls(**{f.name: getattr(info, f.name) for f in fields(info)})

    @property
    def rl_enabled(self) -> bool:
        return bool(self.params.get("rl_enabled"))

    @property
    def purpose(self) -> str:
        return str(self.params.get("purpose") or "user")

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
    try:
        return to_date(value.strip() if isinstance(value, str) else value)
    except DateError:
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
        return [_Run.of(r) for r in list_runs(self.session)]

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
            need = bar_range(self.session, name, start, end)  # its first and last bar there
            holding = [r for r in runs if name in r.symbols]
            run = next((r for r in holding if not r.passed_over(need)), None)
            if run is None:
                get_symbol(self.session, name)  # UnknownSymbolError naming the known symbols
                raise DatasetGenerationError(_no_teacher(name, need or (start, end), holding, runs))
            chosen[name] = run
        return chosen

    # --- rows ----------------------------------------------------------------------------------

    def _read(
        self,
        name: str,
        run: _Run,
        start: dt.date,
        end: dt.date,
        news_source: str,
        shared: SharedDates,
    ) -> _Symbol:
        """The decisions of ``run`` for ``name`` dated ``start .. end``, checked, with the bars
        and news (``news_source``) their states read (``load_symbol_reads``, with ``shared``)."""
        reads = load_symbol_reads(  # the bars and news that states read (its defaults)
            self.session, run.id, name, start, end, news_source=news_source, shared=shared
        )
        decisions, history = reads.decisions, reads.bars
        if decisions is None:
            raise DatasetGenerationError(
                f"{run.describe()} has no decision for {name!r} dated {start.isoformat()} .. "
                f"{end.isoformat()}; expected a range that overlaps the run's "
                f"{run.start.isoformat()} .. {run.end.isoformat()}"
            )
        picked = None if history is None else _decision_bars(history, decisions.dates)
        if history is None or picked is None:
            raise self._no_bar(run, name, history, decisions.dates)
        try:
            portfolio = portfolio_feature_matrix(
                decisions.position,
                decisions.leverage,
                decisions.cash_fraction,
                decisions.days_since_last_trade,
            )
        except SchemaError as exc:
            raise DatasetGenerationError(
                f"run {run.id}, {name!r}: a stored portfolio is outside the schema: {exc}"
            ) from None
        return _Symbol(
            history=history,
            news=reads.news,
            pos=picked,
            portfolio=portfolio,
            actions=decisions.actions,
            strengths=decisions.strengths.astype(np.float32),
            dates=decisions.dates if isinstance(picked, np.ndarray) else history.dates[picked],
        )

    def _no_bar(
        self, run: _Run, name: str, history: MarketHistory | None, dates: npt.NDArray[Any]
    ) -> DatasetGenerationError:
        """The error for the first of ``dates`` (a run's decisions) without a bar in
        ``history``, saying what the store holds for ``name``."""
        has_bar = np.isin(dates, history.dates) if history is not None else np.zeros(1, bool)
        last = dates[-1].item()
        count, oldest, newest = bar_span(self.session, name, last)
        held = f"{count} bars, {oldest} .. {newest}" if count else f"no bar on or before {last}"
        return DatasetGenerationError(
            f"the decision of run {run.id} for {name!r} on {dates[int(np.argmin(has_bar))]} "
            f"has no bar of that date in the store ({held}); expected every decision date to "
            "be a bar date (were the bars replaced after the run? re-run the backtest)"
        )

    def _sentiment_sources(self, chosen: dict[str, _Run]) -> dict[str, dict[str, str]]:
        """{symbol: {"news": source, "macro": source}}: what each symbol's run read (its
        ``params["sentiment_sources"]``, as ``list_runs`` read them), else the kind rule (runs
        made before sources)."""
        kinds = synthetic_flags(self.session, chosen)
        out: dict[str, dict[str, str]] = {}
        for name, run in chosen.items():
            recorded = run.params.get("sentiment_sources") or {}
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
        horizon: int | None = None,
    ) -> OfflineDataset:
        """The dataset of ``symbol`` (one name or a list) for decisions dated in
        ``start_date .. end_date`` (inclusive), from complete backtest runs; with ``horizon``
        (bars), also its forward labels (``otonom_trainer.labels``: bars up to ``end_date``).

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
        allow = {"allow_rl_run": allow_rl_run, "allow_internal_run": allow_internal_run}
        chosen = self._resolve_runs(names, run_id, start, end, **allow)
        sources = self._sentiment_sources(chosen)
        with mapped_reads(self.session):  # the store's file memory-mapped for the reads
            shared = SharedDates()  # the bars' dates, parsed once for symbols that share them
            reads = {
                n: self._read(n, chosen[n], start, end, sources[n]["news"], shared) for n in names
            }
            macros = {}
            for source in sorted({s["macro"] for s in sources.values()}):
                users = [reads[name] for name in names if sources[name]["macro"] == source]
                first = min(r.dates[0].item() for r in users) - _SENTIMENT_AGE
                last = max(r.dates[-1].item() for r in users)  # one macro query per source
                macros[source] = load_macro(self.session, source=source, start=first, end=last)
        parts = [_rows(reads[name], macros[sources[name]["macro"]]) for name in names]
        n_rows = [p.states.shape[0] for p in parts]
        metadata = _metadata(names, chosen, sources, start, end)
        dataset = OfflineDataset(
            states=np.concatenate([p.states for p in parts]).reshape(-1, STATE_DIM),
            actions=np.concatenate([p.actions for p in parts]),
            strengths=np.concatenate([p.strengths for p in parts]),
            symbols=np.repeat(np.array(names, dtype=np.str_), n_rows),
            dates=np.concatenate([p.dates for p in parts]),
            metadata=metadata,
        )
        if horizon is None:
            return dataset
        return with_forward_labels(self.session, dataset, horizon, end)

    def save_dataset(
        self, experiences: OfflineDataset, output_path: str | os.PathLike[str]
    ) -> Path:
        """Write ``experiences`` (see the module function ``save_dataset``); return the path."""
        return save_dataset(experiences, output_path)


def _decision_bars(
    history: MarketHistory, dates: npt.NDArray[np.datetime64]
) -> slice | npt.NDArray[np.intp] | None:
    """Each decision's bar in ``history`` (``dates``: the decision dates, ascending); None if a
    decision date is not a bar date.

    When the decisions are dated on consecutive bars (the backtest decides on every bar) the
    bars from the first decision's on hold the same dates: found by comparing them, and the
    result is then a slice. Otherwise each date is looked up.
    """
    bar_days = history.dates.astype(np.int64)
    want = dates.astype(np.int64)
    n = want.size
    i = int(np.searchsorted(bar_days, want[0]))
    if np.array_equal(bar_days[i : i + n], want):
        return slice(i, i + n)
    pos = np.searchsorted(bar_days, want)
    on_bar = (pos < bar_days.size) & (bar_days[np.minimum(pos, bar_days.size - 1)] == want)
    return pos if on_bar.all() else None


def _rows(read: _Symbol, macro: SentimentSeries | None) -> _Rows:
    """The rows of one symbol: the features of every bar from the first decision's on at once
    (the bars before are its lookback), one portfolio per bar (the first decision's where
    there is no decision), then the decision rows picked out."""
    pos = read.pos  # ascending
    first = int(pos.start) if isinstance(pos, slice) else int(pos[0])
    picked = slice(0, pos.stop - first) if isinstance(pos, slice) else pos - first
    per_bar = np.repeat(read.portfolio[:1], len(read.history) - first, axis=0)
    per_bar[picked] = read.portfolio
    states = compute_states(read.history, per_bar, news=read.news, macro=macro, first=first)
    rows = states[picked]
    return _Rows(states=rows, actions=read.actions, strengths=read.strengths, dates=read.dates)


def _metadata(
    names: list[str],
    chosen: dict[str, _Run],
    sources: dict[str, dict[str, str]],
    start: dt.date,
    end: dt.date,
) -> dict[str, Any]:
    """The dataset's metadata (module docstring); logs the teacher line."""
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
    return metadata


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
    horizon: int | None = None,
) -> OfflineDataset:
    """``OfflineDatasetGenerator(session).generate_dataset(...)`` in one call."""
    return OfflineDatasetGenerator(session).generate_dataset(
        symbol,
        start_date,
        end_date,
        run_id,
        allow_rl_run=allow_rl_run,
        allow_internal_run=allow_internal_run,
        horizon=horizon,
    )


def save_dataset(
    experiences: OfflineDataset, output_path: str | os.PathLike[str], out: TextIO | None = None
) -> Path:
    """Write ``experiences`` to ``output_path`` (``.npz``, atomic, folders created) and print
    ``Teacher: <runs>`` (when the metadata names them), ``Saved to: <path>``, a blank line and
    the action distribution (to ``out``, default ``sys.stdout``); return the path.

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
        print(f"Teacher: {teacher}", file=out)
    print(f"Saved to: {output_path}", file=out)
    print(file=out)
    print(experiences.summary(), file=out)
    return path
