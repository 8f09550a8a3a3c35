"""Reading a CSV file for import (standard library csv only): its non-blank records with their
1-based line numbers (comma-separated, or semicolon- or tab-separated as European spreadsheets
export them: ``read_rows``), the header's column lookup, number cells, the bad-row collector that
reports every bad row at once, and the date cells (``parse_date`` plus the day/month-order
rules of ``otonom_runtime.importers``' module doc; ISO dates go through
``otonom_schema.parse_iso_date``, the project's one date parser).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import math
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final, TextIO

from otonom_runtime._errors import DataImportError
from otonom_runtime._text import counted
from otonom_schema import DateError, parse_iso_date

__all__ = [
    "MAX_LISTED_PROBLEMS",
    "DateReader",
    "Problems",
    "columns",
    "date_reader",
    "number",
    "parse_date",
    "read_rows",
    "row_checker",
]

MAX_LISTED_PROBLEMS: Final = 20


_DAY_MONTH_YEAR: Final = re.compile(r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4})$")


_YEAR_MONTH_DAY: Final = re.compile(r"^(\d{4})([/.])(\d{1,2})\2(\d{1,2})$")


_ORDER_FORMATS: Final = {"month-first": "%m{0}%d{0}%Y", "day-first": "%d{0}%m{0}%Y"}


class DateReader:
    """Reads one file's date cells: ``parse_date``, plus the slash/dot dates of the module doc.

    The day/month order of ``8/17/2017``-style dates is decided once from all of the file's
    date cells (``texts``), so every row of a file is read the same way; ``date_format`` (a
    ``strptime`` format) overrides everything.
    """

    def __init__(self, path: Path, texts: Sequence[str], date_format: str | None) -> None:
        self.date_format = date_format
        self.order: str | None = None
        if date_format is not None:
            return
        first_big = second_big = ambiguous = False
        for text in texts:
            match = _DAY_MONTH_YEAR.match(text.strip())
            if match is None:
                continue
            ambiguous = True
            first_big |= int(match.group(1)) > 12
            second_big |= int(match.group(3)) > 12
        if not ambiguous:
            return
        if first_big == second_big:
            why = (
                "some have a first and some a second number above 12"
                if first_big
                else "neither number is ever above 12"
            )
            raise DataImportError(
                f"{path.name}: cannot tell day from month in dates like {texts[0].strip()!r} "
                f"({why}); pass the format, e.g. --date-format '%m/%d/%Y' (month first) or "
                "'%d/%m/%Y' (day first)"
            )
        self.order = "day-first" if first_big else "month-first"

    def __call__(self, text: str) -> dt.date:
        value = text.strip()
        if self.date_format is not None:
            try:
                return dt.datetime.strptime(value, self.date_format).date()
            except ValueError:
                raise ValueError(
                    f"date {value!r} does not match --date-format {self.date_format!r}"
                ) from None
        match = _DAY_MONTH_YEAR.match(value)
        if match is not None and self.order is not None:
            fmt = _ORDER_FORMATS[self.order].format(match.group(2))
            try:
                return dt.datetime.strptime(value, fmt).date()
            except ValueError:
                raise ValueError(f"date {value!r} is not a valid {self.order} date") from None
        match = _YEAR_MONTH_DAY.match(value)
        if match is not None:
            try:
                return dt.date(int(match.group(1)), int(match.group(3)), int(match.group(4)))
            except ValueError:
                raise ValueError(f"date {value!r} is not a valid year/month/day date") from None
        return parse_date(value)


def parse_date(text: str) -> dt.date:
    """A calendar day from an ISO date, an ISO datetime, or epoch seconds/milliseconds (UTC).

    Raises ``ValueError`` naming the value when it is none of those.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty date")
    if value.isdigit() and len(value) == 8:  # compact ISO date, 20170817
        try:
            return dt.datetime.strptime(value, "%Y%m%d").date()
        except ValueError:
            raise ValueError(f"date {value!r} is not a YYYYMMDD date") from None
    if value.isdigit():
        number = int(value)
        seconds = number / 1000.0 if number >= 10**11 else float(number)
        try:
            return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).date()
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch value {value} is out of range") from None
    if len(value) == 10:
        with contextlib.suppress(DateError):
            return parse_iso_date(value)
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        stamp = dt.datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"date {value!r} is not an ISO date (2017-08-17), ISO datetime "
            "(2017-08-17 00:00:00), epoch seconds/milliseconds, 2017/08/17 or day and month "
            "with a 4-digit year (8/17/2017, 17.08.2017)"
        ) from None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(dt.timezone.utc)
    return stamp.date()


