"""Look-ahead at every stage: nothing computed for day t changes when the data after t does.

Seeded random alterations of the future (every bar after t rescaled by its own factor with its
volume redrawn, a random fifth of the future bars deleted or all of them, every news and macro
score after t redrawn or deleted) at many cut days t, on real SQLite stores:

* the state features (``otonom_schema.compute_states``) of every day <= t;
* the store's state builder (``RlStateBuilder.build_states`` for every day <= t and
  ``build_state`` for t);
* a backtest's decisions (every column: action, strength, each analyst's signal, the portfolio
  and equity) of every day <= t, with the RL analyst off and on (a real ONNX model);
* the offline dataset's rows (state, action, strength) of every day <= t, made from those
  decisions;
* walk-forward windows train only on days before their test period; a dataset for a range
  holds only days in it; the trainer's time split validates only on days after every
  training day.

Every comparison is bit for bit.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from otonom_runtime.backtest import run_backtest
from otonom_runtime.builder import RlStateBuilder
from otonom_runtime.policy import load_rl_policy
from otonom_runtime.store import dispose_engines, get_engine, get_session, init_db
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import generate_market, write_synthetic
from otonom_runtime.testing.models import make_policy_model
from otonom_schema import MarketHistory, SentimentSeries, compute_states
from otonom_trainer.dataset import generate_dataset
from otonom_trainer.walkforward import plan_windows

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "strategies" / "baseline_v1.yaml"
SYMBOL = "LOOK-X"
SEED = 8
START, END = dt.date(2019, 1, 1), dt.date(2020, 12, 31)
RUN_START = dt.date(2019, 7, 1)  # after the warm-up the features need
MEMORY_CUTS = 500
BUILDER_CUTS = 60
BACKTEST_CUTS = 12


# --- altering the future -----------------------------------------------------------------------


def _alter_market(
    history: MarketHistory,
    news: SentimentSeries,
    macro: SentimentSeries,
    cut: int,
    rng: np.random.Generator,
) -> tuple[MarketHistory, SentimentSeries, SentimentSeries]:
    """The series with every row after index ``cut`` changed (or removed: truncated)."""
    if rng.random() < 0.25:
        keep = slice(0, cut + 1)
        return (
            MarketHistory(
                dates=history.dates[keep],
                open=history.open[keep],
                high=history.high[keep],
                low=history.low[keep],
                close=history.close[keep],
                volume=history.volume[keep],
                symbol=history.symbol,
            ),
            SentimentSeries(dates=news.dates[keep], scores=news.scores[keep]),
            SentimentSeries(dates=macro.dates[keep], scores=macro.scores[keep]),
        )
    n = len(history.dates)
    factor = np.ones(n)
    factor[cut + 1 :] = rng.uniform(0.5, 2.0, n - cut - 1)
    volume = history.volume.copy()
    volume[cut + 1 :] = rng.uniform(0.0, 1e6, n - cut - 1)
    scores = [news.scores.copy(), macro.scores.copy()]
    for s in scores:
        s[cut + 1 :] = rng.uniform(-1.0, 1.0, n - cut - 1)
    return (
        MarketHistory(
            dates=history.dates,
            open=history.open * factor,
            high=history.high * factor,
            low=history.low * factor,
            close=history.close * factor,
            volume=volume,
            symbol=history.symbol,
        ),
        SentimentSeries(dates=news.dates, scores=scores[0]),
        SentimentSeries(dates=macro.dates, scores=scores[1]),
    )


def _alter_store(url: str, cut: dt.date, rng: np.random.Generator) -> str:
    """Change every bar and sentiment row dated after ``cut`` in the store; returns how."""
    how = str(rng.choice(["rescale", "rescale and delete a fifth", "delete all"]))
    with get_engine(url).begin() as conn:
        later = {"cut": cut}
        if how == "delete all":
            for table in ("bars", "news_sentiment", "macro_sentiment"):
                conn.execute(text(f"DELETE FROM {table} WHERE date > :cut"), later)
            return how
        for (bar_id,) in conn.execute(text("SELECT id FROM bars WHERE date > :cut"), later).all():
            f = float(rng.uniform(0.5, 2.0))
            conn.execute(
                text(
                    "UPDATE bars SET open = open * :f, high = high * :f, low = low * :f, "
                    "close = close * :f, volume = :v WHERE id = :id"
                ),
                {"f": f, "v": float(rng.uniform(0.0, 1e6)), "id": bar_id},
            )
        for table in ("news_sentiment", "macro_sentiment"):
            for (row_id,) in conn.execute(
                text(f"SELECT id FROM {table} WHERE date > :cut"), later
            ).all():
                conn.execute(
                    text(f"UPDATE {table} SET score = :s WHERE id = :id"),
                    {"s": float(rng.uniform(-1.0, 1.0)), "id": row_id},
                )
        if how == "rescale and delete a fifth":
            for table in ("bars", "news_sentiment", "macro_sentiment"):
                ids = [
                    r[0]
                    for r in conn.execute(
                        text(f"SELECT id FROM {table} WHERE date > :cut"), later
                    ).all()
                ]
                for row_id in rng.choice(ids, len(ids) // 5, replace=False).tolist():
                    conn.execute(text(f"DELETE FROM {table} WHERE id = :id"), {"id": row_id})
    return how


# --- stores ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store holding the synthetic market of ``SYMBOL`` (bars, news, macro)."""
    path = tmp_path_factory.mktemp("lookahead") / "store.db"
    url = f"sqlite:///{path.as_posix()}"
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, [SYMBOL], START, END, SEED)
    dispose_engines()  # the WAL is checkpointed: the file alone is the store
    return path


