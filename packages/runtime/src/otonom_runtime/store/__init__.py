"""The market-data store: SQLAlchemy 2.0 tables, engines, sessions and the readers.

Any SQLAlchemy URL works; the default is the SQLite file ``./data/otonom.db`` (relative to the
working directory at call time) unless the ``OTONOM_DATABASE_URL`` environment variable is set.
PostgreSQL needs the ``postgres`` extra (``postgresql+psycopg://user@host/db``).

Rules:

* Nothing happens at import time: engines are made by ``get_engine`` on first use (one per
  URL, cached), tables by the explicit ``init_db``.
* SQLite files run in WAL mode with ``synchronous=NORMAL``, ``busy_timeout=5000`` ms and
  foreign keys on (set on every connection), so a daemon can read while a backtest writes.
  ``NORMAL`` is SQLite's recommended setting for WAL: a commit does not wait for an fsync
  (a backtest commits every 5,000 decision rows; no measurable difference on a fast-syncing
  disk, milliseconds per commit on a slow one), a crash cannot corrupt the database and an
  application crash loses nothing; only a power cut or OS crash can undo the last commits
  before a checkpoint (a backtest run is then left ``running``, and marked ``failed`` by the
  next opening for writing, or missing, never complete with rows missing).
* A store that was never initialised is refused by ``get_session`` with a ``StoreError``.
* Dates are calendar days (``datetime.date``), prices are in the quote currency, volume in
  whatever unit the source uses (the features only use volume ratios).
* ``Decision.days_since_last_trade`` stores ``math.inf`` ("never traded") as SQL NULL and reads
  NULL back as ``math.inf`` (the ``InfAsNull`` column type), so the ORM attribute is always a
  float.
* The readers return ``otonom_schema`` types and fetch columns with Core selects (no ORM
  objects) in one SQL query on the happy path.
* Sentiment carries its provenance: every news and macro row has a ``source``
  (``SYNTHETIC_SOURCE`` for the synthetic market's rows, ``USER_SOURCE`` by default for
  imported ones), and a symbol reads one source per kind (``sentiment_source``): a synthetic
  symbol reads ``"synthetic"``, a real one ``"user"``, unless the strategy names a source. A
  store holding the demo and a user's data thus gives each what a store holding only it would.
* Interrupted runs are found: a backtest run records its host, pid and process start time and
  keeps a heartbeat (``RunHeartbeat``); every ``init_db`` (every ``otonom`` command, every
  opening of the store for writing) marks ``failed``, with the reason in ``error``, a
  ``running`` run whose process is provably gone or whose heartbeat is stale
  (``fail_interrupted_runs``).

The rooms (every SQL statement of the project lives in this package):

* ``tables``: the declarative tables (``Base.metadata``), ``InfAsNull``, ``STORE_VERSION``.
* ``engine``: URLs, the engine cache, the SQLite pragmas and the after-fork hook.
* ``migrations``: the resumable in-place upgrades of older store versions.
* ``changelog``: the triggers that log changes in place and deletes (``RowChange``), whoever
  the writer is, for a running daemon to see.
* ``sessions``: ``init_db`` and ``get_session``.
* ``runs``: run liveness (``ProcessIdentity``, ``RunHeartbeat``, ``fail_interrupted_runs``) and
  ``list_runs``.
* ``raw``: plain SQL through the driver (``fetch_raw``) and the column conversions.
* ``readers``: symbols, bars and sentiment as ``otonom_schema`` types, and the stored rows the
  importers and the synthetic market compare against (``stored_bars`` ...).
* ``live``: the live state builder's per-tick probe (``probe_latest``), one prebuilt statement.
* ``daemons``: the daemon's state row (``write_daemon_state``, ``read_daemon_states``): its
  heartbeat, the model in service, the refused candidate, what ``otonom status`` prints.
* ``ticks``: the daemon tick's batched reads (bars, news, earlier live decisions of many
  symbols, one statement each) and its one write (``record_tick``).
* ``writers``: the importers' and the synthetic market's inserts, updates and deletes.
* ``datasets``: the reads of offline dataset generation (``otonom_trainer.dataset``).
* ``monitoring``: the reads of ``otonom monitor`` (the run to watch, its decisions in a window).
"""

