"""``otonom data ...``: import OHLCV bars and sentiment from CSV files, generate the synthetic
market, list the symbols in the store."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from otonom_runtime._demo import DEMO_SEED
from otonom_runtime._errors import DataImportError
from otonom_runtime._sources import SYNTHETIC_SOURCE, USER_SOURCE
from otonom_runtime.cli._store import open_store
from otonom_runtime.cli._text import table
from otonom_schema import parse_iso_date

__all__ = ["add_data_commands"]


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
    with open_store(args) as url, get_session(url) as session:
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
    with open_store(args) as url, get_session(url) as session:
        report = import_sentiment_csv(
            session, args.file, args.symbol, source=args.source, date_format=args.date_format
        )
    print(f"{report.summary()}; source {args.source!r}")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from otonom_runtime.store import get_session
    from otonom_runtime.synth import write_synthetic

    with open_store(args) as url, get_session(url) as session:
        report = write_synthetic(
            session, list(args.symbol), args.start, args.end, args.seed, replace=args.replace
        )
    print(report.summary())
    return 0


def _cmd_data_list(args: argparse.Namespace) -> int:
    from otonom_runtime.store import get_session, list_symbols

    with open_store(args) as url, get_session(url) as session:
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
    print(table(headers, rows, right={4, 5}))
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


def _add_import_csv(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "import-csv",
        help="import daily OHLCV bars from a CSV file",
        description=(
            "Import daily OHLCV bars of one symbol from a CSV file: Yahoo layout "
            "(Date,Open,High,Low,Close,Adj Close,Volume; Adj Close is ignored) or lower-case "
            "(timestamp,open,high,low,close,volume), separated by commas, or by semicolons or "
            "tabs with decimal commas allowed (a European spreadsheet's export); a blank first "
            "header cell (pandas' to_csv) marks the date column. Dates may be ISO dates, ISO "
            "datetimes, epoch seconds/milliseconds or day and month with a 4-digit year (see "
            "--date-format). "
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


def _add_import_sentiment(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_synth(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_list(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "list",
        help="list the symbols in the store",
        description="List every symbol with its first and last bar, bar count and data health.",
        epilog=_DATA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=_cmd_data_list)


def add_data_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    data = commands.add_parser(
        "data",
        help="import, generate and list market data",
        description="Import, generate and list the market data in the store.",
        epilog=_DATA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    _add_import_csv(sub)
    _add_import_sentiment(sub)
    _add_synth(sub)
    _add_list(sub)
