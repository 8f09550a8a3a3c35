"""Where a broker plugs in (``Broker``) and the paper broker the daemon runs today.

A broker tells the tick each symbol's portfolio at the close of the bar it decides
(``holdings``) and takes the tick's decisions as orders for the next open (``submit``).

``PaperBroker`` keeps its positions in the store, as the strategy's live decisions: a sleeve
is the backtester's own (``backtest.engine._Sleeve``, the one body of the mark and trade
rules: fills at the next open with slippage and commission, the leverage cap, the risk
exposure, ruin) driven by those decisions. Between ticks it keeps each sleeve's state at the
bar it last decided; a tick resumes it from there (one step: the last decision filled at the
next open, the new bar marked) when the store's newest live decision of the symbol is the one
the sleeve holds (the tick reads it: ``TickInputs.last``). Otherwise (a restarted daemon, a
decision another process recorded) it replays the sleeve from the first live decision to the
bar decided, once. So a paper position needs no table of its own, survives any crash (it is
what the committed ticks say) and is the backtester's portfolio for the same decisions. A bar
between two live decisions that the daemon did not decide (it was down) counts as a HOLD.
Each symbol trades its own sleeve, whose capital is fixed at its first live decision: the
tick's ``capital``, ``initial_capital / number of symbols`` then (the backtester's rule for a
fixed universe), recorded as that decision's equity, which a replay starts from. A universe
that grows or shrinks leaves the other sleeves as they are (a symbol added starts with the
split of the universe it joins); so does a changed ``initial_capital``. ``submit`` sends
nothing: it keeps the sleeves' states with the decisions recorded; the fill is the next
tick's step.
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import DaemonError
from otonom_runtime.backtest.engine import _Bars, _prepare, _Sleeve
from otonom_runtime.daemon.rows import Holding, Holdings, Portfolios, Rows, fields
from otonom_runtime.store.ticks import LiveDecisions
from otonom_schema import Action, PortfolioSnapshot, SchemaError

if TYPE_CHECKING:
    from otonom_runtime.backtest.params import EngineParams
    from otonom_runtime.daemon.tick import SymbolInputs, TickDecision

__all__ = [
    "Broker",
    "Holding",
    "Inputs",
    "LastDecision",
    "LastDecisions",
    "PaperBroker",
    "Tail",
    "TickInputs",
    "Windows",
]

F64 = npt.NDArray[np.float64]


class LastDecision(NamedTuple):
    """A symbol's newest live decision in the store: its bar date, action and strength (a
    named tuple: a tick makes one a symbol, at about half a frozen dataclass's cost)."""

    date: dt.date
    action: int
    strength: float


class LastDecisions(Mapping[int, LastDecision]):
    """Symbols' newest live decisions as three columns (dates, actions, strengths) by symbol
    id, a ``LastDecision`` made when read: what a tick keeps of thousands of symbols without an
    object a symbol (``TickCache.live``). ``columns``: the columns of some symbol ids, in their
    order (None, 0, 0.0 for a symbol without one)."""

    __slots__ = ("_at", "_ids", "actions", "dates", "strengths")

    def __init__(
        self,
        ids: Sequence[int] = (),
        dates: Sequence[dt.date] = (),
        actions: Sequence[int] = (),
        strengths: Sequence[float] = (),
    ) -> None:
        self._ids = list(ids)  # the columns' symbol ids, in order
        self._at = dict(zip(self._ids, range(len(self._ids)), strict=True))  # each id's place
        self.dates, self.actions = list(dates), list(actions)
        self.strengths = list(strengths)
        if not len(self.dates) == len(self.actions) == len(self.strengths) == len(self._ids):
            raise ValueError("columns of different lengths; expected one entry per symbol id")
        if len(self._at) != len(self._ids):
            raise ValueError("a symbol id given twice; expected one newest decision each")

    def put(self, symbol_id: int, decision: LastDecision) -> None:
        """Set ``symbol_id``'s newest decision."""
        at = self._at.get(symbol_id)
        if at is None:
            self._at[symbol_id] = len(self._ids)
            self._ids.append(symbol_id)
            self.dates.append(decision.date)
            self.actions.append(decision.action)
            self.strengths.append(decision.strength)
        else:
            self.dates[at], self.actions[at], self.strengths[at] = decision

    def __getitem__(self, symbol_id: int) -> LastDecision:
        at = self._at[symbol_id]
        return LastDecision(self.dates[at], self.actions[at], self.strengths[at])

    def __contains__(self, symbol_id: object) -> bool:
        return symbol_id in self._at

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def columns(
        self, symbol_ids: Sequence[int]
    ) -> tuple[list[dt.date | None], list[int], list[float]]:
        """The dates (None: no decision), actions and strengths of ``symbol_ids``, in order
        (the columns themselves, copied, when they are every symbol in the order held: a
        steady tick)."""
        if symbol_ids == self._ids:
            return list(self.dates), list(self.actions), list(self.strengths)
        at = self._at
        rows = [at.get(i) for i in symbol_ids]
        dates, actions, strengths = self.dates, self.actions, self.strengths
        return (
            [None if r is None else dates[r] for r in rows],
            [0 if r is None else actions[r] for r in rows],
            [0.0 if r is None else strengths[r] for r in rows],
        )


