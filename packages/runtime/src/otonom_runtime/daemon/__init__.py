"""The decision tick and the daemon: the runtime deciding live, with no torch.

* ``tick``: ``Ensemble`` (a strategy's analysts and model, loaded once;
  ``Ensemble.from_strategy(path)``) whose ``decide(session, symbols, date, portfolios)``
  decides many symbols at once and returns each ``TickDecision`` with every analyst's signal:
  the reads through its ``TickCache``, the analysts vectorised, the policy through
  ``predict_batch``, the vote by the backtester's ``decide_rows``. ``decide_states`` is the
  same on states a caller built; ``read_tick`` reads symbols whole in batched statements.
* ``cache``: ``TickCache``, what the ensemble keeps between ticks: each symbol's last
  ``LOOKBACK`` bars, news tail and the macro series; a steady tick reads only the rows that are
  new (one statement per table for all symbols), the newest bars' states in one
  ``otonom_schema.market_feature_panel`` call.
* ``paper``: the ``Broker`` protocol (where a broker plugs in) and ``PaperBroker``, whose
  positions are the strategy's live decisions through the backtester's sleeve, kept between
  ticks and stepped once a tick (replayed from the stored decisions once after a restart).
* ``rows``: ``Rows``, a tick's rows kept as columns and made into objects only when read
  (``Holdings``, ``Portfolios``; ``tick.Decisions``, ``paper.Inputs``, ``cache.Cached``):
  ``run_tick``'s ``TickReport.decisions`` and ``holdings`` are such sequences, so a tick of
  thousands of symbols builds none of its per-symbol objects unless a caller reads them.
* ``bars``: the ``BarSource`` protocol and ``CsvFolderBars`` (``otonom daemon --bars-from``:
  ``<SYMBOL>.csv`` of a folder imported before each tick).
* ``loop``: ``run_tick`` (each symbol's newest bar not yet decided, decided and recorded in
  one transaction: the whole tick or nothing; a second tick on the same bars records nothing)
  and ``run_daemon`` (a tick every interval; SIGINT/SIGTERM let the tick in progress finish
  its write, then it exits; between ticks the hot reload and the state row).
* ``reload``: ``ModelWatch`` (the hot reload: a newly promoted model loaded beside the one in
  service with ``load_rl_policy``'s checks, swapped in for the next tick or refused with the
  reason, the last good model kept) and ``daemon_state`` (the ``DaemonState`` row that
  ``otonom status`` prints: heartbeat, model in service, refused candidate, fallback counts,
  predict latency percentiles).

Live decisions are stored as backtest decisions are, in ``decisions``, marked by
``live_strategy`` (the strategy's name), under a run row per tick whose
``params["purpose"]`` is ``"live"`` (internal: never a dataset's teacher). The store's unique
index on (live_strategy, symbol_id, date) makes one live decision per strategy, symbol and
bar, whichever process writes it.
"""

from otonom_runtime.daemon.bars import BarSource, CsvFolderBars
from otonom_runtime.daemon.cache import TickCache
from otonom_runtime.daemon.loop import (
    LIVE_PURPOSE,
    OLD_BAR_DAYS,
    TickReport,
    parse_interval,
    run_daemon,
    run_tick,
)
from otonom_runtime.daemon.paper import Broker, Holding, PaperBroker
from otonom_runtime.daemon.reload import ModelWatch, Refusal, daemon_state, latency_percentiles
from otonom_runtime.daemon.tick import (
    LATENCY_WINDOW,
    Ensemble,
    SymbolInputs,
    TickDecision,
    read_tick,
)

__all__ = [
    "LATENCY_WINDOW",
    "LIVE_PURPOSE",
    "OLD_BAR_DAYS",
    "BarSource",
    "Broker",
    "CsvFolderBars",
    "Ensemble",
    "Holding",
    "ModelWatch",
    "PaperBroker",
    "Refusal",
    "SymbolInputs",
    "TickCache",
    "TickDecision",
    "TickReport",
    "daemon_state",
    "latency_percentiles",
    "parse_interval",
    "read_tick",
    "run_daemon",
    "run_tick",
]
