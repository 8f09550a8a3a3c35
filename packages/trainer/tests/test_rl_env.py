"""``TradingEnv``: for a real backtest's decisions, its observations are the offline dataset's
states of that run (bit for bit) and its rewards sum to the run's total return; in each
deployment mode (the 4th voter, the sole decider, a filter), a policy acting in it reproduces
the RL-on backtest in that mode."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from otonom_runtime._errors import BacktestError, StateBuildError
from otonom_runtime.backtest import SleeveEpisode, episode_inputs, run_backtest
from otonom_runtime.policy import RlPolicy, load_rl_policy
from otonom_runtime.store import Decision, get_session, init_db
from otonom_runtime.strategy import StrategyConfig, load_strategy
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.models import make_policy_model
from otonom_trainer.dataset import generate_dataset
from otonom_trainer.rl.env import RlError, TradingEnv, bc_strength, load_trading_env

gymnasium = pytest.importorskip("gymnasium")

ROOT = Path(__file__).resolve().parents[3]
BASELINE = ROOT / "strategies" / "baseline_v1.yaml"
SYMBOL = "DEMO-ENV"
BARS = (dt.date(2020, 7, 1), dt.date(2021, 12, 31))
START, END = dt.date(2021, 1, 1), dt.date(2021, 12, 31)


@dataclass(frozen=True)
class Runs:
    url: str
    teacher: int  # RL analyst off
    voter: int  # RL analyst on, ``policy``
    policy: RlPolicy
    returns: dict[int, float]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    folder = tmp_path_factory.mktemp("rl_env")
    url = f"sqlite:///{(folder / 'otonom.db').as_posix()}"
    init_db(url)
    strategy = load_strategy(BASELINE)
    make_policy_model(folder / "policy_best.onnx", seed=3)
    policy = load_rl_policy(folder)
    with get_session(url) as session:
        write_synthetic(session, [SYMBOL], *BARS, 5)
    with get_session(url) as session:
        teacher = run_backtest(session, strategy, [SYMBOL], START, END, use_rl=False)
        voter = run_backtest(session, strategy, [SYMBOL], START, END, use_rl=True, policy=policy)
    assert voter.fallbacks == 0
    returns = {r.run_id: r.metrics.total_return for r in (teacher, voter)}
    return Runs(url, teacher.run_id, voter.run_id, policy, returns)


def _decisions(url: str, run_id: int) -> list[Decision]:
    with get_session(url) as session:
        query = select(Decision).where(Decision.run_id == run_id).order_by(Decision.date)
        return list(session.scalars(query).all())


def _env(runs: Runs, **options: Any) -> TradingEnv:
    return load_trading_env(runs.url, load_strategy(BASELINE), SYMBOL, START, END, **options)


def _episode(env: TradingEnv, actions: list[int]) -> tuple[np.ndarray, list[float], list[Any]]:
    obs, info = env.reset(seed=0)
    seen, rewards, infos = [obs], [], [info]
    for k, action in enumerate(actions[:-1]):
        obs, reward, terminated, truncated, info = env.step(action)
        assert terminated == (k == len(actions) - 2)
        assert not truncated
        seen.append(obs)
        rewards.append(reward)
        infos.append(info)
    return np.array(seen), rewards, infos


def test_replayed_decisions_give_the_backtest_states_and_return(runs: Runs) -> None:
    rows = _decisions(runs.url, runs.teacher)
    recorded = [(r.strength, 1.0) for r in rows]
    env = _env(runs, strength=lambda day, state: recorded[day])
    assert isinstance(env, gymnasium.Env)
    assert isinstance(env, TradingEnv)
    obs, rewards, infos = _episode(env, [r.action for r in rows])
    with get_session(runs.url) as session:
        dataset = generate_dataset(session, SYMBOL, START, END, run_id=runs.teacher)
    assert obs.dtype == np.float32
    assert obs.shape == dataset.states.shape
    assert np.array_equal(obs, dataset.states)  # bit for bit
    assert [i["equity"] for i in infos] == [r.equity for r in rows]  # the sleeve, day for day
    assert [i["decision"][:2] for i in infos[1:]] == [(r.action, r.strength) for r in rows[:-1]]
    assert sum(rewards) == pytest.approx(runs.returns[runs.teacher], abs=1e-12)
    assert infos[-1]["total_return"] == runs.returns[runs.teacher]
    assert len({r.action for r in rows}) == 3  # the replay exercised every action


def _rl_run(runs: Runs, config: StrategyConfig) -> int:
    """A backtest of ``config`` with ``runs.policy`` as the RL analyst; its run id."""
    with get_session(runs.url) as session:
        report = run_backtest(
            session, config, [SYMBOL], START, END, use_rl=True, policy=runs.policy
        )
    assert report.fallbacks == 0
    runs.returns[report.run_id] = report.metrics.total_return
    return report.run_id


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("voter", {}),
        ("sole", {}),
        ("filter", {}),
        ("filter", {"filter_veto": "differs", "filter_size": True}),
        (None, {"mode": "filter", "filter_size": True}),  # None: the strategy's own mode
    ],
    ids=["voter", "sole", "filter", "filter-differs-size", "strategy-filter"],
)
def test_the_policy_in_each_mode_reproduces_the_rl_backtest(
    runs: Runs, mode: str | None, options: dict[str, Any]
) -> None:
    """The policy's own actions, with ``bc_strength``, in each deployment mode: the RL-on
    backtest's decisions, states and return in that mode (the strategy's
    ``ensemble.rl_policy.mode``, ``filter_veto`` and ``filter_size``), as the RL votes
    stored on its rows."""
    config = load_strategy(BASELINE)
    rl = replace(config.ensemble.rl_policy, **{"mode": mode or "voter", **options})
    config = replace(config, ensemble=replace(config.ensemble, rl_policy=rl))
    run_id = runs.voter if mode == "voter" else _rl_run(runs, config)
    rows = _decisions(runs.url, run_id)
    env = load_trading_env(
        runs.url, config, SYMBOL, START, END, mode=mode, strength=bc_strength(runs.policy)
    )
    assert env.mode == rl.mode
    obs, _ = env.reset()
    rewards, k = [], 0
    while True:
        action, strength, probs = runs.policy.predict(obs, return_probs=True)
        row = rows[k]
        assert (int(action), strength, float(np.max(probs))) == (
            row.rl_action,
            row.rl_strength,
            row.rl_confidence,
        )
        obs, reward, terminated, _, info = env.step(int(action))
        assert info["decision"][:2] == (row.action, row.strength)
        rewards.append(reward)
        k += 1
        if terminated:
            break
    assert k == len(rows) - 1
    assert sum(rewards) == pytest.approx(runs.returns[run_id], abs=1e-12)
    assert info["total_return"] == runs.returns[run_id]
    if mode == "sole":
        assert [r.action for r in rows] == [r.rl_action for r in rows]


def test_a_fixed_strength_and_the_sole_mode(runs: Runs) -> None:
    """``"sole"``: the action is the decision at the fixed strength; the same actions from
    the runtime's episode give the same rewards."""
    env = _env(runs, strength=0.5)
    actions = [1, 1, 0, 2, 2, 0] * 70
    _, rewards, infos = _episode(env, actions[: env.inputs.n_days])
    assert {i["decision"][1] for i in infos[1:]} == {0.5}
    episode = SleeveEpisode(env.inputs)
    episode.reset()
    again = [episode.step(a, 0.5)[1] for a in actions[: env.inputs.n_days - 1]]
    assert again == rewards
    from gymnasium.utils.env_checker import check_env

    check_env(env, skip_render_check=True)  # type: ignore[arg-type]  # gymnasium's own API checks