def _copy(store_file: Path, to: Path) -> str:
    shutil.copyfile(store_file, to)
    return f"sqlite:///{to.as_posix()}"


def _bar_days(url: str) -> list[dt.date]:
    with get_engine(url).connect() as conn:
        return [
            dt.date.fromisoformat(str(d))
            for (d,) in conn.execute(text("SELECT date FROM bars ORDER BY date")).all()
        ]


# --- the stages --------------------------------------------------------------------------------


def test_state_features_ignore_the_future() -> None:
    market = generate_market(SYMBOL, START, END, SEED)
    before = compute_states(market.history, news=market.news, macro=market.macro)
    rng = np.random.default_rng(1)
    cuts = rng.integers(0, len(market.history.dates) - 1, MEMORY_CUTS)
    for cut in cuts.tolist():
        history, news, macro = _alter_market(market.history, market.news, market.macro, cut, rng)
        after = compute_states(history, news=news, macro=macro)
        assert after[: cut + 1].tobytes() == before[: cut + 1].tobytes(), cut


def test_the_state_builder_ignores_the_future(store_file: Path, tmp_path: Path) -> None:
    url = _copy(store_file, tmp_path / "original.db")
    days = _bar_days(url)
    dispose_engines()
    rng = np.random.default_rng(2)
    cuts = sorted(rng.choice(np.arange(150, len(days) - 1), BUILDER_CUTS, replace=False).tolist())
    with get_session(url) as session:
        builder = RlStateBuilder(session)
        every = builder.build_states(SYMBOL, days)
        single = {days[c]: builder.build_state(SYMBOL, days[c]).to_array() for c in cuts}
    dispose_engines()
    hows = []
    for k, c in enumerate(cuts):
        altered = _copy(store_file, tmp_path / f"cut{k}.db")
        hows.append(_alter_store(altered, days[c], rng))
        with get_session(altered) as session:
            builder = RlStateBuilder(session)
            got = builder.build_states(SYMBOL, days[: c + 1])
            one = builder.build_state(SYMBOL, days[c]).to_array()
        dispose_engines()
        assert got.tobytes() == every[: c + 1].tobytes(), (days[c], hows[-1])
        assert one.tobytes() == single[days[c]].tobytes(), (days[c], hows[-1])
    assert len(set(hows)) == 3  # every kind of alteration was tried


def _decisions(url: str, run_id: int) -> dict[dt.date, tuple[Any, ...]]:
    with get_engine(url).connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM decisions WHERE run_id = :id ORDER BY date"), {"id": run_id}
        ).mappings()
        return {
            dt.date.fromisoformat(str(r["date"])): tuple(
                (k, v) for k, v in sorted(r.items()) if k not in ("id", "run_id")
            )
            for r in rows
        }