Tail = tuple[float, float, float, float, float, float]
"""The last two bars of a window, oldest first: their day numbers (as floats, exact), opens
and closes, in one tuple of numbers (``TickInputs.tail``: one object a symbol, which the
garbage collector stops tracking; a tick makes thousands)."""


@dataclass(frozen=True, slots=True)
class Windows:
    """The cached bars of a tick's symbols, a row each (the tick's cache's arrays, shared by
    its ``TickInputs``): day numbers (rows, LOOKBACK), opens and closes, oldest first, the
    newest last; ``count``: how many bars each row's symbol has (its window: the last
    ``min(count, LOOKBACK)``)."""

    days: npt.NDArray[np.int64]
    opens: F64
    closes: F64
    count: npt.NDArray[np.int64]

    def of(self, row: int) -> tuple[npt.NDArray[np.datetime64], F64, F64]:
        """Row ``row``'s bars: their dates, opens and closes (views)."""
        k = min(int(self.count[row]), self.days.shape[1])
        days = self.days[row, -k:].view("datetime64[D]")
        return days, self.opens[row, -k:], self.closes[row, -k:]


@dataclass(frozen=True, slots=True)
class TickInputs:
    """What a broker gets of a symbol a tick decides: its cached bars (``dates``, ``opens``,
    ``closes``, oldest first, the newest the bar decided: row ``row`` of ``windows``, made when
    read), ``cap``: the risk cap of that bar (the risk exposure of its state x max leverage, as
    ``engine._prepare`` computes it), its newest live decision (None: never decided);
    ``whole`` and ``live``: its whole history and every live decision, present when a replay
    needs them (``Broker.resumes`` False, or the tick read the history whole: new to the
    cache, or its bars changed; a broker replays the sleeve then); ``tail``: the last two
    bars' day numbers, opens and closes as Python numbers (None: fewer than two bars), what a
    broker stepping one bar a tick reads (the tick makes them for all symbols at once). The
    arrays are views of the tick's cache: valid during the tick."""

    symbol: str
    symbol_id: int
    windows: Windows
    row: int
    cap: float
    last: LastDecision | None
    whole: SymbolInputs | None = None
    live: LiveDecisions | None = None
    tail: Tail | None = None

    @property
    def last_date(self) -> dt.date | None:
        """``last``'s date (None: never decided)."""
        return None if self.last is None else self.last.date

    @property
    def last_action(self) -> int:
        """``last``'s action (0 where never decided)."""
        return 0 if self.last is None else self.last.action

    @property
    def last_strength(self) -> float:
        """``last``'s strength (0.0 where never decided)."""
        return 0.0 if self.last is None else self.last.strength

    @property
    def dates(self) -> npt.NDArray[np.datetime64]:
        """The dates of the symbol's cached bars (a view)."""
        return self.windows.of(self.row)[0]

    @property
    def opens(self) -> F64:
        """The opens of the symbol's cached bars (a view)."""
        return self.windows.of(self.row)[1]

    @property
    def closes(self) -> F64:
        """The closes of the symbol's cached bars (a view)."""
        return self.windows.of(self.row)[2]


