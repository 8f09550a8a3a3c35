"""``otonom runs list`` / ``otonom runs show``: the stored backtest runs, their records,
metrics and action counts."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable

from otonom_runtime._errors import OtonomRuntimeError
from otonom_runtime.cli._store import open_store
from otonom_runtime.cli._text import num, pct, table

__all__ = ["add_runs_commands"]


def _cmd_runs_list(args: argparse.Namespace) -> int:
    from otonom_runtime.metrics import FEW_RETURNS_MARK
    from otonom_runtime.store import get_session, list_runs

    with open_store(args) as url, get_session(url) as session:
        runs = list_runs(session)
        rows = []
        failures: list[tuple[int, str]] = []  # (id, why): printed under the table
        short = False  # a run's Sharpe from less than a quarter of a year's returns
        for run in runs:
            if run.status == "failed":
                failures.append((run.id, run.error or "-"))
            port = (run.metrics or {}).get("portfolio", {})
            few = _few_returns_note(port) is not None
            short = short or few
            rows.append(
                [
                    str(run.id),
                    run.strategy_name,
                    ",".join(run.symbols),
                    f"{run.start_date} .. {run.end_date}",
                    run.status,
                    "on" if (run.params or {}).get("rl_enabled") else "off",
                    _purpose(run.params),
                    pct(port.get("total_return")),
                    num(port.get("sharpe")) + (FEW_RETURNS_MARK if few else ""),
                    pct(port.get("max_drawdown")).lstrip("+"),
                ]
            )
    if not rows:
        print("no backtest runs yet (otonom backtest --strategy-path ... --symbol ...)")
        return 0
    headers = [
        "id", "strategy", "symbols", "dates", "status", "rl", "made by", "return", "sharpe",
        "max dd",
    ]  # fmt: skip
    print(table(headers, rows, right={0, 7, 8, 9}))
    if any(r[6].endswith("*") for r in rows):
        print(_INTERNAL_NOTE)
    if short:
        print(_SHORT_NOTE)
    for run_id, error in failures:
        print(f"run {run_id} failed: {_first_line(error)}")
    return 0


def _first_line(error: str, limit: int = 240) -> str:
    """The first line of a run's error, cut to ``limit`` characters (``runs show``: whole)."""
    line = error.strip().splitlines()[0] if error.strip() else "-"
    return line if len(line) <= limit else line[: limit - 3] + "..."


_SHORT_NOTE = (
    "? a Sharpe annualised from less than a quarter of a year's daily returns (its standard "
    "error above 2): it says little; otonom runs show ID gives the run's figures"
)
_INTERNAL_NOTE = (
    "* internal: a run made by otonom-train check (gate), to judge a model (evaluation) or "
    "a daemon tick (live); never a dataset's teacher"
)


def _purpose(params: dict[str, object] | None) -> str:
    """The run's ``params["purpose"]`` (``user`` for runs stored before it existed), with a
    ``*`` when it is internal (``otonom_runtime.backtest.INTERNAL_PURPOSES``)."""
    from otonom_runtime.backtest import INTERNAL_PURPOSES

    purpose = str((params or {}).get("purpose") or "user")
    return f"{purpose}*" if purpose in INTERNAL_PURPOSES else purpose


_METRIC_ROWS: tuple[tuple[str, str, Callable[[object], str]], ...] = (
    ("total return", "total_return", pct),
    ("CAGR", "cagr", pct),
    ("Sharpe", "sharpe", num),
    ("Sortino", "sortino", num),
    ("max drawdown", "max_drawdown", lambda v: pct(v).lstrip("+")),
    ("max drawdown days", "max_drawdown_duration", lambda v: "-" if v is None else str(v)),
    ("trades", "n_trades", lambda v: "-" if v is None else str(v)),
    ("win rate", "win_rate", lambda v: "-" if not isinstance(v, (int, float)) else f"{v:.1%}"),
    ("exposure", "exposure", lambda v: "-" if not isinstance(v, (int, float)) else f"{v:.1%}"),
    ("turnover (per year)", "turnover", lambda v: "-" if v is None else f"{v:.1f}"),
    ("RL fallbacks", "fallbacks", lambda v: "-" if v is None else str(v)),
    ("bars", "n_bars", lambda v: "-" if v is None else str(v)),
)


def _few_returns_note(column: dict[str, object]) -> tuple[int, str] | None:
    """A stored metrics column's bars and ``metrics.few_returns_note`` when it has one (None
    too for a column stored without its counts)."""
    from otonom_runtime.metrics import few_returns_note

    n_bars, ppy = column.get("n_bars"), column.get("periods_per_year")
    if not isinstance(n_bars, int) or not isinstance(ppy, int) or ppy <= 0:
        return None
    note = few_returns_note(n_bars, ppy)
    return None if note is None else (n_bars, note)


