"""``otonom monitor``: watch the RL policy over stored decisions (``otonom_runtime.monitor``):
action mix and feature drift against the model's training summary, confidence, hit rate;
a table, and optionally JSON, Prometheus text and a PNG dashboard."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otonom_runtime._errors import OtonomRuntimeError
from otonom_runtime.cli._store import require_store

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from otonom_runtime.monitor import MonitorReport
    from otonom_runtime.strategy import StrategyConfig

__all__ = ["add_monitor_commands"]

_SINCE = re.compile(r"^(\d{1,5})d$")


def _since(text: str) -> str:
    """``--since``: ``<N>d`` or a date, checked here, resolved against the window's end."""
    m = _SINCE.match(text)
    if m and int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is an empty window; expected 1d or more")
    if m:
        return text
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither <days>d (e.g. 30d) nor a date YYYY-MM-DD"
        ) from None
    return text


def _window(since: str, end: dt.date) -> dt.date:
    m = _SINCE.match(since)
    return end - dt.timedelta(days=int(m.group(1)) - 1) if m else dt.date.fromisoformat(since)


def _dates(start: dt.date, end: dt.date, dates: list[dt.date]) -> str:
    """The header's dates: the window asked for (``--since`` .. ``--until`` or the newest
    decision) and the first and last decision found in it."""
    found = f"{min(dates)} .. {max(dates)}" if dates else "none"
    return f"window {start} .. {end}, decisions {found}"


def _model_path(args: argparse.Namespace, config: StrategyConfig) -> Path:
    from otonom_runtime._errors import StrategyError
    from otonom_runtime.strategy import resolve_strategy_model

    if args.model:
        return Path(args.model)
    rl = config.ensemble.rl_policy
    if rl.model_file is not None:
        return rl.model_file
    off = "" if rl.enabled else " (its RL analyst is disabled: name the model to monitor)"
    if rl.model_path:
        try:
            return resolve_strategy_model(rl.model_path, config.base_dir)
        except StrategyError as exc:  # a disabled analyst's model_path is not checked on load
            raise OtonomRuntimeError(
                f"{config.source}: ensemble.rl_policy.model_path: {exc}; or pass --model PATH{off}"
            ) from None
    raise OtonomRuntimeError(
        f"{config.source} names no RL model (ensemble.rl_policy.model_path); expected one, or "
        f"pass --model PATH{off}"
    )


def _run_ids(args: argparse.Namespace, session: Session, name: str) -> list[int]:
    from otonom_runtime.backtest import INTERNAL_PURPOSES
    from otonom_runtime.store.monitoring import latest_complete_run

    if args.run:
        return list(dict.fromkeys(args.run))
    run = latest_complete_run(session, name, INTERNAL_PURPOSES)
    if run is None:
        raise OtonomRuntimeError(
            f"no complete backtest run of strategy {name!r} in the store; expected one (otonom "
            "backtest --strategy-path ...) or --run ID"
        )
    return [run.id]


def _daemon_record(session: Session, name: str, sha256: str | None = None) -> dict[str, Any] | None:
    """The columns of the daemon state row of strategy ``name`` (None: no daemon recorded
    one): its predict latencies and fallbacks for the report; ``other_model``: it served a
    model whose sha256 is not ``sha256`` (the one monitored; None: not compared)."""
    from otonom_runtime.store.daemons import read_daemon_states

    rows = read_daemon_states(session, name)
    if not rows:
        return None
    row = rows[0]
    other = None not in (sha256, row.model_sha256) and sha256 != row.model_sha256
    return {"heartbeat_at": row.heartbeat_at, "fallbacks": row.fallbacks,
            "latency_ms": row.latency_ms, "model_version": row.model_version,
            "other_model": other}  # fmt: skip


def _write_outputs(args: argparse.Namespace, report: MonitorReport) -> None:
    """Every requested file, each atomically (parent folders made); when one fails, those
    this call wrote are removed again, so a failing command leaves nothing."""
    from otonom_runtime.monitor import prometheus_text
    from otonom_schema import atomic_write

    texts = {"json": report.json_text(), "prometheus": prometheus_text(report)}
    written: list[tuple[str, Path]] = []
    try:
        if args.plot:
            from otonom_runtime.plots import plot_monitor

            written.append(("dashboard", plot_monitor(report, args.plot)))
        for kind in ("json", "prometheus"):
            target = getattr(args, kind)
            if target:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                written.append((kind, atomic_write(target, texts[kind])))
    except BaseException:
        for _, path in written:
            path.unlink(missing_ok=True)
        raise
    for kind, path in written:
        print(f"{kind}: {path}")


