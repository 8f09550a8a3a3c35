"""The store readers' SQLite way (``raw._dated``: numbers streamed, dates as one text per read)
against the general way (``raw._read``), for the dataset readers and ``load_history`` /
``load_news`` / ``load_macro``: the same arrays, the same errors, one snapshot."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

import otonom_schema as s
from otonom_runtime.backtest import run_backtest
from otonom_runtime.store import (
    datasets,
    get_session,
    init_db,
    load_history,
    load_macro,
    load_news,
    raw,
)
from otonom_runtime.store.datasets import (
    load_bar_window,
    load_decisions,
    load_state_bars,
    mapped_reads,
)
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import write_synthetic

ROOT = Path(__file__).resolve().parents[3]
NAME = "DEMO-DS"
FIRST, LAST = dt.date(2021, 1, 1), dt.date(2021, 9, 30)
RUN_START = dt.date(2021, 6, 1)


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, int]:
    """A SQLite store with a synthetic symbol (bars, news, macro) and a backtest run over it:
    its URL and the run id."""
    url = f"sqlite:///{(tmp_path / 'otonom.db').as_posix()}"
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, [NAME], FIRST, LAST, 3)
    with get_session(url) as session:
        strategy = load_strategy(ROOT / "strategies" / "baseline_v1.yaml")
        run_id = run_backtest(session, strategy, [NAME], RUN_START, LAST).run_id
    return url, run_id


Reads = dict[str, Callable[[Any], Any]]


def _reads(run_id: int) -> Reads:
    return {
        "decisions": lambda s: load_decisions(s, run_id, NAME, RUN_START, LAST),
        "bars": lambda s: load_bar_window(s, NAME, RUN_START, LAST, 20),
        "news": lambda s: load_news(s, NAME, source="synthetic", start=FIRST, end=LAST),
        "macro": lambda s: load_macro(s, source="synthetic", start=FIRST, end=LAST),
        "history": lambda s: load_history(s, NAME, start=FIRST, end=LAST),
    }


def _arrays(read: Any) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays of a reader's result (a dataclass of arrays, or a schema type)."""
    return {k: v for k, v in vars(read).items() if isinstance(v, np.ndarray)}


