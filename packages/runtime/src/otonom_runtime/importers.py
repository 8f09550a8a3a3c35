"""CSV import into the store: daily OHLCV bars and sentiment scores (standard library csv only).

All-or-nothing rule: the whole file is read and checked first; every bad row is collected and
reported in one ``DataImportError`` naming the file and the 1-based line numbers (the header is
line 1; the listing stops after 20 rows with "and N more"). Nothing is written unless every row
is valid, and the writes go into the caller's session, so the ``get_session`` block commits
them as one transaction.

Re-importing is idempotent: a row whose date is already stored with the same values is counted
``unchanged`` and new dates are inserted. Stored bars change only when asked: an OHLCV file
with a bar that differs from the stored bar of its date is refused (``DataImportError`` listing
the first changed dates and their count; nothing is written) unless ``replace=True`` (the CLI's
``--replace``), which updates them (``updated``).

OHLCV layouts (header names are matched case-insensitively, surrounding blanks ignored; other
columns are ignored):

* Yahoo: ``Date,Open,High,Low,Close,Adj Close,Volume``. ``Close`` is the close; ``Adj Close``
  is ignored (for crypto it equals Close; for stocks the features only use ratios and the
  backtester trades the quoted close).
* Binance and lower-case exports: ``timestamp,open,high,low,close,volume``.
* Either one separated by semicolons or tabs, as a spreadsheet in a European locale exports it
  (``Date;Open;High;...``, a first line without a comma tells), whose numbers may then have a
  decimal comma (``465,864``); a thousands separator (``1.234,5``) is refused as no number.

The date column may be named ``date``, ``timestamp``, ``time``, ``datetime``, ``open_time`` or
``open time``; a header whose first cell is blank (what ``pandas.DataFrame.to_csv`` writes for
a date index) has its dates in that first column. Dates may be an ISO date (``2017-08-17`` or
``20170817``), an ISO datetime (``2017-08-17 00:00:00``, ``2017-08-17T00:00:00Z``; time-zone
aware values are converted to UTC, then the calendar day is kept), epoch seconds /
milliseconds (UTC; values >= 1e11 are milliseconds), ``2017/08/17``, or day and month with a
4-digit year (``8/17/2017``, ``17.08.2017``, ``17-08-2017``). Which of the first two numbers is
the month is decided once for the whole file: a first number above 12 somewhere means
day-first, a second number above 12 means month-first; a file where neither happens (or both
do) is refused unless ``date_format`` (a ``strptime`` format such as ``%m/%d/%Y``) says.

A bar is refused when: its date cannot be read, the date repeats an earlier row, a value is
empty or not a finite number, a price is <= 0, high < low, open or close outside [low, high]
(the OHLC rule ``low <= open <= high`` and ``low <= close <= high``), volume < 0, or the row has
another number of columns than the header. Blank lines are skipped. A file of intraday bars (as
many rows repeating an earlier row's day at another time as there are days) is refused as such,
in one message, even with ``drop_bad_rows``.

The OHLC rule allows a relative tolerance of ``OHLC_TOLERANCE`` (1e-9 of the bar's high) for
vendor float noise (e.g. a close of ``12.000000000001`` against a high of ``12.0``, as adjusted
series sometimes print): such a bar is stored as given. Anything beyond it is a bad row.

``drop_bad_rows=True`` (the CLI's ``--drop-bad-rows``, for old vendor series with a few such
rows) imports the valid rows instead of refusing the file, and reports the skipped ones in
``ImportReport.dropped`` (line, what is wrong) and its summary; a repeated date is a bad row
even when the row it repeats was dropped. A file that cannot be read as a whole (not UTF-8,
unreadable CSV, missing columns, no header, undecidable date order) or that has no valid bar
still fails.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy.orm import Session

from otonom_runtime._csvread import (
    MAX_LISTED_PROBLEMS,
    Problems,
    columns,
    date_reader,
    number,
    parse_date,
    read_rows,
    row_checker,
)
from otonom_runtime._errors import DataImportError
from otonom_runtime._text import counted
from otonom_runtime.store import (
    USER_SOURCE,
    check_source_name,
    get_or_create_symbol,
    insert_bars,
    insert_macro,
    insert_news,
    stored_bars,
    stored_macro_scores,
    stored_news_scores,
    symbol_ids,
    update_bars,
    update_macro,
    update_news,
)

__all__ = [
    "MAX_LISTED_PROBLEMS",
    "OHLC_TOLERANCE",
    "REPLACE_HINT",
    "SPARSE_GAP_DAYS",
    "ImportReport",
    "check_symbol_name",
    "import_ohlcv_csv",
    "import_sentiment_csv",
    "parse_date",
]

REPLACE_HINT: Final = "; add --replace to overwrite them"
"""The end of the message refusing a file whose bars differ from the stored ones: the
``import-csv`` and ``pipeline --import-csv`` flag (the daemon, which has none, says its own)."""
OHLC_TOLERANCE: Final = 1e-9  # relative to the bar's high: open/close may exceed it (or undercut
# low) by this much before the bar is refused; vendor float noise, far below any price tick
SPARSE_GAP_DAYS: Final = 4
"""Bars further apart than this many days (the median) are no daily bars: the import warns."""
_LISTED_DROPPED: Final = 5  # dropped rows named in ImportReport.summary()
_DATE_NAMES: Final = ("date", "timestamp", "time", "datetime", "open_time", "open time")
_OHLCV: Final = ("open", "high", "low", "close", "volume")
_SYMBOL_NAMES: Final = ("symbol", "ticker")
_SCORE_NAMES: Final = ("score", "sentiment")
_SYMBOL_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/^=-]{0,63}$")


@dataclass(frozen=True)
class ImportReport:
    """What an import did. ``kind``: ``"bars"``, ``"news"`` or ``"macro"``.

    ``rows`` = ``inserted + updated + unchanged``; ``symbols`` is empty for macro sentiment;
    ``created_symbol`` is True when the import made the ``Symbol`` row. ``dropped``: the bad
    rows skipped with ``drop_bad_rows=True`` as ``(line, what is wrong)``, in file order (empty
    otherwise). ``gap_days``: the median number of days between the file's bars (1 for daily
    bars; more than ``SPARSE_GAP_DAYS``: no daily bars, and the summary warns).
    """

    path: Path
    kind: str
    symbols: tuple[str, ...]
    rows: int
    inserted: int
    updated: int
    unchanged: int
    first: dt.date | None
    last: dt.date | None
    created_symbol: bool = False
    dropped: tuple[tuple[int, str], ...] = ()
    gap_days: float | None = None

    def summary(self) -> str:
        """One line for people, e.g. ``BTC-USD: 3541 bars 2014-09-17 .. 2024-05-27 (...)``.

        With dropped rows it adds their count and the first few, e.g. ``; dropped 2 bad rows
        (line 4: 2020-01-03: close 12.5 > high 12.0; line 9: ...)``.
        """
        who = ", ".join(self.symbols) if self.symbols else "macro"
        what = {"bars": "bars", "news": "news scores", "macro": "macro scores"}[self.kind]
        span = f" {self.first} .. {self.last}" if self.first else ""
        text = (
            f"{who}: {self.rows} {what}{span} from {self.path.name} "
            f"({self.inserted} inserted, {self.updated} updated, {self.unchanged} unchanged)"
        )
        if self.dropped:
            n = len(self.dropped)
            shown = "; ".join(f"line {line}: {msg}" for line, msg in self.dropped[:_LISTED_DROPPED])
            more = f"; and {n - _LISTED_DROPPED} more" if n > _LISTED_DROPPED else ""
            text += f"; dropped {counted(n, 'bad row')} ({shown}{more})"
        if self.gap_days is not None and self.gap_days > SPARSE_GAP_DAYS:
            text += (
                f"\nwarning: {who}'s bars are {self.gap_days:g} days apart (the median); "
                "expected daily bars (1 day apart, 3 over a weekend): every bar is read as one "
                "trading day (the states' windows, the warm-up, annualised figures)"
            )
        return text


def check_symbol_name(symbol: str) -> str:
    """``symbol`` without surrounding blanks; ``DataImportError`` if it is not a valid name."""
    name = symbol.strip()
    if not _SYMBOL_RE.match(name):
        raise DataImportError(
            f"symbol {symbol!r} is not a valid name; expected 1-64 characters of letters, "
            "digits and . _ : / ^ = - (e.g. BTC-USD)"
        )
    return name


def _ohlc_problem(o: float, h: float, lo: float, c: float) -> str | None:
    """What breaks ``low <= open <= high`` and ``low <= close <= high`` (``OHLC_TOLERANCE``)."""
    if h < lo:
        return f"high {h!r} < low {lo!r}"
    slack = OHLC_TOLERANCE * h
    bad = [f"{n} {x!r} > high {h!r}" for n, x in (("open", o), ("close", c)) if x > h + slack]
    bad += [f"{n} {x!r} < low {lo!r}" for n, x in (("open", o), ("close", c)) if x < lo - slack]
    return f"{', '.join(bad)}; expected low <= open, close <= high" if bad else None


def _open_csv(
    path: Path,
    holds: str,
    wanted: dict[str, Sequence[str]],
    optional: set[str],
    example: str,
) -> tuple[list[str], dict[str, int], Iterator[tuple[int, list[str]]]]:
    """The header of a CSV file, its column map (``columns``) and the records below it, read
    as they are consumed (``holds``: what the rows are, for the empty-file message)."""
    rows = read_rows(path)
    first = next(rows, None)
    if first is None:
        raise DataImportError(f"{path.name}: the file is empty; expected a header and {holds}")
    _, header = first
    return header, columns(path, header, wanted, optional, example), rows


def _write(
    session: Session,
    kind: str,
    inserts: list[dict[str, Any]],
    updates: list[dict[str, Any]],
) -> None:
    """Insert and update rows of ``kind`` (bars, news or macro) in the caller's transaction."""
    insert, update = _WRITERS[kind]
    insert(session, inserts)
    update(session, updates)
    session.flush()


