"""The ``otonom`` command line (also ``python -m otonom_runtime``).

Layout: ``_build_parser()`` makes the top parser and one sub-parser group per area
(``_add_data_commands`` for ``otonom data ...``); every leaf command sets ``handler`` to a
``_cmd_*`` function taking the parsed arguments and returning the exit status. Adding an area
(``backtest``, ``runs``, ``bench``, ``strategy``) is one more ``_add_*_commands(commands)`` call.

Exit status: 0 on success, 1 for an expected error (bad file, unknown symbol, unusable
database; the message goes to stderr as ``error: ...`` without a traceback; a bad-rows report
adds one indented line per row), 2 for a command line argparse cannot read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from otonom_runtime._errors import OtonomRuntimeError
from otonom_schema import SchemaError

__all__ = ["iso_date", "main"]

Handler = Callable[[argparse.Namespace], int]


def iso_date(text: str) -> dt.date:
    """argparse type for a ``YYYY-MM-DD`` date (also used by ``otonom-train``)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; expected YYYY-MM-DD, e.g. 2018-01-01"
        ) from None


def _url(args: argparse.Namespace) -> str:
    """The database URL of this call, the store initialised (tables created if missing)."""
    from otonom_runtime.store import default_database_url, init_db

    url: str = args.database_url or default_database_url()
    init_db(url)
    return url


def _cmd_data_import_csv(args: argparse.Namespace) -> int:
    from otonom_runtime.importers import import_ohlcv_csv
    from otonom_runtime.store import get_session

    with get_session(_url(args)) as session:
        report = import_ohlcv_csv(session, args.file, args.symbol, replace=args.replace)
    print(report.summary())
    return 0


def _cmd_data_import_sentiment(args: argparse.Namespace) -> int:
    from otonom_runtime.importers import import_sentiment_csv
    from otonom_runtime.store import get_session

    with get_session(_url(args)) as session:
        report = import_sentiment_csv(session, args.file, args.symbol)
    print(report.summary())
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from otonom_runtime.store import get_session
    from otonom_runtime.synth import write_synthetic

    with get_session(_url(args)) as session:
        report = write_synthetic(
            session, list(args.symbol), args.start, args.end, args.seed, replace=args.replace
        )
    print(report.summary())
    return 0


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _cmd_data_list(args: argparse.Namespace) -> int:
    from otonom_runtime.store import get_session, list_symbols

    url = _url(args)
    with get_session(url) as session:
        infos = list_symbols(session)
    if not infos:
        print(
            "the store holds no symbols; add some with `otonom data synth` or "
            "`otonom data import-csv`"
        )
        return 0
    rows = [
        [
            i.name,
            "yes" if i.is_synthetic else "no",
            str(i.first or "-"),
            str(i.last or "-"),
            str(i.bars),
            "-" if i.health is None else f"{i.health:.2f}",
        ]
        for i in infos
    ]
    headers = ["symbol", "synthetic", "first", "last", "bars", "health"]
    print(_table(headers, rows, right={4, 5}))
    return 0


_DATA_EPILOG = """\
health is the Data Health Index (DSI, 0-1) of each symbol's newest bar as the state schema
computes it: history coverage (up to 140 bars), gaps, zero-volume and flat bars. 1 = healthy.

examples:
  otonom data synth --symbol DEMO-BTC --symbol DEMO-ETH --start 2018-01-01 --end 2024-01-01
  otonom data import-csv BTC-USD_yahoo_daily.csv --symbol BTC-USD
  otonom data import-sentiment macro.csv
  otonom data list
"""


