"""Run persistence: the run row's lifecycle (written ``running`` with its process and a
heartbeat, then ``complete`` with its metrics or ``failed`` with the error) and the decision
rows, written in batched transactions."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from otonom_runtime.backtest.engine import SymbolResult
from otonom_runtime.ensemble import ANALYSTS
from otonom_runtime.store import (
    SIGNAL_COLUMNS,
    BacktestRun,
    DecisionBatch,
    RunHeartbeat,
    decision_batches,
    this_process,
)

__all__: list[str] = []

_BATCH: Final = 5000
_DECISION_COLUMNS: Final = (
    "run_id",
    "symbol_id",
    "date",
    "action",
    "strength",
    "position",
    "leverage",
    "cash_fraction",
    "days_since_last_trade",
    "equity",
    *SIGNAL_COLUMNS,
)
_RL_COLUMNS: Final = SIGNAL_COLUMNS[-3:]
_NO_RL_COLUMNS: Final = _DECISION_COLUMNS[: -len(_RL_COLUMNS)]


class _RunRecord:
    """One run's row while the run lasts: ``open`` writes it (status ``running``, this
    process, a heartbeat thread beating), then exactly one of ``complete`` / ``fail``."""

    def __init__(self, session: Session, run: BacktestRun) -> None:
        run.host, run.pid, run.process_start = this_process()
        session.add(run)
        session.commit()
        self.session = session
        self.run_id: int = run.id
        self.heartbeat = RunHeartbeat.for_session(session, self.run_id)
        self.heartbeat.start()

    def complete(self, metrics: dict[str, Any]) -> None:
        """Status ``complete`` with ``metrics``, committed."""
        stored = self.session.get(BacktestRun, self.run_id)
        assert stored is not None
        self.heartbeat.stop()
        stored.status = "complete"  # also over a "failed" another host judged by heartbeat
        stored.error = None
        stored.finished_at = dt.datetime.now(dt.timezone.utc)
        stored.metrics = metrics
        self.session.commit()

    def fail(self, exc: BaseException) -> None:
        """Roll back what is pending and mark the run ``failed`` with ``exc``, committed."""
        self.session.rollback()  # first: a heartbeat may wait for the lock this transaction holds
        self.heartbeat.stop()
        failed = self.session.get(BacktestRun, self.run_id)
        if failed is not None:
            failed.status = "failed"
            failed.finished_at = dt.datetime.now(dt.timezone.utc)
            failed.error = f"{type(exc).__name__}: {exc}"[:2000]
            self.session.commit()


def _signal_columns(r: SymbolResult, rl: bool) -> list[list[Any]]:
    """The signal columns of one symbol's decision rows, column by column: action, strength,
    confidence per analyst (python ints and floats), None where it did not vote; ``rl``: with
    the RL analyst's three (else those are left out)."""
    n = len(r.actions)
    missing: list[Any] = [None] * n
    columns: list[list[Any]] = []
    for name in ANALYSTS[:3]:
        sig = r.signals.get(name)
        if sig is None:
            columns += [missing, missing, missing]
        else:
            columns += [sig.actions.tolist(), sig.strengths.tolist(), sig.confidences.tolist()]
    if rl:
        votes, voted = r.rl_signals, r.rl_voted
        if votes is None or voted is None:
            columns += [missing, missing, missing]
        else:
            mask: list[bool] | None = None if voted.all() else voted.tolist()
            for values in (votes.actions, votes.strengths, votes.confidences):
                column: list[Any] = values.tolist()
                if mask is not None:
                    column = [v if ok else None for v, ok in zip(column, mask, strict=True)]
                columns.append(column)
    return columns


_IsoDates = tuple[npt.NDArray[np.datetime64], npt.NDArray[np.object_]]
"""Dates (sorted, unique, datetime64[D]) and their ISO text (``str`` objects), for
``_decision_columns``."""


def _union_dates(results: Sequence[SymbolResult]) -> npt.NDArray[np.datetime64]:
    """Every date of ``results`` once, sorted, as a new datetime64[D] array: the first
    symbol's dates when every symbol has the same (a symbol's dates are strictly increasing,
    so that is what ``np.unique`` of them all gives), else ``np.unique`` of them all."""
    first = results[0].dates.astype("datetime64[D]")  # a copy
    if all(np.array_equal(first, r.dates) for r in results[1:]):
        return first
    out: npt.NDArray[np.datetime64] = np.unique(
        np.concatenate([r.dates.astype("datetime64[D]") for r in results])
    )
    return out


