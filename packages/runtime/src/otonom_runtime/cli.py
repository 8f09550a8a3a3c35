"""The ``otonom`` command line (also ``python -m otonom_runtime``).

Layout: ``_build_parser()`` makes the top parser and one sub-parser group per area
(``_add_data_commands`` for ``otonom data ...``); every leaf command sets ``handler`` to a
``_cmd_*`` function taking the parsed arguments and returning the exit status. Adding an area
(``backtest``, ``runs``, ``bench``, ``strategy``) is one more ``_add_*_commands(commands)`` call.

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
import contextlib
import datetime as dt
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from otonom_runtime._demo import DEMO_SEED
from otonom_runtime._errors import DataImportError, OtonomRuntimeError, StoreError
from otonom_runtime._sources import SYNTHETIC_SOURCE, USER_SOURCE
from otonom_schema import SchemaError, parse_iso_date

__all__ = ["add_global_flags", "main", "require_store", "run_cli"]

Handler = Callable[[argparse.Namespace], int]


def _missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite file URL when it does not exist yet, else None."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from otonom_runtime.store.engine import _sqlite_file

    try:
        file = _sqlite_file(make_url(url))
    except ArgumentError:  # opening the store reports an unreadable URL
        return None
    return None if file is None or file.exists() else file.absolute()


def require_store(database_url: str | None) -> str:
    """The URL of the store (``database_url`` or the default), refused with a ``StoreError``
    when it is a SQLite file that does not exist: for commands that only read the store,
    which would otherwise create the file and its folder before failing."""
    from otonom_runtime.store import default_database_url

    url = database_url or default_database_url()
    file = _missing_sqlite_file(url)
    if file is not None:
        raise StoreError(
            f"there is no store at {file}; create one with `otonom data synth ...` or "
            "`otonom data import-csv ...`, or give --database-url"
        )
    return url


@contextlib.contextmanager
def _store(args: argparse.Namespace) -> Iterator[str]:
    """The database URL of this call, the store initialised (tables created if missing).

    When the command fails inside the block, a SQLite store that this call created is removed
    again (its file, journal files and the folders made for it): a failed command writes nothing.
    """
    from otonom_runtime.store import default_database_url, dispose_engines, init_db

    url: str = args.database_url or default_database_url()
    file = _missing_sqlite_file(url)
    folders = [] if file is None else [p for p in file.parents if not p.exists()]
    try:
        init_db(url)
        yield url
    except BaseException:
        if file is not None:
            dispose_engines()
            for suffix in ("", "-wal", "-shm", "-journal"):
                file.with_name(file.name + suffix).unlink(missing_ok=True)
            for folder in folders:  # innermost first
                with contextlib.suppress(OSError):  # not empty: something else lives there
                    folder.rmdir()
        raise


def _readable(path: str) -> None:
    """Fail before anything is written when the input file cannot be read."""
    try:
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        raise DataImportError(f"cannot read {path}: {exc.strerror or exc}") from None


def _cmd_data_import_csv(args: argparse.Namespace) -> int:
    from otonom_runtime.importers import import_ohlcv_csv
    from otonom_runtime.store import get_session

    _readable(args.file)
    with _store(args) as url, get_session(url) as session:
        report = import_ohlcv_csv(
            session,
            args.file,
            args.symbol,
            date_format=args.date_format,
            replace=args.replace,
            drop_bad_rows=args.drop_bad_rows,
        )
    print(report.summary())
    return 0


def _cmd_data_import_sentiment(args: argparse.Namespace) -> int:
    from otonom_runtime.importers import import_sentiment_csv
    from otonom_runtime.store import get_session

    _readable(args.file)
    with _store(args) as url, get_session(url) as session:
        report = import_sentiment_csv(
            session, args.file, args.symbol, source=args.source, date_format=args.date_format
        )
    print(f"{report.summary()}; source {args.source!r}")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from otonom_runtime.store import get_session
    from otonom_runtime.synth import write_synthetic

    with _store(args) as url, get_session(url) as session:
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

    with _store(args) as url, get_session(url) as session:
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
  otonom data synth --symbol DEMO-BTC --symbol DEMO-ETH \\
      --start-date 2018-01-01 --end-date 2024-01-01
  otonom data import-csv BTC-USD_yahoo_daily.csv --symbol BTC-USD
  otonom data import-sentiment macro.csv
  otonom data list
"""


