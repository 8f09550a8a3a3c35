"""One symbol's sleeve driven one decision at a time: the backtester as a learning
environment's engine (``otonom_trainer.rl.TradingEnv`` wraps it).

Nothing here is a second copy of a rule. The inputs are read by the backtester's own reader
(``runner._load_inputs``: the store's bars, news and macro, the schema's
``market_feature_matrix``); the sleeve is the backtester's ``_Sleeve`` driven through its
lockstep generator (``_Sleeve.steps`` with a ``lockstep.Board``, the one body of the mark,
fill and cost rules); the sizing cap and the three analysts' votes come from
``engine._prepare``; the portfolio columns of a state are the ones the sleeve puts on the
board (normalised by the schema's ``PortfolioSnapshot``), as in the lockstep backtester. So,
for the same decisions, an episode's equity is the backtest's, day for day (tested).

* ``episode_inputs``: a strategy, a symbol and a date range -> ``EpisodeInputs``.
* ``SleeveEpisode``: ``reset()`` gives day 0's state; ``step(action, strength, confidence)``
  trades on the current day's decision (filled at the next open) and gives the next day's
  state, the reward and whether the episode is over. ``mode``: the strategy's RL modes
  (``EPISODE_MODES`` is ``ensemble.RL_MODES``), applied by the one vote,
  ``ensemble.decide_rows``, to the given action, strength and confidence as the RL vote:

  - ``"sole"``: the decision is the one given (the policy as the sole decider);
  - ``"voter"``: the given vote is the 4th analyst's, added to the three analysts' at the
    strategy's RL weight (the policy as the 4th voter, today's deployment);
  - ``"filter"``: the three analysts' vote, vetoed or sized by the given vote as the
    strategy's ``filter_veto`` and ``filter_size`` say (the policy as a filter).

  The reward of a step is the change of the sleeve's equity (marked at the closes, after
  slippage and commission) divided by its starting equity, so an episode's rewards sum to the
  backtest's ``total_return`` (``e_{N-1} / e_0 - 1``). An episode of N decision days has
  N - 1 steps: the last day's decision is never filled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import BacktestError
from otonom_runtime.backtest.engine import _Bars, _prepare, _Prepared
from otonom_runtime.backtest.lockstep import Board
from otonom_runtime.backtest.params import EngineParams, engine_params
from otonom_runtime.ensemble import RL_MODES, RlMode, decide_rows
from otonom_schema import PORTFOLIO_COLUMNS, Action

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from otonom_runtime.strategy import StrategyConfig

__all__ = ["EPISODE_MODES", "EpisodeInputs", "SleeveEpisode", "episode_inputs"]

EPISODE_MODES: Final = RL_MODES
"""How an episode's decision is made from the policy's action: the strategy's RL modes (see
the module docstring)."""
F64 = npt.NDArray[np.float64]
Decision = tuple[int, float, float]
"""A day's decision as ``decide_rows`` gives it: action, strength, confidence."""


@dataclass(frozen=True)
class EpisodeInputs:
    """One symbol's inputs as the backtester reads them: ``bars`` (its whole history, the
    decision days from ``bars.first``), the strategy's ``params`` with the RL analyst off
    (the three analysts' votes; ``params.rl_mode``: the strategy's RL mode), ``rl_weight``
    (the strategy's RL weight, for ``"voter"``) and the sleeve's starting ``capital``."""

    bars: _Bars
    params: EngineParams
    rl_weight: float
    capital: float

    @property
    def symbol(self) -> str:
        return self.bars.symbol

    @property
    def n_days(self) -> int:
        """The number of decision days (an episode has one step fewer)."""
        return int(self.bars.market.shape[0] - self.bars.first)

    @property
    def dates(self) -> npt.NDArray[np.datetime64]:
        """The decision days' dates."""
        return self.bars.dates[self.bars.first :]


def episode_inputs(
    session: Session,
    config: StrategyConfig,
    symbol: str,
    start: dt.date,
    end: dt.date,
    *,
    capital: float | None = None,
) -> EpisodeInputs:
    """``symbol``'s decision days ``start .. end`` read as ``run_backtest`` reads them (the
    same checks and errors: ``UnknownSymbolError``, ``StateBuildError`` for fewer than two bars
    in range, ``BacktestError`` for ``start`` after ``end``). ``capital``: the sleeve's
    starting equity (default the strategy's ``initial_capital``; a sleeve of an n-symbol
    backtest has ``initial_capital / n``)."""
    from otonom_runtime.backtest.runner import (
        _check_bars_in_range,
        _check_request,
        _load_inputs,
        _symbols,
    )

    _check_request([symbol], start, end, "user")
    rl_weight = float(config.ensemble.analyst_weights.rl)
    if config.rl_enabled:
        config = config.with_rl(False)
    ids, sources = _symbols(session, config, [symbol])
    _check_bars_in_range(session, ids, start, end)
    (bars,) = _load_inputs(session, config, [symbol], start, end, sources, False)
    # the bars read up to ``end``: the last decision day is the last bar <= end
    params = engine_params(config)
    start_equity = params.initial_capital if capital is None else capital
    return EpisodeInputs(bars, params, rl_weight, float(start_equity))


