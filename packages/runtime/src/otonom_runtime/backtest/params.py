"""The parameters of a simulation and of a run: ``EngineParams`` (what the trading engine
needs, from a strategy file by ``engine_params``) and the constants of the rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from otonom_runtime.ensemble import NewsAnalyst, RiskAnalyst, RlMode, TechAnalyst

if TYPE_CHECKING:
    from otonom_runtime.strategy import StrategyConfig

__all__ = [
    "BUST_FLOOR",
    "INTERNAL_PURPOSES",
    "REBALANCE_THRESHOLD",
    "RUN_PURPOSES",
    "EngineParams",
    "engine_params",
]

REBALANCE_THRESHOLD: Final = 0.05
"""Minimum change of exposure (fraction of equity) that makes a trade."""

BUST_FLOOR: Final = 1e-6
"""A sleeve whose equity falls to this fraction of its capital is closed and stops trading
(its equity stays there: the run reports a ~-100 % return instead of negative equity)."""

RUN_PURPOSES: Final = ("user", "pipeline", "walk-forward", "gate", "evaluation")
"""What ``run_backtest(purpose=...)`` accepts; stored as the run's ``params["purpose"]``."""
INTERNAL_PURPOSES: Final = ("gate", "evaluation", "live")
"""Purposes of runs that are never a dataset's teacher: those a command makes to judge a model
(``gate``, ``evaluation``) and the daemon's ticks (``live``, ``otonom_runtime.daemon``: not
backtests, written by the daemon, never by ``run_backtest``)."""


@dataclass(frozen=True)
class EngineParams:
    """Everything a simulation needs, independent of where it came from (a strategy file).
    ``rl_mode``: how the RL analyst's vote makes the decision (``otonom_runtime.vote``)."""

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    min_score: float = 0.5
    tech: TechAnalyst = field(default_factory=TechAnalyst)
    news: NewsAnalyst = field(default_factory=NewsAnalyst)
    risk: RiskAnalyst = field(default_factory=RiskAnalyst)
    initial_capital: float = 10_000.0
    max_leverage: float = 1.0
    allow_short: bool = True
    commission_bps: float = 10.0
    slippage_bps: float = 5.0
    periods_per_year: int = 365
    rl_mode: RlMode = field(default_factory=RlMode)


def engine_params(config: StrategyConfig) -> EngineParams:
    """The simulation parameters of a strategy file (``ensemble.enabled: false``: tech alone)."""
    weights = tuple(float(w) for w in config.weights_array())
    if not config.ensemble.enabled:
        weights = (1.0, 0.0, 0.0, 0.0)
    a, rl = config.analysts, config.ensemble.rl_policy
    return EngineParams(
        weights=(weights[0], weights[1], weights[2], weights[3]),
        min_score=config.ensemble.min_score,
        tech=TechAnalyst(
            trend_window=a.tech.trend_window,
            trend_threshold=a.tech.trend_threshold,
            rsi_oversold=a.tech.rsi_oversold,
            rsi_overbought=a.tech.rsi_overbought,
            macd_threshold=a.tech.macd_threshold,
            trend_weight=a.tech.weights.trend,
            rsi_weight=a.tech.weights.rsi,
            macd_weight=a.tech.weights.macd,
            entry_threshold=a.tech.entry_threshold,
        ),
        news=NewsAnalyst(
            news_weight=a.news.news_weight,
            macro_weight=a.news.macro_weight,
            threshold=a.news.threshold,
        ),
        risk=RiskAnalyst(
            drawdown_window=a.risk.drawdown_window,
            max_drawdown=a.risk.max_drawdown,
            high_vol_exposure=a.risk.high_vol_exposure,
            exit_in_high_vol=a.risk.exit_in_high_vol,
        ),
        initial_capital=config.portfolio.initial_capital,
        max_leverage=config.portfolio.max_leverage,
        allow_short=config.portfolio.allow_short,
        commission_bps=config.costs.commission_bps,
        slippage_bps=config.costs.slippage_bps,
        # ``auto``: the placeholder 365 is replaced from the bars' dates by run_backtest
        periods_per_year=config.calendar.resolve([]),
        rl_mode=RlMode(rl.mode, rl.filter_veto, rl.filter_size),
    )
