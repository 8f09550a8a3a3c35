"""The offline dataset: rows equal to the live builder's states, complete runs only, errors."""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

import otonom_schema as s
from otonom_runtime import UnknownSymbolError
from otonom_runtime.backtest import run_backtest
from otonom_runtime.builder import RlStateBuilder
from otonom_runtime.store import (
    BacktestRun,
    Bar,
    Decision,
    MacroSentiment,
    NewsSentiment,
    Symbol,
    dispose_engines,
    get_or_create_symbol,
    get_session,
    init_db,
)
from otonom_runtime.strategy import load_strategy, parse_strategy
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.postgres import postgres_for_tests
from otonom_schema.testing import random_history
from otonom_trainer.dataset import (
    DatasetGenerationError,
    OfflineDatasetGenerator,
    generate_dataset,
    save_dataset,
)

ROOT = Path(__file__).resolve().parents[3]
BASELINE = ROOT / "strategies" / "baseline_v1.yaml"
A, B, OLD = "DEMO-AAA", "DEMO-BBB", "DEMO-OLD"
FIRST_BAR, LAST_BAR = dt.date(2021, 1, 1), dt.date(2022, 6, 30)
WIDE = (dt.date(2020, 1, 1), dt.date(2023, 12, 31))
DAYS = s.feature_index("days_since_last_trade")


@dataclass(frozen=True)
class Store:
    """The module's store: its URL and the ids of its runs."""

    url: str
    full: int  # complete: A and B, every bar (newest complete run covering A)
    failed: int  # failed after writing A's decisions (newer than `full`)
    b_only: int  # complete: B only, every bar (newest complete covering B)
    running: int  # a run row still 'running' (the newest of all)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    url = f"sqlite:///{(tmp_path_factory.mktemp('dataset') / 'otonom.db').as_posix()}"
    init_db(url)
    strategy = load_strategy(BASELINE)
    with get_session(url) as session:
        write_synthetic(session, [A, B], FIRST_BAR, LAST_BAR, 11)
        write_synthetic(session, [OLD], dt.date(2020, 1, 1), dt.date(2020, 6, 30), 11)
    with get_session(url) as session:
        full = run_backtest(session, strategy, [A, B], FIRST_BAR, LAST_BAR).run_id
    with get_session(url) as session:
        # a run that failed midway, recorded as the backtester records one (a period without
        # bars no longer gets that far: it is refused before the run row is written)
        session.add(
            BacktestRun(
                strategy_name="baseline_v1",
                strategy_hash="x",
                start_date=dt.date(2021, 6, 1),
                end_date=LAST_BAR,
                symbols=[A, OLD],
                status="failed",
                error="StateBuildError: 'DEMO-OLD' has no bar in 2021-06-01 .. 2022-06-30; "
                "its bars end on 2020-06-30",
            )
        )
    with get_session(url) as session:
        failed = session.execute(select(BacktestRun.id).where(BacktestRun.status == "failed"))
        failed_id = failed.scalar_one()
        if not decisions(session, failed_id, A):
            # A failed run may have stored some decisions before it failed (the backtester
            # stores them in batches); give it some, so that "ignored" is tested on real rows.
            session.add_all(
                Decision(
                    run_id=failed_id,
                    symbol_id=d.symbol_id,
                    date=d.date,
                    action=d.action,
                    strength=d.strength,
                    signals=d.signals,
                    position=d.position,
                    leverage=d.leverage,
                    cash_fraction=d.cash_fraction,
                    days_since_last_trade=d.days_since_last_trade,
                    equity=d.equity,
                )
                for d in decisions(session, full, A)[:30]
            )
        b_only = run_backtest(session, strategy, [B], FIRST_BAR, LAST_BAR)
        running = BacktestRun(
            strategy_name="baseline_v1",
            strategy_hash="x",
            start_date=FIRST_BAR,
            end_date=LAST_BAR,
            symbols=[A, B],
            status="running",
        )
        session.add(running)
        session.flush()
        running_id = running.id
    yield Store(url, full, failed_id, b_only.run_id, running_id)
    dispose_engines()


def decisions(session: Session, run_id: int, symbol: str) -> list[Decision]:
    stmt = (
        select(Decision)
        .join(Symbol, Decision.symbol_id == Symbol.id)
        .where(Decision.run_id == run_id, Symbol.name == symbol)
        .order_by(Decision.date)
    )
    return list(session.execute(stmt).scalars())


