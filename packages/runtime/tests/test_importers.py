"""CSV import of bars and sentiment: layouts, every bad-row kind, all-or-nothing, idempotence."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from otonom_runtime._errors import DataImportError
from otonom_runtime.importers import (
    import_ohlcv_csv,
    import_sentiment_csv,
    parse_date,
)
from otonom_runtime.store import (
    USER_SOURCE,
    Bar,
    MacroSentiment,
    NewsSentiment,
    Symbol,
    get_or_create_symbol,
    get_session,
    get_symbol,
    load_history,
    load_macro,
    load_news,
)

YAHOO = """\
Date,Open,High,Low,Close,Adj Close,Volume
2014-09-17,465.864014,468.174011,452.421997,457.334015,457.334015,21056800
2014-09-18,456.859985,456.859985,413.104004,424.440002,424.440002,34483200
2014-09-19,424.102997,427.834991,384.532013,394.795990,394.795990,37919700
"""

BINANCE = """\
timestamp,open,high,low,close,volume
2017-08-17 00:00:00,4261.48,4485.39,4200.74,4285.08,795.150377
2017-08-18 00:00:00,4285.08,4371.52,3938.77,4108.37,1199.888264
2017-08-19 00:00:00,4108.37,4184.69,3850.00,4139.98,381.309763
"""


def _write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _count(db_url: str, table: Any) -> int:
    with get_session(db_url) as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


# --- dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("2017-08-17", dt.date(2017, 8, 17)),
        (" 2017-08-17 ", dt.date(2017, 8, 17)),
        ("2017-08-17 00:00:00", dt.date(2017, 8, 17)),
        ("2017-08-17T23:59:59", dt.date(2017, 8, 17)),
        ("2017-08-17T00:00:00Z", dt.date(2017, 8, 17)),
        ("2017-08-17T01:00:00+02:00", dt.date(2017, 8, 16)),  # converted to UTC
        ("1502928000000", dt.date(2017, 8, 17)),  # epoch milliseconds
        ("1502928000", dt.date(2017, 8, 17)),  # epoch seconds
        ("20170817", dt.date(2017, 8, 17)),  # compact ISO date, not epoch seconds
    ],
)
def test_parse_date_reads_dates_datetimes_and_epochs(text: str, day: dt.date) -> None:
    assert parse_date(text) == day


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2017-13-01", "17/08/2017", "2017-08-17 25:00", "20171301"]
)
def test_parse_date_refuses_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="date"):
        parse_date(text)


# --- dates written the way vendors write them --------------------------------------------------


def _bars_with_dates(*dates: str, header: str = "Date,Open,High,Low,Close,Volume") -> str:
    rows = [f"{d},10,12,9,11,100" for d in dates]
    return header + "\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        # month first (US: the arch package's S&P 500 file), told by a day above 12
        (("1/4/1999", "1/29/1999", "2/1/1999"), ["1999-01-04", "1999-01-29", "1999-02-01"]),
        # day first with dots and dashes (Europe), told by a first number above 12
        (("04.01.1999", "29.01.1999", "01.02.1999"), ["1999-01-04", "1999-01-29", "1999-02-01"]),
        (("4-1-1999", "29-1-1999", "1-2-1999"), ["1999-01-04", "1999-01-29", "1999-02-01"]),
        # year first with slashes: never ambiguous
        (("1999/01/04", "1999/1/29"), ["1999-01-04", "1999-01-29"]),
    ],
)
def test_day_month_order_is_read_from_the_whole_file(
    db_url: str, tmp_path: Path, dates: tuple[str, ...], expected: list[str]
) -> None:
    path = _write(tmp_path, _bars_with_dates(*dates))
    with get_session(db_url) as session:
        import_ohlcv_csv(session, path, "X")
        history = load_history(session, "X")
    assert history.dates.astype(str).tolist() == expected


@pytest.mark.parametrize("drop", [False, True])
def test_intraday_bars_are_refused_in_one_message(db_url: str, tmp_path: Path, drop: bool) -> None:
    """Hourly bars (what backtesting.py's EURUSD.csv holds) are no daily bars: refused as one
    intraday file, with or without --drop-bad-rows (which would keep each day's first hour as
    its bar), not as a duplicate date per row."""
    hours = [f"2020-01-0{d} {h:02d}:00:00" for d in (1, 2, 3) for h in range(24)]
    path = _write(tmp_path, _bars_with_dates(*hours, header=",Open,High,Low,Close,Volume"))
    with get_session(db_url) as session, pytest.raises(DataImportError) as caught:
        import_ohlcv_csv(session, path, "X", drop_bad_rows=drop)
    assert str(caught.value) == (
        "bars.csv holds intraday bars: 69 rows repeat the day of an earlier row at another time "
        "(72 rows over 3 days; e.g. line 3 '2020-01-01 01:00:00' after line 2 "
        "'2020-01-01 00:00:00'); nothing was imported; expected one bar a day: resample the "
        "file to daily bars first (the day's first open, highest high, lowest low, last close "
        "and summed volume)"
    )
    assert _count(db_url, Bar) == 0


def test_bars_further_apart_than_days_are_imported_with_a_warning(
    db_url: str, tmp_path: Path
) -> None:
    monthly = _write(tmp_path, _bars_with_dates("2020-01-31", "2020-02-29", "2020-03-31"))
    weekly = _write(tmp_path, _bars_with_dates("2020-01-03", "2020-01-06", "2020-01-07"), "d.csv")
    with get_session(db_url) as session:
        sparse = import_ohlcv_csv(session, monthly, "M")
        daily = import_ohlcv_csv(session, weekly, "D")
    assert sparse.inserted == 3
    assert sparse.gap_days == 30.0
    assert sparse.summary().splitlines()[1] == (
        "warning: M's bars are 30 days apart (the median); expected daily bars (1 day apart, "
        "3 over a weekend): every bar is read as one trading day (the states' windows, the "
        "warm-up, annualised figures)"
    )
    assert daily.gap_days == 2.0
    assert "\n" not in daily.summary()


def test_a_daily_file_with_a_stray_repeated_day_lists_it_as_a_duplicate(
    db_url: str, tmp_path: Path
) -> None:
    days = ["2020-01-01", "2020-01-02 00:00:00", "2020-01-02 16:00:00", "2020-01-03"]
    path = _write(tmp_path, _bars_with_dates(*days))
    with get_session(db_url) as session, pytest.raises(DataImportError) as caught:
        import_ohlcv_csv(session, path, "X")
    assert "line 4: duplicate date 2020-01-02 (first on line 3)" in str(caught.value)


def test_ambiguous_day_month_dates_are_refused_unless_a_format_is_given(
    db_url: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, _bars_with_dates("1/4/1999", "2/4/1999"))
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        import_ohlcv_csv(session, path, "X")
    message = str(info.value)
    assert "cannot tell day from month" in message
    assert "'1/4/1999'" in message
    assert "--date-format" in message
    assert _count(db_url, Bar) == 0
    with get_session(db_url) as session:
        import_ohlcv_csv(session, path, "X", date_format="%d/%m/%Y")
        history = load_history(session, "X")
    assert history.dates.astype(str).tolist() == ["1999-04-01", "1999-04-02"]


def test_a_file_mixing_day_first_and_month_first_dates_is_refused(
    db_url: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, _bars_with_dates("13/1/1999", "1/14/1999"))
    with get_session(db_url) as session, pytest.raises(DataImportError, match="some have a first"):
        import_ohlcv_csv(session, path, "X")


def test_rows_not_matching_the_date_format_are_listed(db_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, _bars_with_dates("01/04/1999", "1999-04-02"))
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        import_ohlcv_csv(session, path, "X", date_format="%m/%d/%Y")
    assert "line 3: date '1999-04-02' does not match --date-format '%m/%d/%Y'" in str(info.value)
    assert _count(db_url, Bar) == 0


def test_impossible_slash_dates_are_bad_rows(db_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, _bars_with_dates("1/29/1999", "2/30/1999", "2000/02/30"))
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        import_ohlcv_csv(session, path, "X")
    message = str(info.value)
    assert "line 3: date '2/30/1999' is not a valid month-first date" in message
    assert "line 4: date '2000/02/30' is not a valid year/month/day date" in message


def test_a_blank_first_header_cell_is_the_date_column(db_url: str, tmp_path: Path) -> None:
    """What ``pandas.DataFrame.to_csv`` writes for a date index (backtesting.py's GOOG.csv)."""
    text = _bars_with_dates("2004-08-19", "2004-08-20", header=",Open,High,Low,Close,Volume")
    path = _write(tmp_path, text)
    with get_session(db_url) as session:
        report = import_ohlcv_csv(session, path, "GOOG")
    assert (report.first, report.last) == (dt.date(2004, 8, 19), dt.date(2004, 8, 20))


def test_sentiment_dates_use_the_same_rules(db_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "date,score\n1/29/1999,0.5\n2/1/1999,-0.5\n", "macro.csv")
    with get_session(db_url) as session:
        report = import_sentiment_csv(session, path)
    assert (report.first, report.last) == (dt.date(1999, 1, 29), dt.date(1999, 2, 1))


# --- good files ------------------------------------------------------------------------------


def test_yahoo_file_imports_close_not_adj_close(db_url: str, tmp_path: Path) -> None:
    text = YAHOO.replace("394.795990,394.795990", "394.795990,1.0")  # Adj Close differs
    path = _write(tmp_path, text, "BTC-USD_yahoo_daily.csv")
    with get_session(db_url) as session:
        report = import_ohlcv_csv(session, path, "BTC-USD")
    assert (report.rows, report.inserted, report.updated, report.unchanged) == (3, 3, 0, 0)
    assert (report.first, report.last, report.kind, report.symbols) == (
        dt.date(2014, 9, 17),
        dt.date(2014, 9, 19),
        "bars",
        ("BTC-USD",),
    )
    assert report.created_symbol
    assert "BTC-USD: 3 bars 2014-09-17 .. 2014-09-19" in report.summary()
    with get_session(db_url) as session:
        symbol = get_symbol(session, "BTC-USD")
        assert (symbol.source, symbol.is_synthetic) == ("csv:BTC-USD_yahoo_daily.csv", False)
        history = load_history(session, "BTC-USD")
    np.testing.assert_array_equal(history.close, [457.334015, 424.440002, 394.795990])
    np.testing.assert_array_equal(history.open, [465.864014, 456.859985, 424.102997])
    np.testing.assert_array_equal(history.volume, [21056800, 34483200, 37919700])


def test_lower_case_file_with_datetimes(db_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, BINANCE)
    with get_session(db_url) as session:
        report = import_ohlcv_csv(session, path, "BTCUSDT")
    assert report.rows == 3
    with get_session(db_url) as session:
        history = load_history(session, "BTCUSDT")
    assert history.dates.astype(str).tolist() == ["2017-08-17", "2017-08-18", "2017-08-19"]
    np.testing.assert_array_equal(history.high, [4485.39, 4371.52, 4184.69])


def _european(text: str, separator: str) -> str:
    """``text`` (a comma-separated file with decimal points) as a spreadsheet in a European
    locale writes it: ``separator`` between the cells, a decimal comma in each number."""
    rows = [line.split(",") for line in text.splitlines()]
    return "".join(separator.join(c.replace(".", ",") for c in row) + "\n" for row in rows)


@pytest.mark.parametrize(
    ("separator", "bom", "dates"),
    [(";", True, "iso"), (";", False, "dotted"), ("\t", False, "iso")],
)
def test_semicolon_and_tab_separated_files_with_decimal_commas(
    db_url: str, tmp_path: Path, separator: str, bom: bool, dates: str
) -> None:
    """A European spreadsheet's export (``Date;Open;...``, ``465,864014``; or tab-separated,
    or with ``17.09.2014`` dates) imports the same bars as the comma-separated file."""
    text = _european(YAHOO, separator)
    if dates == "dotted":  # the day first, as such a spreadsheet writes it
        for day in (17, 18, 19):
            text = text.replace(f"2014-09-{day}", f"{day}.09.2014")
    path = tmp_path / "euro.csv"
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    _write(tmp_path, YAHOO, "plain.csv")
    with get_session(db_url) as session:
        assert import_ohlcv_csv(session, path, "EURO").rows == 3
        import_ohlcv_csv(session, tmp_path / "plain.csv", "PLAIN")
    with get_session(db_url) as session:
        euro, plain = load_history(session, "EURO"), load_history(session, "PLAIN")
    for column in ("dates", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(euro, column), getattr(plain, column))
    np.testing.assert_array_equal(euro.close, [457.334015, 424.440002, 394.795990])


def test_a_thousands_separator_is_no_number(db_url: str, tmp_path: Path) -> None:
    """``1.234,5`` (a thousands dot and a decimal comma) is refused as no number, listed,
    rather than read as 1.2345 or 1234.5 by a guess."""
    text = "Date;Open;High;Low;Close;Volume\n2020-01-01;1.234,5;1.240,0;1.230,0;1.235,0;100\n"
    path = _write(tmp_path, text, "thousands.csv")
    with get_session(db_url) as session, pytest.raises(DataImportError) as err:
        import_ohlcv_csv(session, path, "T")
    assert "  line 2: 2020-01-01: open '1.234,5' is not a number" in str(err.value).splitlines()
    assert _count(db_url, Bar) == 0


def test_the_refusal_names_drop_bad_rows_when_some_rows_are_valid(
    db_url: str, tmp_path: Path
) -> None:
    """A Yahoo file with a 'null' row: the refusal says how many rows --drop-bad-rows would
    import; a file with no valid row does not suggest it."""
    text = YAHOO.replace(
        "2014-09-18,456.859985,456.859985,413.104004,424.440002,424.440002,34483200",
        "2014-09-18,null,null,null,null,null,null",
    )
    path = _write(tmp_path, text, "nulls.csv")
    with get_session(db_url) as session, pytest.raises(DataImportError) as err:
        import_ohlcv_csv(session, path, "N")
    assert str(err.value).splitlines() == [
        f"nulls.csv: 1 bad row in OHLCV file {path}; nothing was imported; --drop-bad-rows "
        "imports the 2 valid rows instead",
        "  line 3: 2014-09-18: open 'null' is not a number",
    ]
    path = _write(tmp_path, "Date,Open,High,Low,Close,Volume\n2020-01-01,x,1,1,1,1\n", "bad.csv")
    with get_session(db_url) as session, pytest.raises(DataImportError) as err:
        import_ohlcv_csv(session, path, "N")
    assert str(err.value).splitlines()[0].endswith("; nothing was imported")


def test_a_semicolon_separated_sentiment_file(db_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "date;score\n2020-01-01;0,5\n2020-01-02;-1\n2020-01-03;-,25\n")
    with get_session(db_url) as session:
        assert import_sentiment_csv(session, path).rows == 3
    with get_session(db_url) as session:
        macro = load_macro(session, source=USER_SOURCE)
    assert macro is not None
    assert macro.scores.tolist() == [0.5, -1.0, -0.25]


def test_a_comma_separated_file_keeps_its_commas(db_url: str, tmp_path: Path) -> None:
    """A semicolon inside a comma-separated file (a quoted cell, a later line) changes
    nothing: the first line's comma decides."""
    text = YAHOO.replace("Adj Close", '"Adj; Close"')
    path = _write(tmp_path, text)
    with get_session(db_url) as session:
        assert import_ohlcv_csv(session, path, "C").rows == 3


def test_header_case_spaces_bom_epoch_millis_extra_columns_and_row_order(
    db_url: str, tmp_path: Path
) -> None:
    text = (
        "\ufeff Open_Time , OPEN,High,low,Close,Volume,trades\n"
        "1503014400000,2,3,1,2.5,10,7\n"
        "1502928000000,1,2,0.5,1.5,0,3\n"
        "\n"
    )
    path = _write(tmp_path, text)
    with get_session(db_url) as session:
        import_ohlcv_csv(session, path, "X")
        history = load_history(session, "X")
    assert history.dates.astype(str).tolist() == ["2017-08-17", "2017-08-18"]
    np.testing.assert_array_equal(history.close, [1.5, 2.5])
    np.testing.assert_array_equal(history.volume, [0.0, 10.0])


# --- bad files -------------------------------------------------------------------------------

GOOD_ROW = "2020-01-01,10,12,9,11,100"


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("2020-02-30,10,12,9,11,100", "date '2020-02-30' is not an ISO date"),
        ("nonsense,10,12,9,11,100", "date 'nonsense' is not an ISO date"),
        ("2020-01-01,10,12,9,11,100", "duplicate date 2020-01-01 (first on line 2)"),
        ("2020-01-03,10,12,9,,100", "2020-01-03: close is empty"),
        ("2020-01-03,10,12,9,nan,100", "2020-01-03: close is 'nan'; expected a finite number"),
        ("2020-01-03,10,12,9,inf,100", "2020-01-03: close is 'inf'; expected a finite number"),
        ("2020-01-03,10,12,9,abc,100", "2020-01-03: close 'abc' is not a number"),
        ("2020-01-03,0,12,9,11,100", "2020-01-03: open 0.0 <= 0; expected prices > 0"),
        ("2020-01-03,10,12,-9,11,100", "2020-01-03: low -9.0 <= 0; expected prices > 0"),
        ("2020-01-03,10,8,9,11,100", "2020-01-03: high 8.0 < low 9.0"),
        ("2020-01-03,10,12,9,11,-1", "2020-01-03: volume -1.0 < 0; expected >= 0"),
        ("2020-01-03,10,12,9,11", "5 columns; expected 6 like the header"),
        ("2020-01-03,10,12,9,11,100,7", "7 columns; expected 6 like the header"),
    ],
)
def test_each_bad_row_kind_is_reported_with_its_line(
    db_url: str, tmp_path: Path, row: str, problem: str
) -> None:
    text = f"date,open,high,low,close,volume\n{GOOD_ROW}\n2020-01-02,10,12,9,11,100\n{row}\n"
    path = _write(tmp_path, text, "prices.csv")
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        import_ohlcv_csv(session, path, "X")
    message = str(info.value)
    assert message.startswith("prices.csv: 1 bad row in OHLCV file ")
    assert "nothing was imported" in message
    assert message.splitlines()[1].startswith(f"  line 4: {problem}")
    assert _count(db_url, Bar) == 0
    assert _count(db_url, Symbol) == 0


