"""A daemon's whole-history reads (``store.ticks.load_tick_bars`` / ``load_tick_news``, a first
tick's): the rows streamed as numbers give what the store's readers give symbol by symbol
(``load_history`` / ``load_news``), on SQLite and PostgreSQL, and dates stored as odd text are
read, or refused, as an ORM read reads them. Real stores; values compared with ==."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert, text

from otonom_runtime.store import (
    BacktestRun,
    Decision,
    NewsSentiment,
    get_or_create_symbol,
    get_session,
    tickplans,
)
from otonom_runtime.store import ticks as ticks_module
from otonom_runtime.store.readers import load_history, load_news
from otonom_runtime.store.ticks import (
    load_live_decisions,
    load_live_tail,
    load_tick_bars,
    load_tick_bars_ahead,
    load_tick_news,
    load_tick_news_ahead,
    new_rows,
    tick_marks,
    tick_symbols,
)

D0 = dt.date(2021, 1, 1)


def _news(session: Any, name: str, source: str, start: dt.date, scores: list[float]) -> None:
    symbol, _ = get_or_create_symbol(session, name, source="test")
    session.execute(
        insert(NewsSentiment),
        [
            {
                "symbol_id": symbol.id,
                "source": source,
                "date": start + dt.timedelta(days=2 * i),
                "score": s,
            }
            for i, s in enumerate(scores)
        ],
    )


def _store(url: str, add_bars: Any) -> None:
    with get_session(url) as session:
        add_bars(session, "A", D0, 40, price=10.0)
        add_bars(session, "B", D0 + dt.timedelta(days=5), 30, step_days=2, price=1.7)
        add_bars(session, "C", D0, 3, price=1e6)
        get_or_create_symbol(session, "EMPTY", source="test")  # no bar, no news
        _news(session, "A", "feed", D0, [0.5, -0.25, 1.0, 1e-300])
        _news(session, "A", "other", D0, [0.75, 0.125])  # another source: not A's
        _news(session, "B", "other", D0 + dt.timedelta(days=1), [-1.0, 0.0, 0.3])
        _news(session, "C", "feed", D0, [0.1])


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, add_bars: Any) -> str:
    found: str = request.getfixturevalue("db_url" if request.param == "sqlite" else "pg")
    _store(found, add_bars)
    return found


def test_whole_reads_give_what_the_readers_give_symbol_by_symbol(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the rows went the ORM's way")

    monkeypatch.setattr(ticks_module, "_rows", refuse)  # the streamed way serves a plain store
    end = D0 + dt.timedelta(days=50)
    sources = {"A": "feed", "B": "other", "C": "feed", "EMPTY": "feed"}
    with get_session(url) as session:
        ids, _ = tick_symbols(session, list(sources))
        bars = load_tick_bars(session, {ids[n]: n for n in sources}, end)
        news = load_tick_news(session, {ids[n]: s for n, s in sources.items()}, end)
        assert list(bars) == sorted(ids[n] for n in ("A", "B", "C"))  # EMPTY has no bar
        assert list(news) == sorted(ids[n] for n in ("A", "B", "C"))
        for name in ("A", "B", "C"):
            got, want = bars[ids[name]], load_history(session, name, end=end)
            assert got.symbol == name
            for field in ("dates", "open", "high", "low", "close", "volume"):
                a, b = getattr(got, field), getattr(want, field)
                assert a.dtype == b.dtype, (name, field)
                assert np.array_equal(a, b), (name, field)
            series = load_news(session, name, source=sources[name], end=end)
            assert series is not None
            assert np.array_equal(news[ids[name]].dates, series.dates)
            assert np.array_equal(news[ids[name]].scores, series.scores)
        assert news[ids["A"]].scores.tolist() == [0.5, -0.25, 1.0, 1e-300]  # not "other"'s
        assert load_tick_bars(session, {ids["EMPTY"]: "EMPTY"}, end) == {}
        assert load_tick_news(session, {ids["A"]: "none such"}, end) == {}
        assert len(load_tick_bars(session, {ids["A"]: "A"}, D0 + dt.timedelta(days=4))[ids["A"]])
        # read on to a later date: the rows after ``end`` apart, by symbol and date
        names = {ids[n]: n for n in sources}
        ahead = end + dt.timedelta(days=1)
        histories, later = load_tick_bars_ahead(session, names, end, ahead)
        assert list(histories) == list(bars)
        for sid, history in histories.items():
            assert np.array_equal(history.close, bars[sid].close)
        everything = load_tick_bars(session, names, ahead)
        after = [(sid, h.dates[-1], h.close[-1]) for sid, h in everything.items()
                 if h.dates[-1] > np.datetime64(end)]  # fmt: skip
        assert after  # the test reads something ahead
        rows = zip(later.keys.tolist(), later.days, later.values[3].tolist(), strict=True)
        assert list(rows) == after
        scores, later_news = load_tick_news_ahead(
            session, {ids[n]: s for n, s in sources.items()}, D0, D0 + dt.timedelta(days=2)
        )
        assert scores[ids["A"]].scores.tolist() == [0.5]
        assert later_news.values[0][later_news.keys == ids["A"]].tolist() == [-0.25]


def test_dates_stored_as_odd_text_are_read_as_the_orm_reads_them(
    db_url: str, add_bars: Any
) -> None:
    """SQLite keeps dates as text: text that is not canonical ``YYYY-MM-DD`` (written by
    hand) sends the read the ORM's way, which parses it (``2021-W01-2``) or refuses it
    (``2021-02-30``: day numbers alone would roll it over to March 2) as every reader does."""
    with get_session(db_url) as session:
        add_bars(session, "A", D0, 3)
        _news(session, "A", "feed", D0, [0.5])
        session.execute(text("UPDATE bars SET date = '2021-W01-2' WHERE date = '2021-01-01'"))
        session.execute(text("UPDATE news_sentiment SET date = '2020-W53-4'"))
    end = D0 + dt.timedelta(days=10)
    with get_session(db_url) as session:
        ids, _ = tick_symbols(session, ["A"])
        bars = load_tick_bars(session, {ids["A"]: "A"}, end)[ids["A"]]
        assert bars.dates.tolist() == load_history(session, "A", end=end).dates.tolist()
        assert bars.dates.tolist()[0] == dt.date(2021, 1, 2)  # W01-2 is Jan 5: sorted as text
        news = load_tick_news(session, {ids["A"]: "feed"}, end)[ids["A"]]
        assert news.dates.tolist() == [dt.date(2020, 12, 31)]
        session.execute(text("UPDATE bars SET date = '2021-02-30' WHERE date = '2021-01-02'"))
        with pytest.raises(ValueError, match="day is out of range"):
            load_tick_bars(session, {ids["A"]: "A"}, dt.date(2021, 3, 1))
        session.rollback()


def _decisions(session: Any, strategy: str | None, rows: list[tuple[str, int, int, float]]) -> None:
    """Decision rows of one run: (symbol, day offset from D0, action, strength) each, the
    equity 1000 + offset + strength (live rows: ``strategy``; None: a backtest's)."""
    run = BacktestRun(
        strategy_name=strategy or "bt",
        strategy_hash="h",
        start_date=D0,
        end_date=D0,
    )
    session.add(run)
    session.flush()
    for name, day, action, strength in rows:
        symbol, _ = get_or_create_symbol(session, name, source="test")
        session.add(
            Decision(
                run_id=run.id,
                symbol_id=symbol.id,
                date=D0 + dt.timedelta(days=day),
                action=action,
                strength=strength,
                position=0.0,
                leverage=0.0,
                cash_fraction=1.0,
                days_since_last_trade=float("inf"),
                equity=1000.0 + day + strength,
                live_strategy=strategy,
            )
        )
    session.flush()


def test_live_decisions_streamed_are_those_the_orm_reads(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_live_decisions`` (a restarted daemon's read of every symbol's live decisions)
    streamed as numbers gives what the ORM's way gives: the strategy's live rows only, oldest
    first, the first one's equity."""
    with get_session(url) as session:
        _decisions(session, "live", [("A", 3, 1, 0.25), ("A", 1, 0, 0.0), ("B", 2, 2, 1.0)])
        _decisions(session, "live", [("A", 4, 2, 1e-300), ("C", 9, 1, 0.5)])
        _decisions(session, "other", [("A", 2, 1, 0.75)])
        _decisions(session, None, [("B", 5, 1, 0.5)])  # a backtest's row: not live
        session.commit()
        ids, _ = tick_symbols(session, ["A", "B", "C", "EMPTY"])
        wanted = [ids[n] for n in ("A", "B", "EMPTY")]
        streamed = load_live_decisions(session, "live", wanted)
        monkeypatch.setattr(ticks_module, "_numbers", lambda *args, **kwargs: None)
        orm = load_live_decisions(session, "live", wanted)
    assert list(streamed) == list(orm) == [ids["A"], ids["B"]]
    for sid in streamed:
        got, want = streamed[sid], orm[sid]
        assert got.dates.dtype == want.dates.dtype
        assert np.array_equal(got.dates, want.dates)
        assert got.actions == want.actions
        assert got.strengths == want.strengths
        assert got.first_equity == want.first_equity
        assert all(type(a) is int for a in got.actions)
    a = streamed[ids["A"]]
    assert a.dates.tolist() == [D0 + dt.timedelta(days=d) for d in (1, 3, 4)]
    assert (a.actions, a.strengths, a.first_equity) == ([0, 1, 2], [0.0, 0.25, 1e-300], 1001.0)


def test_steady_reads_streamed_are_those_the_driver_rows_give(
    url: str, add_bars: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steady tick's reads of what is new (``new_rows``: the bars and one source's news
    dated after the last tick or inserted since; ``load_live_tail``), streamed as numbers,
    give the driver's rows' values: the keys asked for only, by key and date, a bar inserted
    out of order (an id above the last seen, dated before the last tick) included."""
    after, end = D0 + dt.timedelta(days=20), D0 + dt.timedelta(days=25)
    with get_session(url) as session:
        seen = tick_marks(session).ids
        add_bars(session, "D", D0, 3, price=5.0)  # another symbol's rows, inserted since
        add_bars(session, "C", D0 + dt.timedelta(days=10), 1, price=2.0)  # out of order
        _news(session, "C", "feed", D0 + dt.timedelta(days=11), [0.75])  # out of order
        _decisions(session, "live", [("A", 21, 1, 0.25), ("B", 22, 2, 1e-300), ("A", 19, 0, 0.0)])
        _decisions(session, "live", [("A", 23, 2, 0.5), ("C", 24, 1, 0.125)])
        _decisions(session, "other", [("A", 24, 1, 0.75)])
        session.commit()
        ids, _ = tick_symbols(session, ["A", "B", "C", "EMPTY"])
        keys = [ids[n] for n in ("C", "A", "B", "EMPTY")]
        reads = {
            "bars": lambda: new_rows(session, "bars", keys, after, end, seen["bars"]),
            "news": lambda: new_rows(session, "news", keys, D0, end, seen["news"], "feed"),
            "live": lambda: load_live_tail(session, "live", keys, after),
            "bars by id": lambda: new_rows(
                session, "bars", keys, end, end, seen["bars"], dated=False
            ),
            "news by id": lambda: new_rows(
                session, "news", keys, end, end, seen["news"], "feed", dated=False
            ),
        }
        streamed = {name: read() for name, read in reads.items()}
        monkeypatch.setattr(tickplans, "_BATCH", 2)  # the rows fetched two at a time
        batched = {name: read() for name, read in reads.items()}
        monkeypatch.setattr(ticks_module, "_numbers", lambda *args, **kwargs: None)
        driver = {name: read() for name, read in reads.items()}
    for name in reads:
        for got, again, want in zip(streamed[name], batched[name], driver[name], strict=True):
            assert got.dtype == want.dtype, name
            assert np.array_equal(got, want), name
            assert np.array_equal(again, want), name
    bars = streamed["bars"]
    assert set(bars.keys.tolist()) == {ids["A"], ids["B"], ids["C"]}  # not D: not asked
    assert bars.days[bars.keys == ids["C"]].tolist() == [D0 + dt.timedelta(days=10)]
    assert bars.values[3][bars.keys == ids["C"]].tolist() == [2.0]  # its close
    assert bars.days.max() <= np.datetime64(end)
    assert np.array_equal(bars.keys, np.sort(bars.keys, kind="stable"))
    news = streamed["news"]
    c = news.keys == ids["C"]
    assert news.days[c].tolist() == [D0 + dt.timedelta(days=11)]  # inserted since, dated before
    assert news.values[0][c].tolist() == [0.75]
    assert news.values[0][news.keys == ids["A"]].tolist() == [-0.25, 1.0, 1e-300]  # "feed"
    by_id = streamed["bars by id"]  # those inserted since alone: C's (D's not asked)
    assert by_id.keys.tolist() == [ids["C"]]
    assert by_id.days.tolist() == [D0 + dt.timedelta(days=10)]
    assert streamed["news by id"].keys.tolist() == [ids["C"]]
    sids, days, actions, strengths = streamed["live"]
    rows = zip(sids.tolist(), days.tolist(), actions.tolist(), strengths.tolist(), strict=True)
    assert list(rows) == [
        (ids["A"], D0 + dt.timedelta(days=21), 1, 0.25),
        (ids["A"], D0 + dt.timedelta(days=23), 2, 0.5),
        (ids["B"], D0 + dt.timedelta(days=22), 2, 1e-300),
        (ids["C"], D0 + dt.timedelta(days=24), 1, 0.125),
    ]
