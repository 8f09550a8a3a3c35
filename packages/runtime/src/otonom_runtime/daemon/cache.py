"""What a daemon's tick keeps between ticks (``TickCache``): each symbol's last ``LOOKBACK`` bars,
its latest news score and the macro series, so that a steady tick reads only what is new.

A cold tick (the first, or a symbol the cache does not hold) reads a symbol's whole history and
news (``load_tick_bars_ahead``/``load_tick_news_ahead``, as ``read_tick``) and keeps their
tail: the last bars in a window of buffers (a steady tick writes its bar past the window and
moves it on), the latest score dated on or before the newest bar (those dated after it apart,
until a bar comes). The same read goes on to the cache's horizon, ``_AHEAD`` past the tick's
date: the rows dated after the tick are held (``daemon.ahead.Ahead``) until a tick's date
reaches them. While the universe, its symbols' ids and kinds and the cache's rows stay as they
are, a call reuses the last one's per-symbol lists (``_Steady``), and the symbols are read by
name again only when the symbols table's count or largest id changed (``daemon.seen.Seen``).

A steady tick before the horizon reads, in one statement per table (the news: per news source;
``store.ticks.new_rows``), the rows inserted since the previous tick (an id above those it has
seen: one range of the integer primary key, whatever the number of symbols); a tick past the
horizon also reads the rows dated up to the next horizon (each symbol's (symbol, date) index
searched once). A bar of a symbol dated on or before its newest cached bar is one read again
(the same date and values as a bar in its window: dropped; on PostgreSQL a writer still in
progress keeps the ticks reading from an earlier bound, ``daemon.seen``), one imported out of
order, or one that replaced a row of its day under a new id (SQLite's ``INSERT OR REPLACE``,
whose delete no trigger sees): the symbol is read whole again (and the tick replays its paper
sleeve on that history). A news or macro score read the same way (a new row of a day held)
replaces the one of its day. What any writer changes in place or deletes (the store's
``update_*``, another tool's SQL) the store's change log names (``store.changelog``, read when
its largest id moved: ``store.ticks.changed_keys``): those symbols are read whole again, those
macro sources too, and the names again when a symbol's own row changed. A symbol read whole is
in ``replay_due`` until its next decision is recorded: the tick that decides it replays its
paper sleeve on its history (read again if a tick with nothing to decide read it). The newest
bars' market features come from ``otonom_schema.market_feature_panel`` over the cached
windows: bit for bit the last row of ``market_feature_matrix`` of each whole history (tested),
so a tick after the cache decides exactly as a cold one. ``clear()`` reads everything again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from otonom_runtime.daemon.ahead import Ahead
from otonom_runtime.daemon.cached import Cached, CachedSymbol
from otonom_runtime.daemon.paper import LastDecision, LastDecisions, Tail, Windows
from otonom_runtime.daemon.scores import Dated, LatestNews, dated, latest_of
from otonom_runtime.daemon.seen import Seen
from otonom_runtime.ranges import warmed_up
from otonom_runtime.store import load_macro, sentiment_source
from otonom_runtime.store.ticks import (
    LiveDecisions,
    Marks,
    load_live_decisions,
    load_live_tail,
    load_tick_bars_ahead,
    load_tick_news_ahead,
    new_rows,
    tick_marks,
)
from otonom_schema import (
    LOOKBACK,
    MarketHistory,
    PanelCarry,
    SentimentSeries,
    market_feature_panel_step,
)

if TYPE_CHECKING:
    from otonom_runtime.daemon.tick import SymbolInputs
    from otonom_runtime.strategy import StrategyConfig

__all__ = ["TickCache"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_EPOCH: Final = dt.date(1970, 1, 1).toordinal()
_SLACK: Final = LOOKBACK
"""Columns of the cache's buffers past the windows: a steady tick's bars are written there and
the windows move on; they are copied back to the buffers' start once every ``_SLACK`` bars."""
_AHEAD: Final = dt.timedelta(days=32)
"""How far past a tick's date the cache reads each symbol's bars and news (its horizon): the
ticks up to the horizon find what is new by row id alone."""