def _add_date_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--date-format",
        metavar="FORMAT",
        help=(
            "strptime format of the date column, e.g. '%%m/%%d/%%Y' (default: ISO dates and "
            "datetimes, epoch seconds/ms, 2017/08/17, and 8/17/2017 or 17.08.2017 with the "
            "day/month order read from the file)"
        ),
    )


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
            "(timestamp,open,high,low,close,volume); a blank first header cell (pandas' to_csv) "
            "marks the date column. Dates may be ISO dates, ISO datetimes, epoch "
            "seconds/milliseconds or day and month with a 4-digit year (see --date-format). "
            "Every bad row is reported with its line number and nothing is written unless the "
            "whole file is valid (or, with --drop-bad-rows, the bad rows are skipped and "
            "reported); a bar must obey low <= open, close <= high. Re-importing adds new "
            "dates and skips identical bars; a bar that differs from the stored bar of its "
            "date is refused (the changed dates are listed, nothing is written) unless "
            "--replace."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the CSV file")
    p.add_argument("--symbol", required=True, help="the symbol to store the bars under")
    _add_date_format(p)
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite stored bars whose values differ from the file's (default: refuse)",
    )
    p.add_argument(
        "--drop-bad-rows",
        action="store_true",
        help="import the valid rows and skip the bad ones (bad date, duplicate date, bad "
        "number, OHLC rule broken, wrong column count), printing how many were dropped and the "
        "first of them (default: refuse the whole file, listing every bad row)",
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
    _add_date_format(p)
    p.add_argument(
        "--source",
        default=USER_SOURCE,
        metavar="NAME",
        help=(
            f"the provenance to store the scores under (default {USER_SOURCE!r}, which real "
            f"symbols read; synthetic symbols read {SYNTHETIC_SOURCE!r}; a strategy reads "
            "another name through data.news_source / data.macro_source); 1-64 letters, digits, "
            "'_', '.' or '-'. Re-importing replaces scores of the same source only"
        ),
    )
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
        "--start-date",
        "--start",
        dest="start",
        type=parse_iso_date,
        default=dt.date(2018, 1, 1),
        help="first day (YYYY-MM-DD, default 2018-01-01)",
    )
    p.add_argument(
        "--end-date",
        "--end",
        dest="end",
        type=parse_iso_date,
        default=dt.date(2024, 1, 1),
        help="last day, inclusive (default 2024-01-01)",
    )
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="random seed (default %(default)s)")
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
    p.add_argument("--date", type=parse_iso_date, help="the tick's date (default: the newest bar)")
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
        f"  calendar:  {cfg.calendar.periods_per_year} periods per year"
        + (
            " (252 or 365, from the bars' dates)" if cfg.calendar.periods_per_year == "auto" else ""
        ),
        "ok",
    ]
    print("\n".join(lines))
    if rl.enabled and rl.model_file is not None:
        _warn_rl_model(rl.model_file)
    return 0


def _warn_rl_model(model: Path) -> None:
    """A one-line warning on stderr when the strategy's RL model was marked degenerate at
    training, or does not load (a backtest would run without it); reads the metadata only."""
    from otonom_runtime.policy import load_rl_policy

    try:
        policy = load_rl_policy(model)
    except (OtonomRuntimeError, OSError) as exc:
        print(
            f"warning: RL model {model} does not load, a backtest runs without it: {exc}",
            file=sys.stderr,
        )
        return
    if policy.degenerate_reason:
        print(
            f"warning: RL model {policy.path} is marked degenerate at training: "
            f"{policy.degenerate_reason}",
            file=sys.stderr,
        )


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
            "must be found inside the models root ($OTONOM_MODELS_ROOT, else the nearest folder "
            "holding models/ above the file; never the working directory); its metadata is "
            "read, and a model marked degenerate at training (or one that does not load) is a "
            "one-line warning on stderr."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the strategy YAML file")
    p.set_defaults(handler=_cmd_strategy_check)


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
    with _store(args) as url, get_session(url) as session:
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

    with _store(args) as url, get_session(url) as session:
        runs = session.execute(select(BacktestRun).order_by(BacktestRun.id.desc())).scalars()
        rows = []
        failures: list[tuple[int, str]] = []  # (id, why): printed under the table
        for run in runs:
            if run.status == "failed":
                failures.append((run.id, run.error or "-"))
            port = (run.metrics or {}).get("portfolio", {})
            rows.append(
                [
                    str(run.id),
                    run.strategy_name,
                    ",".join(run.symbols),
                    f"{run.start_date} .. {run.end_date}",
                    run.status,
                    "on" if (run.params or {}).get("rl_enabled") else "off",
                    _purpose(run.params),
                    _pct(port.get("total_return")),
                    _num(port.get("sharpe")),
                    _pct(port.get("max_drawdown")).lstrip("+"),
                ]
            )
    if not rows:
        print("no backtest runs yet (otonom backtest --strategy-path ... --symbol ...)")
        return 0
    headers = [
        "id", "strategy", "symbols", "dates", "status", "rl", "made by", "return", "sharpe",
        "max dd",
    ]  # fmt: skip
    print(_table(headers, rows, right={0, 7, 8, 9}))
    if any(r[6].endswith("*") for r in rows):
        print(_INTERNAL_NOTE)
    for run_id, error in failures:
        print(f"run {run_id} failed: {_first_line(error)}")
    return 0


def _first_line(error: str, limit: int = 240) -> str:
    """The first line of a run's error, cut to ``limit`` characters (``runs show``: whole)."""
    line = error.strip().splitlines()[0] if error.strip() else "-"
    return line if len(line) <= limit else line[: limit - 3] + "..."