def _add_data_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    data = commands.add_parser(
        "data",
        help="import, generate and list market data",
        description="Import, generate and list the market data in the store.",
        epilog=_DATA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    p = sub.add_parser(
        "import-csv",
        help="import daily OHLCV bars from a CSV file",
        description=(
            "Import daily OHLCV bars of one symbol from a CSV file: Yahoo layout "
            "(Date,Open,High,Low,Close,Adj Close,Volume; Adj Close is ignored) or lower-case "
            "(timestamp,open,high,low,close,volume). Dates may be ISO dates, ISO datetimes or "
            "epoch seconds/milliseconds. Every bad row is reported with its line number and "
            "nothing is written unless the whole file is valid. Re-importing adds new dates "
            "and skips identical bars; a bar that differs from the stored bar of its date is "
            "refused (the changed dates are listed, nothing is written) unless --replace."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the CSV file")
    p.add_argument("--symbol", required=True, help="the symbol to store the bars under")
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite stored bars whose values differ from the file's (default: refuse)",
    )
    p.set_defaults(handler=_cmd_data_import_csv)

    p = sub.add_parser(
        "import-sentiment",
        help="import news or macro sentiment scores from a CSV file",
        description=(
            "Import sentiment scores in [-1, 1] from a CSV file with columns date[,symbol],"
            "score. With a symbol column or --symbol the scores are news sentiment of that "
            "symbol (already in the store); otherwise they are macro (market-wide) sentiment."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the CSV file")
    p.add_argument("--symbol", help="news sentiment of this symbol (default: macro sentiment)")
    p.set_defaults(handler=_cmd_data_import_sentiment)

    p = sub.add_parser(
        "synth",
        help="generate the deterministic synthetic market",
        description=(
            "Generate deterministic synthetic daily bars (every calendar day, regime-switching "
            "volatility, trends), news sentiment per symbol and shared macro sentiment. A "
            "day's bar depends only on the symbol, the seed and the date (not on --start or "
            "--end), and stored bars are never changed: only missing days are added, so "
            "repeating a call changes nothing and another range extends the stored series. "
            "A symbol whose stored bars were made by another seed or generator version is "
            "refused unless --replace."
        ),
    )
    p.add_argument(
        "--symbol",
        action="append",
        required=True,
        help="a symbol to generate (repeat for several), e.g. DEMO-BTC",
    )
    p.add_argument(
        "--start",
        type=iso_date,
        default=dt.date(2018, 1, 1),
        help="first day (YYYY-MM-DD, default 2018-01-01)",
    )
    p.add_argument(
        "--end",
        type=iso_date,
        default=dt.date(2024, 1, 1),
        help="last day, inclusive (default 2024-01-01)",
    )
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument(
        "--replace",
        action="store_true",
        help=(
            "delete the stored bars and news sentiment of these symbols and generate "
            "--start .. --end anew (needed when they were made by another seed or generator "
            "version)"
        ),
    )
    p.set_defaults(handler=_cmd_data_synth)

    p = sub.add_parser(
        "list",
        help="list the symbols in the store",
        description="List every symbol with its first and last bar, bar count and data health.",
        epilog=_DATA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=_cmd_data_list)


def _cmd_bench(args: argparse.Namespace) -> int:
    from otonom_runtime.bench import format_report, run_bench

    url = None
    if args.symbol is not None:
        from otonom_runtime.store import default_database_url

        url = args.database_url or default_database_url()
    calls, rounds, budget = (500, 2, 0.2) if args.quick else (2000, 3, 0.6)
    result = run_bench(
        args.model,
        database_url=url,
        symbol=args.symbol,
        day=args.date,
        calls=calls,
        rounds=rounds,
        budget_s=budget,
    )
    print(format_report(result))
    return 0


def _add_bench_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "bench",
        help="measure predict latency and throughput of a model on this machine",
        description=(
            "Measure a policy's single-state predict latency (p50/p99/mean), predict_batch "
            "throughput at 1, 256 and 4096 rows and, with --symbol, a daemon tick "
            "(build_state from the store + predict), each against a bare ONNX Runtime "
            "session.run of the same model measured in the same run. The full benchmark with "
            "numpy and torch peers is bench/latency.py in the repository (docs/benchmarks.md)."
        ),
    )
    p.add_argument("--model", required=True, help="a .onnx file, a model folder or policy_best.pt")
    p.add_argument("--symbol", help="also time build_state + predict for this symbol's store data")
    p.add_argument("--date", type=iso_date, help="the tick's date (default: the newest bar)")
    p.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    p.set_defaults(handler=_cmd_bench)


def _cmd_strategy_check(args: argparse.Namespace) -> int:
    from otonom_runtime.strategy import load_strategy

    cfg = load_strategy(args.file)
    e, rl = cfg.ensemble, cfg.ensemble.rl_policy
    w = e.analyst_weights
    if rl.enabled:
        rl_line = f"on, model {rl.model_file} (model_path {rl.model_path!r}), device {rl.device}"
    else:
        rl_line = f"off (model_path {rl.model_path!r} not checked)"
    p, c = cfg.portfolio, cfg.costs
    lines = [
        f"strategy {cfg.name}: {cfg.source} (sha256 {cfg.file_sha256[:12]})",
        f"  ensemble:  {'on' if e.enabled else 'off (the tech analyst decides alone)'}, "
        f"min_score {e.min_score:g}",
        f"  weights:   tech {w.tech:g}, news {w.news:g}, risk {w.risk:g}, rl {w.rl:g}"
        + ("" if rl.enabled else " (counts as 0 while the RL analyst is off)"),
        f"  rl policy: {rl_line}",
        f"  portfolio: capital {p.initial_capital:g}, max leverage {p.max_leverage:g}, "
        f"shorts {'allowed' if p.allow_short else 'not allowed'}",
        f"  costs:     commission {c.commission_bps:g} bps, slippage {c.slippage_bps:g} bps",
        f"  calendar:  {cfg.calendar.periods_per_year} periods per year",
        "ok",
    ]
    print("\n".join(lines))
    return 0


def _add_strategy_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    strategy = commands.add_parser(
        "strategy",
        help="check strategy YAML files",
        description="Check strategy YAML files (strategies/baseline_v1.yaml shows every key).",
    )
    sub = strategy.add_subparsers(
        dest="strategy_command", metavar="STRATEGY_COMMAND", required=True
    )
    p = sub.add_parser(
        "check",
        help="load a strategy file and print a summary, or every problem in it",
        description=(
            "Load a strategy YAML file and print its name, sha256, weights, RL analyst, costs "
            "and calendar. An invalid file prints every problem (file:line: key.path: what was "
            "received, what was expected) and exits 1. With the RL analyst enabled the model "
            "must be found (it is not loaded)."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the strategy YAML file")
    p.set_defaults(handler=_cmd_strategy_check)


def _cmd_backtest(args: argparse.Namespace) -> int:
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.store import get_session
    from otonom_runtime.strategy import load_strategy

    config = load_strategy(args.strategy_path)
    url = _url(args)
    with get_session(url) as session:
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


def _pct(value: object) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:+.1%}"


def _num(value: object) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.2f}"


def _cmd_runs_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from otonom_runtime.store import BacktestRun, get_session

    with get_session(_url(args)) as session:
        runs = session.execute(select(BacktestRun).order_by(BacktestRun.id.desc())).scalars()
        rows = []
        for run in runs:
            port = (run.metrics or {}).get("portfolio", {})
            rows.append(
                [
                    str(run.id),
                    run.strategy_name,
                    ",".join(run.symbols),
                    f"{run.start_date} .. {run.end_date}",
                    run.status,
                    "on" if (run.params or {}).get("rl_enabled") else "off",
                    _pct(port.get("total_return")),
                    _num(port.get("sharpe")),
                    _pct(port.get("max_drawdown")).lstrip("+"),
                ]
            )
    if not rows:
        print("no backtest runs yet (otonom backtest --strategy-path ... --symbol ...)")
        return 0
    headers = ["id", "strategy", "symbols", "dates", "status", "rl", "return", "sharpe", "max dd"]
    print(_table(headers, rows, right={0, 6, 7, 8}))
    return 0


def _cmd_runs_show(args: argparse.Namespace) -> int:
    import json

    from otonom_runtime.store import BacktestRun, get_session

    with get_session(_url(args)) as session:
        run = session.get(BacktestRun, args.run_id)
        if run is None:
            raise OtonomRuntimeError(f"no backtest run with id {args.run_id}")
        print(f"run {run.id}: {run.strategy_name} ({run.status})")
        print(f"  symbols   {', '.join(run.symbols)}")
        print(f"  dates     {run.start_date} .. {run.end_date}")
        print(f"  strategy  sha256 {run.strategy_hash[:16]}  {(run.params or {}).get('source')}")
        print(f"  RL        {'on' if (run.params or {}).get('rl_enabled') else 'off'}")
        print(f"  created   {run.created_at}  finished {run.finished_at}")
        if run.error:
            print(f"  error     {run.error}")
        if run.metrics:
            print(json.dumps(run.metrics, indent=2, sort_keys=True))
    return 0


def _add_backtest_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        "--start-date", type=iso_date, required=True, help="first decision day (YYYY-MM-DD)"
    )
    p.add_argument(
        "--end-date", type=iso_date, required=True, help="last decision day (YYYY-MM-DD)"
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

    runs = commands.add_parser(
        "runs", help="look at past backtest runs", description="List or show stored backtest runs."
    )
    sub = runs.add_subparsers(dest="runs_command", metavar="RUNS_COMMAND", required=True)
    q = sub.add_parser(
        "list", help="every run, newest first", description="Every run, newest first."
    )
    q.set_defaults(handler=_cmd_runs_list)
    q = sub.add_parser("show", help="one run's record and metrics", description="One run in full.")
    q.add_argument("run_id", type=int, metavar="ID")
    q.set_defaults(handler=_cmd_runs_show)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otonom",
        description=(
            "otonom-rl runtime: the market-data store, the ONNX policy's benchmark and (later) "
            "backtests of the trading ensemble and its learned policy."
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
    _add_data_commands(commands)
    _add_bench_commands(commands)
    _add_strategy_commands(commands)
    _add_backtest_commands(commands)
    return parser


def _fail(message: str, stream: TextIO) -> int:
    print(f"error: {message}", file=stream)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (OtonomRuntimeError, SchemaError) as exc:
        return _fail(str(exc), sys.stderr)
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError  # imported late: `--help` stays fast

        if isinstance(exc, SQLAlchemyError):
            return _fail(f"database error: {exc}", sys.stderr)
        raise
    except KeyboardInterrupt:
        _fail("interrupted", sys.stderr)
        return 130