def _horizon(end: dt.date) -> dt.date:
    """The date ``_AHEAD`` past ``end`` (the last date there is, past it)."""
    return end + _AHEAD if end <= dt.date.max - _AHEAD else dt.date.max


def _sources(
    config: StrategyConfig, names: Sequence[str], synthetic: dict[str, bool]
) -> dict[str, dict[str, str]]:
    """The sources each symbol reads, as ``backtest.runner._symbols`` gives them
    (``sentiment_source``'s rule, which depends on whether the symbol is synthetic only): one
    of two dicts shared by every symbol of its kind: read them, never change them."""
    data = config.data
    kinds = {
        kind: {
            "news": sentiment_source(kind, data.news_source),
            "macro": sentiment_source(kind, data.macro_source),
        }
        for kind in (False, True)
    }
    return {name: kinds[synthetic[name]] for name in names}


@dataclass(frozen=True, slots=True)
class _Steady:
    """What ``TickCache.refresh`` made of a universe, kept for the next call: while the same
    names have the same ids and kinds and the cache's rows are as they were (``version``),
    a tick reads no symbol whole and no bar came out of order, the next call's symbols are
    these (their lists reused: a steady tick of thousands makes none of them again)."""

    config: StrategyConfig
    version: int
    names: list[str]
    ids: dict[str, int]
    synthetic: dict[str, bool]
    found: list[str]
    found_ids: list[int]
    sources: list[dict[str, str]]
    rows: list[int]
    macros: set[str]