def test_all_bad_rows_are_listed_and_the_listing_is_capped(db_url: str, tmp_path: Path) -> None:
    rows = [GOOD_ROW] + [f"2020-02-{d:02d},10,12,9,11,-5" for d in range(1, 26)]
    path = _write(tmp_path, "date,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        import_ohlcv_csv(session, path, "X")
    lines = str(info.value).splitlines()
    assert "25 bad rows" in lines[0]
    assert lines[1] == "  line 3: 2020-02-01: volume -5.0 < 0; expected >= 0"
    assert lines[20].startswith("  line 22: 2020-02-20")
    assert lines[21] == "  ... and 5 more"
    assert len(lines) == 22


def test_line_numbers_count_blank_lines(db_url: str, tmp_path: Path) -> None:
    text = f"date,open,high,low,close,volume\n\n{GOOD_ROW}\n\n2020-01-02,10,12,9,11,-1\n"
    path = _write(tmp_path, text)
    with get_session(db_url) as session, pytest.raises(DataImportError, match="  line 5: "):
        import_ohlcv_csv(session, path, "X")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "the file is empty"),
        ("date,open,high,low,close,volume\n", "no bars after the header"),
        ("day,open,high,low,close,volume\n" + GOOD_ROW, "lacks column(s) date/timestamp"),
        ("date,open,high,low,close\n2020-01-01,1,2,1,1", "lacks column(s) volume"),
    ],
)
def test_bad_headers_and_empty_files(db_url: str, tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        import_ohlcv_csv(session, path, "X")
    assert fragment in str(info.value)
    assert str(info.value).startswith("bars.csv: ")


def test_missing_and_binary_files(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage\x80")
    with get_session(db_url) as session:
        with pytest.raises(DataImportError, match=r"cannot read .*nope\.csv: No such file"):
            import_ohlcv_csv(session, tmp_path / "nope.csv", "X")
        with pytest.raises(DataImportError, match=r"bin\.csv: not a UTF-8 text file"):
            import_ohlcv_csv(session, tmp_path / "bin.csv", "X")


@pytest.mark.parametrize("symbol", ["", " ", "has space", "x" * 65, "-lead"])
def test_bad_symbol_names(db_url: str, tmp_path: Path, symbol: str) -> None:
    path = _write(tmp_path, YAHOO)
    with get_session(db_url) as session, pytest.raises(DataImportError, match="not a valid name"):
        import_ohlcv_csv(session, path, symbol)


def test_a_synthetic_symbol_is_not_overwritten(db_url: str, tmp_path: Path) -> None:
    with get_session(db_url) as session:
        get_or_create_symbol(session, "DEMO", source="synthetic", is_synthetic=True)
    path = _write(tmp_path, YAHOO)
    with get_session(db_url) as session, pytest.raises(DataImportError, match="synthetic"):
        import_ohlcv_csv(session, path, "DEMO")
    assert _count(db_url, Bar) == 0


# --- re-import -------------------------------------------------------------------------------


def test_reimport_is_idempotent_and_adds_new_dates(db_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, YAHOO)
    with get_session(db_url) as session:
        import_ohlcv_csv(session, path, "BTC-USD")
    with get_session(db_url) as session:
        again = import_ohlcv_csv(session, path, "BTC-USD")
    assert (again.inserted, again.updated, again.unchanged, again.created_symbol) == (
        0,
        0,
        3,
        False,
    )
    assert _count(db_url, Bar) == 3

    longer = YAHOO + "2014-09-20,394.673004,423.295990,389.882996,408.903992,408.903992,36863600\n"
    with get_session(db_url) as session:
        report = import_ohlcv_csv(session, _write(tmp_path, longer), "BTC-USD")
    assert (report.rows, report.inserted, report.updated, report.unchanged) == (4, 1, 0, 3)
    with get_session(db_url) as session:
        history = load_history(session, "BTC-USD")
    np.testing.assert_array_equal(history.close, [457.334015, 424.440002, 394.795990, 408.903992])


def _stored(db_url: str) -> list[tuple[Any, ...]]:
    with get_session(db_url) as session:
        rows = session.execute(
            select(
                Bar.symbol_id, Bar.date, Bar.open, Bar.high, Bar.low, Bar.close, Bar.volume
            ).order_by(Bar.symbol_id, Bar.date)
        ).all()
    return [tuple(r) for r in rows]


def _days(n: int, close: float) -> str:
    """A Binance-style file of ``n`` days from 2020-01-01, every close ``close``."""
    first = dt.date(2020, 1, 1)
    rows = [f"{first + dt.timedelta(days=i)},10,{max(12, close)},9,{close},100" for i in range(n)]
    return "timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n"


def test_changed_bars_are_refused_listing_the_dates(db_url: str, tmp_path: Path) -> None:
    with get_session(db_url) as session:
        import_ohlcv_csv(session, _write(tmp_path, _days(10, 11.0)), "X")
    before = _stored(db_url)
    text = _days(12, 11.0).splitlines()
    for line in (2, 4, 5, 7, 8, 9, 10):  # text[i] is day i (2020-01-01 + i - 1)
        text[line] = text[line].replace(",11.0,", ",11.5,")
    changed = _write(tmp_path, "\n".join(text) + "\n", "changed.csv")
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        import_ohlcv_csv(session, changed, "X")
    assert str(info.value) == (
        "changed.csv: 7 bars differ from the stored bars of 'X' (2020-01-02, 2020-01-04, "
        "2020-01-05, 2020-01-07, 2020-01-08 and 2 more); nothing was imported; add --replace "
        "to overwrite them"
    )
    assert _stored(db_url) == before  # all or nothing: the two new dates were not added either

    one = _write(
        tmp_path, _days(3, 11.0).replace("2020-01-02,10,12,9,11.0", "2020-01-02,10,12,9,11.25")
    )
    with (
        get_session(db_url) as session,
        pytest.raises(DataImportError, match=r"\(2020-01-02\); nothing was imported"),
    ):
        import_ohlcv_csv(session, one, "X")

    with get_session(db_url) as session:
        report = import_ohlcv_csv(session, changed, "X", replace=True)
    assert (report.rows, report.inserted, report.updated, report.unchanged) == (12, 2, 7, 3)
    with get_session(db_url) as session:
        close = load_history(session, "X").close
    assert close.tolist() == [11.5 if i in (1, 3, 4, 6, 7, 8, 9) else 11.0 for i in range(12)]
    with get_session(db_url) as session:
        again = import_ohlcv_csv(session, changed, "X")  # identical now: no flag needed
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 12)


def test_a_failed_reimport_leaves_the_stored_bars_alone(db_url: str, tmp_path: Path) -> None:
    with get_session(db_url) as session:
        import_ohlcv_csv(session, _write(tmp_path, YAHOO), "BTC-USD")
    bad = YAHOO.replace("424.440002,424.440002", "999.0,999.0") + "2014-09-20,1,2,3,1,1,1\n"
    with get_session(db_url) as session, pytest.raises(DataImportError, match="line 5"):
        import_ohlcv_csv(session, _write(tmp_path, bad), "BTC-USD")
    with get_session(db_url) as session:
        assert load_history(session, "BTC-USD").close[1] == 424.440002


# --- sentiment -------------------------------------------------------------------------------


def _symbols(db_url: str, *names: str) -> None:
    with get_session(db_url) as session:
        for name in names:
            get_or_create_symbol(session, name, source="test")


def test_macro_sentiment_without_symbol(db_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "date,score\n2020-01-01,0.5\n2020-01-02,-1\n", "macro.csv")
    with get_session(db_url) as session:
        report = import_sentiment_csv(session, path)
    assert (report.kind, report.symbols, report.rows, report.inserted) == ("macro", (), 2, 2)
    assert report.summary().startswith("macro: 2 macro scores 2020-01-01 .. 2020-01-02")
    with get_session(db_url) as session:
        macro = load_macro(session, source=USER_SOURCE)
    assert macro is not None
    assert macro.scores.tolist() == [0.5, -1.0]


def test_news_sentiment_for_the_given_symbol(db_url: str, tmp_path: Path) -> None:
    _symbols(db_url, "BTC-USD")
    path = _write(tmp_path, "Date,Sentiment\n2020-01-01,0.25\n")
    with get_session(db_url) as session:
        report = import_sentiment_csv(session, path, "BTC-USD")
    assert (report.kind, report.symbols) == ("news", ("BTC-USD",))
    with get_session(db_url) as session:
        news = load_news(session, "BTC-USD")
    assert news is not None
    assert news.scores.tolist() == [0.25]
    assert _count(db_url, MacroSentiment) == 0


def test_news_sentiment_with_a_symbol_column(db_url: str, tmp_path: Path) -> None:
    _symbols(db_url, "A", "B")
    text = "date,symbol,score\n2020-01-01,A,0.1\n2020-01-01,B,0.2\n2020-01-02,A,0.3\n"
    with get_session(db_url) as session:
        report = import_sentiment_csv(session, _write(tmp_path, text))
    assert (report.symbols, report.rows) == (("A", "B"), 3)
    with get_session(db_url) as session:
        a, b = load_news(session, "A"), load_news(session, "B")
    assert a is not None
    assert b is not None
    assert (a.scores.tolist(), b.scores.tolist()) == ([0.1, 0.3], [0.2])


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("2020-01-02,A,1.5", "2020-01-02: score 1.5 is outside [-1, 1]"),
        ("2020-01-02,A,-1.01", "2020-01-02: score -1.01 is outside [-1, 1]"),
        ("2020-01-02,A,", "2020-01-02: score is empty"),
        ("2020-01-02,A,nan", "2020-01-02: score is 'nan'; expected a finite number"),
        ("2020-01-01,A,0.3", "duplicate date 2020-01-01 (first on line 2)"),
        ("someday,A,0.3", "date 'someday' is not an ISO date"),
        ("2020-01-02,ZZZ,0.3", "symbol 'ZZZ' is not in the store; import its bars first"),
        ("2020-01-02,A", "2 columns; expected 3 like the header"),
    ],
)
def test_bad_sentiment_rows(db_url: str, tmp_path: Path, row: str, problem: str) -> None:
    _symbols(db_url, "A")
    text = f"date,symbol,score\n2020-01-01,A,0.1\n{row}\n"
    path = _write(tmp_path, text, "news.csv")
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        import_sentiment_csv(session, path)
    assert str(info.value).startswith("news.csv: 1 bad row in sentiment file")
    assert str(info.value).splitlines()[1].startswith(f"  line 3: {problem}")
    assert _count(db_url, NewsSentiment) == 0


