"""``otonom backtest``: run a strategy's ensemble over stored bars, store every decision,
print the metrics and draw the equity curve."""

from __future__ import annotations

import argparse
import sys

from otonom_runtime._errors import OtonomRuntimeError
from otonom_runtime.cli._store import open_store
from otonom_schema import parse_iso_date

__all__ = ["add_backtest_commands"]


def _cmd_backtest(args: argparse.Namespace) -> int:
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.store import get_session
    from otonom_runtime.strategy import load_strategy

    if args.start_date > args.end_date:
        raise OtonomRuntimeError(
            f"--start-date {args.start_date} is after --end-date {args.end_date}; expected the "
            "first decision day on or before the last"
        )
    config = load_strategy(args.strategy_path)
    with open_store(args) as url, get_session(url) as session:
        report = run_backtest(
            session,
            config,
            list(dict.fromkeys(args.symbol)),
            args.start_date,
            args.end_date,
            use_rl=False if args.no_rl else None,
            progress=not args.quiet,
        )
    print(report.summary())
    if args.plot != "none":
        from otonom_runtime.plots import PlotUnavailableError, plot_equity

        target = args.plot or f"reports/backtest_run_{report.run_id}.png"
        try:
            png = plot_equity(
                {config.name: (report.dates, report.equity)},
                target,
                title=f"run {report.run_id}: {config.name} on {', '.join(report.symbols)}",
            )
        except PlotUnavailableError as exc:
            print(f"(no chart: {exc})", file=sys.stderr)
        else:
            print(f"equity curve and drawdown: {png}")
    print(f"run id: {report.run_id}")
    return 0


def add_backtest_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "backtest",
        help="backtest a strategy's ensemble and store every decision",
        description=(
            "Run the strategy's ensemble (tech, news, risk and, when the strategy enables it, "
            "the RL policy) over daily bars: decisions at each close from data up to that day, "
            "filled at the next open with commission and slippage. Every decision is stored "
            "under a new run id; prints the action distribution and the metrics and writes an "
            "equity curve + drawdown PNG."
        ),
    )
    p.add_argument(
        "--strategy-path", required=True, help="strategy YAML, e.g. strategies/baseline_v1.yaml"
    )
    p.add_argument("--symbol", action="append", required=True, help="a symbol (repeat for several)")
    p.add_argument(
        "--start-date",
        "--start",
        type=parse_iso_date,
        required=True,
        help="first decision day (YYYY-MM-DD)",
    )
    p.add_argument(
        "--end-date",
        "--end",
        type=parse_iso_date,
        required=True,
        help="last decision day (YYYY-MM-DD)",
    )
    p.add_argument("--no-rl", action="store_true", help="switch the RL analyst off for this run")
    p.add_argument(
        "--plot",
        metavar="PNG",
        default=None,
        help="chart file (default reports/backtest_run_<id>.png; 'none' for no chart)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_backtest)