class TickCache:
    """The bars, news and macro a tick read, kept for the next (see the module docstring)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget everything: the next tick reads every symbol whole."""
        self._row: dict[int, int] = {}
        self._rows_memo: tuple[I64, I64] | None = None  # ``_rows_of``; None: a row changed
        self._free: list[int] = []  # rows of forgotten symbols
        # each row's window: LOOKBACK columns of these buffers from ``_offset`` (``_days``,
        # ``_values``); a steady tick writes its bars past the windows and moves the offset
        self._day_buffer = np.zeros((0, LOOKBACK + _SLACK), dtype=np.int64)
        self._value_buffer = np.zeros((5, 0, LOOKBACK + _SLACK))  # open, high, low, close, volume
        self._offset = 0
        self._count = np.zeros(0, dtype=np.int64)  # bars in each history
        self._first = np.zeros(0, dtype=np.int64)  # the day number of each history's first bar
        self._carry = PanelCarry.none(0)  # the panel's series at each row's newest bar
        self._news = LatestNews()  # each row's latest news score
        self._news_source: dict[int, str] = {}
        self._macro: dict[str, Dated] = {}
        self._end: dt.date | None = None
        # every row dated on or before _ahead with an id up to _seen.ids is held (a window, the
        # news, the macro, or, dated after _end, _later_bars/_later_news) or of no held symbol
        self._ahead: dt.date | None = None
        self._later_bars, self._later_news = Ahead(5), Ahead(1)
        self._seen = Seen()  # the row ids read up to, the symbols read by name
        # symbols read whole since their last recorded decision: their sleeves to replay
        self.replay_due: set[int] = set()
        self._decided: dict[int, dt.date] = {}  # each symbol's newest live decision, recorded
        self._strategy: str | None = None
        self._version = getattr(self, "_version", 0) + 1  # bumped when the rows' symbols change
        self._steady: _Steady | None = None  # ``refresh``'s last universe, while it holds

    @property
    def _days(self) -> I64:
        """Each row's window of day numbers, (rows, LOOKBACK): a view of the buffer."""
        return self._day_buffer[:, self._offset : self._offset + LOOKBACK]

    @property
    def _values(self) -> F64:
        """Each row's window of opens, highs, lows, closes and volumes, (5, rows, LOOKBACK): a
        view of the buffer."""
        return self._value_buffer[:, :, self._offset : self._offset + LOOKBACK]

    def refresh(
        self, session: Session, config: StrategyConfig, names: Sequence[str], end: dt.date
    ) -> tuple[Cached, list[str]]:
        """Bring every symbol of ``names`` up to ``end`` (its bars and news dated on or before
        it): the cached symbols with a bar, in the order given (``Cached``: columns), and the
        names without one.
        ``UnknownSymbolError`` for a symbol not in the store."""
        marks = tick_marks(session)  # before any read: a row inserted after it is new next tick
        changed = self._changed(session, marks)  # (a symbol renamed: before the names' ids)
        ids, synthetic = self._seen.symbols(session, names, marks)
        if self._end is not None and end < self._end:
            self.clear()  # an earlier end than the cache's: read everything again
        steady = self._steady
        if not (
            steady is not None
            and self._end is not None
            and steady.config is config
            and steady.version == self._version
            and steady.names == names
            and steady.ids == ids
            and steady.synthetic == synthetic
        ):
            steady = None
        if steady is not None:  # the rows hold exactly these symbols, each with its source
            held = steady.found_ids
        else:
            sources = _sources(config, names, synthetic)
            self._forget(set(self._row) - set(ids.values()))  # not refreshed now: stale later
            held = [
                ids[n]
                for n in names
                if ids[n] in self._row and self._news_source[ids[n]] == sources[n]["news"]
            ]
        if self._end is None:
            held = []
        ahead = self._ahead if self._ahead is not None and end <= self._ahead else _horizon(end)
        stale = self._advance(session, held, end, ahead) if held else set()
        stale.update(changed.intersection(held))
        self._ahead = ahead
        if steady is not None and not stale:  # a steady tick: nothing read whole
            self._add_macro(session, steady.macros, end)
            self._end = end
            self._seen.read(marks)
            return self._cached(steady.found, steady.found_ids, steady.sources, steady.rows), []
        if steady is not None:
            sources = _sources(config, names, synthetic)
        kept = set(held) - stale
        macros = {s["macro"] for s in sources.values()}
        self._add_macro(session, macros, end)
        whole = self._read_whole(
            session, [n for n in names if ids[n] not in kept], ids, sources, end
        )
        self._end = end
        self._seen.read(marks)
        row_of = self._row
        found = [n for n in names if ids[n] in row_of]
        found_ids = [ids[n] for n in found]
        rows = [row_of[i] for i in found_ids]
        chosen = [sources[n] for n in found]
        missing = [n for n in names if ids[n] not in row_of]
        if not missing:  # what the next call reuses while nothing changes
            self._steady = _Steady(
                config, self._version, list(names), ids, synthetic, found, found_ids, chosen,
                rows, macros,
            )  # fmt: skip
        return self._cached(found, found_ids, chosen, rows, whole), missing

    def _changed(self, session: Session, marks: Marks) -> set[int]:
        """The symbols whose bars, news or own row (a name or kind: the symbols are read by
        name again) the change log names since the cache read it (``Seen.changes``); the
        macro sources it names are dropped, to be read whole again. Nothing before the first
        read: that one reads everything whole."""
        if self._end is None:
            return set()
        symbols: set[int] = set()
        for kind, sid, source in self._seen.changes(session, marks):
            if kind == "macro":
                self._macro.pop(str(source), None)
            elif sid is not None:
                symbols.add(sid)
        return symbols

    def _cached(
        self,
        found: list[str],
        found_ids: list[int],
        sources: list[dict[str, str]],
        rows: list[int],
        whole: dict[int, SymbolInputs] | None = None,
    ) -> Cached:
        """``refresh``'s symbols: these, with the date of each one's newest cached bar."""
        newest = (self._days[rows, -1] + _EPOCH).tolist()
        day_of = {day: dt.date.fromordinal(day) for day in set(newest)}  # a few days a tick
        return Cached(
            found,
            found_ids,
            sources,
            rows,
            [day_of[day] for day in newest],
            [whole.get(i) for i in found_ids] if whole else [None] * len(found),
        )

    def _advance(self, session: Session, held: list[int], end: dt.date, ahead: dt.date) -> set[int]:
        """Read the rows the held symbols lack up to ``ahead`` (``new_rows``: by row id alone
        while ``ahead`` is the cache's horizon, else the rows dated past that horizon too),
        hold those dated after ``end`` and append the others; the ids of the symbols to read
        whole again (a bar out of order)."""
        assert self._end is not None
        assert self._ahead is not None
        horizon, dated = self._ahead, ahead != self._ahead
        bars = new_rows(session, "bars", held, horizon, ahead, self._seen.ids["bars"], dated=dated)
        self._later_bars.put_rows(bars)
        by_source: dict[str, list[int]] = {}
        for symbol_id in held:
            by_source.setdefault(self._news_source[symbol_id], []).append(symbol_id)
        for source, group in by_source.items():  # one source a read: its index's range
            found = new_rows(
                session, "news", group, horizon, ahead, self._seen.ids["news"], source, dated=dated
            )
            self._later_news.put_rows(found)
        day = end.toordinal() - _EPOCH
        sid, days, values = self._later_bars.take(day)
        stale: set[int] = set()
        if days.size:
            at = self._rows_of(sid)
            old = days <= self._days[at, -1]  # a bar read again, or one before the cached ones
            if old.any():
                # a bar of a day in the window with the values held is one read again (the
                # PostgreSQL fence); one out of order, or with other values (a row of its day
                # replaced under a new id), is read whole with its symbol
                match = self._days[at[old]] == days[old, None]
                cached = self._values[:, at[old], match.argmax(axis=1)]
                again = match.any(axis=1) & (cached == values[:, old]).all(axis=0)
                stale.update(sid[old][~again].tolist())
                keep = ~old & ~np.isin(sid, list(stale))
                sid, days, values, at = sid[keep], days[keep], values[:, keep], at[keep]
        if days.size:
            starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
            stops = np.r_[starts[1:], sid.size]
            at = at[starts]
            one = stops - starts == 1  # the steady case, all symbols at once
            self._append(at[one], days[starts[one]][:, None], values[:, starts[one]][..., None])
            for i in np.flatnonzero(~one).tolist():
                a, b = int(starts[i]), int(stops[i])
                self._append(at[i : i + 1], days[None, a:b], values[:, None, a:b])
        sids, news_days, scores = self._later_news.take(day)
        if news_days.size:
            rows = np.fromiter(map(self._row.__getitem__, sids.tolist()), np.int64, sids.size)
            self._news.add(sids, rows, news_days, scores[0], self._days[rows, -1])
        self._news.settle(self._row, self._days[:, -1])
        return stale

    def _rows_of(self, sids: I64) -> I64:
        """The cache rows of the symbol ids ``sids``: the previous call's when it asked for
        the same ids and no symbol's row changed since (a steady tick), else looked up."""
        memo = self._rows_memo
        if memo is not None and np.array_equal(memo[0], sids):
            return memo[1]
        at = np.array([self._row[i] for i in sids.tolist()], dtype=np.int64)
        self._rows_memo = sids, at
        return at

    def _append(self, rows: I64, days: I64, values: F64) -> None:
        """Append ``days`` (len(rows), k) and ``values`` (5, len(rows), k) to the windows of
        ``rows``, the oldest bars shifted out."""
        n = days.shape[1]
        k = min(n, LOOKBACK)
        if rows.size == self._count.size and (rows == np.arange(rows.size)).all():
            # every row in order (a steady tick): the bars written past the windows, which
            # move on (no copy of the windows but once every _SLACK bars, to the buffers' start)
            if self._offset + k > _SLACK:
                at = self._offset
                self._day_buffer[:, :LOOKBACK] = self._day_buffer[:, at : at + LOOKBACK]
                self._value_buffer[:, :, :LOOKBACK] = self._value_buffer[:, :, at : at + LOOKBACK]
                self._offset = 0
            end = self._offset + LOOKBACK
            self._day_buffer[:, end : end + k] = days[:, -k:]
            self._value_buffer[:, :, end : end + k] = values[:, :, -k:]
            self._offset += k
            self._count += n
            return
        self._days[rows, :-k] = self._days[rows, k:]
        self._days[rows, -k:] = days[:, -k:]
        self._values[:, rows, :-k] = self._values[:, rows, k:]
        self._values[:, rows, -k:] = values[:, :, -k:]
        self._count[rows] += n

    def _read_whole(
        self,
        session: Session,
        names: list[str],
        ids: dict[str, int],
        sources: dict[str, dict[str, str]],
        end: dt.date,
    ) -> dict[int, SymbolInputs]:
        """Read ``names`` whole (``load_tick_bars``/``load_tick_news``) and keep their tails;
        their inputs by symbol id."""
        from otonom_runtime.daemon.tick import SymbolInputs

        if not names:
            return {}
        self._version += 1  # rows kept anew, or dropped
        assert self._ahead is not None
        assert self._ahead >= end
        keys = [ids[n] for n in names]
        bars, later = load_tick_bars_ahead(session, {ids[n]: n for n in names}, end, self._ahead)
        news, later_news = load_tick_news_ahead(
            session, {ids[n]: sources[n]["news"] for n in names}, end, self._ahead
        )
        self._later_bars.drop(keys)  # held anew: what was held of them read again
        self._later_news.drop(keys)
        with_bars = np.fromiter(bars, dtype=np.int64, count=len(bars))  # the others: not held
        self._later_bars.put_rows(later, with_bars)
        self._later_news.put_rows(later_news, with_bars)
        self._grow([ids[n] for n in names if ids[n] in bars and ids[n] not in self._row])
        macros = {
            source: SentimentSeries(np.array(t.days, dtype="datetime64[D]"), np.array(t.scores))
            for source, t in self._macro.items()
            if t.days
        }
        out = {}
        for n in names:
            sid = ids[n]
            if sid not in bars:
                self._row.pop(sid, None)
                self._rows_memo = None
                continue
            self._keep(sid, bars[sid], news.get(sid), sources[n]["news"])
            self.replay_due.add(sid)
            macro = macros.get(sources[n]["macro"])
            out[sid] = SymbolInputs(n, sid, bars[sid], news.get(sid), macro, sources[n])
        return out

    def _forget(self, sids: set[int]) -> None:
        """Drop the symbols ``sids`` (a call without them: their rows would miss what it read
        past; a daemon whose universe shrank, a worker serving another partition); their rows
        are reused."""
        if sids:
            self._version += 1
        self._later_bars.drop(sids)
        self._later_news.drop(sids)
        for sid in sids:
            self._free.append(self._row.pop(sid))
            self._rows_memo = None
            self._news.forget(sid)
            self._news_source.pop(sid, None)
            self._decided.pop(sid, None)

    def _grow(self, sids: list[int]) -> None:
        """Rows for the symbols ``sids``, new to the cache (freed rows first, then one
        allocation for the rest)."""
        self._version += 1
        self._rows_memo = None
        while sids and self._free:
            self._row[sids.pop()] = self._free.pop()
        if not sids:
            return
        first = len(self._count)
        self._row.update({sid: first + i for i, sid in enumerate(sids)})
        k = len(sids)
        width = LOOKBACK + _SLACK
        self._day_buffer = np.concatenate([self._day_buffer, np.zeros((k, width), np.int64)])
        self._value_buffer = np.concatenate([self._value_buffer, np.ones((5, k, width))], axis=1)
        self._count = np.concatenate([self._count, np.zeros(k, np.int64)])
        self._first = np.concatenate([self._first, np.zeros(k, np.int64)])
        self._news.grow(k)
        old, more = _parts(self._carry), _parts(PanelCarry.none(k))
        self._carry = PanelCarry(*(np.concatenate([a, b]) for a, b in zip(old, more, strict=True)))

    def _keep(
        self, sid: int, history: MarketHistory, news: SentimentSeries | None, source: str
    ) -> None:
        row = self._row[sid]
        k = min(len(history), LOOKBACK)
        self._days[row] = 0
        self._values[:, row] = 1.0
        self._days[row, -k:] = history.dates[-k:].astype(np.int64)
        for i, col in enumerate((history.open, history.high, history.low, history.close)):
            self._values[i, row, -k:] = col[-k:]
        self._values[4, row, -k:] = history.volume[-k:]
        self._count[row] = len(history)
        self._first[row] = history.dates[0].astype(np.int64)
        self._carry.day[row] = PanelCarry.none(1).day[0]  # its window is new: nothing carried
        self._news_source[sid] = source
        self._news.keep(sid, row, int(self._days[row, -1]), news)

    def _add_macro(self, session: Session, wanted: set[str], end: dt.date) -> None:
        """Read each macro source of ``wanted``: whole when new to the cache, else the rows it
        lacks."""
        held = sorted(wanted & set(self._macro)) if self._end is not None else []
        for source in sorted(wanted - set(held)):
            self._macro[source] = dated(load_macro(session, source=source, end=end))
        if not held:
            return
        assert self._end is not None
        found = new_rows(session, "macro", held, self._end, end, self._seen.ids.get("macro", 0))
        for source, day, score in zip(
            found.keys, found.days.astype(np.int64).tolist(), found.values[0].tolist(), strict=True
        ):
            self._macro[source].add(day, score)

    def reread(self, session: Session, symbols: Sequence[CachedSymbol]) -> dict[int, SymbolInputs]:
        """Read ``symbols`` whole again up to the cache's end (a sleeve to replay); their
        inputs by symbol id."""
        assert self._end is not None
        given = Cached.of(symbols)
        ids = dict(zip(given.symbols, given.ids, strict=True))
        sources = dict(zip(given.symbols, given.sources, strict=True))
        return self._read_whole(session, list(ids), ids, sources, self._end)

    def live(
        self, session: Session, strategy: str, symbols: Sequence[CachedSymbol]
    ) -> tuple[LastDecisions, dict[int, LiveDecisions]]:
        """Each symbol's newest live decision of ``strategy`` in the store (``LastDecisions``:
        columns; a symbol without one left out) and, for the symbols whose decisions were read
        whole, all of them. A symbol whose newest decision the cache knows is verified in one
        statement for them all (``load_live_tail``: its decisions since that date, as arrays:
        its newest must be the one recorded; a later one is another process's, none means it
        is gone); the others are read whole (``load_live_decisions``)."""
        if strategy != self._strategy:
            self._decided, self._strategy = {}, strategy
        symbol_ids = Cached.of(symbols).ids
        decided = self._decided
        known = [i for i in symbol_ids if i in decided]
        last = LastDecisions()
        if known:
            since = min(decided[i] for i in known)
            ids, days, actions, strengths = load_live_tail(session, strategy, known, since)
            # each symbol's newest decision since: the one the cache recorded, or the symbol is
            # read whole
            newest = np.flatnonzero(np.r_[ids[1:] != ids[:-1], True]) if ids.size else ids
            dates = days[newest].tolist()
            same = [d == decided[i] for i, d in zip(ids[newest].tolist(), dates, strict=True)]
            at = newest[np.array(same, dtype=bool)]
            last = LastDecisions(
                ids[at].tolist(),
                dates if all(same) else days[at].tolist(),
                actions[at].tolist(),
                strengths[at].tolist(),
            )
            if at.size < len(known):  # some decision not the one stored: read them whole
                for sid in np.setdiff1d(known, ids[at]).tolist():
                    del decided[sid]
        rest = [i for i in symbol_ids if i not in decided]
        whole = load_live_decisions(session, strategy, rest) if rest else {}
        for sid, found in whole.items():
            date = found.dates[-1].item()
            last.put(sid, LastDecision(date, int(found.actions[-1]), float(found.strengths[-1])))
            decided[sid] = date
        return last, whole

    def recorded(self, ids: Sequence[int] | None, dates: Sequence[dt.date] = ()) -> None:
        """The tick's decisions were recorded (each symbol id's bar date; their sleeves
        replayed, none in ``replay_due`` any more), or were refused (``ids`` None): the next tick
        reads the live decisions whole."""
        if ids is None:
            self._decided = {}
        else:
            self._decided.update(zip(ids, dates, strict=True))
            self.replay_due.difference_update(ids)

    def windows(self) -> Windows:
        """Every row's cached bars (``paper.Windows``: the cache's arrays, valid until its
        next ``refresh``)."""
        return Windows(self._days, self._values[0], self._values[3], self._count)

    def warm(self, rows: Sequence[int]) -> list[bool]:
        """Whether each row's newest bar may be decided: the backtester's warm-up rule
        (``ranges.warmed_up``: ``LOOKBACK`` bars before it, ``WARMUP_DAYS`` days after the
        history's first bar)."""
        at = np.asarray(rows, dtype=np.int64)
        ready = warmed_up(self._count[at] - 1, self._first[at], self._days[at, -1])
        return ready.tolist()  # type: ignore[no-any-return]

    def tails(self, rows: Sequence[int]) -> list[Tail | None]:
        """Each row's last two bars as one tuple of Python numbers (``TickInputs.tail``: day
        numbers as floats, opens, closes; None where it holds one bar), read for all rows at
        once (a tuple a row, made from six columns)."""
        picked = np.asarray(rows, dtype=np.int64)
        at: I64 | slice = picked
        if np.array_equal(picked, np.arange(len(self._count))):
            at = slice(None)  # every row in order (a steady tick): no gathering
        numbers = np.concatenate(
            [
                self._days[at, -2:].astype(np.float64),
                self._values[0][at, -2:],
                self._values[3][at, -2:],
            ],
            axis=1,
        )
        tails = zip(*numbers.T.tolist(), strict=True)
        if bool((self._count[at] >= 2).all()):  # the usual case
            return list(tails)
        two = (self._count[at] >= 2).tolist()
        return [t if ok else None for t, ok in zip(tails, two, strict=True)]

    def market(self, symbols: Sequence[CachedSymbol]) -> F64:
        """The market features of each symbol's newest bar, (N, 34): the panel of their cached
        windows with their news and macro (``market_feature_panel_step``, carried from the
        previous call: a window one bar on computes its MACD line and vol at that bar only;
        ``_keep`` drops a row's carry when its window is read anew)."""
        given = Cached.of(symbols)
        picked = np.array(given.rows, dtype=np.int64)
        every = np.array_equal(picked, np.arange(len(self._count)))
        rows: I64 | slice = slice(None) if every else picked  # every row in order: no copies
        days = self._days[rows]
        newest = days[:, -1].tolist()
        macro = latest_of([self._macro[s["macro"]] for s in given.sources], newest)
        h, lo, c, v = (self._values[i][rows] for i in range(1, 5))
        carry = self._carry
        market, after = market_feature_panel_step(
            days.view("datetime64[D]"),
            c,
            h,
            lo,
            v,
            self._count[rows],
            news=(self._news.day[rows].view("datetime64[D]"), self._news.score[rows]),
            macro=macro,
            carry=PanelCarry(carry.line[rows], carry.vol[rows], carry.day[rows]),
        )
        carry.line[rows], carry.vol[rows], carry.day[rows] = after.line, after.vol, after.day
        return market


def _parts(carry: PanelCarry) -> tuple[F64, F64, I64]:
    return carry.line, carry.vol, carry.day
