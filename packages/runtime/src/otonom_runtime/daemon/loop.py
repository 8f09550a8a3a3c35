"""The daemon's tick and loop: ``run_tick`` (decide every symbol's newest bar not yet decided
and record it, one transaction) and ``run_daemon`` (ticks every interval until stopped)."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from otonom_runtime._errors import DaemonError
from otonom_runtime._text import counted
from otonom_runtime.backtest.runner import _rl_model_params
from otonom_runtime.daemon.bars import BarSource
from otonom_runtime.daemon.cached import Cached
from otonom_runtime.daemon.paper import Broker, Inputs, LastDecisions
from otonom_runtime.daemon.reload import ModelWatch, daemon_state
from otonom_runtime.daemon.rows import Holding, Holdings, Portfolios, fields
from otonom_runtime.daemon.tick import Columns, Decisions, Ensemble, TickDecision
from otonom_runtime.ensemble import ANALYSTS
from otonom_runtime.ranges import WARMUP_DAYS
from otonom_runtime.store import HEARTBEAT_INTERVAL_S, BacktestRun, stored_names, this_process
from otonom_runtime.store.daemons import write_daemon_state
from otonom_runtime.store.jsontext import SharedValues
from otonom_runtime.store.ticks import LiveDecisions, load_live_decisions, record_tick
from otonom_schema import LOOKBACK, Action

__all__ = ["LIVE_PURPOSE", "OLD_BAR_DAYS", "TickReport", "parse_interval", "run_daemon", "run_tick"]

log = logging.getLogger("otonom_runtime.daemon")

LIVE_PURPOSE: Final = "live"
"""The ``params["purpose"]`` of a tick's run row (internal: never a dataset's teacher)."""
_FAR: Final = dt.date(9999, 12, 31)
_SHOWN: Final = 10  # symbols named in a summary line, then "and N more"
OLD_BAR_DAYS: Final = 7
"""A live daemon (no ``as_of``) warns of the bars a tick decided that are dated more than this
many days before today: a "live" decision of a bar weeks old (the store's newest bar is old:
the imports stopped, a delisted symbol) looks like any other in the output. A week leaves a
weekend and the holidays that follow it quiet."""
_EXAMPLES: Final = 5
_INTERVAL: Final = re.compile(r"^(\d+)([smhd])$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """``30s``, ``5m``, ``1h``, ``1d`` as seconds (> 0); ``DaemonError`` otherwise."""
    found = _INTERVAL.match(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise DaemonError(
            f"interval is {text!r}; expected a positive whole number and a unit, e.g. 30s, "
            "5m, 1h or 1d"
        )
    return float(int(found.group(1)) * _UNIT_S[found.group(2)])


@dataclass
class TickReport:
    """One tick: the run id of its record (None: nothing written), its decisions and each
    one's holding (``run_tick``: ``Decisions`` and the broker's holdings, ``Holdings`` for
    ``PaperBroker``: sequences whose items are made when read), the symbols whose newest bar
    was decided already, those without bars and those whose newest bar is still in the
    backtester's warm-up (``warming_up``: fewer than ``LOOKBACK`` bars before it or fewer than
    ``WARMUP_DAYS`` days after the symbol's first bar: not decided); ``conflict``: the store
    refused the tick's rows because another writer recorded them first (``record_tick``:
    nothing written; the next tick reads again)."""

    run_id: int | None
    decisions: Sequence[TickDecision] = field(default_factory=list)
    holdings: Sequence[Holding] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    no_bars: list[str] = field(default_factory=list)
    warming_up: list[str] = field(default_factory=list)
    fallbacks: int = 0
    conflict: bool = False

    def summary(self) -> str:
        """Plain text: a line for the tick and one per decision (what ``otonom daemon``
        prints)."""
        if self.conflict:
            return (
                "tick: another process recorded these bars first; nothing written, the next "
                "tick reads again"
            )
        done = counted(len(self.up_to_date), "symbol")
        if self.run_id is None:
            head = f"tick: nothing new ({done} decided already)"
            if self.warming_up:  # new bars, none past the warm-up
                warming = len(self.warming_up)
                head = f"tick: nothing decided ({done} decided already, {warming} warming up)"
        else:
            head = (
                f"tick run {self.run_id}: {counted(len(self.decisions), 'decision')}, "
                f"{done} decided already, RL fallbacks {self.fallbacks}"
            )
        lines = [head]
        if self.no_bars:
            lines.append(f"  no bars: {', '.join(self.no_bars)}")
        if self.warming_up:
            shown = ", ".join(self.warming_up[:_SHOWN])
            more = len(self.warming_up) - _SHOWN
            lines.append(
                f"  warming up, not decided (fewer than {LOOKBACK} bars or {WARMUP_DAYS} days "
                f"of history before the newest bar): {shown}"
                + (f" and {more} more" if more > 0 else "")
            )
        for d, h in zip(self.decisions, self.holdings, strict=True):
            rl = d.signals.get("rl")
            lines.append(
                f"  {d.symbol:<10} {d.date.isoformat()}  {d.action.name:<4} strength "
                f"{d.strength:.3f}  confidence {d.confidence:.3f}  position "
                f"{d.portfolio.position:+.3f}  equity {h.equity:,.2f}  RL "
                + ("-" if rl is None else rl.action.name)
            )
        return "\n".join(lines)


def run_tick(
    session: Session,
    ensemble: Ensemble,
    symbols: Sequence[str],
    broker: Broker,
    *,
    as_of: dt.date | None = None,
) -> TickReport:
    """Decide every symbol's newest bar (on or before ``as_of``; None: the newest stored)
    that the strategy has not decided live yet, and record the decisions in one
    transaction with their run row (``params["purpose"]`` ``"live"``): the whole tick or
    nothing. A symbol whose newest bar is decided already is left alone, so a second tick on
    the same bars records nothing; a tick that another process recorded first while this one
    decided is not written (``TickReport.conflict``). Then the decisions go to
    ``broker.submit``. The reads go through the ensemble's cache (``Ensemble.cache``: only
    what is new since its last tick), the states through ``market_feature_panel``."""
    names = list(dict.fromkeys(symbols))
    if not names:
        raise DaemonError("no symbols given; expected at least one")
    cache = ensemble.cache
    cached, no_bars = cache.refresh(session, ensemble.config, names, as_of or _FAR)
    last, live = cache.live(session, ensemble.name, cached)
    last_dates = last.columns(cached.ids)[0]
    new = [
        date is None or date < newest
        for date, newest in zip(last_dates, cached.newest, strict=True)
    ]
    waiting = [i for i, fresh in enumerate(new) if fresh]
    warm = cache.warm([cached.rows[i] for i in waiting])  # the backtester's warm-up, per symbol
    pending = cached.pick([i for i, ok in zip(waiting, warm, strict=True) if ok])
    report = TickReport(None, no_bars=no_bars)
    report.up_to_date = [s for s, fresh in zip(cached.symbols, new, strict=True) if not fresh]
    report.warming_up = [cached.symbols[i] for i, ok in zip(waiting, warm, strict=True) if not ok]
    if not pending:
        session.rollback()  # end the read transaction: nothing to write
        return report
    capital = ensemble.params.initial_capital / len(names)
    market = cache.market(pending)
    items = _broker_inputs(session, ensemble, pending, market, (last, live), broker, capital)
    holdings = broker.holdings(items, ensemble.params, capital)
    held = (
        holdings
        if isinstance(holdings, Holdings)
        else Holdings(Portfolios.of([h.portfolio for h in holdings]), [h.equity for h in holdings])
    )
    before = ensemble.fallbacks
    decisions, signals = ensemble.decide_columns(
        pending.symbols, pending.newest, market, held.portfolios
    )
    report.fallbacks = ensemble.fallbacks - before
    run = _run_row(ensemble, pending, decisions, broker, report.fallbacks)
    columns = _columns(ensemble.name, pending, decisions, held.equity, signals)
    report.run_id = record_tick(session, run, columns)
    if report.run_id is None:
        log.warning("tick of %s not recorded: another process recorded it first", ensemble.name)
        cache.recorded(None)
        report.conflict = True
        return report
    cache.recorded(pending.ids, decisions.dates)
    report.decisions, report.holdings = decisions, holdings
    broker.submit(decisions)
    return report


def _broker_inputs(
    session: Session,
    ensemble: Ensemble,
    pending: Cached,
    market: npt.NDArray[np.float64],
    decided: tuple[LastDecisions, dict[int, LiveDecisions]],
    broker: Broker,
    capital: float,
) -> Inputs:
    """What the broker gets of each pending symbol (``Inputs``: columns): its cached bars,
    the risk cap of its newest bar (``engine._prepare``'s expression, on all rows at once),
    its newest live decision and, where the broker cannot resume its sleeve
    (``Broker.lacking``), its whole history and live decisions (read now when the tick has not
    read them whole already)."""
    last, live = decided
    params = ensemble.params
    cache = ensemble.cache
    ids = pending.ids
    items = Inputs(
        pending.symbols,
        ids,
        cache.windows(),
        pending.rows,
        (params.risk.exposure(market) * params.max_leverage).tolist(),
        last.columns(ids),
        list(pending.wholes),  # filled in below where lacking: the tick's own list
        [live.get(i) for i in ids] if live else [None] * len(ids),
        cache.tails(pending.rows),
    )
    lacking = broker.lacking(items, capital)
    if cache.replay_due:  # (a steady tick: none)
        # a symbol decided before whose history was read whole since its last decision (new
        # to the cache, or its rows changed: a bar corrected, deleted or imported out of
        # order; by this tick, or by one that had nothing to decide) is replayed on it
        read = zip(ids, items.lives, items.last_dates, strict=True)
        due = cache.replay_due
        replay = [i for i, (sid, v, d) in enumerate(read) if sid in due and v is None and d]
        lacking = sorted({*lacking, *replay})
    if not lacking:
        return items
    symbols = pending.pick(lacking)
    unread = [i for i in lacking if items.wholes[i] is None]
    whole = ensemble.cache.reread(session, pending.pick(unread)) if unread else {}
    more = load_live_decisions(session, ensemble.name, symbols.ids)
    for i, sid in zip(lacking, symbols.ids, strict=True):
        if items.wholes[i] is None:
            items.wholes[i] = whole[sid]
        items.lives[i] = more.get(sid)
    return items


def _run_row(
    ensemble: Ensemble,
    pending: Cached,
    decisions: Decisions,
    broker: Broker,
    fallbacks: int,
) -> BacktestRun:
    """The tick's run row, ``complete`` (written in the tick's one transaction)."""
    config = ensemble.config
    tally = Counter(decisions.actions)
    counts = {a.name: tally[a] for a in Action}
    now = dt.datetime.now(dt.timezone.utc)
    host, pid, started = this_process()
    return BacktestRun(
        strategy_name=config.name,
        strategy_hash=config.file_sha256,
        params={
            "strategy": config.to_dict(),
            "rl_enabled": ensemble.rl is not None,
            "source": config.source,
            # one of two shared dicts a symbol: the store writes each once (``SharedValues``)
            "sentiment_sources": SharedValues(zip(pending.symbols, pending.sources, strict=True)),
            "purpose": LIVE_PURPOSE,
            "broker": broker.name,
            **_rl_model_params(config, ensemble.rl),
        },
        start_date=min(decisions.dates),
        end_date=max(decisions.dates),
        symbols=list(pending.symbols),
        status="complete",
        finished_at=now,
        metrics={
            "action_counts": {"all": counts},
            "fallbacks": fallbacks,
            "fallback_reason": ensemble.last_error if fallbacks else None,
        },
        host=host,
        pid=pid,
        process_start=started,
        heartbeat_at=now,
    )


def _columns(
    strategy: str,
    pending: Cached,
    decisions: Decisions,
    equity: list[float],
    signals: Columns,
) -> dict[str, list[Any]]:
    """The tick's decision rows column by column, as ``record_tick`` takes them (``equity``:
    each sleeve's; ``signals``: the decisions' signals as ``Ensemble.decide_columns`` gives
    them)."""
    portfolios = decisions.portfolios
    n = len(decisions)
    columns: dict[str, list[Any]] = {
        "symbol_id": pending.ids,
        "date": list(decisions.dates),
        "action": decisions.actions,
        "strength": decisions.strengths,
        "position": portfolios.position,
        "leverage": portfolios.leverage,
        "cash_fraction": portfolios.cash_fraction,
        "days_since_last_trade": portfolios.days_since_last_trade,
        "equity": equity,
        "live_strategy": [strategy] * n,
    }
    for name in ANALYSTS:
        found = signals[name]
        none = [None] * n
        actions, strengths, confidences = (none, none, none) if found is None else found
        columns[f"{name}_action"] = actions
        columns[f"{name}_strength"] = strengths
        columns[f"{name}_confidence"] = confidences
    return columns


class _Stop:
    """Set by SIGINT/SIGTERM: the loop finishes the tick it is in (its write included) and
    exits; a second signal changes nothing more (the write is one transaction either way)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        self.event.set()


@contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _warn_old(decisions: Sequence[TickDecision], today: dt.date) -> None:
    """One warning when some of a live tick's ``decisions`` decided a bar more than
    ``OLD_BAR_DAYS`` before ``today``: how many, and the first few (symbol and date)."""
    pairs = fields(decisions, ("symbol", "date"))  # the tick's columns: no TickDecision made
    oldest = today - dt.timedelta(days=OLD_BAR_DAYS)
    old = [(symbol, date) for symbol, date in pairs if date < oldest]
    if old:
        shown = ", ".join(f"{s} {d.isoformat()}" for s, d in old[:_EXAMPLES])
        log.warning(
            "live tick decided bars more than %d days before today (%s): %d of %d, %s%s; the "
            "store's newest bars of these symbols are old: import newer ones, or replay with "
            "--as-of",
            OLD_BAR_DAYS, today.isoformat(), len(old), len(decisions), shown,
            ", ..." if len(old) > _EXAMPLES else "",
        )  # fmt: skip


class _Stored:
    """The symbols of a tick after the first that the store holds: a symbol added to a
    running daemon's universe before any bar of it was imported is left out (the known ones
    decided) instead of ending the daemon, with one warning per distinct set left out. The
    first tick is given every name: an unknown one there is a typo, and fails
    (``UnknownSymbolError``). Names seen in the store are not looked up again."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self._left_out: list[str] = []

    def __call__(self, session_factory: Callable[[], Any], names: Sequence[str]) -> list[str]:
        new = [name for name in names if name not in self.known]
        if new:
            with session_factory() as session:
                self.known.update(stored_names(session, new))
        left_out = [name for name in new if name not in self.known]
        if left_out and set(left_out) != set(self._left_out):
            log.warning(
                "not in the store: %s; left out of the ticks until their bars are imported "
                "(otonom data import-csv); this tick decides the other %s",
                ", ".join(left_out), counted(len(names) - len(left_out), "symbol"),
            )  # fmt: skip
        self._left_out = left_out
        return [name for name in names if name in self.known]


def _collect_while_idle() -> None:
    """A full garbage collection between ticks, while the loop waits anyway: the objects a tick
    leaves behind (its reads, the broker's sleeves) make the collector run a full collection
    every few ticks otherwise, inside a tick (30-60 ms of a steady tick of 5,000 symbols). A
    collection, not a setting: the collector is as the process had it."""
    gc.collect()


def run_daemon(
    session_factory: Callable[[], Any],
    ensemble: Ensemble,
    symbols: Callable[[], Sequence[str]],
    broker: Broker,
    *,
    once: bool = False,
    interval_s: float = 86400.0,
    as_of: dt.date | None = None,
    report: Callable[[TickReport], None] = lambda r: None,
    notify: Callable[[str], None] = lambda line: None,
    heartbeat_s: float = HEARTBEAT_INTERVAL_S,
    tick: Callable[..., TickReport] = run_tick,
    bars: BarSource | None = None,
) -> int:
    """Tick (``run_tick``) every ``interval_s`` seconds until SIGINT or SIGTERM (``once``:
    one tick). A signal during a tick lets it finish, its write included, then the loop
    exits; during the wait it exits at once. ``session_factory``: a context manager of a
    session (``get_session``); ``symbols``: called each tick (a universe file may change);
    ``report``: given each tick's ``TickReport``; ``tick``: what runs a tick, called as
    ``run_tick`` (``distributed.DaskTick``: on a Dask cluster).

    Between ticks the model is hot-reloaded (``ModelWatch.check``: before each tick and every
    ``heartbeat_s`` of the wait; ``notify`` is given its line when a candidate is swapped in
    or refused), and the daemon's state row (``DaemonState``: heartbeat, model in service,
    refused candidate, counts, predict latencies: the previous run's kept until this process
    has made a predict call of its own) is written at the start, after each tick,
    every ``heartbeat_s`` of the wait and at the end (``status`` ``"stopped"``; ``"failed"``
    when an exception ends the loop, re-raised after: a daemon that fails on another host
    must not read as running in ``otonom status``; the row has no column for the error, which
    goes to the caller as before, the CLI's one ``error:`` line). ``bars``: a
    ``BarSource`` pulled before each tick (its imports committed first). Returns the number of
    ticks run.

    A symbol of ``symbols`` that the store does not hold fails the first tick (a typo); at a
    later tick it is left out, with a warning, until its bars are imported (``bars`` imports
    before that check, so a symbol it creates is decided at once). Without ``as_of`` (live),
    a tick that decided bars older than ``OLD_BAR_DAYS`` logs a warning naming them. After a
    tick, before the wait, the garbage is collected (``_collect_while_idle``): a tick's time
    holds no full collection of what the ticks before left."""
    watch = ModelWatch(ensemble)
    stored = _Stored()
    started_at = dt.datetime.now(dt.timezone.utc)
    ticks = 0

    def beat(status: str = "running") -> None:
        state = daemon_state(watch, started=started_at, ticks=ticks, status=status)
        if state["latency_ms"] is None:  # no predict call of ours yet: the row keeps the last
            del state["latency_ms"]  # run's percentiles (a --once run that decides nothing)
        try:
            with session_factory() as session:
                write_daemon_state(session, ensemble.name, state)
        except Exception as exc:  # the state row must never stop the decisions
            log.warning("daemon state of %s not recorded: %s", ensemble.name, exc)

    def reload() -> None:
        line = watch.check()
        if line is not None:
            notify(line)

    with _stop_on_signals() as stop:
        beat()
        try:
            while not stop.event.is_set():
                started = time.monotonic()
                reload()
                names = symbols()
                if bars is not None:
                    with session_factory() as session:
                        bars.pull(session, names)
                if ticks:
                    names = stored(session_factory, names)
                if names:  # none stored: the warning said so; nothing to tick
                    with session_factory() as session:
                        done = tick(session, ensemble, names, broker, as_of=as_of)
                        report(done)
                    if as_of is None:  # live: the wall clock's today
                        _warn_old(done.decisions, dt.datetime.now(dt.timezone.utc).date())
                    stored.known.update(names)  # the tick found them all
                    ticks += 1
                beat()
                if once:
                    break
                if not stop.event.is_set():
                    _collect_while_idle()
                while not stop.event.is_set():
                    left = interval_s - (time.monotonic() - started)
                    if left <= 0 or stop.event.wait(min(left, heartbeat_s)):
                        break
                    reload()
                    beat()
        except BaseException:
            beat("failed")
            raise
        beat("stopped")
    if stop.signal is not None:
        log.info("daemon stopped by signal %d after %d ticks", stop.signal, ticks)
    return ticks