class Inputs(Rows[TickInputs]):
    """A tick's ``TickInputs`` as columns (one entry a symbol; ``windows`` shared), each made
    when read: what ``run_tick`` gives a broker, which may read the columns as they are
    (``PaperBroker``: a steady tick makes no ``TickInputs``). ``last``'s fields are three
    columns (``last_dates``: None where never decided; ``lasts`` makes the ``LastDecision``
    of each). ``wholes`` and ``lives`` are filled in by the tick where ``Broker.lacking``
    asks for them, and where it read a symbol's history whole."""

    __slots__ = (
        "caps",
        "last_actions",
        "last_dates",
        "last_strengths",
        "lives",
        "rows",
        "symbol_ids",
        "symbols",
        "tails",
        "wholes",
        "windows",
    )
    PLURAL_COLUMNS = True

    def __init__(
        self,
        symbols: list[str],
        symbol_ids: list[int],
        windows: Windows,
        rows: list[int],
        caps: list[float],
        lasts: tuple[list[dt.date | None], list[int], list[float]],
        wholes: list[SymbolInputs | None],
        lives: list[LiveDecisions | None],
        tails: list[Tail | None],
    ) -> None:
        self.symbols, self.symbol_ids, self.windows, self.rows = symbols, symbol_ids, windows, rows
        self.caps, self.wholes, self.lives, self.tails = caps, wholes, lives, tails
        self.last_dates, self.last_actions, self.last_strengths = lasts

    @property
    def lasts(self) -> list[LastDecision | None]:
        """Each symbol's ``TickInputs.last`` (made now)."""
        return [
            None if d is None else LastDecision(d, a, s)
            for d, a, s in zip(self.last_dates, self.last_actions, self.last_strengths, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.symbols)

    def row(self, i: int) -> TickInputs:
        date = self.last_dates[i]
        return TickInputs(
            self.symbols[i],
            self.symbol_ids[i],
            self.windows,
            self.rows[i],
            self.caps[i],
            None
            if date is None
            else LastDecision(date, self.last_actions[i], self.last_strengths[i]),
            self.wholes[i],
            self.lives[i],
            self.tails[i],
        )


class Broker(Protocol):
    """What the daemon's tick needs of a broker."""

    name: str

    def resumes(self, inputs: TickInputs, capital: float) -> bool:
        """True when ``holdings`` can give this symbol's holding without its whole history and
        live decisions (``inputs.whole``/``inputs.live`` unset)."""
        ...

    def lacking(self, inputs: Sequence[TickInputs], capital: float) -> list[int]:
        """The indexes (in order) of ``inputs`` that ``resumes`` is False for and that lack
        their whole history or live decisions: what the tick reads for them before
        ``holdings`` (``inputs``: ``Inputs``, which a broker may read as columns). The tick
        also reads the history and live decisions of a symbol decided before whose history
        was read whole since its last decision (its bars changed: ``TickCache.replay_due``):
        ``holdings`` gets both, and replays."""
        ...

    def holdings(
        self, inputs: Sequence[TickInputs], params: EngineParams, capital: float
    ) -> Sequence[Holding]:
        """Each symbol's ``Holding`` at the close of its newest bar (``inputs``, in order);
        ``capital``: a symbol's share of the strategy's capital, the capital of a sleeve that
        starts now (``Holdings``: as columns, which the tick reads as they are)."""
        ...

    def submit(self, decisions: Sequence[TickDecision]) -> None:
        """Take the tick's decisions (recorded already) as orders for the next open."""
        ...


@dataclass(slots=True)
class _State:
    """A sleeve after marking bar ``day`` (``number``: its day number), the risk cap of
    that bar and the decision taken on it (``action`` None until the tick's decisions are
    recorded; ``strength``); ``sleeve``: the backtester's ``_Sleeve`` as it left that bar
    (None: never decided, flat with ``capital``). The next tick resumes the sleeve itself
    (``_Sleeve.resume``), so a state is used once: ``holdings`` moves it to the new bar (or
    puts a new one in its place) without a decision, which ``submit`` gives it; a state left
    without one (the tick not recorded) never resumes: the next tick replays the sleeve."""

    symbol_id: int
    capital: float
    day: dt.date
    number: int
    cap: float
    sleeve: _Sleeve | None
    params: EngineParams
    action: int | None = None
    strength: float = 0.0
    bars: tuple[array[float], array[float], array[float], array[float]] = field(
        default_factory=lambda: _bars()
    )  # ``_step``'s two bars: days, opens, closes, caps (rewritten in place each tick)


class PaperBroker:
    """Positions from the live decisions through the backtester's sleeve, kept between ticks
    (see the module docstring)."""

    name = "paper"

    def __init__(self) -> None:
        self._sleeves: dict[str, _State] = {}

    def resumes(self, inputs: TickInputs, capital: float) -> bool:
        return _resumable(
            self._sleeves.get(inputs.symbol),
            inputs.symbol_id,
            (inputs.last_date, inputs.last_action, inputs.last_strength),
            inputs.tail,
            inputs.windows,
            inputs.row,
        )

    def lacking(self, inputs: Sequence[TickInputs], capital: float) -> list[int]:
        columns = fields(inputs, ("symbol", "symbol_id", "last_date", "last_action",
                                  "last_strength", "tail", "row", "whole", "live"))  # fmt: skip
        get = self._sleeves.get
        windows = inputs.windows if isinstance(inputs, Inputs) else None
        return [
            i
            for i, (symbol, sid, date, action, strength, tail, row, whole, live)
            in enumerate(columns)
            if (whole is None or live is None)
            and not _resumable(get(symbol), sid, (date, action, strength), tail,
                               windows or inputs[i].windows, row)
        ]  # fmt: skip

    def holdings(
        self, inputs: Sequence[TickInputs], params: EngineParams, capital: float
    ) -> Holdings:
        """Each symbol's holding (see ``Broker.holdings``), as columns: the sleeves' newest
        marks, checked as ``PortfolioSnapshot`` checks them (all rows at once). ``Inputs`` are
        read as columns (a ``TickInputs`` made only for a sleeve replayed, or resumed over
        more than one bar)."""
        sleeves = self._sleeves
        marks: list[float] = []  # six numbers a symbol (``_Sleeve.out``'s newest mark)
        add, get = marks.extend, sleeves.get
        dates: dict[int, dt.date] = {}  # day number -> date: a tick's bars share a few days
        columns = fields(
            inputs, ("symbol", "symbol_id", "last_date", "tail", "cap", "whole", "live")
        )
        for i, (symbol, symbol_id, last_date, tail, cap, whole, live) in enumerate(columns):
            sleeve: _Sleeve | None
            state: _State | None = None
            own = capital  # the sleeve's capital: fixed at its first live decision
            if last_date is None:
                sleeve = None
            elif whole is not None and live is not None:
                own = capital if live.first_equity is None else live.first_equity
                sleeve = _replay(inputs[i], params, own)
            elif (state := get(symbol)) is not None and (
                state.day == last_date  # what ``resumes`` found (the tick asked it)
            ):
                own = state.capital
                sleeve = _step(state, tail, params) or _resume(state, inputs[i], params)
            else:
                raise DaemonError(
                    f"no history or live decisions of {symbol!r} to replay its "
                    "sleeve; expected the tick to read them (Broker.resumes was False)"
                )
            number = int(tail[1]) if tail is not None else int(_numbers(inputs[i])[-1])
            day = dates.get(number)
            if day is None:
                day = dates[number] = _date(number)
            if state is not None and state.sleeve is sleeve and sleeve is not None:
                # resumed in place: the state follows its sleeve to this bar
                state.day, state.number, state.cap = day, number, cap
                state.params, state.action = params, None  # until ``submit``
            else:
                sleeves[symbol] = _State(symbol_id, own, day, number, cap, sleeve, params)
            if sleeve is None:  # never decided: flat, the sleeve fresh at this bar
                add((0.0, 0.0, 1.0, _NEVER, capital, 0.0))  # ``PortfolioSnapshot()``'s fields
            else:
                # the newest mark (engine._Sleeve.out: position, leverage, cash, days, equity,
                # exposure)
                add(sleeve.out[-6:])
        portfolios = Portfolios(marks[0::6], marks[1::6], marks[2::6], marks[3::6])
        _check(portfolios)
        return Holdings(portfolios, marks[4::6])

    def submit(self, decisions: Sequence[TickDecision]) -> None:
        rows = fields(decisions, ("symbol", "date", "action", "strength"))
        get = self._sleeves.get
        for symbol, date, action, strength in rows:
            state = get(symbol)
            if state is not None and state.day == date and state.action is None:
                state.action, state.strength = int(action), strength


_EPOCH: Final = dt.date(1970, 1, 1).toordinal()
_HOLD: Final = (int(Action.HOLD), 0.0)
_NEVER: Final = PortfolioSnapshot().days_since_last_trade  # never traded (inf)
_TWO: Final = (0.0, 0.0)
_NO_BARS: Final = _Bars(
    "", np.empty(0, "datetime64[D]"), np.empty(0), np.empty(0), np.empty((0, 0)), 0
)  # a sleeve's bars before ``_Sleeve.resume`` gives it its own


def _check(portfolios: Portfolios) -> None:
    """``PortfolioSnapshot``'s check of every row (its bounds, all rows at once through
    ``portfolio_feature_matrix``); a row out of them raises the snapshot's own error, the
    first such row's, as making each row's snapshot did."""
    try:
        portfolios.features()  # kept: the tick's states read them
    except SchemaError:
        for row in zip(*portfolios.columns(), strict=True):
            PortfolioSnapshot(*row)
        raise


def _resumable(
    state: _State | None,
    symbol_id: int,
    last: tuple[dt.date | None, int, float],
    tail: Tail | None,
    windows: Windows,
    row: int,
) -> bool:
    """``PaperBroker.resumes`` of a symbol whose kept state is ``state`` and newest live
    decision ``last`` (its date, None: never decided; action; strength); its bars: row ``row``
    of ``windows``, read only when its tail does not settle it."""
    date, action, strength = last
    return date is None or (
        state is not None
        and state.symbol_id == symbol_id
        and state.day == date
        and state.action == action
        and state.strength == strength
        and (
            # the steady case: the state's day is the second newest bar (two bars or more)
            (tail is not None and tail[0] == state.number)
            or (
                (dates := windows.of(row)[0]).size > 0
                and _within(dates.view(np.int64), state.number)
            )
        )
    )


def _numbers(inputs: TickInputs) -> npt.NDArray[np.int64]:
    """The day numbers of ``inputs.dates`` (a view)."""
    return inputs.dates.view(np.int64)


def _within(numbers: npt.NDArray[np.int64], number: int) -> bool:
    """Whether day ``number`` is in ``numbers`` (oldest first) and not the newest."""
    return bool(numbers[0] <= number < numbers[-1])


def _date(number: int) -> dt.date:
    return dt.date.fromordinal(number + _EPOCH)


def _drive(sleeve: _Sleeve, decisions: Sequence[tuple[int, float]]) -> None:
    """Run ``sleeve`` over its bars (``_Sleeve.run``), each day's decision but the newest's
    from ``decisions``, the newest day marked and not traded (its decision is recorded by the
    tick, not here); the sleeve's state after it is written back."""
    actions = [action for action, _ in decisions]
    strengths = [strength for _, strength in decisions]
    actions.append(_HOLD[0])
    strengths.append(_HOLD[1])
    sleeve.run(actions, strengths)


def _replay(inputs: TickInputs, params: EngineParams, capital: float) -> _Sleeve | None:
    """The sleeve of ``inputs.symbol`` from its first live decision to its newest bar: each
    bar's live decision sent to it (HOLD where there is none); None before the first live
    decision (flat with ``capital``)."""
    whole, live = inputs.whole, inputs.live
    assert whole is not None
    assert live is not None
    history = whole.history
    if live.dates.size == 0 or live.dates[0] >= history.dates[-1]:
        return None
    first = int(np.searchsorted(history.dates, live.dates[0]))
    bars = _Bars(
        inputs.symbol,
        history.dates[first:],
        history.open[first:],
        history.close[first:],
        whole.market(first),
        0,
    )
    decided = dict(
        zip(live.dates.tolist(), zip(live.actions, live.strengths, strict=True), strict=True)
    )
    sleeve = _prepare(bars, params, capital).sleeve
    _drive(sleeve, [decided.get(day, _HOLD) for day in bars.dates[:-1].tolist()])
    return sleeve


def _step(state: _State, tail: Tail | None, params: EngineParams) -> _Sleeve | None:
    """``_resume`` in the steady case (the state's bar the second newest, its sleeve kept
    with the same params, or none: never traded): the sleeve stepped over the newest bar
    (``tail``; a fresh one with the state's capital where it never traded); None
    otherwise."""
    sleeve, action = state.sleeve, state.action
    if tail is None or tail[0] != state.number or action is None:  # not one bar on
        return None
    if sleeve is None:  # never traded: ``_resume``'s fresh sleeve, its two bars put below
        sleeve = _Sleeve(_NO_BARS, params, state.capital, [])
    elif not (state.params is params or state.params == params):
        return None
    # the state's own arrays rewritten in place (no new object a symbol a tick: a tick's
    # thousands of small sequences would cost the garbage collector more than the step)
    days, opens, closes, caps = state.bars
    days[0], days[1], opens[0], opens[1], closes[0], closes[1] = tail
    caps[0] = state.cap  # caps[1] stays 0.0: a HOLD never reads its cap
    sleeve.resume(days, opens, closes, caps)
    # ``_drive``'s two days as the lists it would make: the decision filled at the new
    # bar's open, which is marked
    sleeve.run([action, _HOLD[0]], [state.strength, _HOLD[1]])
    return sleeve


def _bars() -> tuple[array[float], array[float], array[float], array[float]]:
    """Four arrays of two doubles (not tracked by the garbage collector), for ``_step``."""
    return array("d", _TWO), array("d", _TWO), array("d", _TWO), array("d", _TWO)


def _resume(state: _State, inputs: TickInputs, params: EngineParams) -> _Sleeve:
    """The sleeve of ``state`` (marked at its day, whose decision it holds; a fresh one where
    it never traded, or one with the state's cash and units where ``params`` changed) over the
    bars after it to the newest: the same steps as a replay from the first live decision (the
    state is what they left), without them (``_step``: the steady case, one bar on)."""
    action = state.action
    assert action is not None
    sleeve = _step(state, inputs.tail, params)
    if sleeve is not None:
        return sleeve
    sleeve = state.sleeve
    decision = (action, state.strength)
    dates = inputs.dates
    first = int(_numbers(inputs).searchsorted(state.number))
    k = dates.size - first
    # a HOLD never reads its cap, and the days after the state's are HOLDs
    cap = [state.cap] + [0.0] * (k - 1)
    bars = _Bars(inputs.symbol, dates[first:], inputs.opens[first:], inputs.closes[first:],
                 np.empty((k, 0)), 0)  # fmt: skip
    fresh = _Sleeve(bars, params, state.capital, cap)
    if sleeve is not None:  # its cash, units and trades on these bars
        fresh.cash, fresh.units, fresh.bust = sleeve.cash, sleeve.units, sleeve.bust
        fresh.last_fill, fresh.entry_equity = sleeve.last_fill, sleeve.entry_equity
        fresh.fills, fresh.trade_pnls = sleeve.fills, sleeve.trade_pnls
    _drive(fresh, [decision] + [_HOLD] * (k - 2))
    return fresh