def _cmd_monitor(args: argparse.Namespace) -> int:
    from otonom_runtime.monitor import ALERT_EXIT, monitor, table_text
    from otonom_runtime.policy import load_rl_policy
    from otonom_runtime.store import get_session
    from otonom_runtime.store.monitoring import monitored_decisions
    from otonom_runtime.strategy import load_strategy

    config = load_strategy(args.strategy_path)
    policy = load_rl_policy(_model_path(args, config))
    url = require_store(args.database_url)
    with get_session(url) as session:
        runs = [] if args.live else _run_ids(args, session, config.name)
        live = config.name if args.live else None
        what = f"strategy {config.name!r} (live)" if live else f"run(s) {runs}"
        symbols = args.symbol or ()
        every = monitored_decisions(session, runs, None, args.until, symbols, live_strategy=live)
        if not every["date"]:
            raise OtonomRuntimeError(
                f"{what} holds no decisions of {args.symbol or 'any symbol'} up to "
                f"{args.until or 'the end'}; expected some to monitor"
            )
        end = args.until or max(every["date"])
        start = _window(args.since, end)
        picked = monitored_decisions(session, runs, start, end, symbols, live_strategy=live)
        if not picked["date"]:
            raise OtonomRuntimeError(
                f"{what} holds no decisions from {start} to {end}; expected some (widen --since)"
            )
        sha = getattr(policy, "sha256", None)
        sha = sha if isinstance(sha, str) else None
        daemon = _daemon_record(session, config.name, sha) if live else None
        report = monitor(
            session, policy, config.monitoring, picked, start=start, end=end, strategy=config,
            daemon=daemon,
        )  # fmt: skip
    print(f"model {report.model}; {what}; {_dates(start, end, picked['date'])}")
    print(table_text(report))
    _write_outputs(args, report)
    return ALERT_EXIT if report.alerts else 0


def add_monitor_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "monitor",
        help="watch the RL policy over stored decisions: drift, confidence, hit rate, alerts",
        description=(
            "Rebuild the states of a backtest run's decisions (or, with --live, the daemon's) "
            "from the store (the same feature code as the backtest), run the strategy's RL model "
            "on them and compare, per symbol and overall, its action mix (PSI, chi-square "
            "p-value) and each feature group (PSI) with the training summary stored in the model "
            "(otonom.training_summary); report the strength range, the mean confidence, the hit "
            "rate of its BUY/SELL calls by confidence bucket and, where the decisions stored the "
            "RL analyst's action, how often the model agrees with it; the fallbacks (decisions "
            "without the RL analyst while it was on) and the Sharpe of the decisions' calls "
            "with the RL analyst and without it (the three analysts' vote recomputed from "
            "their stored signals); with --live, the daemon's recorded predict latency "
            "percentiles. Thresholds: the strategy's monitoring: section (defaults psi_warn "
            "0.1, psi_alert 0.25, chi2_p_value 0.001, min_hit_rate 0.45, horizon 1, min_rows "
            "50, max_fallback_rate 0.05, max_latency_ms 250, max_rl_sharpe_loss 0.5)."
        ),
        epilog=(
            "exit status: 0 no alert, 3 at least one alert (warnings do not count), 1 an "
            "error (then nothing is written), 2 a bad command line"
        ),
    )
    p.add_argument(
        "--strategy-path", required=True, help="strategy YAML (its RL model and thresholds)"
    )
    p.add_argument(
        "--since",
        type=_since,
        default="30d",
        help="window: the last N days of decisions (e.g. 30d; default) or a first date",
    )
    p.add_argument(
        "--until",
        type=dt.date.fromisoformat,
        default=None,
        help="last day of the window (YYYY-MM-DD; default: the newest decision)",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--run",
        type=int,
        action="append",
        default=None,
        help=(
            "backtest run id to watch (repeat; runs that overlap in symbol and date count "
            "twice; default: the strategy's newest complete run)"
        ),
    )
    source.add_argument(
        "--live",
        action="store_true",
        help="watch the strategy's live decisions (otonom daemon's) instead of a backtest run",
    )
    p.add_argument("--symbol", action="append", default=None, help="only this symbol (repeat)")
    p.add_argument("--model", default=None, help="this .onnx model instead of the strategy's")
    p.add_argument("--json", metavar="FILE", default=None, help="write the report as JSON")
    p.add_argument(
        "--prometheus",
        metavar="FILE",
        default=None,
        help="write the report as Prometheus text exposition (gauges; labels symbol, ...)",
    )
    p.add_argument("--plot", metavar="PNG", default=None, help="write a PNG dashboard")
    p.set_defaults(handler=_cmd_monitor)