class SleeveEpisode:
    """The backtester's sleeve of ``inputs`` driven one decision at a time (see the module
    docstring). ``reset()`` starts (or restarts) it; ``step`` until it says done. ``mode``:
    one of ``EPISODE_MODES`` (``"filter"`` with the strategy's ``filter_veto`` and
    ``filter_size``), or None: the strategy's own (``inputs.params.rl_mode``)."""

    def __init__(self, inputs: EpisodeInputs, *, mode: str | None = "sole") -> None:
        if mode is not None and mode not in EPISODE_MODES:
            raise BacktestError(
                f"episode mode is {mode!r}; expected one of {', '.join(EPISODE_MODES)}"
            )
        if inputs.n_days < 2:
            raise BacktestError(
                f"{inputs.symbol!r} has {inputs.n_days} decision day(s); an episode needs 2"
            )
        self.inputs = inputs
        strategy = inputs.params.rl_mode
        self.rl_mode = strategy if mode is None else RlMode(mode, strategy.veto, strategy.size)
        self.mode = self.rl_mode.name
        self.markets: F64 = inputs.bars.market[inputs.bars.first :]
        self._prepared: _Prepared | None = None
        self._steps: Generator[bool, None, None] | None = None
        self._board = Board()
        self.actions: list[int] = []
        self.strengths: list[float] = []
        self.day = 0
        self.equity = 0.0
        self.last_decision: Decision | None = None  # the decision the last step traded on

    @property
    def n_days(self) -> int:
        return self.inputs.n_days

    def reset(self) -> F64:
        """A fresh sleeve; day 0's state (34 floats, float64)."""
        i = self.inputs
        # the bars are frozen: _prepare's sleeve copies what it reads (lists of floats)
        self._prepared = _prepare(i.bars, i.params, i.capital)
        self.actions, self.strengths = [], []
        board = self._board = Board()
        self._steps = self._prepared.sleeve.steps(self.actions, self.strengths, board, 0)
        self.day = 0
        next(self._steps)  # marks day 0: its portfolio columns on the board
        self.equity = self._prepared.sleeve.out[-2]  # the mark's equity (engine._Sleeve.out)
        return self._state()

    def decide(self, action: int, strength: float, confidence: float) -> Decision:
        """The day's decision from the policy's ``action``, ``strength`` and ``confidence``
        as ``mode`` makes it: the backtester's vote (``decide_rows``) with the three
        analysts' votes of the day."""
        p = self._prepared
        assert p is not None
        k = self.day
        out = decide_rows(
            p.totals[k].tolist(),
            p.strength_sums[k].tolist(),
            [int(action), float(strength), float(confidence)],
            self.inputs.rl_weight,
            self.inputs.params.min_score,
            self.rl_mode,
        )
        return int(out[0]), out[1], out[2]

    def step(
        self, action: int, strength: float, confidence: float = 1.0
    ) -> tuple[F64, float, bool]:
        """Trade on the current day's decision (filled at the next open, with the
        backtester's slippage and commission), mark the next day: its state, the reward
        (the equity change over the starting equity) and whether it is the last day (then
        the episode is over: its decision would never be filled)."""
        if self._steps is None or self.day >= self.n_days - 1:
            raise BacktestError("step() on an episode that is over or not started; call reset()")
        if int(action) not in (int(Action.HOLD), int(Action.BUY), int(Action.SELL)):
            raise BacktestError(f"action is {action!r}; expected 0 (HOLD), 1 (BUY) or 2 (SELL)")
        decision = self.last_decision = self.decide(action, strength, confidence)
        board, p = self._board, self._prepared
        assert p is not None
        board.decided = list(decision)  # this sleeve's row (place 0) of the decided rows
        board.portfolio.clear()
        next(self._steps)  # trades on the decision, marks the next day
        self.day += 1
        equity = p.sleeve.out[-2]
        reward = (equity - self.equity) / self.inputs.capital
        self.equity = equity
        done = self.day == self.n_days - 1
        if done:  # the last day's decision: recorded, never filled; the generator ends
            board.decided = [int(Action.HOLD), 0.0, 0.0]
            with contextlib.suppress(StopIteration):
                next(self._steps)
            self._steps = None
        return self._state(), reward, done

    def _state(self) -> F64:
        """The day's state: its market features with the portfolio columns the sleeve put
        on the board (days since the last trade normalised as in the lockstep backtester)."""
        state: F64 = self.markets[self.day].astype(np.float64, copy=True)
        state[PORTFOLIO_COLUMNS] = self._board.portfolio[:4]
        return state