def _runs(url: str, policy: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A baseline run (RL off) with its offline dataset, and an RL-on run."""
    config = load_strategy(BASELINE)
    with get_session(url) as session:
        off = run_backtest(session, config, [SYMBOL], RUN_START, END, use_rl=False)
        on = run_backtest(session, config, [SYMBOL], RUN_START, END, use_rl=True, policy=policy)
    with get_session(url) as session:
        ds = generate_dataset(session, SYMBOL, RUN_START, END, run_id=off.run_id)
    out_off = {
        "decisions": _decisions(url, off.run_id),
        "dataset": {
            dt.date.fromisoformat(str(d)): (s.tobytes(), int(a), float(st))
            for d, s, a, st in zip(ds.dates, ds.states, ds.actions, ds.strengths, strict=True)
        },
    }
    out_on = {"decisions": _decisions(url, on.run_id)}
    dispose_engines()
    return out_off, out_on


def test_backtests_and_datasets_ignore_the_future(store_file: Path, tmp_path: Path) -> None:
    model = tmp_path / "policy.onnx"
    make_policy_model(model, seed=5)
    policy = load_rl_policy(model, threads=1)
    url = _copy(store_file, tmp_path / "original.db")
    days = [d for d in _bar_days(url) if d >= RUN_START]
    off, on = _runs(url, policy)
    assert len(off["decisions"]) == len(days)
    assert len(off["dataset"]) == len(days)
    rl_voted = sum(1 for row in on["decisions"].values() if dict(row)["rl_action"] is not None)
    assert rl_voted == len(days)  # the RL analyst took part every day
    rng = np.random.default_rng(3)
    cuts = sorted(rng.choice(np.arange(20, len(days) - 20), BACKTEST_CUTS, replace=False).tolist())
    compared = 0
    hows = []
    for k, c in enumerate(cuts):
        cut = days[c]
        altered = _copy(store_file, tmp_path / f"cut{k}.db")
        how = _alter_store(altered, cut, rng)
        hows.append(how)
        dispose_engines()
        off2, on2 = _runs(altered, policy)
        for name, a, b in (
            ("RL off decisions", off["decisions"], off2["decisions"]),
            ("RL on decisions", on["decisions"], on2["decisions"]),
            ("dataset rows", off["dataset"], off2["dataset"]),
        ):
            early = [d for d in days if d <= cut]
            assert [b.get(d) for d in early] == [a[d] for d in early], (name, cut, how)
            compared += len(early)
        # the alteration mattered: some later day changed (or vanished)
        assert any(off2["decisions"].get(d) != off["decisions"][d] for d in days if d > cut)
    assert len(set(hows)) == 3  # every kind of alteration was tried
    print(f"\n{BACKTEST_CUTS} cuts, {compared} decisions and dataset rows compared: identical")


# --- periods -----------------------------------------------------------------------------------


def test_walk_forward_windows_never_train_on_their_test_period() -> None:
    rng = np.random.default_rng(4)
    planned = 0
    for _ in range(500):
        first = dt.date(2010, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3000)))
        end = first + dt.timedelta(days=int(rng.integers(400, 5000)))
        train_years = int(rng.integers(1, 4))
        test_months = int(rng.integers(1, 13))
        step = int(rng.integers(1, 13))
        try:
            windows = plan_windows(
                first, end, train_years=train_years, test_months=test_months, step_months=step
            )
        except ValueError:
            continue
        for w in windows:
            planned += 1
            assert first <= w.train_start <= w.train_end < w.test_start <= w.test_end <= end
            assert w.test_start - w.train_end == dt.timedelta(days=1)
    assert planned > 500
    print(f"\n500 random plans: {planned} windows, none trains on or after its test start")


def test_a_dataset_holds_only_its_range(store_file: Path, tmp_path: Path) -> None:
    url = _copy(store_file, tmp_path / "original.db")
    config = load_strategy(BASELINE)
    with get_session(url) as session:
        run = run_backtest(session, config, [SYMBOL], RUN_START, END, use_rl=False)
    rng = np.random.default_rng(5)
    span = (END - RUN_START).days
    with get_session(url) as session:
        for _ in range(40):
            a = RUN_START + dt.timedelta(days=int(rng.integers(0, span)))
            b = a + dt.timedelta(days=int(rng.integers(0, (END - a).days + 1)))
            ds = generate_dataset(session, SYMBOL, a, b, run_id=run.run_id)
            dates = ds.dates.astype("datetime64[D]")
            assert len(ds) == (b - a).days + 1  # one bar a day
            assert dates.min() == np.datetime64(a)
            assert dates.max() == np.datetime64(b)


def test_the_time_split_validates_only_after_every_training_day() -> None:
    from otonom_trainer.train import split_rows

    rng = np.random.default_rng(6)
    checked = 0
    for _ in range(300):
        n = int(rng.integers(2, 400))
        days = np.datetime64("2020-01-01") + rng.integers(0, 60, n)
        if np.unique(days).size < 2:
            continue
        split = split_rows(days, float(rng.uniform(0.05, 0.5)), "time", 0)
        train, val = days[split.train], days[split.val]
        assert len(train) + len(val) == n
        assert train.max() < val.min()
        checked += 1
    assert checked > 250