def builder_state(builder: RlStateBuilder, symbol: str, d: Decision) -> np.ndarray[Any, Any]:
    """The live builder's state for a decision row, with the portfolio the backtest had."""
    return builder.build_state(
        symbol,
        d.date,
        current_position=d.position,
        leverage=d.leverage,
        cash=d.cash_fraction * d.equity,
        portfolio_equity=d.equity,
        days_since_last_trade=d.days_since_last_trade,
    ).to_array()


def assert_rows_are_the_builders(
    session: Session,
    ds: s.OfflineDataset,
    symbol: str,
    rows: list[Decision],
    sample: int = 12,
    **sources: str,
) -> None:
    """Every row of ``symbol`` equals the builder's state exactly (a builder reading
    ``sources``), and its action and strength are the decision's: all rows through
    build_states, a spread sample through build_state."""
    mask = ds.symbols == symbol
    assert mask.sum() == len(rows)
    assert ds.dates[mask].tolist() == [d.date for d in rows]
    np.testing.assert_array_equal(ds.actions[mask], [d.action for d in rows])
    np.testing.assert_array_equal(
        ds.strengths[mask], np.array([d.strength for d in rows], dtype=np.float32)
    )
    builder = RlStateBuilder(session, **sources)
    portfolio = s.portfolio_feature_matrix(
        [d.position for d in rows],
        [d.leverage for d in rows],
        [d.cash_fraction for d in rows],
        [d.days_since_last_trade for d in rows],
    )
    expected = builder.build_states(symbol, [d.date for d in rows], portfolio)
    states = ds.states[mask]
    assert np.array_equal(states, expected)
    picks = sorted({0, len(rows) - 1, *np.linspace(0, len(rows) - 1, sample, dtype=int).tolist()})
    for i in picks:
        one = builder_state(builder, symbol, rows[i])
        assert np.array_equal(states[i], one), f"{symbol} row {i} ({rows[i].date})"


REAL = "REAL-USD"
MACRO = s.feature_index("macro_sentiment")


@pytest.fixture
def mixed_store(tmp_path: Path) -> str:
    """A store holding the demo (A, synthetic) and a real symbol with its user news and macro
    over the same days."""
    url = f"sqlite:///{(tmp_path / 'mixed.db').as_posix()}"
    init_db(url)
    n = (LAST_BAR - FIRST_BAR).days + 1
    h = random_history(n, seed=3, start=FIRST_BAR.isoformat(), symbol=REAL)
    rng = np.random.default_rng(9)
    with get_session(url) as session:
        write_synthetic(session, [A], FIRST_BAR, LAST_BAR, 11)
        real, _ = get_or_create_symbol(session, REAL, source="csv:real.csv")
        days = [FIRST_BAR + dt.timedelta(days=i) for i in range(n)]
        for i, day in enumerate(days):
            session.add(
                Bar(
                    symbol_id=real.id,
                    date=day,
                    open=float(h.open[i]),
                    high=float(h.high[i]),
                    low=float(h.low[i]),
                    close=float(h.close[i]),
                    volume=float(h.volume[i]),
                )
            )
            score = float(rng.uniform(-1, 1))
            session.add(NewsSentiment(symbol_id=real.id, source="user", date=day, score=score))
            session.add(MacroSentiment(source="user", date=day, score=-score))
    return url


def test_a_real_symbols_rows_beside_the_demo_are_the_builders_states(mixed_store: str) -> None:
    strategy = load_strategy(BASELINE)
    with get_session(mixed_store) as session:
        run = run_backtest(session, strategy, [REAL, A], FIRST_BAR, LAST_BAR).run_id
    with get_session(mixed_store) as session:
        ds = OfflineDatasetGenerator(session).generate_dataset([REAL, A], *WIDE)
        assert ds.metadata["sentiment_sources"] == {
            REAL: {"news": "user", "macro": "user"},
            A: {"news": "synthetic", "macro": "synthetic"},
        }
        assert_rows_are_the_builders(session, ds, REAL, decisions(session, run, REAL))
        assert_rows_are_the_builders(session, ds, A, decisions(session, run, A))
        # the real symbol's macro is the user's, not the demo's (which the store also holds)
        days = ds.dates[ds.symbols == REAL].tolist()
        demo_macro = RlStateBuilder(session, macro_source="synthetic").build_states(REAL, days)
        assert not np.array_equal(ds.states[ds.symbols == REAL][:, MACRO], demo_macro[:, MACRO])