_WRITERS: Final = {
    "bars": (insert_bars, update_bars),
    "news": (insert_news, update_news),
    "macro": (insert_macro, update_macro),
}


def _read_bars(
    path: Path, date_format: str | None = None, drop_bad_rows: bool = False
) -> tuple[dict[dt.date, tuple[float, float, float, float, float]], list[tuple[int, str]]]:
    """The file's bars by date, and (with ``drop_bad_rows``) the skipped bad rows."""
    header, cols, rows = _open_csv(
        path,
        "bars",
        {"date": _DATE_NAMES, **{c: (c,) for c in _OHLCV}},
        set(),
        "Date,Open,High,Low,Close,Adj Close,Volume or timestamp,open,high,low,close,volume",
    )
    problems = Problems(path)
    fits = row_checker(problems, len(header))
    records = list(rows)
    read_date = date_reader(path, records, cols["date"], date_format)
    bars: dict[dt.date, tuple[float, float, float, float, float]] = {}
    lines: dict[dt.date, tuple[int, str]] = {}
    intraday: list[tuple[int, str, int, str]] = []  # a day repeated at another time
    for line, cells in records:
        if not fits(line, cells):
            continue
        cell = cells[cols["date"]].strip()
        try:
            day = read_date(cell)
        except ValueError as exc:
            problems.add(line, str(exc))
            continue
        if day in lines:
            first, first_cell = lines[day]
            problems.add(line, f"duplicate date {day} (first on line {first})")
            if cell != first_cell:
                intraday.append((line, cell, first, first_cell))
            continue
        lines[day] = (line, cell)
        try:
            o, h, lo, c, v = (number(cells, cols[name], name) for name in _OHLCV)
        except ValueError as exc:
            problems.add(line, f"{day}: {exc}")
            continue
        bad = [f"{n} {x!r} <= 0" for n, x in zip(_OHLCV[:4], (o, h, lo, c), strict=True) if x <= 0]
        ohlc = _ohlc_problem(o, h, lo, c)
        if bad:
            problems.add(line, f"{day}: {', '.join(bad)}; expected prices > 0")
        elif ohlc is not None:
            problems.add(line, f"{day}: {ohlc}")
        elif v < 0:
            problems.add(line, f"{day}: volume {v!r} < 0; expected >= 0")
        else:
            bars[day] = (o, h, lo, c, v)
    _refuse_intraday(path, intraday, len(lines))
    if drop_bad_rows:
        dropped = sorted(problems.items)
        if not bars:
            problems.raise_if_any("OHLCV")
    else:
        dropped = []
        valid = f"--drop-bad-rows imports the {counted(len(bars), 'valid row')} instead"
        problems.raise_if_any("OHLCV", valid if bars else "")
    if not bars:
        raise DataImportError(f"{path.name}: no bars after the header; expected at least one")
    return bars, dropped


