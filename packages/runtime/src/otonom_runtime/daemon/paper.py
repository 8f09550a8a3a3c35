"""Where a broker plugs in (``Broker``) and the paper broker the daemon runs today.

A broker tells the tick each symbol's portfolio at the close of the bar it decides
(``holdings``) and takes the tick's decisions as orders for the next open (``submit``).

``PaperBroker`` keeps its positions in the store, as the strategy's live decisions: each tick
it replays them through the backtester's own sleeve (``backtest.engine._prepare``'s
``_Sleeve``, the one body of the mark and trade rules: fills at the next open with slippage
and commission, the leverage cap, the risk exposure, ruin), from the first live decision to
the bar decided. So a paper position needs no table of its own, survives any crash (it is
what the committed ticks say) and is the backtester's portfolio for the same decisions. A bar
between two live decisions that the daemon did not decide (it was down) counts as a HOLD.
Each symbol trades its own sleeve of ``initial_capital / number of symbols`` (the
backtester's rule). ``submit`` sends nothing: the fill is the next tick's replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from otonom_runtime.backtest.engine import _Bars, _prepare
from otonom_runtime.backtest.lockstep import Board
from otonom_runtime.store.ticks import LiveDecisions
from otonom_schema import Action, PortfolioSnapshot

if TYPE_CHECKING:
    from otonom_runtime.backtest.params import EngineParams
    from otonom_runtime.daemon.tick import SymbolInputs, TickDecision

__all__ = ["Broker", "Holding", "PaperBroker"]


@dataclass(frozen=True)
class Holding:
    """A symbol's portfolio at the close of the bar being decided (the state's portfolio
    features in raw units) and its sleeve's equity there."""

    portfolio: PortfolioSnapshot
    equity: float


class Broker(Protocol):
    """What the daemon's tick needs of a broker."""

    name: str

    def holdings(
        self,
        inputs: Sequence[SymbolInputs],
        live: dict[int, LiveDecisions],
        params: EngineParams,
        capital: float,
    ) -> list[Holding]:
        """Each symbol's ``Holding`` at the close of its newest bar (``inputs``, in order);
        ``live``: the strategy's earlier live decisions by symbol id; ``capital``: a
        symbol's share of the strategy's capital."""
        ...

    def submit(self, decisions: Sequence[TickDecision]) -> None:
        """Take the tick's decisions (recorded already) as orders for the next open."""
        ...


class PaperBroker:
    """Positions replayed from the live decisions through the backtester's sleeve (see the
    module docstring)."""

    name = "paper"

    def holdings(
        self,
        inputs: Sequence[SymbolInputs],
        live: dict[int, LiveDecisions],
        params: EngineParams,
        capital: float,
    ) -> list[Holding]:
        return [_replay(i, live.get(i.symbol_id), params, capital) for i in inputs]

    def submit(self, decisions: Sequence[TickDecision]) -> None:
        return None


def _replay(
    inputs: SymbolInputs, live: LiveDecisions | None, params: EngineParams, capital: float
) -> Holding:
    """The sleeve of ``inputs.symbol`` from its first live decision to its newest bar: each
    bar's live decision sent to it (HOLD where there is none), its mark at the newest bar's
    close returned; flat with ``capital`` before the first live decision."""
    history = inputs.history
    n = len(history)
    if live is None or live.dates.size == 0 or live.dates[0] >= history.dates[-1]:
        return Holding(PortfolioSnapshot(), capital)
    first = int(np.searchsorted(history.dates, live.dates[0]))
    bars = _Bars(
        inputs.symbol,
        history.dates[first:],
        history.open[first:],
        history.close[first:],
        inputs.market(first),
        0,
    )
    decided = dict(
        zip(live.dates.tolist(), zip(live.actions, live.strengths, strict=True), strict=True)
    )
    sleeve, board = _prepare(bars, params, capital).sleeve, Board()
    steps = sleeve.steps([], [], board, 0)  # the lockstep generator: decisions on the board
    next(steps)
    for day in bars.dates[: n - first - 1].tolist():
        action, strength = decided.get(day, (int(Action.HOLD), 0.0))
        board.decided = [action, strength, 0.0]
        board.portfolio.clear()
        next(steps)
    steps.close()
    # the newest mark (engine._Sleeve.out: position, leverage, cash, raw days, equity, exposure)
    position, leverage, cash_fraction, days, equity, _ = sleeve.out[-6:]
    return Holding(PortfolioSnapshot(position, leverage, cash_fraction, days), equity)
