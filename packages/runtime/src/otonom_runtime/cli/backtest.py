"""``otonom backtest``: run a strategy's ensemble over stored bars, store every decision,
print the metrics and draw the equity curve. Dates not given come from the stored bars
(``otonom_runtime.ranges``: the first decision day after the warm-up .. the last common bar)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import OtonomRuntimeError
from otonom_runtime.baseline import DEFAULT_STRATEGY_HELP, default_strategy_path
from otonom_runtime.cli._store import open_store
from otonom_runtime.ranges import WARMUP_DAYS
from otonom_schema import LOOKBACK, parse_iso_date

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from otonom_runtime.strategy import StrategyConfig

__all__ = ["add_backtest_commands"]


def _period(
    session: Session,
    config: StrategyConfig,
    symbols: list[str],
    start: dt.date | None,
    end: dt.date | None,
) -> tuple[dt.date, dt.date]:
    """``start .. end`` as given; a date not given from the stored bars (the first decision day
    after the warm-up, the last common bar), printed with the rule that chose it."""
    from otonom_runtime.ranges import bar_dates, bar_ranges, common_range

    if start is not None:  # run as given, even inside the warm-up: said on stderr
        dates = bar_dates(session, symbols)
        _warn_warmup(dates, start)
        if end is not None:
            return start, end
        last = common_range(dates, start=start)[1]
        print(f"dates (start given, the end from the bars in the store): {start} .. {last}")
        return start, last
    dates = bar_dates(session, symbols, end=end)
    ppy = config.calendar.periods_per_year
    r = bar_ranges(dates, end=end, periods_per_year=ppy, what="the backtest")
    source = "end given, the start " if end is not None else ""
    print(f"dates ({source}from the bars in the store):")
    for line in (r.warmup_line(), r.decisions_line(), r.calendar_line()):
        print("  " + line)
    return r.first_decision, r.end


def _warn_warmup(dates: dict[str, npt.NDArray[np.datetime64]], start: dt.date) -> None:
    """A warning on stderr naming each symbol whose history at ``start`` lacks the warm-up
    (``ranges.warmed_up``: the daemon's rule; without --start-date a backtest starts after
    it): its first decisions read neutral features where the history is missing."""
    from otonom_runtime.ranges import warmed_up

    short = []
    day = np.datetime64(start, "D")
    for name, days in dates.items():
        before = int(np.searchsorted(days, day))
        if days.size and not warmed_up(before, days[0], day):
            later = np.arange(before, days.size)
            warm = days[later[warmed_up(later, days[0], days[later])]]
            ends = f"it ends {warm[0]}" if warm.size else "its bars end before it does"
            short.append(f"{name} ({before} bar(s) before, the first {days[0]}; {ends})")
    if short:
        print(
            f"warning: --start-date {start} falls in the warm-up of {'; '.join(short)}: until "
            f"then a decision sees less than {LOOKBACK} bars and {WARMUP_DAYS} days of history "
            "(the missing features neutral, the DSI feature low); without --start-date a "
            "backtest starts after the warm-up",
            file=sys.stderr,
        )


def _cmd_backtest(args: argparse.Namespace) -> int:
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.store import get_session
    from otonom_runtime.strategy import load_strategy

    start, end = args.start_date, args.end_date
    if start is not None and end is not None and start > end:
        raise OtonomRuntimeError(
            f"--start-date {start} is after --end-date {end}; expected the "
            "first decision day on or before the last"
        )
    config = load_strategy(args.strategy_path, with_rl=not args.no_rl)
    symbols = list(dict.fromkeys(args.symbol))
    with open_store(args) as url, get_session(url) as session:
        start, end = _period(session, config, symbols, start, end)
        report = run_backtest(
            session,
            config,
            symbols,
            start,
            end,
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
        "--strategy-path",
        default=default_strategy_path(),
        help=f"strategy YAML (default: {DEFAULT_STRATEGY_HELP})",
    )
    p.add_argument("--symbol", action="append", required=True, help="a symbol (repeat for several)")
    p.add_argument(
        "--start-date",
        "--start",
        type=parse_iso_date,
        help="first decision day (YYYY-MM-DD; default: the first day after the warm-up, with "
        f">= {LOOKBACK} bars of every symbol before it and >= {WARMUP_DAYS} days after the "
        "symbols' first common bar)",
    )
    p.add_argument(
        "--end-date",
        "--end",
        type=parse_iso_date,
        help="last decision day (YYYY-MM-DD; default: the symbols' last common bar)",
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