def _run_tables(metrics: dict[str, object]) -> list[str]:
    """The metrics table (portfolio + a column per symbol) and the action counts per symbol."""
    portfolio = metrics.get("portfolio")
    per_symbol = metrics.get("symbols")
    columns: dict[str, dict[str, object]] = {}
    if isinstance(portfolio, dict):
        columns["portfolio"] = portfolio
    if isinstance(per_symbol, dict):
        columns.update({str(k): v for k, v in per_symbol.items() if isinstance(v, dict)})
    out: list[str] = []
    if columns:
        from otonom_runtime.metrics import ANNUALISED, FEW_RETURNS_MARK

        notes = [_few_returns_note(col) for col in columns.values()]
        rows = []
        for label, key, fmt in _METRIC_ROWS:
            cells = [label]
            for col, note in zip(columns.values(), notes, strict=True):
                value = col.get(key)
                mark = note is not None and key in ANNUALISED and value is not None
                cells.append(fmt(value) + (FEW_RETURNS_MARK if mark else ""))
            rows.append(cells)
        out += ["", table(["metric", *columns], rows, right=set(range(1, len(columns) + 1)))]
        # the marks' note once, for the column with the fewest returns (the largest error)
        shortest = min((n for n in notes if n is not None), default=None)
        if shortest is not None:
            out.append(shortest[1])
    counts = metrics.get("action_counts")
    if isinstance(counts, dict) and counts:
        names = ("HOLD", "BUY", "SELL")
        rows = []
        for symbol, c in counts.items():
            if not isinstance(c, dict):
                continue
            n = sum(int(c.get(a, 0)) for a in names)
            shares = [
                f"{int(c.get(a, 0))} ({100.0 * int(c.get(a, 0)) / (n or 1):.1f}%)" for a in names
            ]
            rows.append([str(symbol), *shares, str(n)])
        out += ["", table(["actions", *names, "total"], rows, right={1, 2, 3, 4})]
    return out


def _cmd_runs_show(args: argparse.Namespace) -> int:
    import json

    from otonom_runtime.store import BacktestRun, get_session

    with open_store(args) as url, get_session(url) as session:
        run = session.get(BacktestRun, args.run_id)
        if run is None:
            raise OtonomRuntimeError(f"no backtest run with id {args.run_id}")
        params = run.params or {}
        metrics = run.metrics or {}
        if args.json:
            record = {
                "id": run.id,
                "strategy": run.strategy_name,
                "strategy_sha256": run.strategy_hash,
                "status": run.status,
                "start_date": run.start_date.isoformat(),
                "end_date": run.end_date.isoformat(),
                "symbols": list(run.symbols),
                "created_at": None if run.created_at is None else run.created_at.isoformat(),
                "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
                "error": run.error,
                "host": run.host,
                "pid": run.pid,
                "process_start": run.process_start,
                "heartbeat_at": _iso_utc(run.heartbeat_at),
                "params": params,
                "metrics": metrics,
            }
            print(json.dumps(record, indent=2, sort_keys=True))
            return 0
        made_by = _purpose(run.params)
        header = [
            ("run", str(run.id)),
            ("strategy", f"{run.strategy_name} ({params.get('source') or '-'})"),
            ("sha256", run.strategy_hash[:16]),
            ("status", run.status),
            ("dates", f"{run.start_date} .. {run.end_date}"),
            ("symbols", ", ".join(run.symbols)),
            ("RL analyst", "on" if params.get("rl_enabled") else "off"),
            *_rl_model_row(params),
            ("made by", made_by.rstrip("*") + (" (internal)" if made_by.endswith("*") else "")),
            ("created", _when(run.created_at)),
            ("finished", _when(run.finished_at)),
            ("process", "-" if run.pid is None else f"{run.pid} on {run.host or '-'}"),
            ("heartbeat", _when(run.heartbeat_at)),
        ]
        if run.error:
            header.append(("error", run.error))
        width = max(len(k) for k, _ in header)
        lines = [f"{k:<{width}}  {v}" for k, v in header]
        if metrics.get("fallback_reason"):
            lines.append(f"RL fell back: {metrics['fallback_reason']}")
        if metrics:
            lines += _run_tables(metrics)
        elif run.status == "complete":
            lines += ["", "(no metrics stored)"]
    print("\n".join(lines))
    return 0


def _rl_model_row(params: dict[str, object]) -> list[tuple[str, str]]:
    """The run's ``RL model`` line: the file served and its sha256 (runs recorded before the
    backtest stored them, and runs with the RL analyst off, have none)."""
    model = params.get("rl_model_file")
    if not model:
        return []
    sha = params.get("rl_model_sha256")
    loaded = f"sha256 {sha[:12]}..." if isinstance(sha, str) else "not loaded: the run fell back"
    return [("RL model", f"{model} ({loaded})")]


def _iso_utc(value: dt.datetime | None) -> str | None:
    """A stored time as ISO 8601 in UTC (SQLite gives it back without a zone: it is UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat()


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is not None:  # stored in UTC; SQLite gives it back without a zone
        value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def add_runs_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runs = commands.add_parser(
        "runs", help="look at past backtest runs", description="List or show stored backtest runs."
    )
    sub = runs.add_subparsers(dest="runs_command", metavar="RUNS_COMMAND", required=True)
    q = sub.add_parser(
        "list",
        help="every run, newest first",
        description=(
            "Every run, newest first, and why each failed run failed. Like every `otonom` "
            "command it first marks failed the runs left running by a process that is gone "
            "(kill -9, power cut; see docs/reliability.md)."
        ),
    )
    q.set_defaults(handler=_cmd_runs_list)
    q = sub.add_parser(
        "show",
        help="one run's record, metrics and action counts",
        description=(
            "One run: its record (strategy, status, dates, symbols, times, error, the process "
            "that ran it and its last heartbeat), the metrics "
            "of the portfolio and of each symbol, and the action counts per symbol."
        ),
    )
    q.add_argument("run_id", type=int, metavar="ID", help="the run id (see `otonom runs list`)")
    q.add_argument(
        "--json", action="store_true", help="print the stored record as JSON instead of tables"
    )
    q.set_defaults(handler=_cmd_runs_show)