_INTERNAL_NOTE = (
    "* internal: a run made by otonom-train check (gate) or to judge a model (evaluation); "
    "never a dataset's teacher"
)


def _purpose(params: dict[str, object] | None) -> str:
    """The run's ``params["purpose"]`` (``user`` for runs stored before it existed), with a
    ``*`` when it is internal (``otonom_runtime.backtest.INTERNAL_PURPOSES``)."""
    from otonom_runtime.backtest import INTERNAL_PURPOSES

    purpose = str((params or {}).get("purpose") or "user")
    return f"{purpose}*" if purpose in INTERNAL_PURPOSES else purpose


_METRIC_ROWS: tuple[tuple[str, str, Callable[[object], str]], ...] = (
    ("total return", "total_return", _pct),
    ("CAGR", "cagr", _pct),
    ("Sharpe", "sharpe", _num),
    ("Sortino", "sortino", _num),
    ("max drawdown", "max_drawdown", lambda v: _pct(v).lstrip("+")),
    ("max drawdown days", "max_drawdown_duration", lambda v: "-" if v is None else str(v)),
    ("trades", "n_trades", lambda v: "-" if v is None else str(v)),
    ("win rate", "win_rate", lambda v: "-" if not isinstance(v, (int, float)) else f"{v:.1%}"),
    ("exposure", "exposure", lambda v: "-" if not isinstance(v, (int, float)) else f"{v:.1%}"),
    ("turnover (per year)", "turnover", lambda v: "-" if v is None else f"{v:.1f}"),
    ("RL fallbacks", "fallbacks", lambda v: "-" if v is None else str(v)),
    ("bars", "n_bars", lambda v: "-" if v is None else str(v)),
)


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
        rows = [
            [label, *(fmt(col.get(key)) for col in columns.values())]
            for label, key, fmt in _METRIC_ROWS
        ]
        out += ["", _table(["metric", *columns], rows, right=set(range(1, len(columns) + 1)))]
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
        out += ["", _table(["actions", *names, "total"], rows, right={1, 2, 3, 4})]
    return out


def _cmd_runs_show(args: argparse.Namespace) -> int:
    import json

    from otonom_runtime.store import BacktestRun, get_session

    with _store(args) as url, get_session(url) as session:
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
    add_global_flags(parser, version=_version_text())
    return parser


class _PrintVersion(argparse.Action):
    """``--version``: print the text as it is (argparse's own action re-wraps it) and exit."""

    def __init__(
        self,
        option_strings: Sequence[str],
        version: str,
        dest: str = argparse.SUPPRESS,
        help: str | None = None,
    ) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)
        self.version = version

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(self.version)
        parser.exit()


def add_global_flags(parser: argparse.ArgumentParser, *, version: str) -> None:
    """Add ``--version`` (prints ``version``) to ``parser`` and ``--debug`` to it and to every
    sub-command below it, so that ``--debug`` may come before or after the command name."""
    parser.add_argument(
        "--version", action=_PrintVersion, version=version, help="print the version"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the full traceback instead of the one-line message",
    )
    todo = [parser]
    while todo:
        for action in todo.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                    sub.add_argument(
                        "--debug",
                        action="store_true",
                        default=argparse.SUPPRESS,  # keeps the top-level value when not given
                        help="on an error, show the full traceback instead of the one-line message",
                    )
                    todo.append(sub)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and type(exc).__str__ is KeyError.__str__ and exc.args:
        return str(exc.args[0])  # KeyError would repr() its message
    return str(exc)


def _fail(message: str, stream: TextIO) -> int:
    """Print ``error: message``; lines after the first are indented, so exactly one line of
    the output starts with ``error:``."""
    first, *rest = message.strip().splitlines() or [""]
    lines = [f"error: {first}", *(r if r.startswith(" ") else "  " + r for r in rest)]
    print("\n".join(lines), file=stream)
    return 1


def run_cli(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    expected: Callable[[BaseException], str | None],
) -> int:
    """Parse ``argv`` with ``parser`` (made with ``add_global_flags``), run the chosen command's
    ``handler`` and return its exit status.

    An exception becomes one ``error:`` line on stderr and exit status 1: ``expected(exc)``
    gives the message of an error raised on purpose, None for anything else, which prints the
    exception's type and message and a hint to rerun with ``--debug``. With ``--debug`` every
    exception propagates with its traceback.
    """
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        _fail("interrupted", sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        message = expected(exc)
        if message is None:
            text = " ".join(_error_text(exc).split())
            message = (
                f"{type(exc).__name__}{': ' + text if text else ''} (unexpected; rerun with "
                "--debug for the traceback)"
            )
        return _fail(message, sys.stderr)


def _expected_message(exc: BaseException) -> str | None:
    if isinstance(exc, (OtonomRuntimeError, SchemaError)):
        return _error_text(exc)
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
