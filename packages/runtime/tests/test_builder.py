"""RlStateBuilder: store -> state, equal to the schema's vectorised features, causal, cached."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

import otonom_schema as s
from otonom_runtime._errors import StateBuildError, UnknownSymbolError
from otonom_runtime.builder import RlStateBuilder
from otonom_runtime.store import (
    USER_SOURCE,
    Bar,
    MacroSentiment,
    NewsSentiment,
    get_or_create_symbol,
    get_session,
    init_db,
)
from otonom_schema.testing import random_history, random_sentiment


def _day(d: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(d))


def write_history(
    engine: Engine,
    history: s.MarketHistory,
    news: s.SentimentSeries | None = None,
    macro: s.SentimentSeries | None = None,
) -> None:
    with get_session(engine) as session:
        symbol, _ = get_or_create_symbol(session, history.symbol, source="test")
        session.add_all(
            Bar(
                symbol_id=symbol.id,
                date=_day(history.dates[i]),
                open=float(history.open[i]),
                high=float(history.high[i]),
                low=float(history.low[i]),
                close=float(history.close[i]),
                volume=float(history.volume[i]),
            )
            for i in range(len(history))
        )
        if news is not None:
            session.add_all(
                NewsSentiment(symbol_id=symbol.id, source=USER_SOURCE, date=_day(d), score=float(v))
                for d, v in zip(news.dates, news.scores, strict=False)
            )
        if macro is not None:
            session.add_all(
                MacroSentiment(source=USER_SOURCE, date=_day(d), score=float(v))
                for d, v in zip(macro.dates, macro.scores, strict=False)
            )


@pytest.fixture
def market(tmp_path: Path) -> tuple[Engine, s.MarketHistory, s.SentimentSeries, s.SentimentSeries]:
    engine = init_db(f"sqlite:///{tmp_path / 'store.db'}")
    history = random_history(330, seed=21, symbol="DEMO-BTC", gap_every=97)
    news = random_sentiment(history.dates, seed=1)
    macro = random_sentiment(history.dates, seed=2, keep=0.4)
    write_history(engine, history, news, macro)
    return engine, history, news, macro


def test_build_state_equals_the_schema_vectorised_features(market) -> None:  # type: ignore[no-untyped-def]
    engine, history, news, macro = market
    snap = s.PortfolioSnapshot(
        position=0.5, leverage=0.5, cash_fraction=0.5, days_since_last_trade=3
    )
    expected = s.compute_states(history, snap, news=news, macro=macro)
    with get_session(engine) as session:
        builder = RlStateBuilder(session)
        for t in range(0, len(history), 7):
            state = builder.build_state(
                "DEMO-BTC",
                _day(history.dates[t]),
                current_position=0.5,
                portfolio_equity=2000.0,
                cash=1000.0,
                leverage=0.5,
                days_since_last_trade=3,
            )
            np.testing.assert_array_equal(state.to_array(), expected[t], err_msg=f"t={t}")


def test_build_states_many_dates_equal_the_schema(market) -> None:  # type: ignore[no-untyped-def]
    engine, history, news, macro = market
    n = len(history)
    rng = np.random.default_rng(0)
    portfolio = s.portfolio_feature_matrix(
        rng.uniform(-1, 1, n), rng.uniform(0, 2, n), rng.uniform(0, 1, n), rng.integers(0, 50, n)
    )
    expected = s.compute_states(history, portfolio, news=news, macro=macro)
    order = rng.permutation(n)
    with get_session(engine) as session:
        got = RlStateBuilder(session).build_states(
            "DEMO-BTC", [_day(d) for d in history.dates[order]], portfolio[order]
        )
    np.testing.assert_array_equal(got, expected[order])


def test_builder_is_causal(tmp_path: Path) -> None:
    history = random_history(300, seed=22, symbol="X")
    t = 200
    engine_a = init_db(f"sqlite:///{tmp_path / 'a.db'}")
    write_history(engine_a, history)
    # the same bars up to t, then a different future
    close = history.close.copy()
    close[t + 1 :] *= 3.0
    future = s.MarketHistory(
        history.dates, close, close * 1.02, close * 0.98, close, history.volume * 5, symbol="X"
    )
    engine_b = init_db(f"sqlite:///{tmp_path / 'b.db'}")
    write_history(engine_b, future)
    day = _day(history.dates[t])
    with get_session(engine_a) as sa, get_session(engine_b) as sb:
        a = RlStateBuilder(sa).build_state("X", day)
        b = RlStateBuilder(sb).build_state("X", day)
        assert a == b
        assert RlStateBuilder(sa).build_state("X", _day(history.dates[t + 5])) != RlStateBuilder(
            sb
        ).build_state("X", _day(history.dates[t + 5]))


def test_stale_data_lowers_dsi_then_refuses(market) -> None:  # type: ignore[no-untyped-def]
    engine, history, _, _ = market
    last = _day(history.dates[-1])
    with get_session(engine) as session:
        builder = RlStateBuilder(session, max_staleness_days=7)
        fresh = builder.build_state("DEMO-BTC", last)
        stale = builder.build_state("DEMO-BTC", last + dt.timedelta(days=6))
        assert fresh.dsi == 1.0
        assert stale.dsi == pytest.approx(0.5, rel=1e-6)
        with pytest.raises(StateBuildError, match=r"no bar of 'DEMO-BTC' near .* 8 days older"):
            builder.build_state("DEMO-BTC", last + dt.timedelta(days=8))


def test_clear_errors(market) -> None:  # type: ignore[no-untyped-def]
    engine, history, _, _ = market
    first = _day(history.dates[0])
    with get_session(engine) as session:
        builder = RlStateBuilder(session)
        with pytest.raises(
            UnknownSymbolError, match="unknown symbol 'ETH'; known symbols: DEMO-BTC"
        ):
            builder.build_state("ETH", first)
        with pytest.raises(StateBuildError, match=r"before the first bar of 'DEMO-BTC'"):
            builder.build_state("DEMO-BTC", first - dt.timedelta(days=1))
        with pytest.raises(StateBuildError, match=r"\(row 1\) is before the first bar"):
            builder.build_states("DEMO-BTC", [first, first - dt.timedelta(days=3)])
        with pytest.raises(StateBuildError, match="is not a date"):
            builder.build_state("DEMO-BTC", "yesterday")
        with pytest.raises(s.SchemaError, match=r"position at row 0 is 1\.5"):
            builder.build_state("DEMO-BTC", first, current_position=1.5)
        with pytest.raises(s.SchemaError, match=r"portfolio_equity is 0\.0"):
            builder.build_state("DEMO-BTC", first, portfolio_equity=0.0)


def test_cache_is_invalidated_by_a_new_bar(market) -> None:  # type: ignore[no-untyped-def]
    engine, history, _, _ = market
    last = _day(history.dates[-1])
    tomorrow = last + dt.timedelta(days=1)
    with get_session(engine) as session:
        builder = RlStateBuilder(session)
        before = builder.build_state("DEMO-BTC", tomorrow)
        assert builder.build_state("DEMO-BTC", tomorrow) == before  # served from the cache
        symbol_id = session.query(Bar.symbol_id).first()[0]  # type: ignore[index]
        session.add(
            Bar(
                symbol_id=symbol_id,
                date=tomorrow,
                open=1.0,
                high=1.0,
                low=1.0,
                close=1.0,
                volume=1.0,
            )
        )
        session.flush()
        after = builder.build_state("DEMO-BTC", tomorrow)
    assert after.returns[-1] < -0.99  # the crash to 1.0 is seen at once
    assert before.returns[-1] != after.returns[-1]


def test_portfolio_defaults(market) -> None:  # type: ignore[no-untyped-def]
    engine, history, _, _ = market
    day = _day(history.dates[-1])
    with get_session(engine) as session:
        st = RlStateBuilder(session).build_state("DEMO-BTC", day, current_position=-0.25)
    assert st.position == -0.25
    assert st.leverage == 0.25
    assert st.cash_fraction == 0.75
    assert st.days_since_last_trade == 1.0  # never traded / unknown saturates


def test_build_state_on_postgresql_equals_the_schema(postgres_url: str) -> None:
    """The per-tick probe runs on the raw driver connection: check it on psycopg too."""
    from otonom_runtime.store import load_macro

    engine = init_db(postgres_url)
    history = random_history(200, seed=23, symbol="PG-BUILDER")
    news = random_sentiment(history.dates, seed=3)
    write_history(engine, history, news)
    with get_session(engine) as session:
        macro = load_macro(session, source=USER_SOURCE)
        expected = s.compute_states(history, news=news, macro=macro)
        builder = RlStateBuilder(session)
        for t in (0, 50, 139, 140, 199):
            got = builder.build_state("PG-BUILDER", _day(history.dates[t]))
            np.testing.assert_array_equal(got.to_array(), expected[t], err_msg=f"t={t}")
        with pytest.raises(UnknownSymbolError, match="unknown symbol 'NOPE'"):
            builder.build_state("NOPE", _day(history.dates[0]))