def test_the_dataset_reads_the_sources_its_run_read(mixed_store: str) -> None:
    """A strategy naming a source: the dataset reads it too (recorded in the run), so its rows
    are the states the teacher decided on; a run recorded before sources: the kind rule."""
    user_macro = parse_strategy({"data": {"macro_source": "user"}})
    with get_session(mixed_store) as session:
        run = run_backtest(session, user_macro, [A], FIRST_BAR, LAST_BAR).run_id
    with get_session(mixed_store) as session:
        ds = generate_dataset(session, A, *WIDE)
        assert ds.metadata["sentiment_sources"] == {A: {"news": "synthetic", "macro": "user"}}
        rows = decisions(session, run, A)
        assert_rows_are_the_builders(session, ds, A, rows, macro_source="user")
        with pytest.raises(AssertionError):
            assert_rows_are_the_builders(session, ds, A, rows)  # the demo's own macro differs
        params = dict(session.get_one(BacktestRun, run).params)
        del params["sentiment_sources"]  # as a run made before sentiment had sources
        session.execute(update(BacktestRun).where(BacktestRun.id == run).values(params=params))
    with get_session(mixed_store) as session:
        old = generate_dataset(session, A, *WIDE)
        assert old.metadata["sentiment_sources"] == {A: {"news": "synthetic", "macro": "synthetic"}}
        assert_rows_are_the_builders(session, old, A, rows)


def test_rows_are_the_builders_states_with_the_backtests_portfolio(store: Store) -> None:
    with get_session(store.url) as session:
        ds = OfflineDatasetGenerator(session).generate_dataset([A, B], *WIDE)
        rows_a = decisions(session, store.full, A)
        rows_b = decisions(session, store.b_only, B)
        assert_rows_are_the_builders(session, ds, A, rows_a)
        assert_rows_are_the_builders(session, ds, B, rows_b)
    assert len(ds) == len(rows_a) + len(rows_b) > 700
    assert ds.symbols.tolist() == [A] * len(rows_a) + [B] * len(rows_b)  # symbols in given order
    # the run trades: positions, leverage and never-traded rows (NULL days) all occur
    assert np.isinf([d.days_since_last_trade for d in rows_a]).any()
    assert (ds.states[:, DAYS] == 1.0).any()
    assert (ds.states[:, DAYS] < 1.0).any()
    assert np.unique(ds.actions).tolist() == [0, 1, 2]
    assert (np.abs(ds.states[:, s.feature_index("position")]) > 0).any()


def test_metadata_names_the_runs_the_strategy_and_the_request(store: Store) -> None:
    with get_session(store.url) as session:
        ds = OfflineDatasetGenerator(session).generate_dataset([A, B], *WIDE)
        hashes = {
            r.id: r.strategy_hash
            for r in session.execute(select(BacktestRun)).scalars()
            if r.id in (store.full, store.b_only)
        }
    meta = ds.metadata
    assert meta["source"] == "backtest"
    assert meta["run_ids"] == sorted([store.full, store.b_only])
    assert meta["symbol_runs"] == {A: store.full, B: store.b_only}
    assert meta["strategy_names"] == ["baseline_v1"]
    assert meta["strategy_hashes"] == sorted(set(hashes.values()))
    assert {r["run_id"]: r["strategy_hash"] for r in meta["runs"]} == hashes
    assert {r["run_id"]: (r["start_date"], r["end_date"]) for r in meta["runs"]} == {
        store.full: ("2021-01-01", "2022-06-30"),
        store.b_only: ("2021-01-01", "2022-06-30"),
    }
    assert [(r["rl_enabled"], r["purpose"]) for r in meta["runs"]] == [(False, "user")] * 2
    assert meta["teacher"] == (
        f"run {store.full} (baseline_v1, RL off, 2021-01-01 .. 2022-06-30) for DEMO-AAA; "
        f"run {store.b_only} (baseline_v1, RL off, 2021-01-01 .. 2022-06-30) for DEMO-BBB"
    )
    assert meta["symbols"] == [A, B]
    assert (meta["start_date"], meta["end_date"]) == ("2020-01-01", "2023-12-31")
    assert meta["schema_fingerprint"] == s.schema_fingerprint()


