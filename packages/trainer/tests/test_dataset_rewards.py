"""Return-aware offline learning (issue 15): the dataset's per-row rewards (``otonom-train dataset
--rewards``) equal the teacher run's equity change between consecutive decisions; the AWR
weights (``TrainingConfig.awr_beta``) up-weight rows with a positive advantage; a tiny AWR
training runs through the CLI and exports a model the runtime loads; a dataset without rewards
is refused in one line."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import otonom_schema as s
from otonom_runtime.backtest import BacktestReport, run_backtest
from otonom_runtime.policy import load_rl_policy
from otonom_runtime.store import get_session, init_db
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import write_synthetic
from otonom_trainer.dataset import generate_dataset
from otonom_trainer.rewards import RewardError, decision_rewards, with_rewards
from otonom_trainer.training.awr import advantage_weights
from otonom_trainer.training.losses import BehaviorCloningLoss

ROOT = Path(__file__).resolve().parents[3]
A, B = "DEMO-AAA", "DEMO-BBB"
FIRST, LAST = dt.date(2021, 1, 1), dt.date(2021, 12, 31)
START, END = dt.date(2021, 4, 1), dt.date(2021, 9, 30)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, BacktestReport]:
    url = f"sqlite:///{(tmp_path_factory.mktemp('rewards') / 'otonom.db').as_posix()}"
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, [A, B], FIRST, LAST, 7)
    strategy = load_strategy(ROOT / "strategies/baseline_v1.yaml")
    with get_session(url) as session:
        run_backtest(session, strategy, [A, B], START, LAST)
    with get_session(url) as session:  # one symbol: its sleeve is the whole portfolio
        report = run_backtest(session, strategy, [A], START, LAST)
    return url, report


def test_rewards_equal_the_teacher_runs_equity_change_between_decisions(
    store: tuple[str, BacktestReport],
) -> None:
    url, report = store
    with get_session(url) as session:
        ds = with_rewards(session, generate_dataset(session, A, START, END, run_id=report.run_id))
    assert ds.rewards is not None
    assert ds.metadata["format_version"] == 3
    equity = dict(zip(report.dates.astype("datetime64[D]").tolist(), report.equity, strict=True))
    days = sorted(equity)
    for i in range(len(ds) - 1):
        t = ds.dates[i].item()
        after = days[days.index(t) + 1]
        assert ds.dates[i + 1].item() == after  # the run decides on every bar
        assert ds.rewards[i] == pytest.approx(equity[after] / equity[t] - 1, rel=1e-5, abs=1e-9)
    assert np.isnan(ds.rewards[-1])  # no next decision in the dataset (END): never read
    assert ds.metadata["rewards"]["rows"] == len(ds) - 1
    assert np.abs(ds.rewards[:-1]).max() > 0  # the run traded: some decisions earned or lost


def test_two_symbol_rewards_are_each_sleeves_and_bad_metadata_is_refused(
    store: tuple[str, BacktestReport],
) -> None:
    url, _ = store
    with get_session(url) as session:
        ds = with_rewards(session, generate_dataset(session, [A, B], START, END))
        assert ds.rewards is not None
        for name in (A, B):
            rows = ds.rewards[ds.symbols == name]
            assert np.isnan(rows[-1])
            assert np.isfinite(rows[:-1]).all()
        broken = s.OfflineDataset(
            ds.states, ds.actions, ds.strengths, ds.symbols, ds.dates, {"source": "x"}
        )
        with pytest.raises(RewardError, match="names no teacher run for 'DEMO-AAA'"):
            with_rewards(session, broken)


def test_decision_rewards_by_hand() -> None:
    r = decision_rewards(np.array([100.0, 110.0, 99.0, 0.0, 5.0]))
    np.testing.assert_allclose(r[:3], [0.1, -0.1, -1.0], rtol=1e-6)
    assert np.isnan(r[3])  # a bust sleeve (equity 0) has no return
    assert np.isnan(r[4])


def test_awr_weights_up_weight_rows_with_a_positive_advantage() -> None:
    rewards = np.array([0.02, 0.0, -0.02, np.nan, 0.0])
    w = advantage_weights(rewards, beta=0.01, max_weight=20.0)
    assert w.mean() == pytest.approx(1.0)
    assert w[0] > w[1] > w[2]  # better outcome, more weight
    assert w[3] == pytest.approx(w[1])  # unknown reward: advantage 0, like the mean row
    assert w[0] / w[1] == pytest.approx(np.exp(2.0))  # exp(A / beta), mean reward 0
    clipped = advantage_weights(rewards, beta=0.001, max_weight=5.0)
    assert clipped[0] / clipped[1] == pytest.approx(5.0)  # exp(20) clipped at the max weight
    assert advantage_weights([np.nan, np.nan], 0.1, 20.0).tolist() == [1.0, 1.0]


def test_the_weighted_action_term_is_the_weighted_mean_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g)
    actions = torch.tensor([0, 1, 2, 1, 0, 2])
    strengths, pred = torch.rand(6, generator=g), torch.rand(6, 1, generator=g)
    sw = torch.full((6,), 1 / 4)
    w = torch.tensor([2.0, 0.5, 1.0, 1.5, 0.5, 0.5])
    fn = BehaviorCloningLoss()
    ce = torch.nn.functional.cross_entropy(logits, actions, reduction="none")
    weighted = fn.batch_terms(logits, pred, actions, strengths, sw, w)
    assert float(weighted.action) == pytest.approx(float((w * ce).mean()), rel=1e-6)
    plain = fn.batch_terms(logits, pred, actions, strengths, sw)
    ones = fn.batch_terms(logits, pred, actions, strengths, sw, torch.ones(6))
    assert float(ones.action) == pytest.approx(float(plain.action), rel=1e-6)
    assert float(weighted.strength) == float(plain.strength)  # the strength term is unchanged


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_trainer", *args],
        capture_output=True, text=True, cwd=cwd, check=False,
    )  # fmt: skip


def test_cli_rewards_dataset_then_an_awr_training_exports_a_loadable_model(
    store: tuple[str, BacktestReport], tmp_path: Path
) -> None:
    url, _ = store
    common = ["--symbol", A, "--start", "2021-04-01", "--end", "2021-09-30", "--database-url", url]
    done = _cli("dataset", *common, "--rewards", "--output", "r.npz", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert s.load_dataset(tmp_path / "r.npz").rewards is not None
    tiny = ["--epochs", "2", "--hidden-dim", "8", "--num-layers", "1", "--device", "cpu",
            "--no-progress"]  # fmt: skip
    done = _cli("train", "--dataset", "r.npz", "--output", "m", "--awr-beta", "0.01", *tiny,
                cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "AWR: beta=0.01" in done.stdout
    assert "matches torch at batch 1, 7 and 256" in done.stdout  # the export's parity check
    policy = load_rl_policy(tmp_path / "m" / "policy_best.onnx")
    assert policy is not None
    # a dataset without rewards: one line naming the flag that makes them, nothing trained
    assert _cli("dataset", *common, "--output", "p.npz", cwd=tmp_path).returncode == 0
    done = _cli("train", "--dataset", "p.npz", "--output", "n", "--awr-beta", "0.01", *tiny,
                cwd=tmp_path)  # fmt: skip
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "has no rewards" in last, done.stderr
    assert "otonom-train dataset --rewards" in last
    assert not (tmp_path / "n" / "policy_best.onnx").exists()