def test_bad_options_and_calls_are_one_line_errors(runs: Runs) -> None:
    with pytest.raises(RlError, match="mode is 'boss'; expected one of voter, sole, filter"):
        _env(runs, mode="boss")
    with pytest.raises(RlError, match=r"strength is 1.5; expected a number in \[0, 1\]"):
        _env(runs, strength=1.5)
    env = _env(runs)
    with pytest.raises(RlError, match="step\\(\\) before reset\\(\\)"):
        env.step(0)
    env.reset()
    with pytest.raises(RlError, match="action is 3; expected 0 \\(HOLD\\)"):
        env.step(3)
    for _ in range(env.inputs.n_days - 1):
        env.step(0)
    with pytest.raises(RlError, match="step\\(\\) before reset\\(\\)"):
        env.step(0)
    with get_session(runs.url) as session, pytest.raises(StateBuildError, match="DEMO-ENV"):
        episode_inputs(session, load_strategy(BASELINE), SYMBOL, *[dt.date(2030, 1, 1)] * 2)
    episode = SleeveEpisode(env.inputs)
    with pytest.raises(BacktestError, match="call reset"):
        episode.step(0, 1.0)


def test_importing_the_env_imports_no_gymnasium_nor_torch() -> None:
    code = (
        "import sys, otonom_trainer.rl.env; "
        "print(sorted({'gymnasium', 'torch', 'stable_baselines3'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