def _refuse_intraday(path: Path, repeats: list[tuple[int, str, int, str]], days: int) -> None:
    """Refuse a file of intraday bars (on average two rows a day or more, the repeats at other
    times of the day) in one message, instead of a duplicate date per row (``drop_bad_rows``
    would keep each day's first bar as if it were the day's)."""
    if not repeats or len(repeats) < days:
        return
    line, cell, first, first_cell = repeats[0]
    raise DataImportError(
        f"{path.name} holds intraday bars: {len(repeats)} rows repeat the day of an earlier row "
        f"at another time ({len(repeats) + days} rows over {days} days; e.g. line {line} "
        f"{cell!r} after line {first} {first_cell!r}); nothing was imported; expected one bar a "
        "day: resample the file to daily bars first (the day's first open, highest high, "
        "lowest low, last close and summed volume)"
    )


_LISTED_DATES: Final = 5


def _changed_listing(days: list[dt.date]) -> str:
    """``2020-01-02, 2020-01-05 and 3 more`` (the first few dates, then the count left)."""
    shown = ", ".join(d.isoformat() for d in days[:_LISTED_DATES])
    more = len(days) - _LISTED_DATES
    return shown + (f" and {more} more" if more > 0 else "")


def import_ohlcv_csv(
    session: Session,
    path: str | Path,
    symbol: str,
    *,
    date_format: str | None = None,
    replace: bool = False,
    drop_bad_rows: bool = False,
) -> ImportReport:
    """Import the daily bars of ``symbol`` from a CSV file (see the module doc for layouts).

    ``date_format``: a ``strptime`` format for the date column (default: read as the module
    doc says).

    Creates the ``Symbol`` row if missing (source ``"csv:<file name>"``). New dates are
    inserted, identical bars left alone. Raises ``DataImportError`` (nothing is written then)
    listing every bad row, when ``symbol`` is a synthetic symbol, or when a bar differs from
    the stored bar of its date and ``replace`` is False (with ``replace`` such bars are
    updated).

    ``drop_bad_rows``: import the valid rows and skip the bad ones instead of refusing the
    file; the skipped rows are listed in the report's ``dropped`` (a file with no valid bar,
    or one that cannot be read as a whole, still fails).
    """
    path = Path(path)
    name = check_symbol_name(symbol)
    bars, dropped = _read_bars(path, date_format, drop_bad_rows)
    row, created = get_or_create_symbol(session, name, source=f"csv:{path.name}")
    if row.is_synthetic:
        raise DataImportError(
            f"symbol {name!r} holds synthetic data; import {path.name} under another symbol"
        )
    existing = stored_bars(session, row.id)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    changed: list[dt.date] = []
    unchanged = 0
    for day, (o, h, lo, c, v) in sorted(bars.items()):
        values = {"open": o, "high": h, "low": lo, "close": c, "volume": v}
        old = existing.get(day)
        if old is None:
            inserts.append({"symbol_id": row.id, "date": day, **values})
        elif (old.open, old.high, old.low, old.close, old.volume) == (o, h, lo, c, v):
            unchanged += 1
        else:
            updates.append({"id": old.id, **values})
            changed.append(day)
    if changed and not replace:
        differ = "1 bar differs" if len(changed) == 1 else f"{len(changed)} bars differ"
        raise DataImportError(
            f"{path.name}: {differ} from the stored bars of {name!r} "
            f"({_changed_listing(changed)}); nothing was imported{REPLACE_HINT}"
        )
    _write(session, "bars", inserts, updates)
    days = sorted(bars)
    gaps = [(b - a).days for a, b in itertools.pairwise(days)]
    return ImportReport(
        path=path,
        kind="bars",
        symbols=(name,),
        rows=len(bars),
        inserted=len(inserts),
        updated=len(updates),
        unchanged=unchanged,
        first=days[0],
        last=days[-1],
        created_symbol=created,
        dropped=tuple(dropped),
        gap_days=float(statistics.median(gaps)) if len(gaps) >= 2 else None,
    )