def test_latest_complete_run_per_symbol_failed_and_running_runs_ignored(store: Store) -> None:
    """The failed and running runs are newer and hold A, yet A comes from the complete run."""
    assert store.full < store.failed < store.b_only < store.running
    with get_session(store.url) as session:
        gen = OfflineDatasetGenerator(session)
        assert gen.generate_dataset(A, *WIDE).metadata["symbol_runs"] == {A: store.full}
        assert gen.generate_dataset(B, *WIDE).metadata["symbol_runs"] == {B: store.b_only}
        assert len(decisions(session, store.failed, A)) > 0  # the failed run did write rows
        ds = gen.generate_dataset([A, B], *WIDE, run_id=store.full)
        assert ds.metadata["symbol_runs"] == {A: store.full, B: store.full}
        assert ds.metadata["run_ids"] == [store.full]
        assert_rows_are_the_builders(session, ds, B, decisions(session, store.full, B), 4)


def test_run_id_must_be_a_complete_run_holding_every_symbol(store: Store) -> None:
    with get_session(store.url) as session:
        gen = OfflineDatasetGenerator(session)
        with pytest.raises(
            DatasetGenerationError,
            match=rf"run {store.failed} has status 'failed' \(StateBuildError: 'DEMO-OLD' has "
            r"no bar in 2021-06-01 .. 2022-06-30.*\); expected a complete run",
        ):
            gen.generate_dataset(A, *WIDE, run_id=store.failed)
        with pytest.raises(
            DatasetGenerationError, match=rf"run {store.running} has status 'running'"
        ):
            gen.generate_dataset(A, *WIDE, run_id=store.running)
        with pytest.raises(
            DatasetGenerationError,
            match=rf"no backtest run with id 999; complete runs: {store.full}, {store.b_only}",
        ):
            gen.generate_dataset(A, *WIDE, run_id=999)
        with pytest.raises(
            DatasetGenerationError, match=rf"run {store.b_only} .*does not hold 'DEMO-AAA'"
        ):
            gen.generate_dataset([B, A], *WIDE, run_id=store.b_only)
        with pytest.raises(DatasetGenerationError, match="run_id is '1'; expected an integer"):
            gen.generate_dataset(A, *WIDE, run_id="1")  # type: ignore[arg-type]


def test_a_symbol_without_a_complete_run_or_not_in_the_store(store: Store) -> None:
    with get_session(store.url) as session:
        gen = OfflineDatasetGenerator(session)
        with pytest.raises(
            DatasetGenerationError,
            match=rf"no backtest run can teach 'DEMO-OLD' over 2020-01-01 .. 2020-06-30 .*"
            rf"passed over: run {store.failed} \(.*\): not complete \(failed\), does not cover",
        ):
            gen.generate_dataset(OLD, *WIDE)  # only the failed run holds it
        with pytest.raises(UnknownSymbolError, match="unknown symbol 'NOPE'"):
            gen.generate_dataset(["NOPE"], *WIDE)


def test_date_range_keeps_the_decisions_inside_it(store: Store) -> None:
    start, end = dt.date(2022, 1, 10), dt.date(2022, 2, 20)
    with get_session(store.url) as session:
        gen = OfflineDatasetGenerator(session)
        ds = gen.generate_dataset(A, start, end)
        inside = [d for d in decisions(session, store.full, A) if start <= d.date <= end]
        assert len(ds) == len(inside) == 42
        assert_rows_are_the_builders(session, ds, A, inside, 4)
        same = gen.generate_dataset([A], "2022-01-10", "2022-02-20")
        assert np.array_equal(same.states, ds.states)
        assert np.array_equal(same.dates, ds.dates)
        one = gen.generate_dataset(A, dt.date(2022, 3, 1), dt.date(2022, 3, 1))
        assert one.dates.tolist() == [dt.date(2022, 3, 1)]
    full = generate_dataset  # the module function is the method in one call
    with get_session(store.url) as session:
        assert np.array_equal(full(session, A, start, end).states, ds.states)


def test_rows_need_only_the_lookback_bars_before_them(tmp_path: Path) -> None:
    """The reads start LOOKBACK - 1 bars (not days) before the first decision, or at the first
    bar: a run from the very first bar, and gaps in the bars before a late range."""
    url = f"sqlite:///{(tmp_path / 'otonom.db').as_posix()}"
    init_db(url)
    try:
        with get_session(url) as session:
            write_synthetic(session, [A], dt.date(2021, 1, 1), dt.date(2021, 12, 31), 3)
            run = run_backtest(
                session, load_strategy(BASELINE), [A], dt.date(2021, 1, 1), dt.date(2021, 12, 31)
            ).run_id
        with get_session(url) as session:
            gen = OfflineDatasetGenerator(session)
            rows = decisions(session, run, A)
            assert rows[0].date == dt.date(2021, 1, 1)
            assert_rows_are_the_builders(session, gen.generate_dataset(A, *WIDE), A, rows, 6)
            session.execute(  # gaps: bars (not decision days) missing before a late range
                delete(Bar).where(Bar.date.in_([dt.date(2021, 7, d) for d in range(1, 20, 3)]))
            )
            late = [d for d in rows if d.date >= dt.date(2021, 11, 1)]
            ds = gen.generate_dataset(A, dt.date(2021, 11, 1), dt.date(2021, 12, 31))
            assert_rows_are_the_builders(session, ds, A, late, 4)
            session.rollback()
    finally:
        dispose_engines()


