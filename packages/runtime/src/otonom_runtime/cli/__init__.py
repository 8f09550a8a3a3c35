"""The ``otonom`` command line (also ``python -m otonom_runtime``).

Layout: one module per command group (``data``, ``bench``, ``strategy``, ``backtest``,
``runs``, ``daemon``, ``monitor``, ``status``), each with an ``add_<group>_commands(commands)`` that
``_build_parser()`` calls in that order; every leaf command sets ``handler`` to a ``_cmd_*``
function of its module taking the parsed arguments and returning the exit status. Shared
rooms: ``_shell`` (``run_cli``, ``add_global_flags``: also ``otonom-train``'s), ``_store``
(``require_store``, ``open_store``, ``removed_on_failure``) and ``_text`` (tables, number
formats). Adding a group is one module and one call.

Errors: every failure prints one ``error: ...`` line on stderr, never a traceback (a bad-rows
report or a strategy's problem list adds indented lines below it). An error raised on purpose
(bad file, unknown symbol, unusable database) prints its message; anything else prints the
exception's type and message and asks for a rerun with ``--debug``, which lets every exception
through with its traceback. A command that fails leaves nothing behind: inputs are checked before
the store is created, and a SQLite store the failing call created is removed again.
``run_cli`` and ``add_global_flags`` give ``otonom-train`` the same behaviour.

Exit status: 0 on success, 1 for an error, 2 for a command line argparse cannot read, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from otonom_runtime._errors import OtonomRuntimeError
from otonom_runtime.cli._shell import add_global_flags, error_text, run_cli
from otonom_runtime.cli._store import removed_on_failure, require_store
from otonom_runtime.cli.backtest import add_backtest_commands
from otonom_runtime.cli.bench import add_bench_commands
from otonom_runtime.cli.daemon import add_daemon_commands
from otonom_runtime.cli.data import add_data_commands
from otonom_runtime.cli.monitor import add_monitor_commands
from otonom_runtime.cli.runs import add_runs_commands
from otonom_runtime.cli.status import add_status_commands
from otonom_runtime.cli.strategy import add_strategy_commands
from otonom_schema import SchemaError

__all__ = ["add_global_flags", "main", "removed_on_failure", "require_store", "run_cli"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otonom",
        description=(
            "otonom-rl runtime: the market-data store, backtests of the trading ensemble and "
            "its learned ONNX policy, the live decision daemon and its status, monitoring and "
            "the policy's benchmark (no PyTorch)."
        ),
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help=(
            "SQLAlchemy database URL (default: $OTONOM_DATABASE_URL, else the SQLite file "
            "./data/otonom.db), e.g. postgresql+psycopg://user@host:5432/otonom"
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_data_commands(commands)
    add_bench_commands(commands)
    add_strategy_commands(commands)
    add_backtest_commands(commands)
    add_runs_commands(commands)
    add_daemon_commands(commands)
    add_monitor_commands(commands)
    add_status_commands(commands)
    add_global_flags(parser, version=_version_text())
    return parser


def _expected_message(exc: BaseException) -> str | None:
    if isinstance(exc, (OtonomRuntimeError, SchemaError)):
        return error_text(exc)
    if isinstance(exc, OSError):
        return str(exc)
    if "sqlalchemy" in sys.modules:  # imported late: `--help` stays fast
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            return f"database error: {exc}"
    return None


def _version_text() -> str:
    """What ``otonom --version`` prints."""
    import otonom_runtime
    import otonom_schema

    return (
        f"otonom {otonom_runtime.__version__} (otonom-runtime {otonom_runtime.__version__}, "
        f"otonom-schema {otonom_schema.__version__}, state schema {otonom_schema.SCHEMA_VERSION})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return run_cli(_build_parser(), argv, expected=_expected_message)
