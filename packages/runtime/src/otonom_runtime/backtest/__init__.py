"""The backtester: the ensemble over daily bars, every decision stored as a ``Decision`` row.

Modules (each name below is re-exported here):

* ``params``: ``EngineParams`` (what a simulation needs) and ``engine_params`` (from a
  strategy file); the constants of the rules (``REBALANCE_THRESHOLD``, ``BUST_FLOOR``,
  ``RUN_PURPOSES``, ``INTERNAL_PURPOSES``).
* ``engine``: the trading engine, no store: the sleeve (one body of the mark/trade rules),
  the simulation of many symbols (in lockstep with the RL analyst), the vote through
  ``otonom_runtime.ensemble``; ``simulate_symbol``, ``SymbolResult``.
* ``records``: run persistence: the run row's lifecycle (``running`` with its process and
  heartbeat, then ``complete`` or ``failed``) and the batched decision rows.
* ``episode``: one symbol's sleeve driven one decision at a time (``SleeveEpisode``, its
  inputs read by ``episode_inputs``), the engine of ``otonom_trainer.rl.TradingEnv``: the
  same reader, sleeve and vote as a backtest, so an episode's return is the backtest's.
* ``runner``: ``run_backtest`` (a strategy -> inputs read -> engine -> records) and
  ``BacktestReport``.

Rules (each one tested):

* **No look-ahead.** The decision for day t is made at the close of t from the state at t
  (``otonom_schema`` features of bars <= t) and filled at the **open of t+1**. The last day's
  decision is recorded but not filled.
* **Sizing.** BUY targets a long exposure of ``strength x max_leverage x risk exposure``
  (the risk analyst's multiplier, < 1 in the high-volatility regime); SELL the same short
  (flat when ``allow_short`` is false); HOLD keeps the position, cut back to ``max_leverage``
  when price moves have inflated it beyond the cap. A trade happens when the
  target differs from the current exposure by at least ``REBALANCE_THRESHOLD`` of equity (or
  the target is flat and a position is open), so small strength changes do not churn.
* **Costs.** A fill pays slippage (``slippage_bps``: buys fill above the open, sells below)
  and commission (``commission_bps`` of the traded notional).
* **Model.** With the RL analyst on, the model is loaded before the run row is written, and
  ``params["rl_model_file"]`` / ``params["rl_model_sha256"]`` record the file served and the
  verified sha256 of its bytes (the file and None when it failed to load and the run fell
  back; both None with the RL analyst off).
* **Ruin.** A sleeve whose equity falls to ``BUST_FLOOR`` of its capital is closed and
  stops trading.
* **Sleeves.** Each symbol trades its own sleeve of ``initial_capital / n_symbols``; the
  portfolio is their sum.
* **Portfolio features** seen by the state at t (and stored on the decision row): ``position``
  = exposure / max_leverage (clipped to [-1, 1]), ``leverage`` = |exposure| (clipped to 4),
  ``cash_fraction`` = max(0, 1 - |exposure|), ``days_since_last_trade`` since the last fill
  (``inf`` before the first), where exposure = position value / equity at the close of t.
* **Records.** A run row is written first with status ``running``; decision rows go in
  batched transactions; the run becomes ``complete`` (with its metrics) only at the very end.
  Any exception (Ctrl-C included) marks it ``failed`` with the error, so dataset generation,
  which reads complete runs only, never sees a partial run. A process that dies without an
  exception (``kill -9``, a power cut) cannot do that: the run row records its host, pid and
  process start time and a heartbeat thread refreshes ``heartbeat_at`` while it runs
  (``otonom_runtime.store.RunHeartbeat``), and the next opening of the store for writing
  marks it ``failed`` (``otonom_runtime.store.fail_interrupted_runs``).
* **Purpose.** ``params["purpose"]`` records who made the run (``RUN_PURPOSES``): ``user``
  (``otonom backtest``, the default), ``pipeline`` / ``walk-forward`` (the teacher backtest of
  ``otonom-train pipeline`` / ``walk-forward``), ``gate`` (the three runs of ``otonom-train
  check``) and ``evaluation`` (the held-out backtests with and without the RL analyst that the
  pipeline and each walk-forward window make to judge a model). ``gate`` and ``evaluation``
  runs are internal (``INTERNAL_PURPOSES``): ``otonom runs list`` marks them and dataset
  generation never takes one as its teacher. A run stored before the field existed is ``user``.
"""

from otonom_runtime.backtest.engine import SymbolResult, simulate_symbol
from otonom_runtime.backtest.episode import (
    EPISODE_MODES,
    EpisodeInputs,
    SleeveEpisode,
    episode_inputs,
)
from otonom_runtime.backtest.params import (
    BUST_FLOOR,
    INTERNAL_PURPOSES,
    REBALANCE_THRESHOLD,
    RUN_PURPOSES,
    EngineParams,
    engine_params,
)
from otonom_runtime.backtest.runner import BacktestReport, run_backtest

__all__ = [
    "BUST_FLOOR",
    "EPISODE_MODES",
    "INTERNAL_PURPOSES",
    "REBALANCE_THRESHOLD",
    "RUN_PURPOSES",
    "BacktestReport",
    "EngineParams",
    "EpisodeInputs",
    "SleeveEpisode",
    "SymbolResult",
    "engine_params",
    "episode_inputs",
    "run_backtest",
    "simulate_symbol",
]
