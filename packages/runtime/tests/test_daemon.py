"""The decision tick and ``otonom daemon`` (``otonom_runtime.daemon``): real SQLite files, a
real ONNX policy, real subprocess CLI runs.

* skew: a tick decides exactly what the backtester decides for the same day and portfolio
  (every analyst's signal, the action, the strength), and ticks day by day with the paper
  broker reproduce a backtest's every decision row, portfolio and equity included, in each
  of the RL analyst's deployment modes (voter, sole, filter);
* idempotency: one live decision per strategy, symbol and bar across repeated ticks and
  repeated ``--once`` runs (on SQLite and PostgreSQL);
* interruption: a daemon killed by its own pid mid-tick leaves the whole tick or nothing; a
  SIGTERM mid-tick lets the tick finish its write and exit 0;
* a model that fails to load leaves the daemon deciding without the RL analyst (in every
  mode: the three analysts' vote).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from otonom_runtime.backtest import run_backtest
from otonom_runtime.daemon import Ensemble, PaperBroker, run_tick
from otonom_runtime.policy import write_sha256_sidecar
from otonom_runtime.store import (
    SIGNAL_COLUMNS,
    BacktestRun,
    Decision,
    Symbol,
    dispose_engines,
    get_session,
    init_db,
)
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.models import make_policy_model
from otonom_schema import Action, PortfolioSnapshot

SYMBOLS = ["DEMO-BTC", "DEMO-ETH", "DEMO-SOL"]
HISTORY = (dt.date(2019, 1, 1), dt.date(2020, 3, 31))
START = dt.date(2020, 1, 1)  # the backtest's first decision day, the daemon's first tick
SEED = 7
_VALUES = ("date", "action", "strength", "position", "leverage", "cash_fraction")
_ROW = (*_VALUES, "days_since_last_trade", "equity", *SIGNAL_COLUMNS)


@pytest.fixture(autouse=True)
def _no_models_root_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTONOM_MODELS_ROOT", raising=False)


def _strategy(
    folder: Path, *, broken: bool = False, name: str = "live_test", mode: str = ""
) -> Path:
    """A strategy with the RL analyst on (a real ONNX policy under ``folder/models``, or a
    file that is no model with ``broken``), tech/news/risk at their defaults; ``mode``: more
    of ``rl_policy``'s keys (e.g. ``mode: sole``), flow style."""
    model = folder / "models" / "rl" / "policy_best.onnx"
    model.parent.mkdir(parents=True, exist_ok=True)
    if broken:
        model.write_bytes(b"not an onnx model")
        write_sha256_sidecar(model)
    else:
        make_policy_model(model, seed=3)
    path = folder / "strategies" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"name: {name}\n"
        "ensemble:\n"
        "  analyst_weights: {tech: 1.0, news: 1.0, risk: 1.0, rl: 2.0}\n"
        "  min_score: 0.4\n"
        f"  rl_policy: {{enabled: true, model_path: models/rl/policy_best.onnx{mode}}}\n"
        "portfolio: {max_leverage: 2.0}\n",
        encoding="utf-8",
    )
    return path


def _store(folder: Path, end: dt.date = HISTORY[1]) -> str:
    url = f"sqlite:///{(folder / 'otonom.db').as_posix()}"
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, SYMBOLS, HISTORY[0], end, SEED)
    return url


def _rows(url: str, *, run_id: int | None = None, live: str | None = None) -> list[tuple[Any, ...]]:
    """Decision rows (symbol, every value of ``_ROW``), by symbol and date: a run's, or a
    strategy's live ones."""
    columns = [getattr(Decision, c) for c in _ROW]
    query = select(Symbol.name, *columns).join(Symbol, Decision.symbol_id == Symbol.id)
    if run_id is not None:
        query = query.where(Decision.run_id == run_id)
    if live is not None:
        query = query.where(Decision.live_strategy == live)
    with get_session(url) as session:
        return [tuple(r) for r in session.execute(query.order_by(Symbol.name, Decision.date))]


# the RL analyst's deployment modes (``ensemble.rl_policy``'s keys) the skew tests run in
MODES = {
    "voter": "",
    "sole": ", mode: sole",
    "filter": ", mode: filter, filter_veto: differs, filter_size: true",
}