def test_no_decision_in_the_range_names_the_run_and_the_range(store: Store) -> None:
    with (
        get_session(store.url) as session,
        pytest.raises(
            DatasetGenerationError,
            match=rf"run {store.full} \(baseline_v1, 2021-01-01 .. 2022-06-30, symbols "
            rf"DEMO-AAA, DEMO-BBB\) has no decision for 'DEMO-AAA' dated 2019-01-01 .. "
            r"2019-12-31",
        ),
    ):
        OfflineDatasetGenerator(session).generate_dataset(A, "2019-01-01", "2019-12-31")


@pytest.mark.parametrize(
    ("symbol", "start", "end", "message"),
    [
        (A, "2022-02-01", "2022-01-01", "start_date 2022-02-01 is after end_date 2022-01-01"),
        (A, "2022-13-01", "2022-12-31", "start_date is '2022-13-01'; expected a datetime.date"),
        (A, "2022-01-01", 20221231, "end_date is 20221231; expected a datetime.date"),
        ([], "2022-01-01", "2022-12-31", "no symbols given"),
        ([A, B, A], "2022-01-01", "2022-12-31", "symbols repeated: DEMO-AAA; expected each"),
        ([A, ""], "2022-01-01", "2022-12-31", r"symbols \[''\] are not names"),
    ],
)
def test_bad_arguments_say_what_was_expected(
    store: Store, symbol: Any, start: Any, end: Any, message: str
) -> None:
    with get_session(store.url) as session, pytest.raises(DatasetGenerationError, match=message):
        OfflineDatasetGenerator(session).generate_dataset(symbol, start, end)


def test_a_decision_date_without_a_bar_is_refused(store: Store) -> None:
    with get_session(store.url) as session:
        session.execute(
            delete(Bar).where(
                Bar.date == dt.date(2022, 2, 2),
                Bar.symbol_id == select(Symbol.id).where(Symbol.name == A).scalar_subquery(),
            )
        )
        with pytest.raises(
            DatasetGenerationError,
            match=rf"decision of run {store.full} for 'DEMO-AAA' on 2022-02-02 has no bar of that "
            r"date in the store \(545 bars, 2021-01-01 .. 2022-06-30\)",
        ):
            OfflineDatasetGenerator(session).generate_dataset(A, *WIDE)
        session.rollback()


def test_a_symbol_without_any_bar_left_is_refused(store: Store) -> None:
    """No bar at all up to the last decision (every bar of A deleted): the same error, naming
    the first decision and saying that no bar is held."""
    with get_session(store.url) as session:
        first = decisions(session, store.full, A)[0].date
        session.execute(
            delete(Bar).where(
                Bar.symbol_id == select(Symbol.id).where(Symbol.name == A).scalar_subquery()
            )
        )
        with pytest.raises(
            DatasetGenerationError,
            match=rf"decision of run {store.full} for 'DEMO-AAA' on {first.isoformat()} has no "
            r"bar of that date in the store \(no bar on or before 2022-06-30\); expected every "
            "decision date to be a bar date",
        ):
            OfflineDatasetGenerator(session).generate_dataset(A, *WIDE)
        session.rollback()


def test_decisions_not_on_every_bar_still_get_their_bars_states(store: Store) -> None:
    """Bars without a decision inside the range (decisions deleted here): each remaining row
    is still the builder's state for its own date and portfolio."""
    with get_session(store.url) as session:
        rows = decisions(session, store.full, A)
        gone = {rows[i].date for i in (1, 2, 50, 51, 52, 200, len(rows) - 2)}
        session.execute(
            delete(Decision).where(Decision.run_id == store.full, Decision.date.in_(gone))
        )
        kept = decisions(session, store.full, A)
        ds = OfflineDatasetGenerator(session).generate_dataset(A, *WIDE)
        assert len(ds) == len(kept) == len(rows) - len(gone)
        assert_rows_are_the_builders(session, ds, A, kept, 6)
        session.rollback()


