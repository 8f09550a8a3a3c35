"""The dataset's teacher: which backtest run is taken by default, which are refused, and that
the choice is said (metadata, log, ``save_dataset``, the CLI). One real SQLite store with a run
of every kind: RL-off user runs (one covering the year, one newer but shorter), an RL-on run,
a gate run (internal) and a run still ``running``."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from otonom_runtime.backtest import run_backtest
from otonom_runtime.policy import load_rl_policy
from otonom_runtime.store import BacktestRun, dispose_engines, get_session, init_db
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.models import make_policy_model
from otonom_trainer.dataset import DatasetGenerationError, OfflineDatasetGenerator

ROOT = Path(__file__).resolve().parents[3]
BASELINE = ROOT / "strategies" / "baseline_v1.yaml"
SYM, OTHER = "DEMO-TCH", "DEMO-NOT"
FIRST, LAST = dt.date(2021, 1, 1), dt.date(2021, 12, 31)
LATE = dt.date(2021, 7, 1)
YEAR = (FIRST, LAST)


@dataclass(frozen=True)
class Runs:
    url: str
    teacher: int  # oldest: user, RL off, SYM only, the whole year
    rl_on: int  # SYM and OTHER, the whole year, RL analyst on
    gate: int  # SYM and OTHER, the whole year, RL off, purpose "gate" (internal)
    short: int  # SYM and OTHER, LATE .. LAST, RL off, user
    running: int  # newest: SYM and OTHER, the whole year, still running


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    folder = tmp_path_factory.mktemp("teacher")
    url = f"sqlite:///{(folder / 'otonom.db').as_posix()}"
    init_db(url)
    make_policy_model(folder / "model" / "policy_best.onnx")
    policy = load_rl_policy(folder / "model")
    strategy = load_strategy(BASELINE)
    both = [SYM, OTHER]
    with get_session(url) as session:
        write_synthetic(session, both, FIRST, LAST, 5)
        teacher = run_backtest(session, strategy, [SYM], *YEAR).run_id
        rl_on = run_backtest(session, strategy, both, *YEAR, use_rl=True, policy=policy).run_id
        gate = run_backtest(session, strategy, both, *YEAR, use_rl=False, purpose="gate").run_id
        short = run_backtest(session, strategy, both, LATE, LAST).run_id
        running = BacktestRun(
            strategy_name="baseline_v1",
            strategy_hash="x",
            params={"rl_enabled": False, "purpose": "user"},
            start_date=FIRST,
            end_date=LAST,
            symbols=both,
            status="running",
        )
        session.add(running)
        session.commit()
        yield Runs(url, teacher, rl_on, gate, short, running.id)
    dispose_engines()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_trainer", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )


def test_the_default_skips_rl_on_internal_incomplete_and_short_runs(runs: Runs) -> None:
    """Four newer runs hold SYM over the year; only the oldest may teach it."""
    assert runs.teacher < runs.rl_on < runs.gate < runs.short < runs.running
    with get_session(runs.url) as session:
        ds = OfflineDatasetGenerator(session).generate_dataset(SYM, *YEAR)
    assert ds.metadata["symbol_runs"] == {SYM: runs.teacher}
    assert ds.metadata["teacher"] == (
        f"run {runs.teacher} (baseline_v1, RL off, 2021-01-01 .. 2021-12-31) for DEMO-TCH"
    )
    assert ds.metadata["runs"][0]["rl_enabled"] is False
    assert ds.metadata["runs"][0]["purpose"] == "user"
    assert len(ds) == 365


def test_a_range_the_newer_short_run_covers_is_taught_by_it(runs: Runs) -> None:
    with get_session(runs.url) as session:
        ds = OfflineDatasetGenerator(session).generate_dataset(SYM, LATE, LAST)
    assert ds.metadata["symbol_runs"] == {SYM: runs.short}


def test_the_chosen_run_is_logged(runs: Runs, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="otonom_trainer.dataset"),
        get_session(runs.url) as session,
    ):
        OfflineDatasetGenerator(session).generate_dataset(SYM, *YEAR)
    assert f"dataset teacher: run {runs.teacher} (baseline_v1, RL off" in caplog.text


def test_no_teacher_lists_every_run_and_why_and_the_command(runs: Runs) -> None:
    with get_session(runs.url) as session, pytest.raises(DatasetGenerationError) as info:
        OfflineDatasetGenerator(session).generate_dataset(OTHER, *YEAR)
    message = str(info.value)
    assert message.startswith(
        "no backtest run can teach 'DEMO-NOT' over 2021-01-01 .. 2021-12-31 (expected a "
        "complete run with the RL analyst off, not internal, whose dates cover that range); "
        "passed over: "
    )
    whys = {
        runs.running: "not complete (running)",
        runs.short: "does not cover 2021-01-01 .. 2021-12-31",
        runs.gate: "internal (gate)",
        runs.rl_on: "RL analyst on",
    }
    for run_id, why in whys.items():
        assert f"run {run_id} (" in message
        assert f"): {why}" in message, why
    assert f"run {runs.teacher} (" not in message  # it does not hold DEMO-NOT
    assert message.endswith(
        ". Make one: otonom backtest --strategy-path strategies/baseline_v1.yaml --symbol "
        "DEMO-NOT --start-date 2021-01-01 --end-date 2021-12-31 --no-rl"
    )
    assert "\n" not in message


def test_an_rl_on_run_id_is_refused_unless_allowed(runs: Runs) -> None:
    with get_session(runs.url) as session:
        gen = OfflineDatasetGenerator(session)
        with pytest.raises(DatasetGenerationError) as info:
            gen.generate_dataset(SYM, *YEAR, run_id=runs.rl_on)
        message = str(info.value)
        assert f"run {runs.rl_on} (baseline_v1, RL on, 2021-01-01 .. 2021-12-31)" in message
        assert "a policy trained on its own votes learns nothing" in message
        assert "--allow-rl-run" in message
        ds = gen.generate_dataset(SYM, *YEAR, run_id=runs.rl_on, allow_rl_run=True)
    assert ds.metadata["symbol_runs"] == {SYM: runs.rl_on}
    assert "RL on" in ds.metadata["teacher"]
    assert ds.metadata["runs"][0]["rl_enabled"] is True


def test_a_gate_run_id_is_refused_unless_the_gate_asks(runs: Runs) -> None:
    with get_session(runs.url) as session:
        gen = OfflineDatasetGenerator(session)
        with pytest.raises(
            DatasetGenerationError,
            match=rf"run {runs.gate} \(.*\) is an internal run \(gate: made to judge a model",
        ):
            gen.generate_dataset(SYM, *YEAR, run_id=runs.gate)
        ds = gen.generate_dataset(SYM, *YEAR, run_id=runs.gate, allow_internal_run=True)
    assert ds.metadata["runs"][0]["purpose"] == "gate"


def test_an_unknown_purpose_is_refused_before_any_run_row(runs: Runs) -> None:
    with get_session(runs.url) as session:
        before = session.query(BacktestRun).count()
        with pytest.raises(ValueError, match="purpose is 'mine'; expected one of user, pipeline"):
            run_backtest(session, load_strategy(BASELINE), [SYM], *YEAR, purpose="mine")
        assert session.query(BacktestRun).count() == before


def test_cli_prints_the_teacher_and_refuses_an_rl_run(runs: Runs, tmp_path: Path) -> None:
    common = ["dataset", "--database-url", runs.url, "--symbol", SYM]
    dates = ["--start-date", "2021-01-01", "--end-date", "2021-12-31"]
    out = _cli(*common, *dates, "--output", str(tmp_path / "a.npz"))
    assert out.returncode == 0, out.stderr
    want = f"Teacher: run {runs.teacher} (baseline_v1, RL off, 2021-01-01 .. 2021-12-31) for {SYM}"
    assert want in out.stdout.splitlines()

    refused = tmp_path / "b.npz"
    out = _cli(*common, *dates, "--run-id", str(runs.rl_on), "--output", str(refused))
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: run {runs.rl_on} (baseline_v1, RL on")
    assert "--allow-rl-run" in lines[0]
    assert not refused.exists()

    out = _cli(
        *common, *dates, "--run-id", str(runs.rl_on), "--allow-rl-run", "--output", str(refused)
    )
    assert out.returncode == 0, out.stderr
    assert f"Teacher: run {runs.rl_on} (baseline_v1, RL on" in out.stdout
    assert refused.is_file()


def test_runs_list_and_show_mark_the_gate_run_internal(runs: Runs) -> None:
    def otonom(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "otonom_runtime", "--database-url", runs.url, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ},
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    listing = otonom("runs", "list")
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[2:] if line[:1] != "*"}
    assert "made by" in listing.splitlines()[0]
    assert "gate*" in rows[str(runs.gate)]
    for run_id in (runs.teacher, runs.rl_on, runs.short):
        assert "user" in rows[str(run_id)]
    assert listing.splitlines()[-1].startswith("* internal: a run made by otonom-train check")
    assert "made by     gate (internal)" in otonom("runs", "show", str(runs.gate))
    assert "made by     user\n" in otonom("runs", "show", str(runs.teacher))


def test_a_live_tick_is_never_the_teacher(tmp_path: Path) -> None:
    """A daemon tick with the RL analyst off (``otonom_runtime.daemon``) is a complete run
    deciding SYM's last day, newer than the backtest: it is internal (``live``), so the
    backtest still teaches that day."""
    from otonom_runtime.daemon import Ensemble, PaperBroker, run_tick

    url = f"sqlite:///{(tmp_path / 'otonom.db').as_posix()}"
    init_db(url)
    span = (dt.date(2021, 6, 1), dt.date(2021, 6, 30))
    with get_session(url) as session:
        write_synthetic(session, [SYM], FIRST, span[1], 5)
        teacher = run_backtest(session, load_strategy(BASELINE), [SYM], *span).run_id
        tick = run_tick(session, Ensemble.from_strategy(BASELINE), [SYM], PaperBroker())
        assert tick.run_id is not None
        assert tick.run_id > teacher
        ds = OfflineDatasetGenerator(session).generate_dataset(SYM, span[1], span[1])
    assert ds.metadata["symbol_runs"] == {SYM: teacher}