@pytest.fixture(
    scope="module",
    params=[("voter", True), ("voter", False), ("sole", True), ("filter", True)],
    ids=["rl", "no-rl", "rl-sole", "rl-filter"],
)
def reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str, int, bool]]:
    """The store, the strategy (its RL mode: voter, sole or filter) and a backtest of it from
    ``START``, with the RL analyst on (``rl``) or off; and which."""
    mode, rl = request.param
    folder = tmp_path_factory.mktemp("daemon-reference")
    path = _strategy(folder, mode=MODES[mode])
    url = _store(folder)
    with get_session(url) as session:
        report = run_backtest(session, load_strategy(path), SYMBOLS, START, HISTORY[1], use_rl=rl)
    assert report.fallbacks == 0
    yield path, url, report.run_id, rl
    dispose_engines()


def test_the_modes_decide_differently(reference: tuple[Path, str, int, bool]) -> None:
    """The reference runs of the RL modes are not the voter's: the skew tests below compare
    each mode's own decisions (sole: the policy's own; filter: the teacher's, some vetoed)."""
    path, url, run_id, rl = reference
    mode = load_strategy(path).ensemble.rl_policy.mode
    rows = _rows(url, run_id=run_id)
    rl_actions = [row[-3] for row in rows]
    actions = [row[2] for row in rows]
    if mode == "sole":
        assert actions == rl_actions
    if mode == "filter":  # every BUY/SELL kept is one the policy voted too (veto: differs)
        assert all(a == 0 or a == r for a, r in zip(actions, rl_actions, strict=True))
        assert any(a != 0 for a in actions)
    if rl and mode != "voter":  # the same strategy as the 4th voter decides otherwise
        cfg = load_strategy(path)
        rl_voter = replace(cfg.ensemble.rl_policy, mode="voter")
        cfg = replace(cfg, ensemble=replace(cfg.ensemble, rl_policy=rl_voter))
        with get_session(url) as session:
            voter = run_backtest(session, cfg, SYMBOLS, START, HISTORY[1], use_rl=True)
        voted = [row[2:4] for row in _rows(url, run_id=voter.run_id)]
        assert voted != [row[2:4] for row in rows]


# --- skew: the tick is the backtester --------------------------------------------------------


def test_a_tick_decides_what_the_backtester_decides_for_the_same_day_and_portfolio(
    reference: tuple[Path, str, int, bool],
) -> None:
    """Every day of the backtest, all symbols in one ``decide`` call, each given the
    portfolio the backtest's state saw: the action, the strength and every analyst's signal
    are the stored ones, bit for bit (floats compared with ==)."""
    path, url, run_id, rl = reference
    stored = _rows(url, run_id=run_id)
    by_day: dict[dt.date, dict[str, tuple[Any, ...]]] = {}
    for row in stored:
        by_day.setdefault(row[1], {})[row[0]] = row
    ensemble = Ensemble.from_strategy(path, use_rl=rl)
    assert (ensemble.rl is not None) == rl
    assert ensemble.rl_error is None
    assert all((row[-3] is not None) == rl for row in stored)
    actions = set()
    with get_session(url) as session:
        for day, rows in sorted(by_day.items()):
            portfolios = {name: PortfolioSnapshot(*row[4:8]) for name, row in rows.items()}
            for d in ensemble.decide(session, SYMBOLS, day, portfolios):
                row = rows[d.symbol]
                assert d.date == day
                assert (int(d.action), d.strength) == row[2:4], (d.symbol, day)
                signals = []
                for name in ("tech", "news", "risk", "rl"):
                    s = d.signals[name]
                    signals += (
                        [None] * 3 if s is None else [int(s.action), s.strength, s.confidence]
                    )
                assert tuple(signals) == row[9:], (d.symbol, day)
                actions.add(d.action)
    assert len(by_day) == 91
    assert actions == set(Action)  # the comparison covered every action
    assert ensemble.fallbacks == 0


