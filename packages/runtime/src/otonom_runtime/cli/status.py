"""``otonom status``: a strategy's daemon as it recorded itself in the store (the model in
service, the refused candidate and why, fallback counts, recent predict latencies, the last
heartbeat and its age; ``DaemonState``)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
from pathlib import Path
from typing import Any

from otonom_runtime._errors import DaemonError, StrategyError
from otonom_runtime._text import counted
from otonom_runtime.cli._store import require_store

__all__ = ["add_status_commands"]


def _strategy_name(path: Path) -> str:
    """The strategy's name as ``load_strategy`` gives it (``name``, else the file's stem),
    read without resolving its model: a status is wanted most when the model is broken."""
    from otonom_runtime.strategy._yaml import read_strategy_file

    try:
        _, data, _, _ = read_strategy_file(path)
    except StrategyError as exc:  # one line: its first problem
        first = exc.problems[0] if exc.problems else str(exc).splitlines()[0]
        raise StrategyError(first.strip(), [first.strip()]) from None
    name = data.get("name") if isinstance(data, dict) else None
    if name is None:
        return path.stem
    if not isinstance(name, str) or not name:
        raise StrategyError(f"{path}: name is {name!r}; expected a non-empty string")
    return name


def _utc(value: dt.datetime) -> dt.datetime:
    """A stored time in UTC (SQLite gives it back without a zone: it is UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else _utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(value: dt.datetime, now: dt.datetime) -> str:
    seconds = max(0, int((now - _utc(value)).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def _latencies(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "no predict call yet"
    parts = ", ".join(f"{k} {stats[k]:.3f} ms" for k in ("p50", "p90", "p99", "max"))
    return f"{parts} (last {counted(int(stats['n']), 'predict call')})"


def _gone(row: Any) -> bool:
    """A daemon recorded as running whose process, on this host, no longer exists (it was
    killed or failed before it could record its stop). Another host's: not known here."""
    if row.status != "running" or row.host != socket.gethostname() or os.name != "posix":
        return False
    try:
        os.kill(row.pid, 0)  # signal 0: is there such a process
    except ProcessLookupError:
        return True
    except OSError:  # there is one (another user's)
        return False
    return False


def render_state(row: Any, now: dt.datetime) -> str:
    """One strategy's status as ``otonom status`` prints it (``row``: a ``DaemonState``)."""
    if row.model_file is None:
        model = "none: deciding without the RL analyst"
    else:
        sha = row.model_sha256[:12] + "..." if row.model_sha256 else "-"
        model = (
            f"version {row.model_version} ({row.model_file}, sha256 {sha}), "
            f"since {_when(row.model_since)}"
        )
    if row.refused_reason is None:
        refused = "none"
    else:
        what = (
            f"version {row.refused_version} ({row.refused_file})"
            if row.refused_file
            else "the promoted version (no model file)"
        )
        refused = f"{what} at {_when(row.refused_at)}: {row.refused_reason}"
    status = row.status
    if status == "failed":
        status = "FAILED: an error ended it (its message is in the daemon's output)"
    if _gone(row):
        status = "NOT running: recorded running, but its process is gone (killed or failed)"
    lines = [
        f"strategy {row.strategy}: daemon {status} (host {row.host}, pid {row.pid}, "
        f"started {_when(row.started_at)})",
        f"  heartbeat:        {_when(row.heartbeat_at)} ({_age(row.heartbeat_at, now)})",
        f"  model in service: {model}",
        f"  refused:          {refused}",
        f"  fallbacks:        {counted(row.fallbacks, 'decision')} without the RL analyst, "
        f"{counted(row.refusals, 'candidate')} refused, {counted(row.reloads, 'reload')}, "
        f"{counted(row.ticks, 'tick')}",
        f"  predict latency:  {_latencies(row.latency_ms)}",
    ]
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace) -> int:
    from otonom_runtime.store import get_session, read_daemon_states

    name = args.strategy
    if args.strategy_path is not None:
        name = _strategy_name(Path(args.strategy_path))
    url = require_store(args.database_url)
    with get_session(url) as session:
        rows = read_daemon_states(session, name)
    if not rows and name is not None:
        raise DaemonError(
            f"no daemon of strategy {name!r} has recorded its state in this store; expected "
            "one started with `otonom daemon --strategy-path ...` on the same --database-url"
        )
    if not rows:
        print("no daemon has recorded its state in this store yet (otonom daemon ...)")
        return 0
    now = dt.datetime.now(dt.timezone.utc)
    print("\n\n".join(render_state(row, now) for row in rows))
    return 0


def add_status_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "status",
        help="show what each daemon recorded: its model, refused candidates, heartbeat",
        description=(
            "Print, read from the store, the state a daemon (`otonom daemon`) records after "
            "every tick and while it waits: the model in service and its version, the newest "
            "candidate the hot reload refused and why, fallback counts, recent predict "
            "latency percentiles, and the last heartbeat with its age. Without a strategy, "
            "every strategy's daemon."
        ),
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--strategy-path",
        default=None,
        help="strategy YAML whose daemon to show (its name; the model is not loaded)",
    )
    which.add_argument(
        "--strategy", default=None, metavar="NAME", help="the strategy name whose daemon to show"
    )
    p.set_defaults(handler=_cmd_status)
