"""``otonom daemon``: decide each symbol's newest bar not yet decided, in paper mode, once or
every interval until SIGINT/SIGTERM (``otonom_runtime.daemon``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from otonom_runtime._errors import DaemonError
from otonom_runtime.cli._store import require_store
from otonom_schema import parse_iso_date

__all__ = ["add_daemon_commands"]

log = logging.getLogger("otonom_runtime.daemon")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _universe(path: Path) -> list[str]:
    """The symbols of a universe file: one a line, blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DaemonError(f"cannot read universe file {path}: {exc}") from None
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    symbols = list(dict.fromkeys(name for name in names if name))
    if not symbols:
        raise DaemonError(f"universe file {path} names no symbol; expected one symbol a line")
    return symbols


def _symbols(args: argparse.Namespace) -> Callable[[], Sequence[str]]:
    if args.universe is not None:
        universe = Path(args.universe)
        last = _universe(universe)  # a bad file fails before the first tick

        def read() -> Sequence[str]:
            """The file's symbols; the last good ones while it cannot be read or names none
            (a file being rewritten, moved away): a running daemon does not stop for it."""
            nonlocal last
            try:
                last = _universe(universe)
            except DaemonError as exc:
                log.warning("%s; this tick decides the last universe read (%d symbols)",
                            exc, len(last))  # fmt: skip
            return last

        return read
    symbols = list(dict.fromkeys(args.symbols))
    return lambda: symbols


def _cmd_daemon(args: argparse.Namespace) -> int:
    from otonom_runtime.daemon import (
        CsvFolderBars,
        Ensemble,
        PaperBroker,
        parse_interval,
        run_daemon,
        run_tick,
    )
    from otonom_runtime.store import get_session, init_db

    interval_s = parse_interval(args.interval)
    symbols = _symbols(args)
    bars = None if args.bars_from is None else CsvFolderBars(args.bars_from)
    url = require_store(args.database_url)
    init_db(url)  # upgrades an older store, marks interrupted runs failed
    ensemble = Ensemble.from_strategy(args.strategy_path, use_rl=False if args.no_rl else None)
    if ensemble.rl_error is not None:
        print(f"RL analyst not in service, deciding without it: {ensemble.rl_error}", flush=True)
    with ExitStack() as stack:
        tick = _dask_tick(args, url, stack) if args.dask_scheduler else run_tick
        run_daemon(
            lambda: get_session(url),
            ensemble,
            symbols,
            PaperBroker(),
            once=args.once,
            interval_s=interval_s,
            as_of=args.as_of,
            report=lambda r: print(r.summary(), flush=True),
            notify=lambda line: print(line, flush=True),
            tick=tick,
            bars=bars,
        )
    return 0


def _dask_tick(args: argparse.Namespace, url: str, stack: ExitStack) -> Callable[..., Any]:
    """The tick on the Dask cluster of ``--dask-scheduler`` (client and local cluster
    closed by ``stack``)."""
    from otonom_runtime.daemon.distributed import DaskTick, connect

    client, cluster = connect(args.dask_scheduler)
    if cluster is not None:
        stack.callback(cluster.close)
    stack.callback(client.close)
    workers = len(client.scheduler_info()["workers"])
    print(f"dask: {workers} workers at {client.scheduler.address}", flush=True)
    return DaskTick(
        client, url, args.strategy_path, use_rl=False if args.no_rl else None,
        partitions=args.dask_partitions,
    )  # fmt: skip


def add_daemon_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "daemon",
        help="decide each symbol's newest bar live (paper mode), once or every interval",
        description=(
            "Each tick decides, for every symbol whose newest stored bar the strategy has not "
            "decided live yet, the ensemble's action at that bar's close (all symbols at once: "
            "the backtester's states and vote) and records the decisions in the store, marked "
            "live, in one transaction. Paper mode: positions are the live decisions filled at "
            "the next open by the backtester's rules. Re-running on the same bars records "
            "nothing. New bars come from another process (`otonom data import-csv`) or, with "
            "--bars-from, from a folder of <SYMBOL>.csv files the daemon imports before each "
            "tick. SIGINT "
            "or SIGTERM let the tick in progress finish its write, then it exits. Between "
            "ticks a newly promoted model (the model folder's `latest` pointer) is loaded, "
            "checked as at start and swapped in, or refused with the model in service kept; "
            "the daemon's heartbeat and state go to the store (`otonom status`)."
        ),
    )
    p.add_argument(
        "--strategy-path", required=True, help="strategy YAML, e.g. strategies/baseline_v1.yaml"
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--symbols",
        nargs="+",
        action="extend",
        metavar="SYMBOL",
        help="the symbols to decide (--symbols A B and --symbols A --symbols B alike)",
    )
    which.add_argument(
        "--universe",
        metavar="FILE",
        help="a file of symbols, one a line (# comments), read again at every tick (when it "
        "cannot be read or names none, the last symbols read are decided, with a warning; a "
        "symbol added while the daemon runs whose bars the store lacks is left out, with a "
        "warning, until they are imported)",
    )
    p.add_argument("--once", action="store_true", help="one tick, then exit")
    p.add_argument(
        "--interval",
        default="1d",
        help="time between ticks: a whole number and s, m, h or d (default 1d)",
    )
    p.add_argument(
        "--as-of",
        type=parse_iso_date,
        default=None,
        metavar="DATE",
        help="decide the newest bars on or before DATE (YYYY-MM-DD; default: the newest stored)",
    )
    p.add_argument("--no-rl", action="store_true", help="switch the RL analyst off")
    p.add_argument(
        "--bars-from",
        metavar="DIR",
        default=None,
        help="before each tick, import DIR/<SYMBOL>.csv of each symbol (the import-csv rules: "
        "new dates added, identical bars left alone, a file with a changed bar refused and "
        "logged once, with the import-csv --replace command); a file unchanged since the last "
        "tick is not read again",
    )
    p.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        default=None,
        help=(
            "run each tick on a Dask cluster (the optional extra otonom-runtime[distributed]): "
            "a scheduler address (tcp://host:8786) or local:N for N local worker processes; "
            "the universe is split into partitions, each decided by a worker against the "
            "shared store (PostgreSQL), with the same decisions as one process"
        ),
    )
    p.add_argument(
        "--dask-partitions",
        type=_positive,
        default=None,
        metavar="N",
        help="with --dask-scheduler: split the universe into N tasks (default: one per worker)",
    )
    p.set_defaults(handler=_cmd_daemon)