def test_a_decision_s_signals_read_as_the_dict_of_signals_they_stand_for(
    reference: tuple[Path, str, int, bool],
) -> None:
    """``TickDecision.signals`` (``RowSignals``, each ``Signal`` made when read) equals the
    dict of ``Signal``s of ``decide_columns``' columns, in ``ANALYSTS`` order, with ``get``,
    None where an analyst did not vote, and survives pickling (the Dask tick sends them)."""
    import pickle

    from otonom_runtime.ensemble import ANALYSTS, Signal

    path, url, _, rl = reference
    ensemble = Ensemble.from_strategy(path, use_rl=rl)
    with get_session(url) as session:
        decisions = ensemble.decide(session, SYMBOLS, dt.date(2024, 3, 28))
    for d in decisions:
        plain = {name: d.signals[name] for name in ANALYSTS}
        assert list(d.signals) == list(ANALYSTS)
        assert len(d.signals) == len(ANALYSTS)
        assert d.signals == plain
        assert dict(d.signals) == plain
        assert all(s is None or isinstance(s, Signal) for s in plain.values())
        assert (plain["rl"] is not None) == rl
        assert d.signals.get("rl") == plain["rl"]
        assert d.signals.get("nope") is None
        assert repr(d.signals) == repr(plain)
        again = pickle.loads(pickle.dumps(d))
        assert again == d
        assert again.signals == plain


def test_last_decisions_are_columns_read_by_symbol_id() -> None:
    """``LastDecisions`` (a tick's newest live decision of each symbol, as columns): read by
    symbol id as ``LastDecision``s, ``columns`` in any order of ids (None, 0, 0.0 for one
    without a decision), ``put`` replaces or adds; ids given twice or columns of different
    lengths refused."""
    from otonom_runtime.daemon.paper import LastDecision, LastDecisions

    d1, d2, d3 = dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)
    last = LastDecisions([3, 1], [d1, d2], [1, 2], [0.5, 0.25])
    assert dict(last) == {3: LastDecision(d1, 1, 0.5), 1: LastDecision(d2, 2, 0.25)}
    assert 3 in last
    assert 7 not in last
    assert last.get(7) is None
    assert last.columns([3, 1]) == ([d1, d2], [1, 2], [0.5, 0.25])
    assert last.columns([1, 7, 3]) == ([d2, None, d1], [2, 0, 1], [0.25, 0.0, 0.5])
    last.put(1, LastDecision(d3, 0, 0.125))
    last.put(7, LastDecision(d3, 2, 1.0))
    assert dict(last) == {
        3: LastDecision(d1, 1, 0.5),
        1: LastDecision(d3, 0, 0.125),
        7: LastDecision(d3, 2, 1.0),
    }
    with pytest.raises(ValueError, match="given twice"):
        LastDecisions([1, 1], [d1, d2], [1, 2], [0.5, 0.25])
    with pytest.raises(ValueError, match="different lengths"):
        LastDecisions([1, 2], [d1, d2], [1], [0.5, 0.25])


def test_portfolios_features_are_computed_checked_and_kept_once() -> None:
    """``Portfolios.features`` (the broker's holdings, then the states' portfolio columns):
    ``portfolio_feature_matrix`` of the columns, computed once and kept read-only; a row out of
    the schema's bounds raises its error."""
    import numpy as np

    from otonom_runtime.daemon.rows import Portfolios
    from otonom_schema import SchemaError, portfolio_feature_matrix

    columns = ([0.5, -1.0], [0.5, 1.0], [0.5, 0.0], [3.0, math.inf])
    held = Portfolios(*(list(c) for c in columns))
    first = held.features()
    assert np.array_equal(first, portfolio_feature_matrix(*columns))
    assert held.features() is first
    assert not first.flags.writeable
    with pytest.raises(SchemaError, match="leverage"):
        Portfolios([0.0], [9.0], [1.0], [0.0]).features()


class _ListedBroker(PaperBroker):
    """The paper broker given its inputs as a plain list of ``TickInputs`` (what a broker of
    the protocol may be given), not the tick's columns."""

    def lacking(self, inputs: Any, capital: float) -> list[int]:
        return super().lacking(list(inputs), capital)

    def holdings(self, inputs: Any, params: Any, capital: float) -> Any:
        return super().holdings(list(inputs), params, capital)