def test_a_stored_portfolio_outside_the_schema_is_refused(store: Store) -> None:
    with get_session(store.url) as session:
        session.execute(
            update(Decision)
            .where(Decision.run_id == store.full, Decision.date == dt.date(2022, 2, 2))
            .values(leverage=9.0)
        )
        with pytest.raises(
            DatasetGenerationError,
            match=rf"run {store.full}, 'DEMO-AAA': a stored portfolio is outside the schema: "
            r"portfolio leverage at row \d+ is 9.0",
        ):
            OfflineDatasetGenerator(session).generate_dataset(A, *WIDE)
        session.rollback()


def test_save_writes_loads_back_and_prints_the_summary(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with get_session(store.url) as session:
        gen = OfflineDatasetGenerator(session)
        ds = gen.generate_dataset([A, B], *WIDE)
    out = tmp_path / "data" / "offline_dataset.npz"
    assert gen.save_dataset(ds, output_path=str(out)) == out
    printed = capsys.readouterr().out
    counts = np.bincount(ds.actions, minlength=3)
    lines = [
        f"  {name}: {c} ({100 * c / len(ds):.1f}%)"
        for name, c in zip(("HOLD", "BUY", "SELL"), counts, strict=True)
    ]
    teacher = f"Teacher: {ds.metadata['teacher']}\n"
    assert (
        printed == teacher + f"Saved to: {out}\n\nAction distribution:\n" + "\n".join(lines) + "\n"
    )
    back = s.load_dataset(out)
    for name in ("states", "actions", "strengths", "symbols", "dates"):
        assert np.array_equal(getattr(back, name), getattr(ds, name)), name
    assert dict(back.metadata) == dict(ds.metadata)
    other = save_dataset(ds, tmp_path / "again.npz")
    assert other == tmp_path / "again.npz"
    assert capsys.readouterr().out.startswith(f"{teacher}Saved to: {other}\n\nAction distribution")
    with pytest.raises(TypeError, match="experiences is a dict; expected an otonom_schema"):
        save_dataset({"states": ds.states}, tmp_path / "x.npz")  # type: ignore[arg-type]
    assert not (tmp_path / "x.npz").exists()


def test_the_module_does_not_import_torch() -> None:
    code = "import sys, otonom_trainer.dataset; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_on_postgresql() -> None:
    """The three per-symbol reads go through the raw driver: check psycopg too."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_for_tests())
        stack.callback(dispose_engines)
        init_db(url)
        name = "PG-DATASET"
        with get_session(url) as session:
            write_synthetic(session, [name], dt.date(2021, 1, 1), dt.date(2021, 12, 31), 5)
            run = run_backtest(
                session, load_strategy(BASELINE), [name], dt.date(2021, 3, 1), dt.date(2021, 12, 31)
            )
        with get_session(url) as session:
            ds = OfflineDatasetGenerator(session).generate_dataset(name, *WIDE, run_id=run.run_id)
            rows = decisions(session, run.run_id, name)
            assert len(ds) == len(rows) == 306
            # the default teacher: the bar range (read through the driver) is what it covers
            mar = OfflineDatasetGenerator(session).generate_dataset(name, "2021-03-01", WIDE[1])
            assert mar.metadata["symbol_runs"] == {name: run.run_id}
            with pytest.raises(DatasetGenerationError, match="does not cover 2021-01-01"):
                OfflineDatasetGenerator(session).generate_dataset(name, *WIDE)
            assert_rows_are_the_builders(session, ds, name, rows, 4)


def test_generation_leaves_the_garbage_collector_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Library code a daemon imports makes no process-wide change: generating a dataset (its
    store reads included) never switches the cyclic garbage collector off, and gives the same
    rows as before (the readers stream their rows instead)."""
    import gc

    with get_session(store.url) as session:
        before = OfflineDatasetGenerator(session).generate_dataset([A, B], *WIDE)

    def refuse() -> None:
        raise AssertionError("gc.disable() called")

    monkeypatch.setattr(gc, "disable", refuse)
    with get_session(store.url) as session:
        ds = OfflineDatasetGenerator(session).generate_dataset([A, B], *WIDE)
        assert gc.isenabled()
    np.testing.assert_array_equal(ds.states, before.states)
    np.testing.assert_array_equal(ds.actions, before.actions)