def import_sentiment_csv(
    session: Session,
    path: str | Path,
    symbol: str | None = None,
    *,
    source: str = USER_SOURCE,
    date_format: str | None = None,
) -> ImportReport:
    """Import sentiment scores in [-1, 1] from a CSV file with columns ``date[,symbol],score``.

    * With a ``symbol`` column: news sentiment of each row's symbol (which must be in the
      store; when ``symbol`` is given too, every row must name it).
    * Without one: news sentiment of ``symbol`` if given (must be in the store), else macro
      (market-wide) sentiment.

    ``source``: the provenance the rows are stored under (``USER_SOURCE`` by default, which
    real symbols read; see ``otonom_runtime.store.sentiment_source``); rows of other sources,
    the synthetic market's included, are never touched. Same all-or-nothing validation as
    ``import_ohlcv_csv`` (bad date, duplicate date per symbol, empty/non-finite score, score
    outside [-1, 1], wrong column count).
    """
    path = Path(path)
    try:
        source = check_source_name(source)
    except ValueError as exc:
        raise DataImportError(f"{path.name}: {exc}") from None
    wanted = check_symbol_name(symbol) if symbol is not None else None
    header, cols, rows = _open_csv(
        path,
        "scores",
        {"date": _DATE_NAMES, "symbol": _SYMBOL_NAMES, "score": _SCORE_NAMES},
        {"symbol"},
        "date,score or date,symbol,score",
    )
    known = symbol_ids(session)
    if wanted is not None and wanted not in known:
        raise DataImportError(
            f"{path.name}: symbol {wanted!r} is not in the store; import its bars first "
            f"(known symbols: {', '.join(sorted(known)) or 'none'})"
        )
    macro = wanted is None and "symbol" not in cols
    scores = _read_scores(path, len(header), cols, list(rows), wanted, known, date_format)
    existing = _stored_scores(session, None if macro else known, source, scores)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    unchanged = 0
    for (name, day), score in sorted(scores.items()):
        old = existing.get((name, day))
        if old is None:
            row: dict[str, Any] = {"source": source, "date": day, "score": score}
            if not macro:
                row["symbol_id"] = known[name]
            inserts.append(row)
        elif old[1] == score:
            unchanged += 1
        else:
            updates.append({"id": old[0], "score": score})
    _write(session, "macro" if macro else "news", inserts, updates)
    days = sorted(day for _, day in scores)
    return ImportReport(
        path=path,
        kind="macro" if macro else "news",
        symbols=() if macro else tuple(sorted({name for name, _ in scores})),
        rows=len(scores),
        inserted=len(inserts),
        updated=len(updates),
        unchanged=unchanged,
        first=days[0],
        last=days[-1],
    )