@pytest.mark.parametrize(
    ("kept", "broker_type"),
    [(True, PaperBroker), (False, PaperBroker), (True, _ListedBroker)],
    ids=["kept", "replayed", "kept-listed"],
)
def test_daily_ticks_with_the_paper_broker_reproduce_the_backtest_row_for_row(
    reference: tuple[Path, str, int, bool], tmp_path: Path, kept: bool, broker_type: type[Any]
) -> None:
    """A tick per day from ``START`` (``as_of``: the bars up to that day): the paper broker's
    positions are the backtester's sleeves, so every live decision row (portfolio, days since
    the last trade, equity, every signal) equals the backtest's row. ``kept``: one broker and
    one ensemble (their cache) for every tick, each sleeve stepped once a tick; else a new
    broker each tick (a restarted daemon: every sleeve replayed from the first decision).
    ``kept-listed``: the broker reads its inputs from a plain list, not the tick's columns."""
    path, url, run_id, rl = reference
    expected = _rows(url, run_id=run_id)
    ensemble = Ensemble.from_strategy(path, use_rl=rl)
    broker = broker_type()
    copy = f"sqlite:///{(tmp_path / 'copy.db').as_posix()}"
    init_db(copy)
    with get_session(copy) as session:
        write_synthetic(session, SYMBOLS, HISTORY[0], HISTORY[1], SEED)
    day = START
    with get_session(copy) as session:
        while day <= HISTORY[1]:
            if not kept:
                broker = broker_type()
                ensemble.cache.clear()
            report = run_tick(session, ensemble, SYMBOLS, broker, as_of=day)
            assert [d.symbol for d in report.decisions] == SYMBOLS
            day += dt.timedelta(days=1)
    got = _rows(copy, live=ensemble.name)
    assert len(got) == len(expected) == 3 * 91
    assert got == expected
    positions = {row[4] for row in got}
    assert len(positions) > 10  # trades happened: the portfolios are not all flat
    assert any(row[6] != math.inf for row in got)


def test_a_sleeve_keeps_its_capital_when_the_universe_changes(tmp_path: Path) -> None:
    """A sleeve's capital is fixed at its first live decision (the tick's split then): the
    universe growing from two symbols to three and shrinking back leaves the first two
    sleeves' equity on the path they were on (not re-based to a third of the capital), the
    symbol added starts with a third; a restarted daemon (a new broker, the cache cleared)
    replays every sleeve from its first decision's recorded equity to the same rows."""
    path = _strategy(tmp_path)
    days = [START + dt.timedelta(days=k) for k in range(40)]
    names = [SYMBOLS[:2] if k < 15 else SYMBOLS if k < 30 else SYMBOLS[:2] for k in range(40)]

    def ticks(
        folder: str, restart_at: int | None = None, names: list[list[str]] = names
    ) -> list[tuple[Any, ...]]:
        (tmp_path / folder).mkdir()
        url = _store(tmp_path / folder)
        ensemble, broker = Ensemble.from_strategy(path), PaperBroker()
        with get_session(url) as session:
            for k, (day, universe) in enumerate(zip(days, names, strict=True)):
                if k == restart_at:
                    broker = PaperBroker()
                    ensemble.cache.clear()
                run_tick(session, ensemble, universe, broker, as_of=day)
        return _rows(url, live=ensemble.name)

    kept = ticks("kept")
    capital = load_strategy(path).portfolio.initial_capital
    at = 1 + _ROW.index("equity")
    equity = {(r[0], r[1]): r[at] for r in kept}
    assert equity[(SYMBOLS[0], START)] == equity[(SYMBOLS[1], START)] == capital / 2
    assert equity[(SYMBOLS[2], days[15])] == capital / 3  # the split of the universe it joins
    btc = [equity[(SYMBOLS[0], day)] for day in days]
    assert len(set(btc)) > 5  # the sleeve traded: its equity moved
    two = ticks("two", names=[SYMBOLS[:2]] * len(days))  # the same two symbols all along
    assert btc == [r[at] for r in two if r[0] == SYMBOLS[0]]  # the same sleeve
    assert ticks("restarted", 20) == kept
    assert ticks("restarted_late", 35) == kept


# --- idempotency ---------------------------------------------------------------------------


def _live_counts(url: str) -> list[tuple[Any, ...]]:
    with get_session(url) as session:
        return [
            tuple(r)
            for r in session.execute(
                select(Decision.symbol_id, Decision.date, func.count())
                .where(Decision.live_strategy.is_not(None))
                .group_by(Decision.symbol_id, Decision.date)
                .order_by(Decision.symbol_id, Decision.date)
            )
        ]


def _check_idempotent_ticks(url: str, path: Path) -> None:
    ensemble = Ensemble.from_strategy(path)
    with get_session(url) as session:
        first = run_tick(session, ensemble, SYMBOLS, PaperBroker())
        again = run_tick(session, ensemble, SYMBOLS, PaperBroker())
        older = run_tick(
            session, ensemble, SYMBOLS, PaperBroker(), as_of=HISTORY[1] - dt.timedelta(days=3)
        )
    assert first.run_id is not None
    assert len(first.decisions) == 3
    assert {d.date for d in first.decisions} == {HISTORY[1]}
    assert (again.run_id, again.decisions, again.up_to_date) == (None, [], SYMBOLS)
    assert older.run_id is None  # an older bar than one decided is never decided after it
    counts = _live_counts(url)
    assert [c[1:] for c in counts] == [(HISTORY[1], 1)] * 3
    with get_session(url) as session:
        runs = session.execute(select(BacktestRun.params, BacktestRun.status)).all()
    assert [(p["purpose"], s) for p, s in runs] == [("live", "complete")]