class Problems:
    """Bad rows of one file, reported together."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        self.items.append((line, message))

    def raise_if_any(self, what: str, hint: str = "") -> None:
        """Raise the file's ``DataImportError`` listing the bad rows, if any; ``hint``: a
        sentence added to its first line (what else the caller could do)."""
        if not self.items:
            return
        n = len(self.items)
        listed = [f"  line {line}: {msg}" for line, msg in self.items[:MAX_LISTED_PROBLEMS]]
        if n > MAX_LISTED_PROBLEMS:
            listed.append(f"  ... and {n - MAX_LISTED_PROBLEMS} more")
        raise DataImportError(
            f"{self.path.name}: {counted(n, 'bad row')} in {what} file {self.path}; "
            f"nothing was imported{'; ' + hint if hint else ''}\n" + "\n".join(listed)
        )


_SEPARATORS: Final = (";", "\t")
"""The separators a file may use instead of commas (a header line without a comma tells)."""
_COMMA_DECIMAL: Final = re.compile(r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?")
"""A number written with a decimal comma (``465,864``): read as ``465.864`` in a file whose
separator is not the comma. A thousands separator (``1.234,5``) is not: that cell is refused as
no number."""


def read_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, cells) of every non-blank record, the header included.

    The separator is the comma, unless the first non-blank line has none and has a semicolon
    or a tab (the European spreadsheets' CSV): then that one, and a cell that is a number with
    a decimal comma (``465,864``) reads as the number (``465.864``)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            separator = _separator(handle)
            reader = csv.reader(handle, delimiter=separator)
            line = 1
            try:
                for cells in reader:
                    if cells and any(c.strip() for c in cells):
                        if separator != ",":
                            cells = [_decimal_point(c) for c in cells]
                        yield line, cells
                    line = reader.line_num + 1
            except csv.Error as exc:
                raise DataImportError(
                    f"{path.name}: line {reader.line_num}: cannot read as CSV ({exc})"
                ) from None
    except UnicodeDecodeError as exc:
        raise DataImportError(
            f"{path.name}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); "
            "expected a CSV file"
        ) from None
    except OSError as exc:
        raise DataImportError(f"cannot read {path}: {exc.strerror or exc}") from None


def _separator(handle: TextIO) -> str:
    """The file's separator, from its first non-blank line (the handle is rewound)."""
    first = next((text for text in handle if text.strip()), "")
    handle.seek(0)
    if "," in first:
        return ","
    return next((s for s in _SEPARATORS if s in first), ",")


def _decimal_point(cell: str) -> str:
    return cell.replace(",", ".") if _COMMA_DECIMAL.fullmatch(cell.strip()) else cell


def columns(
    path: Path,
    header: Sequence[str],
    wanted: dict[str, Sequence[str]],
    optional: set[str],
    example: str,
) -> dict[str, int]:
    """Map each wanted column to its index (first alias found wins); missing ones fail."""
    names = [cell.strip().lower() for cell in header]
    found: dict[str, int] = {}
    for key, aliases in wanted.items():
        for alias in aliases:
            if alias in names:
                found[key] = names.index(alias)
                break
    if "date" in wanted and "date" not in found and names and names[0] == "":
        found["date"] = 0  # pandas' to_csv of a date index: a blank first header cell
    missing = [key for key in wanted if key not in found and key not in optional]
    if missing:
        expect = ", ".join("/".join(wanted[key]) for key in missing)
        raise DataImportError(
            f"{path.name}: line 1: header {','.join(header)!r} lacks column(s) {expect}; "
            f"expected e.g. {example}"
        )
    return found


def number(cells: Sequence[str], index: int, name: str) -> float:
    text = cells[index].strip()
    if not text:
        raise ValueError(f"{name} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} is {text!r}; expected a finite number")
    return value


def row_checker(problems: Problems, width: int) -> Callable[[int, list[str]], bool]:
    def check(line: int, cells: list[str]) -> bool:
        if len(cells) != width:
            problems.add(line, f"{len(cells)} columns; expected {width} like the header")
            return False
        return True

    return check


def date_reader(
    path: Path, records: Sequence[tuple[int, list[str]]], column: int, date_format: str | None
) -> DateReader:
    texts = [cells[column] for _, cells in records if column < len(cells)]
    return DateReader(path, texts, date_format)