def _read_scores(
    path: Path,
    width: int,
    cols: dict[str, int],
    records: Sequence[tuple[int, list[str]]],
    wanted: str | None,
    known: dict[str, int],
    date_format: str | None,
) -> dict[tuple[str, dt.date], float]:
    """The file's scores by (symbol, date) (symbol ``""`` for macro sentiment); every bad row
    is reported at once (``DataImportError``)."""
    problems = Problems(path)
    fits = row_checker(problems, width)
    scores: dict[tuple[str, dt.date], float] = {}
    lines: dict[tuple[str, dt.date], int] = {}
    read_date = date_reader(path, records, cols["date"], date_format)
    for line, cells in records:
        if not fits(line, cells):
            continue
        name = wanted or ""
        if "symbol" in cols:
            name = cells[cols["symbol"]].strip()
            if wanted is not None and name != wanted:
                problems.add(line, f"symbol {name!r}; expected {wanted!r} (given with --symbol)")
                continue
            if name not in known:
                problems.add(line, f"symbol {name!r} is not in the store; import its bars first")
                continue
        try:
            day = read_date(cells[cols["date"]])
        except ValueError as exc:
            problems.add(line, str(exc))
            continue
        key = (name, day)
        if key in lines:
            problems.add(line, f"duplicate date {day} (first on line {lines[key]})")
            continue
        lines[key] = line
        try:
            score = number(cells, cols["score"], "score")
        except ValueError as exc:
            problems.add(line, f"{day}: {exc}")
            continue
        if not -1.0 <= score <= 1.0:
            problems.add(line, f"{day}: score {score!r} is outside [-1, 1]")
            continue
        scores[key] = score
    problems.raise_if_any("sentiment")
    if not scores:
        raise DataImportError(f"{path.name}: no scores after the header; expected at least one")
    return scores


def _stored_scores(
    session: Session,
    known: dict[str, int] | None,
    source: str,
    scores: dict[tuple[str, dt.date], float],
) -> dict[tuple[str, dt.date], tuple[int, float]]:
    """The stored (row id, score) of ``source`` by (symbol, date): macro sentiment when
    ``known`` (symbol name -> id) is None, else the news of the symbols in ``scores``."""
    if known is None:
        return {("", day): found for day, found in stored_macro_scores(session, source).items()}
    by_id = {v: k for k, v in known.items()}
    news = stored_news_scores(session, {known[name] for name, _ in scores}, source)
    return {(by_id[symbol_id], day): found for (symbol_id, day), found in news.items()}