def test_a_symbol_in_its_warm_up_is_not_decided_until_its_history_is_long_enough(
    tmp_path: Path,
) -> None:
    """A symbol whose newest bar has fewer than ``LOOKBACK`` bars or ``WARMUP_DAYS`` days of
    history before it is not decided (the backtester would not decide that day either: most
    of its features would be neutral), and is named in the tick's summary; the same cached
    ensemble decides it on the first day its history is long enough. A user's daemon had
    decided a new listing from its 4th bar."""
    from sqlalchemy import text

    from otonom_runtime.ranges import WARMUP_DAYS
    from otonom_schema import LOOKBACK

    path = _strategy(tmp_path)
    end = HISTORY[1] + dt.timedelta(days=40)
    url = _store(tmp_path, end=end)
    young = HISTORY[1] - dt.timedelta(days=LOOKBACK + 10)  # enough bars, too few days
    with get_session(url) as session:
        session.execute(
            text(
                "DELETE FROM bars WHERE date < :first AND symbol_id = "
                "(SELECT id FROM symbols WHERE name = 'DEMO-ETH')"
            ),
            {"first": young.isoformat()},
        )
    ensemble, broker = Ensemble.from_strategy(path), PaperBroker()
    ready = young + dt.timedelta(days=WARMUP_DAYS)
    with get_session(url) as session:
        first = run_tick(session, ensemble, SYMBOLS, broker, as_of=HISTORY[1])
        assert [d.symbol for d in first.decisions] == ["DEMO-BTC", "DEMO-SOL"]
        assert first.warming_up == ["DEMO-ETH"]
        assert "warming up, not decided" in first.summary()
        assert "DEMO-ETH" in first.summary()
        again = run_tick(session, ensemble, SYMBOLS, broker, as_of=HISTORY[1])
        assert again.summary().splitlines()[0] == (
            "tick: nothing decided (2 symbols decided already, 1 warming up)"
        )
        day = HISTORY[1]
        while day < ready:
            day += dt.timedelta(days=1)
            report = run_tick(session, ensemble, SYMBOLS, broker, as_of=day)
            eth = [d for d in report.decisions if d.symbol == "DEMO-ETH"]
            assert (len(eth) == 1) == (day == ready), day
            assert report.warming_up == ([] if day == ready else ["DEMO-ETH"])
        stored = session.scalars(
            select(Decision.date)
            .join(Symbol, Decision.symbol_id == Symbol.id)
            .where(Symbol.name == "DEMO-ETH", Decision.live_strategy.is_not(None))
        ).all()
    assert stored == [ready]
    for day, warm in ((ready - dt.timedelta(days=1), [True, False, True]), (ready, [True] * 3)):
        cold = Ensemble.from_strategy(path)  # read whole: the same rule as the cached one
        with get_session(url) as session:
            cached, _ = cold.cache.refresh(session, cold.config, SYMBOLS, day)
        assert cold.cache.warm(cached.rows) == warm, day


def test_repeated_ticks_record_one_decision_per_symbol_and_bar(tmp_path: Path) -> None:
    _check_idempotent_ticks(_store(tmp_path), _strategy(tmp_path))


