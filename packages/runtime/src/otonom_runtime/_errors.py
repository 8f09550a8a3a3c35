"""The error tree of otonom-runtime.

::

    Exception
    └── OtonomRuntimeError
        ├── StoreError (+ RuntimeError)        the database: cannot open, not initialised, bad URL
        ├── DataImportError (+ ValueError)     a CSV or synthetic-data request that is invalid;
        │                                      lists every bad row (file, row number, problem)
        ├── UnknownSymbolError (+ KeyError)    a symbol that is not in the store
        ├── StateBuildError (+ ValueError)     no bar on/near the date, date before history, ...
        ├── StrategyError (+ ValueError)       a strategy file or mapping that cannot be used;
        │                                      ``problems`` lists every one (file:line: key.path)
        ├── BacktestError (+ ValueError)       a backtest request that cannot run (no symbols,
        │                                      start after end, an unknown purpose)
        ├── DataRangeError (+ ValueError)      stored bars that cannot give the date range asked
        │                                      for (too few, no overlap, none at all;
        │                                      ``otonom_runtime.ranges``)
        ├── DaemonError (+ ValueError)         a daemon request that cannot run (no symbols, a
        │                                      bad universe file or interval)
        ├── PlotUnavailableError (+ RuntimeError)  a PNG chart without matplotlib installed
        │                                      (defined in ``otonom_runtime.plots``)
        └── PolicyError (+ ValueError)         a model file that is missing, invalid, has the
            │                                  wrong signature, fails its sha256, digest or
            │                                  golden sample check; an output that breaks
            │                                  the model's contract at predict time
            ├── ModelSchemaMismatchError       the model was trained under another state schema
            │   (+ otonom_schema.SchemaMismatchError)
            └── Malformed                      bytes that are not protobuf (internal to
                                               ``serving.wire``: re-raised naming the file)

Bad *state* input at predict time raises ``otonom_schema.SchemaError`` (a ``ValueError``).
Every message says what was received and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence

from otonom_schema import SchemaMismatchError

__all__ = [
    "BacktestError",
    "DaemonError",
    "DataImportError",
    "DataRangeError",
    "ModelSchemaMismatchError",
    "OtonomRuntimeError",
    "PolicyError",
    "StateBuildError",
    "StoreError",
    "StrategyError",
    "UnknownSymbolError",
]


class OtonomRuntimeError(Exception):
    """Base of every error otonom-runtime raises on purpose."""


class StoreError(OtonomRuntimeError, RuntimeError):
    """The market-data store cannot be opened or used."""


class DataImportError(OtonomRuntimeError, ValueError):
    """Input data (CSV, synthetic-data parameters) that cannot be imported."""


class UnknownSymbolError(OtonomRuntimeError, KeyError):
    """A symbol that is not in the store."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class StateBuildError(OtonomRuntimeError, ValueError):
    """A state cannot be built for the requested symbol and date."""


class StrategyError(OtonomRuntimeError, ValueError):
    """A strategy (YAML file or mapping) that cannot be used.

    The message lists every problem found, one per line; ``problems`` holds the same lines
    (``FILE[:LINE]: key.path: received ..., expected ...``).
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems)


class BacktestError(OtonomRuntimeError, ValueError):
    """A backtest request that cannot run (checked before anything is stored)."""


class DataRangeError(OtonomRuntimeError, ValueError):
    """The stored bars cannot give the date range asked for (too few, no overlap, none at all);
    the message says what each symbol holds and what is needed."""


class DaemonError(OtonomRuntimeError, ValueError):
    """A daemon request that cannot run: no symbols, a bad universe file, a bad interval."""


class PolicyError(OtonomRuntimeError, ValueError):
    """A policy model that cannot be loaded or used."""


class ModelSchemaMismatchError(PolicyError, SchemaMismatchError):
    """The model was trained under a different state schema than the installed one."""
