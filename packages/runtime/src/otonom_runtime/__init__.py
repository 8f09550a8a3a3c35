"""otonom-runtime: the torch-free runtime a trading daemon imports.

The market-data store (SQLAlchemy), CSV and synthetic data, the live state builder and the ONNX
Runtime policy. Names are loaded on first use (PEP 562), so ``import otonom_runtime`` costs
almost nothing and a daemon that only predicts never imports SQLAlchemy. It never imports
torch, and importing it creates no engine, session or file.

Submodules (public): ``store``, ``importers``, ``synth``, ``builder``, ``policy``,
``strategy``, ``ensemble``, ``backtest``, ``ranges``, ``daemon``, ``metrics``, ``plots``, ``bench``,
``cli``, ``testing``, ``integrity``.
"""

import importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from otonom_runtime._errors import (
    BacktestError,
    DaemonError,
    DataImportError,
    DataRangeError,
    ModelSchemaMismatchError,
    OtonomRuntimeError,
    PolicyError,
    StateBuildError,
    StoreError,
    StrategyError,
    UnknownSymbolError,
)

if _TYPE_CHECKING:
    from otonom_runtime.backtest import BacktestReport, run_backtest
    from otonom_runtime.builder import RlStateBuilder
    from otonom_runtime.daemon import Ensemble
    from otonom_runtime.ensemble import Signal, aggregate_signals
    from otonom_runtime.importers import ImportReport, import_ohlcv_csv, import_sentiment_csv
    from otonom_runtime.policy import RlPolicy, load_rl_policy
    from otonom_runtime.store import (
        default_database_url,
        get_engine,
        get_session,
        init_db,
        list_symbols,
        load_history,
    )
    from otonom_runtime.strategy import StrategyConfig, load_strategy
    from otonom_runtime.synth import generate_market, write_synthetic

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "BacktestReport": "otonom_runtime.backtest",
    "run_backtest": "otonom_runtime.backtest",
    "Ensemble": "otonom_runtime.daemon",
    "Signal": "otonom_runtime.ensemble",
    "aggregate_signals": "otonom_runtime.ensemble",
    "StrategyConfig": "otonom_runtime.strategy",
    "load_strategy": "otonom_runtime.strategy",
    "RlStateBuilder": "otonom_runtime.builder",
    "ImportReport": "otonom_runtime.importers",
    "import_ohlcv_csv": "otonom_runtime.importers",
    "import_sentiment_csv": "otonom_runtime.importers",
    "RlPolicy": "otonom_runtime.policy",
    "load_rl_policy": "otonom_runtime.policy",
    "default_database_url": "otonom_runtime.store",
    "get_engine": "otonom_runtime.store",
    "get_session": "otonom_runtime.store",
    "init_db": "otonom_runtime.store",
    "list_symbols": "otonom_runtime.store",
    "load_history": "otonom_runtime.store",
    "generate_market": "otonom_runtime.synth",
    "write_synthetic": "otonom_runtime.synth",
}

__all__ = [
    "BacktestError",
    "BacktestReport",
    "DaemonError",
    "DataImportError",
    "DataRangeError",
    "Ensemble",
    "ImportReport",
    "ModelSchemaMismatchError",
    "OtonomRuntimeError",
    "PolicyError",
    "RlPolicy",
    "RlStateBuilder",
    "Signal",
    "StateBuildError",
    "StoreError",
    "StrategyConfig",
    "StrategyError",
    "UnknownSymbolError",
    "aggregate_signals",
    "default_database_url",
    "generate_market",
    "get_engine",
    "get_session",
    "import_ohlcv_csv",
    "import_sentiment_csv",
    "init_db",
    "list_symbols",
    "load_history",
    "load_rl_policy",
    "load_strategy",
    "run_backtest",
    "write_synthetic",
]


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otonom_runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