def test_a_tick_another_daemon_recorded_first_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two daemons of one strategy read the same undecided bars; the second to commit is
    refused by the live key: its tick writes nothing (no run row either) and says so."""
    from otonom_runtime.daemon import cache

    url, path = _store(tmp_path), _strategy(tmp_path)
    with get_session(url) as session:
        first = run_tick(session, Ensemble.from_strategy(path), SYMBOLS, PaperBroker())
    assert first.run_id == 1
    monkeypatch.setattr(cache, "load_live_decisions", lambda *args: {})  # read before it
    other = Ensemble.from_strategy(path)  # another daemon: its own cache
    with get_session(url) as session:
        late = run_tick(session, other, SYMBOLS, PaperBroker())
    assert late.conflict
    assert late.run_id is None
    assert late.summary().startswith("tick: another process recorded these bars first")
    assert [c[2] for c in _live_counts(url)] == [1, 1, 1]
    with get_session(url) as session:
        assert session.execute(select(func.count()).select_from(BacktestRun)).scalar_one() == 1


def test_repeated_ticks_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    from sqlalchemy import text

    from otonom_runtime.store import Base, get_engine

    Base.metadata.drop_all(get_engine(postgres_url))
    with get_engine(postgres_url).begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS store_meta"))
    dispose_engines()
    init_db(postgres_url)
    with get_session(postgres_url) as session:
        write_synthetic(session, SYMBOLS, HISTORY[0], HISTORY[1], SEED)
    _check_idempotent_ticks(postgres_url, _strategy(tmp_path))


# --- the CLI in a subprocess ----------------------------------------------------------------

# The subprocess: optionally patch a point of the tick (module:name:n:SIGNAL: right after the
# n-th call returns, the process sends SIGNAL to its own pid; SIGKILL ends it there, SIGTERM
# and SIGINT go to the daemon's handler), then run the real `otonom` command.
_DRIVER = r"""
import importlib, os, signal, sys