def test_sentiment_symbol_column_must_match_the_given_symbol(db_url: str, tmp_path: Path) -> None:
    _symbols(db_url, "A", "B")
    path = _write(tmp_path, "date,symbol,score\n2020-01-01,A,0.1\n2020-01-01,B,0.1\n")
    with get_session(db_url) as session, pytest.raises(DataImportError) as info:
        import_sentiment_csv(session, path, "A")
    assert "line 3: symbol 'B'; expected 'A'" in str(info.value)


def test_sentiment_for_an_unknown_given_symbol(db_url: str, tmp_path: Path) -> None:
    _symbols(db_url, "A")
    path = _write(tmp_path, "date,score\n2020-01-01,0.1\n")
    with (
        get_session(db_url) as session,
        pytest.raises(DataImportError, match=r"symbol 'Q' is not in the store.*known symbols: A"),
    ):
        import_sentiment_csv(session, path, "Q")


def test_sentiment_reimport_counts(db_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "date,score\n2020-01-01,0.5\n2020-01-02,0.1\n")
    with get_session(db_url) as session:
        import_sentiment_csv(session, path)
    path = _write(tmp_path, "date,score\n2020-01-01,0.5\n2020-01-02,0.2\n2020-01-03,0\n")
    with get_session(db_url) as session:
        report = import_sentiment_csv(session, path)
    assert (report.inserted, report.updated, report.unchanged) == (1, 1, 1)
    with get_session(db_url) as session:
        macro = load_macro(session, source=USER_SOURCE)
    assert macro is not None
    assert macro.scores.tolist() == [0.5, 0.2, 0.0]