def _iso_dates(results: Sequence[SymbolResult]) -> _IsoDates:
    """Every date of ``results`` once, with its ISO text (the symbols share most dates:
    formatting each once costs a tenth of formatting each symbol's)."""
    days = _union_dates(results)
    text = np.empty(days.shape[0], dtype=object)
    text[:] = np.datetime_as_string(days, unit="D").tolist()
    return days, text


def _decision_columns(
    run_id: int, symbol_id: int, r: SymbolResult, sqlite: _IsoDates | None, rl: bool
) -> list[list[Any]]:
    """One symbol's decision rows column by column, in ``_DECISION_COLUMNS`` order (``rl``
    False: without the RL columns, ``_NO_RL_COLUMNS``); on SQLite (``sqlite``: ``_iso_dates``
    of the run) exactly what the ORM types store (dates as ISO text, ``inf`` days as NULL)."""
    n = len(r.actions)
    days: list[float | None] = r.days_since_last_trade.tolist()
    if sqlite is not None:
        for i in np.flatnonzero(r.days_since_last_trade == math.inf).tolist():
            days[i] = None
        known, text = sqlite
        dates: list[Any] = text[np.searchsorted(known, r.dates.astype("datetime64[D]"))].tolist()
    else:
        dates = r.dates.astype("datetime64[D]").tolist()
    return [
        [run_id] * n,
        [symbol_id] * n,
        dates,
        r.actions.tolist(),
        r.strengths.tolist(),
        r.position.tolist(),
        r.leverage.tolist(),
        r.cash_fraction.tolist(),
        days,
        r.equity.tolist(),
        *_signal_columns(r, rl),
    ]


def _write_decisions(
    session: Session, run_id: int, symbol_ids: Sequence[int], results: Sequence[SymbolResult]
) -> None:
    """Store the decisions of every symbol (in the order given), a commit after each
    ``_BATCH`` rows.

    The rows are kept column by column (``_decision_columns``), a symbol's at a time added to
    what is pending (``_batches``), so no more than a batch and a symbol's rows are held; each
    batch is inserted and committed by ``store.decision_batches`` (on SQLite with the foreign
    keys checked once a batch). SQLite takes pre-formatted values; other databases take
    the Core insert with SQLAlchemy's own type handling. When the RL analyst voted on no
    decision of the run (off, or failed to load), its columns are left out of the INSERT and
    hold their default, NULL: the driver binds each ``None`` through its adapter lookup, which
    costs about 15 times a float's bind.
    """
    sqlite = session.connection().dialect.name == "sqlite"
    rl = any(r.rl_voted is not None and bool(r.rl_voted.any()) for r in results)
    names = _DECISION_COLUMNS if rl else _NO_RL_COLUMNS
    iso = _iso_dates(results) if sqlite and results else None
    symbols = (
        _decision_columns(run_id, symbol_id, r, iso, rl)
        for symbol_id, r in zip(symbol_ids, results, strict=True)
    )
    with decision_batches(session) as commit:
        for batch in _batches(names, symbols):
            _insert_decisions(commit, batch)


def _batches(
    names: Sequence[str], symbols: Iterable[list[list[Any]]]
) -> Iterator[dict[str, list[Any]]]:
    """``_BATCH`` rows at a time (the last batch fewer), column by column under ``names``, from
    each symbol's ``_decision_columns`` in turn."""
    pending: list[list[Any]] = [[] for _ in names]
    for columns in symbols:
        for column, values in zip(pending, columns, strict=True):
            column += values
        while len(pending[0]) >= _BATCH:
            yield dict(zip(names, [c[:_BATCH] for c in pending], strict=True))
            for column in pending:
                del column[:_BATCH]
    if pending[0]:
        yield dict(zip(names, pending, strict=True))


def _insert_decisions(commit: DecisionBatch, columns: dict[str, list[Any]]) -> None:
    """Insert and commit one batch of decision rows (``commit``: from
    ``store.decision_batches``), given column by column (``_decision_columns``' values under
    ``_DECISION_COLUMNS``' names)."""
    commit(columns)