point, argv = sys.argv[1], sys.argv[2:]
if point != "none":
    target, n, action = point.rsplit(":", 2)
    module_name, name = target.split(":")
    module = importlib.import_module(module_name)
    real = getattr(module, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        out = real(*args, **kwargs)
        if calls[0] == int(n):
            sys.stdout.flush()
            os.kill(os.getpid(), getattr(signal, action))
        return out

    setattr(module, name, wrapper)
from otonom_runtime.cli import main

raise SystemExit(main(argv))
"""


def _otonom(
    url: str, *args: str, cwd: Path, point: str = "none"
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OTONOM_DATABASE_URL", "OTONOM_MODELS_ROOT")
    }
    return subprocess.run(
        [sys.executable, "-c", _DRIVER, point, "--database-url", url, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a guard against a hang, not a timing
    )


def _daemon(
    url: str, path: Path, cwd: Path, *extra: str, point: str = "none"
) -> subprocess.CompletedProcess[str]:
    return _otonom(
        url,
        "daemon",
        "--strategy-path",
        str(path),
        "--symbols",
        *SYMBOLS,
        *extra,
        cwd=cwd,
        point=point,
    )


def test_a_second_once_run_records_nothing_and_new_bars_are_decided_once(tmp_path: Path) -> None:
    path = _strategy(tmp_path)
    url = _store(tmp_path, end=dt.date(2020, 3, 1))
    first = _daemon(url, path, tmp_path, "--once")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("tick run 1: 3 decisions"), first.stdout
    assert "2020-03-01" in first.stdout
    second = _daemon(url, path, tmp_path, "--once")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "tick: nothing new (3 symbols decided already)"
    assert len(_live_counts(url)) == 3
    synth = _otonom(
        url,
        "data",
        "synth",
        *[a for s in SYMBOLS for a in ("--symbol", s)],
        "--start",
        "2019-01-01",
        "--end",
        "2020-03-04",
        "--seed",
        str(SEED),
        cwd=tmp_path,
    )
    assert synth.returncode == 0, synth.stderr
    third = _daemon(url, path, tmp_path, "--once")
    assert third.returncode == 0, third.stderr
    assert third.stdout.startswith("tick run 2: 3 decisions"), third.stdout
    counts = _live_counts(url)
    # the newest bar only: the days between were never decided (the daemon was not running)
    assert [c[1:] for c in counts] == [(dt.date(2020, 3, 1), 1), (dt.date(2020, 3, 4), 1)] * 3
    listed = _otonom(url, "runs", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "live*" in listed.stdout  # internal: never a dataset's teacher


@pytest.mark.parametrize(
    ("point", "whole"),
    [
        ("otonom_runtime.store.ticks:insert_decisions:1:SIGKILL", False),  # rows in, no commit
        ("otonom_runtime.daemon.loop:record_tick:1:SIGKILL", True),  # committed, then killed
    ],
)
def test_a_daemon_killed_mid_tick_leaves_the_whole_tick_or_nothing(
    tmp_path: Path, point: str, whole: bool
) -> None:
    path = _strategy(tmp_path)
    url = _store(tmp_path, end=dt.date(2020, 2, 1))
    killed = _daemon(url, path, tmp_path, "--once", point=point)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    with get_session(url) as session:  # opening for writing: nothing to mark failed either way
        runs = session.execute(select(BacktestRun.status)).scalars().all()
    assert runs == (["complete"] if whole else [])
    assert len(_live_counts(url)) == (3 if whole else 0)
    again = _daemon(url, path, tmp_path, "--once")
    assert again.returncode == 0, again.stderr
    assert [c[2] for c in _live_counts(url)] == [1, 1, 1]


@pytest.mark.parametrize("sent", ["SIGTERM", "SIGINT"])
def test_a_signal_mid_tick_finishes_the_tick_then_exits_cleanly(tmp_path: Path, sent: str) -> None:
    """SIGTERM or SIGINT arrives while the tick reads (no --once: the loop would tick again a
    second later): the tick's decisions are recorded, then the daemon exits 0 without another
    tick."""
    path = _strategy(tmp_path)
    url = _store(tmp_path, end=dt.date(2020, 2, 1))
    point = f"otonom_runtime.daemon.loop:_broker_inputs:1:{sent}"
    out = _daemon(url, path, tmp_path, "--interval", "1s", point=point)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("tick run") == 1, out.stdout
    assert len(_live_counts(url)) == 3


def test_sigterm_between_ticks_ends_the_wait_and_exits_cleanly(
    tmp_path: Path, start_otonom: Any
) -> None:
    """A daemon ticking hourly, signalled after its first tick (it waits for the next): it
    exits 0 without waiting out the hour, the first tick recorded."""
    path = _strategy(tmp_path)
    url = _store(tmp_path, end=dt.date(2020, 2, 1))
    args = ["daemon", "--strategy-path", str(path), "--symbols", *SYMBOLS, "--interval", "1h"]
    with start_otonom(url, tmp_path, *args) as daemon:
        assert daemon.stdout is not None
        first = daemon.stdout.readline()
        assert first.startswith("tick run 1: 3 decisions"), first
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=120)  # a guard against a hang, not a timing
    assert daemon.returncode == 0, err
    assert "tick" not in out  # no second tick
    assert len(_live_counts(url)) == 3


def test_a_universe_file_emptied_while_the_daemon_runs_does_not_stop_it(
    tmp_path: Path, start_otonom: Any
) -> None:
    """A daemon ticking every 2 s on ``--universe``: the file emptied after the first tick (a
    file being rewritten) leaves the next tick deciding the last universe read, with a warning,
    instead of ending the daemon."""
    path = _strategy(tmp_path)
    url = _store(tmp_path, end=dt.date(2020, 2, 1))
    universe = tmp_path / "universe.txt"
    universe.write_text("\n".join(SYMBOLS) + "\n", encoding="utf-8")
    args = ["daemon", "--strategy-path", str(path), "--universe", str(universe)]
    with start_otonom(url, tmp_path, *args, "--interval", "2s") as daemon:
        assert daemon.stdout is not None
        assert daemon.stdout.readline().startswith("tick run 1: 3 decisions")
        universe.write_text("", encoding="utf-8")
        lines = [daemon.stdout.readline() for _ in range(4)]  # the rest of tick 1, then tick 2
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=120)  # a guard against a hang, not a timing
    assert lines[3] == "tick: nothing new (3 symbols decided already)\n", (lines, err)
    assert daemon.returncode == 0, err
    assert (
        f"universe file {universe} names no symbol; expected one symbol a line; this tick "
        "decides the last universe read (3 symbols)"
    ) in err


def test_a_model_that_fails_to_load_leaves_the_daemon_deciding_without_rl(tmp_path: Path) -> None:
    path = _strategy(tmp_path, broken=True)
    url = _store(tmp_path, end=dt.date(2020, 2, 1))
    out = _daemon(url, path, tmp_path, "--once")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("RL analyst not in service, deciding without it: PolicyError")
    assert "tick run 1: 3 decisions" in out.stdout
    rows = _rows(url, live="live_test")
    assert len(rows) == 3
    assert all(r[-3:] == (None, None, None) for r in rows)  # no RL signal stored
    assert all(r[9] is not None for r in rows)  # the other analysts voted
    # the same decisions as the ensemble with the RL analyst off
    off = Ensemble.from_strategy(path, use_rl=False)
    with get_session(url) as session:
        decided = off.decide(session, SYMBOLS, dt.date(2020, 2, 1))
    assert [(int(d.action), d.strength) for d in decided] == [r[2:4] for r in rows]
    with get_session(url) as session:
        run = session.execute(select(BacktestRun)).scalar_one()
    assert run.params["rl_enabled"] is True
    assert run.params["rl_model_sha256"] is None


@pytest.mark.parametrize("mode", ["sole", "filter"])
def test_a_model_that_fails_to_load_leaves_every_mode_the_three_analysts_vote(
    tmp_path: Path, mode: str
) -> None:
    """The fallback in ``sole`` and ``filter`` mode is the plain three-analyst ensemble, as in
    ``voter``: a backtest with the broken model trades exactly as one with the RL analyst off,
    and so does the tick."""
    path = _strategy(tmp_path, broken=True, mode=MODES[mode])
    url = _store(tmp_path)
    config = load_strategy(path)
    assert config.ensemble.rl_policy.mode == mode
    with get_session(url) as session:
        on = run_backtest(session, config, SYMBOLS, START, HISTORY[1], use_rl=True)
        off = run_backtest(session, config, SYMBOLS, START, HISTORY[1], use_rl=False)
    on_rows, off_rows = _rows(url, run_id=on.run_id), _rows(url, run_id=off.run_id)
    assert on.fallbacks == len(on_rows) == 3 * 91
    assert on_rows == off_rows  # every value, the RL columns None in both
    assert {row[2] for row in on_rows} == {0, 1, 2}
    ensemble = Ensemble.from_strategy(path)
    assert ensemble.rl_error is not None
    with get_session(url) as session:
        decided = ensemble.decide(session, SYMBOLS, HISTORY[1])
        plain = Ensemble.from_strategy(path, use_rl=False).decide(session, SYMBOLS, HISTORY[1])
    assert decided == plain


def test_daemon_errors_are_one_line(tmp_path: Path) -> None:
    path = _strategy(tmp_path)
    url = _store(tmp_path, end=dt.date(2019, 8, 1))  # past the warm-up: the universe run decides
    cases = {
        ("--interval", "soon"): "interval is 'soon'; expected a positive whole number",
        ("--universe", "missing.txt"): "cannot read universe file missing.txt",
    }
    for extra, message in cases.items():
        args = ["daemon", "--strategy-path", str(path), *extra]
        if extra[0] != "--universe":
            args += ["--symbols", "DEMO-BTC"]
        out = _otonom(url, *args, "--once", cwd=tmp_path)
        assert out.returncode == 1
        assert out.stderr.startswith(f"error: {message}"), out.stderr
        assert out.stderr.count("\n") == 1, out.stderr
    unknown = _otonom(
        url, "daemon", "--strategy-path", str(path), "--symbols", "NOPE", "--once", cwd=tmp_path
    )
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1
    assert "NOPE" in unknown.stderr
    (tmp_path / "universe.txt").write_text("# the demo\nDEMO-BTC\n\nDEMO-ETH  # and this\n")
    ok = _otonom(
        url,
        "daemon",
        "--strategy-path",
        str(path),
        "--universe",
        "universe.txt",
        "--once",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("tick run 1: 2 decisions")
    helped = _otonom(url, "daemon", "--help", cwd=tmp_path)
    for flag in (
        "--strategy-path",
        "--symbols",
        "--universe",
        "--once",
        "--interval",
        "--as-of",
        "--no-rl",
    ):
        assert flag in helped.stdout


def test_the_loop_collects_garbage_between_ticks_not_in_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_daemon`` runs a full garbage collection after each tick, before it waits (never
    inside a tick, nor after the last one: a signal ends the loop first), and leaves the
    collector's settings as they were."""
    import gc

    from otonom_runtime.daemon import TickReport, run_daemon

    url, path = _store(tmp_path), _strategy(tmp_path)
    events: list[str] = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: events.append("collect") or collect(*a))
    settings = (gc.isenabled(), gc.get_threshold())

    def tick(session: Any, ensemble: Any, names: Any, broker: Any, **kw: Any) -> TickReport:
        events.append("tick")
        if events.count("tick") == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # finishes this tick, then the loop ends
        return TickReport(None)

    ticks = run_daemon(
        lambda: get_session(url),
        Ensemble.from_strategy(path),
        lambda: SYMBOLS,
        PaperBroker(),
        interval_s=0.01,
        tick=tick,
    )
    assert ticks == 3
    assert events == ["tick", "collect", "tick", "collect", "tick"]
    assert (gc.isenabled(), gc.get_threshold()) == settings