from __future__ import annotations

from otonom_runtime._sources import SYNTHETIC_SOURCE, USER_SOURCE, check_source_name
from otonom_runtime.store.daemons import read_daemon_states, write_daemon_state
from otonom_runtime.store.engine import (
    DATABASE_URL_ENV,
    default_database_url,
    dispose_engines,
    get_engine,
)
from otonom_runtime.store.live import LatestRow, probe_latest
from otonom_runtime.store.raw import fetch_raw
from otonom_runtime.store.readers import (
    StoredBar,
    SymbolInfo,
    bar_spans,
    find_symbol,
    get_or_create_symbol,
    get_symbol,
    get_symbols,
    last_bar_date,
    list_symbols,
    load_history,
    load_macro,
    load_news,
    macro_dates,
    news_dates,
    sentiment_source,
    stored_bars,
    stored_macro_scores,
    stored_names,
    stored_news_scores,
    symbol_ids,
    symbols_with_bars,
)
from otonom_runtime.store.runs import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_STALE_S,
    ProcessIdentity,
    RunHeartbeat,
    fail_interrupted_runs,
    list_runs,
    this_process,
)
from otonom_runtime.store.sessions import get_session, init_db
from otonom_runtime.store.tables import (
    RUN_STATUSES,
    SIGNAL_COLUMNS,
    SIGNAL_FIELDS,
    STORE_VERSION,
    BacktestRun,
    Bar,
    Base,
    DaemonState,
    Decision,
    InfAsNull,
    MacroSentiment,
    NewsSentiment,
    RowChange,
    StoreMeta,
    Symbol,
)
from otonom_runtime.store.writers import (
    DecisionBatch,
    decision_batches,
    delete_symbol_data,
    insert_bars,
    insert_decisions,
    insert_macro,
    insert_news,
    insert_shared_macro,
    update_bars,
    update_macro,
    update_news,
)

__all__ = [
    "DATABASE_URL_ENV",
    "HEARTBEAT_INTERVAL_S",
    "HEARTBEAT_STALE_S",
    "RUN_STATUSES",
    "SIGNAL_COLUMNS",
    "SIGNAL_FIELDS",
    "STORE_VERSION",
    "SYNTHETIC_SOURCE",
    "USER_SOURCE",
    "BacktestRun",
    "Bar",
    "Base",
    "DaemonState",
    "Decision",
    "DecisionBatch",
    "InfAsNull",
    "LatestRow",
    "MacroSentiment",
    "NewsSentiment",
    "ProcessIdentity",
    "RowChange",
    "RunHeartbeat",
    "StoreMeta",
    "StoredBar",
    "Symbol",
    "SymbolInfo",
    "bar_spans",
    "check_source_name",
    "decision_batches",
    "default_database_url",
    "delete_symbol_data",
    "dispose_engines",
    "fail_interrupted_runs",
    "fetch_raw",
    "find_symbol",
    "get_engine",
    "get_or_create_symbol",
    "get_session",
    "get_symbol",
    "get_symbols",
    "init_db",
    "insert_bars",
    "insert_decisions",
    "insert_macro",
    "insert_news",
    "insert_shared_macro",
    "last_bar_date",
    "list_runs",
    "list_symbols",
    "load_history",
    "load_macro",
    "load_news",
    "macro_dates",
    "news_dates",
    "probe_latest",
    "read_daemon_states",
    "sentiment_source",
    "stored_bars",
    "stored_macro_scores",
    "stored_names",
    "stored_news_scores",
    "symbol_ids",
    "symbols_with_bars",
    "this_process",
    "update_bars",
    "update_macro",
    "update_news",
    "write_daemon_state",
]