def _general(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the SQLite way decline, so the readers take the general way."""
    monkeypatch.setattr(raw, "_dated", lambda *args: None)
    for name in ("_dated_text", "_dated_raw"):
        monkeypatch.setattr(datasets, name, lambda *args: None)


@contextmanager
def _counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Record whether each ``_dated`` call served its read."""
    served: list[bool] = []

    def spying(real: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any) -> Any:
            out = real(*args)
            served.append(out is not None)
            return out

        return spy

    with monkeypatch.context() as m:
        m.setattr(raw, "_dated", spying(raw._dated))
        m.setattr(datasets, "_dated_text", spying(raw._dated_text))
        yield served


def test_the_sqlite_way_reads_what_the_general_way_reads(
    store: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, run_id = store
    reads = _reads(run_id)
    with get_session(url) as session, _counting(monkeypatch) as served:
        fast = {kind: read(session) for kind, read in reads.items()}
    assert served == [True] * 5
    _general(monkeypatch)
    with get_session(url) as session:
        slow = {kind: read(session) for kind, read in reads.items()}
    for kind in reads:
        assert fast[kind] is not None
        a, b = _arrays(fast[kind]), _arrays(slow[kind])
        assert a.keys() == b.keys()
        assert a
        for name in a:
            assert a[name].dtype == b[name].dtype, (kind, name)
            assert a[name].tobytes() == b[name].tobytes(), (kind, name)
    assert np.isinf(fast["decisions"].days_since_last_trade).any()  # NULL: never traded


def test_no_row_reads_as_before(store: tuple[str, int]) -> None:
    url, run_id = store
    later = (dt.date(2030, 1, 1), dt.date(2030, 2, 1))
    with get_session(url) as session:
        assert load_decisions(session, run_id, NAME, *later) is None
        assert load_bar_window(session, NAME, *later, 20) is not None  # the lookback bars
        assert load_bar_window(session, NAME, FIRST, dt.date(2020, 1, 1), 20) is None
        assert load_news(session, NAME, source="synthetic", start=later[0], end=later[1]) is None
        assert load_news(session, NAME, source="other", start=FIRST, end=LAST) is None
        assert load_macro(session, source="synthetic", start=later[0], end=later[1]) is None
        with pytest.raises(KeyError, match="unknown symbol 'NOPE'"):
            load_news(session, "NOPE", source="synthetic", start=FIRST, end=LAST)


@pytest.mark.parametrize(
    ("day", "odd"),
    [
        ("2021-06-15", "2021-06-15 00:00:00"),
        ("2021-06-30", "2021-06-31"),
        ("2021-07-10", "2021-07-1"),
        ("2021-08-09", "2021-08-0\N{FULLWIDTH DIGIT NINE}"),
        ("2021-08-20", "2021-08-20x"),
    ],
)
def test_a_date_the_sqlite_way_refuses_reads_or_fails_as_before(
    store: tuple[str, int], monkeypatch: pytest.MonkeyPatch, day: str, odd: str
) -> None:
    """Text that is not canonical ``YYYY-MM-DD`` of a real day (written by hand; each ``odd``
    sorts among the dates read) goes the general way: read, or refused, exactly as the
    general readers read or refuse it."""
    url, run_id = store
    with get_session(url) as session:
        for table in ("bars", "decisions", "news_sentiment", "macro_sentiment"):
            session.execute(
                text(f"UPDATE {table} SET date = :odd WHERE date = :day"), {"odd": odd, "day": day}
            )

    def outcome(read: Callable[[Any], Any]) -> Any:
        with get_session(url) as session:
            try:
                got = read(session)
            except Exception as exc:  # the outcome is compared
                return type(exc), str(exc)
        return None if got is None else {k: v.tobytes() for k, v in _arrays(got).items()}

    reads = _reads(run_id)
    with _counting(monkeypatch) as served:
        fast = {kind: outcome(read) for kind, read in reads.items()}
    assert served == [False] * 5
    _general(monkeypatch)
    assert fast == {kind: outcome(read) for kind, read in reads.items()}
    assert all(isinstance(out, tuple) for out in fast.values())  # each refused, as before


def test_the_date_query_reads_the_number_querys_snapshot(
    store: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bar written by another connection between the two queries of a read is in neither."""
    url, _ = store
    end = LAST + dt.timedelta(days=5)  # the bars end on LAST
    with get_session(url) as session:
        before = load_bar_window(session, NAME, RUN_START, end, 20)
    assert before is not None
    real = raw._cursor
    calls: list[int] = []

    def writing_between(*args: Any) -> AbstractContextManager[Any]:
        calls.append(1)
        if len(calls) == 2:  # the date query is next: another writer commits first
            with sqlite3.connect(url.removeprefix("sqlite:///")) as other:
                other.execute(
                    "INSERT INTO bars (symbol_id, date, open, high, low, close, volume) "
                    "SELECT id, '2021-10-01', 1, 1, 1, 1, 1 FROM symbols WHERE name = ?",
                    (NAME,),
                )
        return real(*args)

    monkeypatch.setattr(raw, "_cursor", writing_between)
    with get_session(url) as session:
        during = load_bar_window(session, NAME, RUN_START, end, 20)
        assert len(calls) == 2  # the SQLite way
    assert during is not None
    np.testing.assert_array_equal(during.dates, before.dates)
    np.testing.assert_array_equal(during.close, before.close)
    with get_session(url) as session:
        after = load_bar_window(session, NAME, RUN_START, end, 20)
    assert after is not None
    assert after.dates[-1] == np.datetime64("2021-10-01")
    assert len(after) == len(before) + 1


def test_iso_days_reads_canonical_days_only() -> None:
    days = ["0001-01-01", "1969-12-31", "2020-02-29", "2021-12-31", "9999-12-31"]
    got = raw._iso_days("|".join(days), len(days))
    assert got is not None
    assert got.dtype == np.dtype("datetime64[D]")
    assert got.tolist() == [dt.date.fromisoformat(d) for d in days]
    assert raw._iso_days("2021-01-05", 1) == np.array(["2021-01-05"], dtype="datetime64[D]")
    refused: list[tuple[object, int]] = [
        (None, 1),
        (20210105, 1),
        ("2021-01-05", 2),
        ("2021-01-05|2021-01-05", 2),  # not ascending
        ("2021-01-06|2021-01-05", 2),
        ("2021-02-29", 1),
        ("2021-04-31", 1),
        ("2021-13-01", 1),
        ("2021-00-10", 1),
        ("2021-01-00", 1),
        ("0000-01-01", 1),
        ("2021-01-0\N{FULLWIDTH DIGIT FIVE}", 1),
        ("2021/01/05", 1),
        ("2021-01-05 ", 1),
        ("2021-01-052|021-01-06", 2),  # lengths 11 and 9
        ("2021-01-05|2021-01-06|", 2),
        ("+021-01-05", 1),
        ("2021-01-0a", 1),
    ]
    for joined, rows in refused:
        assert raw._iso_days(joined, rows) is None, joined


def test_state_bars_are_the_bar_window_with_the_close_as_open(
    store: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = store
    with get_session(url) as session, _counting(monkeypatch) as served:
        bars = load_state_bars(session, NAME, RUN_START, LAST, 20)
        window = load_bar_window(session, NAME, RUN_START, LAST, 20)
    assert served == [True, True]
    assert bars is not None
    assert window is not None
    for name in ("dates", "high", "low", "close", "volume"):
        assert getattr(bars, name).tobytes() == getattr(window, name).tobytes(), name
    assert bars.open.tobytes() == window.close.tobytes()
    assert s.compute_states(bars).tobytes() == s.compute_states(window).tobytes()


@pytest.mark.parametrize("open_", ["0", "-1.5", "9e999"])
def test_a_bad_open_is_refused_by_the_state_bars_as_by_the_window(
    store: tuple[str, int], open_: str
) -> None:
    """The open the state bars do not fetch is checked in SQL: a bar whose open is not a
    finite price > 0 takes the general way, which refuses it with the window's own error."""
    url, _ = store
    with get_session(url) as session:
        session.execute(text(f"UPDATE bars SET open = {open_} WHERE date = '2021-07-01'"))
    errors = []
    with get_session(url) as session:
        for read in (load_state_bars, load_bar_window):
            with pytest.raises(s.SchemaError, match="open at row") as info:
                read(session, NAME, RUN_START, LAST, 20)
            errors.append(str(info.value))
    assert errors[0] == errors[1]


def test_mapped_reads_map_the_file_for_the_block_only(store: tuple[str, int]) -> None:
    """The connection's ``mmap_size`` is what it was after the block, however it ends, and
    the reads inside it read the same arrays."""
    url, run_id = store
    reads = _reads(run_id)

    def mmap_size(session: Any) -> int:
        return int(session.connection().exec_driver_sql("PRAGMA mmap_size").scalar_one())

    with get_session(url) as session:
        outside = {kind: _arrays(read(session)) for kind, read in reads.items()}
        assert mmap_size(session) == 0
        with mapped_reads(session):
            assert mmap_size(session) == 1 << 30
            inside = {kind: _arrays(read(session)) for kind, read in reads.items()}
        assert mmap_size(session) == 0
        with pytest.raises(KeyError), mapped_reads(session):
            load_news(session, "NOPE", source="synthetic", start=FIRST, end=LAST)
        assert mmap_size(session) == 0
    for kind, arrays in outside.items():
        for name, values in arrays.items():
            assert values.tobytes() == inside[kind][name].tobytes(), (kind, name)


def test_iso_days_checks_every_character_of_a_long_text() -> None:
    """Dates are checked in blocks of 64 and a tail: a bad character anywhere is found."""
    days = np.arange(np.datetime64("2019-12-25"), np.datetime64("2020-05-03"))  # 130 days
    text = "|".join(str(d) for d in days)
    got = raw._iso_days(text, days.size)
    assert got is not None
    assert got.tobytes() == days.astype("datetime64[D]").tobytes()
    for row in (0, 10, 63, 64, 127, 128, 129):
        for at, bad in ((0, "x"), (4, "/"), (7, "0"), (9, ":"), (10, "-")):
            i = row * 11 + at
            if i >= len(text):
                continue
            assert raw._iso_days(text[:i] + bad + text[i + 1 :], days.size) is None, (row, at)


def _symbol_reads(session: Any, run_id: int) -> datasets.SymbolReads:
    return datasets.load_symbol_reads(
        session,
        run_id,
        NAME,
        RUN_START,
        LAST,
        back=20,
        news_source="synthetic",
        news_age=dt.timedelta(days=7),
    )


def _symbol_outcome(url: str, run_id: int) -> Any:
    """``load_symbol_reads``' arrays (None for a part not read), or its error; the bars'
    opens left out (``load_state_bars``: the close on SQLite's way, the open elsewhere)."""
    with get_session(url) as session:
        try:
            got = _symbol_reads(session, run_id)
        except Exception as exc:  # the outcome is compared
            return type(exc), str(exc)
    return {part: None if read is None else _bytes(read) for part, read in vars(got).items()}


def _bytes(read: Any) -> dict[str, bytes]:
    return {k: v.tobytes() for k, v in _arrays(read).items() if k != "open"}


def _parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the rows of each date text ``raw._iso_days`` parses."""
    rows: list[int] = []
    real = raw._iso_days

    def spy(joined: object, n: int) -> Any:
        rows.append(n)
        return real(joined, n)

    monkeypatch.setattr(raw, "_iso_days", spy)
    return rows


def test_symbol_reads_are_the_three_readers(
    store: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_symbol_reads`` reads what ``load_decisions``, ``load_state_bars`` and
    ``load_news`` read; on SQLite only the bars' dates are parsed (the decisions' and the
    news' are found in their text), and the general way reads the same."""
    url, run_id = store
    with get_session(url) as session:
        decisions = load_decisions(session, run_id, NAME, RUN_START, LAST)
        assert decisions is not None
        first, last = decisions.dates[0].item(), decisions.dates[-1].item()
        want = {
            "decisions": decisions,
            "bars": load_state_bars(session, NAME, first, last, 20),
            "news": load_news(
                session, NAME, source="synthetic", start=first - dt.timedelta(days=7), end=last
            ),
        }
    parsed = _parses(monkeypatch)
    fast = _symbol_outcome(url, run_id)
    assert len(parsed) == 1  # the bars' dates alone
    assert fast == {k: _bytes(v) for k, v in want.items()}
    monkeypatch.undo()
    _general(monkeypatch)
    assert _symbol_outcome(url, run_id) == fast


@pytest.mark.parametrize(
    "change",
    [
        "DELETE FROM decisions WHERE date IN ('2021-06-10', '2021-07-04')",  # not every bar
        "DELETE FROM bars WHERE date = '2021-06-20'",  # a decision without its bar
        "DELETE FROM news_sentiment WHERE date = '2021-07-04'",  # news not on every bar
        "DELETE FROM bars WHERE date >= '2021-05-01'",  # no bar for the decisions
        "DELETE FROM news_sentiment",  # no news
        "DELETE FROM decisions",  # no decision
        "UPDATE decisions SET date = '2021-06-31' WHERE date = '2021-06-30'",  # odd text
        "UPDATE bars SET date = '2021-07-1' WHERE date = '2021-07-10'",
        "UPDATE news_sentiment SET date = '2021-07-1' WHERE date = '2021-07-10'",
        "UPDATE bars SET open = 0 WHERE date = '2021-07-01'",
        "UPDATE decisions SET strength = 'x' WHERE date = '2021-07-01'",
    ],
)
def test_symbol_reads_of_odd_stores_are_the_general_ways(
    store: tuple[str, int], monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Whatever the store holds, ``load_symbol_reads`` reads (or raises) what the general
    way does."""
    url, run_id = store
    with get_session(url) as session:
        session.execute(text(change))
    fast = _symbol_outcome(url, run_id)
    _general(monkeypatch)
    assert _symbol_outcome(url, run_id) == fast


def test_days_of_takes_an_earlier_reads_dates_only_for_whole_dates() -> None:
    days = np.arange(np.datetime64("2021-01-01"), np.datetime64("2021-03-01"))
    text = "|".join(str(d) for d in days)
    like = (text, days)
    inner = "|".join(str(d) for d in days[5:20])
    got = raw._days_of(inner, 15, like)
    assert got is not None
    assert got.base is days or got.base is days.base  # a slice: not parsed
    assert got.tobytes() == days[5:20].tobytes()
    assert raw._days_of(text, days.size, like) is not None
    # not in the text, not at a date's start, or not that many rows: parsed (or refused)
    other = "2021-03-05|2021-03-06"
    assert raw._days_of(other, 2, like).tolist() == [dt.date(2021, 3, 5), dt.date(2021, 3, 6)]
    assert raw._days_of(text[1:21], 2, like) is None
    assert raw._days_of(inner, 14, like) is None
    assert raw._days_of(inner, 15, None) is not None


def test_days_of_looks_where_the_first_date_is() -> None:
    """The first date's place in the text decides: the rest must follow it there."""
    days = np.arange(np.datetime64("2021-01-01"), np.datetime64("2021-01-11"))
    text = "|".join(str(d) for d in days)
    like = (text, days)
    last = str(days[-1])
    assert raw._days_of(last, 1, like).tobytes() == days[-1:].tobytes()
    assert raw._days_of(f"{days[2]}|{days[4]}", 2, like).tolist() == [
        days[2].item(),
        days[4].item(),
    ]  # parsed: not those bars' dates in a row
    assert raw._days_of(f"{last}|2021-01-12", 2, like).tolist()[-1] == dt.date(2021, 1, 12)


def test_shared_dates_parse_bars_once_for_symbols_sharing_them(
    store: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one ``SharedDates``, bars whose date text was read before are not parsed again
    (here the same symbol twice, then over a shorter range, then against an unrelated text):
    the same arrays as without it."""
    url, run_id = store
    with get_session(url) as session:
        alone = [_bytes(p) for p in vars(_symbol_reads(session, run_id)).values()]
        parsed = _parses(monkeypatch)
        shared = datasets.SharedDates()

        def reads(start: dt.date = RUN_START, *, share: bool = True) -> list[dict[str, bytes]]:
            got = datasets.load_symbol_reads(
                session,
                run_id,
                NAME,
                start,
                LAST,
                news_source="synthetic",
                back=20,
                news_age=dt.timedelta(days=7),
                shared=shared if share else None,
            )
            return [_bytes(p) for p in vars(got).values()]

        assert reads() == alone
        assert len(parsed) == 1
        assert shared.like is not None
        assert not shared.like[1].flags.writeable  # its views are handed out
        assert reads() == alone
        assert len(parsed) == 1  # found whole: not parsed
        later = dt.date(2021, 8, 2)
        assert reads(later) == reads(later, share=False)
        assert len(parsed) == 2  # the one without ``shared``
        kept = shared.like
        shared.like = ("1999-01-04|1999-01-05", kept[1][:2])
        assert reads() == alone
        assert len(parsed) == 3  # not found in an unrelated text: parsed
        assert shared.like is not None
        assert shared.like[0] == kept[0]  # the longer text is kept
