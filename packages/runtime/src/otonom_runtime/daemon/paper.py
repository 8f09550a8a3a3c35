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
decision another process recorded, another capital per symbol) it replays the sleeve from the
first live decision to the bar decided, once. So a paper position needs no table of its own,
survives any crash (it is what the committed ticks say) and is the backtester's portfolio for
the same decisions. A bar between two live decisions that the daemon did not decide (it was
down) counts as a HOLD. Each symbol trades its own sleeve of ``initial_capital / number of
symbols`` (the backtester's rule). ``submit`` sends nothing: it keeps the sleeves' states with
the decisions recorded; the fill is the next tick's step.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, overload

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import DaemonError
from otonom_runtime.backtest.engine import _Bars, _prepare, _Sleeve
from otonom_runtime.store.ticks import LiveDecisions
from otonom_schema import Action, PortfolioSnapshot, SchemaError, portfolio_feature_matrix

if TYPE_CHECKING:
    from otonom_runtime.backtest.params import EngineParams
    from otonom_runtime.daemon.tick import SymbolInputs, TickDecision

__all__ = [
    "Broker",
    "Holding",
    "Holdings",
    "LastDecision",
    "PaperBroker",
    "Portfolios",
    "Rows",
    "Tail",
    "TickInputs",
    "Windows",
]

F64 = npt.NDArray[np.float64]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Holding:
    """A symbol's portfolio at the close of the bar being decided (the state's portfolio
    features in raw units) and its sleeve's equity there."""

    portfolio: PortfolioSnapshot
    equity: float


class Rows(Sequence[T]):
    """A read-only sequence of a tick's rows kept as columns: each item made when read
    (``row``), so a tick of thousands of symbols makes none it does not read (nor leaves
    thousands of objects for the garbage collector). Equal to any sequence of equal items;
    a slice is a list."""

    __slots__ = ()

    def row(self, i: int) -> T:
        """Item ``i`` (0 <= i < len)."""
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        n = len(self)
        if isinstance(i, slice):
            return [self.row(k) for k in range(*i.indices(n))]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} of {n}")
        return self.row(i)

    def __iter__(self) -> Iterator[T]:
        return map(self.row, range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


class Portfolios(Rows[PortfolioSnapshot]):
    """Portfolios as four columns (``PortfolioSnapshot``'s fields, raw units), a snapshot
    made when read; ``of`` takes any sequence of snapshots."""

    __slots__ = ("cash_fraction", "days_since_last_trade", "leverage", "position")

    def __init__(
        self,
        position: list[float],
        leverage: list[float],
        cash_fraction: list[float],
        days_since_last_trade: list[float],
    ) -> None:
        self.position, self.leverage = position, leverage
        self.cash_fraction, self.days_since_last_trade = cash_fraction, days_since_last_trade

    @classmethod
    def of(cls, snapshots: Sequence[PortfolioSnapshot]) -> Portfolios:
        """``snapshots`` as columns (itself when it is one)."""
        if isinstance(snapshots, Portfolios):
            return snapshots
        return cls(
            [p.position for p in snapshots],
            [p.leverage for p in snapshots],
            [p.cash_fraction for p in snapshots],
            [p.days_since_last_trade for p in snapshots],
        )

    def columns(self) -> tuple[list[float], list[float], list[float], list[float]]:
        """The four columns, in ``PortfolioSnapshot``'s field order."""
        return self.position, self.leverage, self.cash_fraction, self.days_since_last_trade

    def __len__(self) -> int:
        return len(self.position)

    def row(self, i: int) -> PortfolioSnapshot:
        return PortfolioSnapshot(
            self.position[i], self.leverage[i], self.cash_fraction[i], self.days_since_last_trade[i]
        )


class Holdings(Rows[Holding]):
    """A tick's holdings as columns (``portfolios`` and each sleeve's ``equity``), a
    ``Holding`` made when read (``PaperBroker.holdings``)."""

    __slots__ = ("equity", "portfolios")

    def __init__(self, portfolios: Portfolios, equity: list[float]) -> None:
        self.portfolios, self.equity = portfolios, equity

    def __len__(self) -> int:
        return len(self.equity)

    def row(self, i: int) -> Holding:
        return Holding(self.portfolios.row(i), self.equity[i])


@dataclass(frozen=True, slots=True)
class LastDecision:
    """A symbol's newest live decision in the store: its bar date, action and strength."""

    date: dt.date
    action: int
    strength: float


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
    needs them (``Broker.resumes`` False); ``tail``: the last two bars' day numbers, opens and
    closes as Python numbers (None: fewer than two bars), what a broker stepping one bar a tick
    reads (the tick makes them for all symbols at once). The arrays are views of the tick's
    cache: valid during the tick."""

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


class Broker(Protocol):
    """What the daemon's tick needs of a broker."""

    name: str

    def resumes(self, inputs: TickInputs, capital: float) -> bool:
        """True when ``holdings`` can give this symbol's holding without its whole history and
        live decisions (``inputs.whole``/``inputs.live`` unset)."""
        ...

    def holdings(
        self, inputs: Sequence[TickInputs], params: EngineParams, capital: float
    ) -> Sequence[Holding]:
        """Each symbol's ``Holding`` at the close of its newest bar (``inputs``, in order);
        ``capital``: a symbol's share of the strategy's capital (``Holdings``: as columns,
        which the tick reads as they are)."""
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
    (``_Sleeve.resume``), so a state is used once: ``holdings`` takes it out of the broker's
    states (and, resumed in place, puts it back moved to the new bar)."""

    symbol_id: int
    capital: float
    day: dt.date
    number: int
    cap: float
    sleeve: _Sleeve | None
    params: EngineParams
    action: int | None = None
    strength: float = 0.0


class PaperBroker:
    """Positions from the live decisions through the backtester's sleeve, kept between ticks
    (see the module docstring)."""

    name = "paper"

    def __init__(self) -> None:
        self._sleeves: dict[str, _State] = {}
        self._pending: dict[str, _State] = {}

    def resumes(self, inputs: TickInputs, capital: float) -> bool:
        last, state = inputs.last, self._sleeves.get(inputs.symbol)
        return last is None or (
            state is not None
            and state.symbol_id == inputs.symbol_id
            and state.capital == capital
            and state.day == last.date
            and state.action == last.action
            and state.strength == last.strength
            and (
                # the steady case: the state's day is the second newest bar (two bars or more)
                (inputs.tail is not None and inputs.tail[0] == state.number)
                or (inputs.dates.size > 0 and _within(_numbers(inputs), state.number))
            )
        )

    def holdings(
        self, inputs: Sequence[TickInputs], params: EngineParams, capital: float
    ) -> Holdings:
        """Each symbol's holding (see ``Broker.holdings``), as columns: the sleeves' newest
        marks, checked as ``PortfolioSnapshot`` checks them (all rows at once)."""
        self._pending = pending = {}
        marks: list[float] = []  # six numbers a symbol (``_Sleeve.out``'s newest mark)
        add, take = marks.extend, self._sleeves.pop
        dates: dict[int, dt.date] = {}  # day number -> date: a tick's bars share a few days
        for item in inputs:
            sleeve: _Sleeve | None
            state: _State | None = None
            last, tail = item.last, item.tail
            if last is None:
                sleeve = None
            elif item.whole is not None and item.live is not None:
                sleeve = _replay(item, params, capital)
            elif (state := take(item.symbol, None)) is not None and (
                state.day == last.date  # what ``resumes`` found (the tick asked it)
            ):
                sleeve = _resume(state, item, params)
            else:
                raise DaemonError(
                    f"no history or live decisions of {item.symbol!r} to replay its "
                    "sleeve; expected the tick to read them (Broker.resumes was False)"
                )
            number = int(tail[1]) if tail is not None else int(_numbers(item)[-1])
            day = dates.get(number)
            if day is None:
                day = dates[number] = _date(number)
            if state is not None and state.sleeve is sleeve and sleeve is not None:
                # resumed in place: the state follows its sleeve to this bar
                state.day, state.number, state.cap = day, number, item.cap
                state.params, state.action = params, None
                pending[item.symbol] = state
            else:
                pending[item.symbol] = _State(
                    item.symbol_id, capital, day, number, item.cap, sleeve, params
                )
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
        from otonom_runtime.daemon.tick import Decisions

        rows: Any = (
            zip(
                decisions.symbols,
                decisions.dates,
                decisions.actions,
                decisions.strengths,
                strict=True,
            )
            if isinstance(decisions, Decisions)
            else ((d.symbol, d.date, int(d.action), d.strength) for d in decisions)
        )
        take, sleeves = self._pending.pop, self._sleeves
        for symbol, date, action, strength in rows:
            state = take(symbol, None)
            if state is not None and state.day == date:
                state.action, state.strength = int(action), strength
                sleeves[symbol] = state
        self._pending = {}


_EPOCH: Final = dt.date(1970, 1, 1).toordinal()
_HOLD: Final = (int(Action.HOLD), 0.0)
_NEVER: Final = PortfolioSnapshot().days_since_last_trade  # never traded (inf)


def _check(portfolios: Portfolios) -> None:
    """``PortfolioSnapshot``'s check of every row (its bounds, all rows at once through
    ``portfolio_feature_matrix``); a row out of them raises the snapshot's own error, the
    first such row's, as making each row's snapshot did."""
    try:
        portfolio_feature_matrix(*portfolios.columns())
    except SchemaError:
        for row in zip(*portfolios.columns(), strict=True):
            PortfolioSnapshot(*row)
        raise


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


def _resume(state: _State, inputs: TickInputs, params: EngineParams) -> _Sleeve:
    """The sleeve of ``state`` (marked at its day, whose decision it holds; a fresh one where
    it never traded, or one with the state's cash and units where ``params`` changed) over the
    bars after it to the newest: the same steps as a replay from the first live decision (the
    state is what they left), without them."""
    action = state.action
    assert action is not None
    tail, sleeve = inputs.tail, state.sleeve
    if (
        tail is not None
        and tail[0] == state.number  # the steady case: one bar on, as numbers already
        and sleeve is not None
        and (state.params is params or state.params == params)
    ):
        # a HOLD never reads its cap; ``_drive``'s two days as the lists it would make: the
        # decision filled at the new bar's open, which is marked
        sleeve.resume(tail[0:2], tail[2:4], tail[4:6], (state.cap, 0.0))
        sleeve.run([action, _HOLD[0]], [state.strength, _HOLD[1]])
        return sleeve
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
