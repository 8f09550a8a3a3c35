"""PPO fine-tuning from the clone: the actor starts as the clone (same distribution), the
regulariser is the documented one, and ``otonom-train finetune`` writes a model the runtime
loads, whose 4th-voter backtest earns what the fine-tuning reported."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from otonom_runtime import load_rl_policy
from otonom_runtime.backtest import episode_inputs, run_backtest
from otonom_runtime.store import get_session, init_db
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import write_synthetic
from otonom_schema import load_dataset
from otonom_trainer.config import TrainingConfig
from otonom_trainer.dataset import generate_dataset, save_dataset
from otonom_trainer.rl import ppo as ppo_module
from otonom_trainer.rl.env import RlError
from otonom_trainer.rl.ppo import ActorStrength, FinetuneConfig, make_ppo
from otonom_trainer.train import BehaviorCloningTrainer
from otonom_trainer.training.checkpoint import load_checkpoint

pytest.importorskip("stable_baselines3")
torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[3]
BASELINE = ROOT / "strategies" / "baseline_v1.yaml"
SYMBOL = "DEMO-PPO"
BARS = (dt.date(2020, 7, 1), dt.date(2021, 12, 31))
TRAIN = (dt.date(2021, 1, 1), dt.date(2021, 8, 31))
EVAL = (dt.date(2021, 9, 1), dt.date(2021, 12, 31))
TINY = FinetuneConfig(timesteps=128, n_steps=64, batch_size=32, n_epochs=1, seed=1)


@dataclass(frozen=True)
class Clone:
    url: str
    folder: Path  # the BC training run
    states: np.ndarray  # the training dataset's states


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Clone:
    folder = tmp_path_factory.mktemp("rl_finetune")
    url = f"sqlite:///{(folder / 'otonom.db').as_posix()}"
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, [SYMBOL], *BARS, 9)
    with get_session(url) as session:
        run = run_backtest(session, load_strategy(BASELINE), [SYMBOL], *TRAIN, use_rl=False)
        dataset = generate_dataset(session, SYMBOL, *TRAIN, run_id=run.run_id)
    save_dataset(dataset, folder / "dataset.npz")
    config = TrainingConfig(
        dataset_path=str(folder / "dataset.npz"),
        output_dir=str(folder / "bc"),
        max_epochs=10,
        hidden_dim=32,
        seed=0,
    )
    BehaviorCloningTrainer(config).train()
    return Clone(url, folder / "bc", np.array(load_dataset(folder / "dataset.npz").states))


def _ppo(clone: Clone, config: FinetuneConfig = TINY) -> tuple[object, object]:
    net, _ = load_checkpoint(clone.folder / "policy_best.pt")
    with get_session(clone.url) as session:
        inputs = episode_inputs(session, load_strategy(BASELINE), SYMBOL, *TRAIN)
    return make_ppo(inputs, net, config), net  # type: ignore[arg-type]


def test_the_actor_starts_as_the_clone(clone: Clone) -> None:
    model, net = _ppo(clone)
    states = torch.as_tensor(clone.states)
    probs = model.policy.get_distribution(states).distribution.probs  # type: ignore[attr-defined]
    with torch.no_grad():
        expected, _ = net.probabilities(states)  # type: ignore[attr-defined]
    # torch's Categorical normalises the logits first: equal to float32 rounding
    torch.testing.assert_close(probs.detach(), expected, rtol=0.0, atol=1e-6)
    with torch.no_grad():  # and the actor is the same network: the same logits, bit for bit
        assert torch.equal(model.policy.actor(states)[0], net(states)[0])  # type: ignore[attr-defined, operator]
    served = load_rl_policy(clone.folder).predict_batch(clone.states)[2]
    np.testing.assert_allclose(probs.detach().numpy(), served, atol=1e-5)  # the ONNX clone's
    # at the start the regulariser is 0: no KL to the teacher, no strength error, no entropy
    actions = probs.argmax(dim=1)
    _, _, regulariser = model.policy.evaluate_actions(states, actions)  # type: ignore[attr-defined]
    assert torch.equal(regulariser.detach(), torch.zeros(len(states)))


def test_the_kl_term_pulls_back_toward_the_clone(clone: Clone) -> None:
    model, _ = _ppo(clone, FinetuneConfig(kl_coef=2.0, n_steps=64, batch_size=32))
    policy = model.policy  # type: ignore[attr-defined]
    with torch.no_grad():
        policy.actor.action_head.bias += torch.tensor([2.0, -1.0, -1.0])
    states = torch.as_tensor(clone.states)
    _, _, regulariser = policy.evaluate_actions(states, torch.zeros(len(states)))
    assert bool((regulariser < 0).all())  # - kl_coef x KL: a loss of + 2 KL
    # the optimizer's one flat buffer holds the actor's weights (and the critic's)
    flat = policy.optimizer.param_groups[0]["params"][0]
    first = next(policy.actor.parameters())
    assert first.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()


def test_the_flat_adam_updates_as_torchs_adam_bit_for_bit(
    clone: Clone, monkeypatch: pytest.MonkeyPatch
) -> None:
    flat_model, net = _ppo(clone)
    flat_model.learn(total_timesteps=128)  # type: ignore[attr-defined]

    def torch_adam(trained: Any, lr: float, kwargs: dict[str, Any]) -> Any:
        return torch.optim.Adam(trained.parameters(), lr=lr, **kwargs)

    monkeypatch.setattr(ppo_module, "_flat_adam", torch_adam)
    torch_model, _ = _ppo(clone)
    assert isinstance(torch_model.policy.optimizer, torch.optim.Adam)  # type: ignore[attr-defined]
    torch_model.learn(total_timesteps=128)  # type: ignore[attr-defined]
    pairs = [
        (getattr(flat_model.policy, part), getattr(torch_model.policy, part))  # type: ignore[attr-defined]
        for part in ("actor", "critic")
    ]
    for ours, theirs in pairs:
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b)
    tuned, cloned = pairs[0][0].parameters(), net.parameters()  # type: ignore[attr-defined]
    moved = [not torch.equal(a, b) for a, b in zip(tuned, cloned, strict=True)]
    assert any(moved)  # the updates did change the actor


def _counted(method: Any, calls: list[int]) -> Any:
    """``method`` that records the row count of each call in ``calls``."""

    def counted(states: Any) -> Any:
        calls.append(len(states))
        return method(states)

    return counted


def test_an_offered_strength_is_the_nets_own_used_once_and_for_its_state_only(
    clone: Clone,
) -> None:
    net, _ = load_checkpoint(clone.folder / "policy_best.pt")
    net.eval()
    fn = ActorStrength(net)
    state, other = clone.states[0].astype(np.float64), clone.states[1].astype(np.float64)
    expected = fn(0, state)  # the net run on the state
    with torch.no_grad():
        logits, strength = net(torch.as_tensor(state[None], dtype=torch.float32))
    fn.offer(state.astype(np.float32), logits, strength)
    assert fn(0, state) == expected  # the offer, bit for bit
    calls: list[int] = []
    net.probabilities = _counted(net.probabilities, calls)  # type: ignore[method-assign]
    assert fn(0, state) == expected  # an offer serves one call: the net again
    fn.offer(other.astype(np.float32), logits + torch.tensor([9.0, 0.0, 0.0]), strength * 0)
    assert fn(0, state) == expected  # made for another state: not used
    assert calls == [1, 1]


def test_rollout_steps_take_their_strength_from_the_policys_forward(clone: Clone) -> None:
    model, _ = _ppo(clone)
    actor = model.policy.actor  # type: ignore[attr-defined]
    calls: list[int] = []
    actor.probabilities = _counted(actor.probabilities, calls)
    model.learn(total_timesteps=128)  # type: ignore[attr-defined]
    assert calls == []  # 128 steps, no second forward for their strength


def test_fine_tuning_does_not_import_dynamo(clone: Clone) -> None:
    """torch.optim.Adam imports torch._dynamo at its first step (~2.8 s of CPU)."""
    code = """
import datetime as dt, sys
from otonom_runtime.backtest import episode_inputs
from otonom_runtime.store import get_session
from otonom_runtime.strategy import load_strategy
from otonom_trainer.rl.ppo import ActorStrength, FinetuneConfig, make_ppo
from otonom_trainer.training.checkpoint import load_checkpoint
url, checkpoint, strategy, symbol, start, end = sys.argv[1:]
net, _ = load_checkpoint(checkpoint)
with get_session(url) as session:
    days = (dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    inputs = episode_inputs(session, load_strategy(strategy), symbol, *days)
config = FinetuneConfig(timesteps=128, n_steps=64, batch_size=32, n_epochs=1, seed=1)
make_ppo(inputs, net, config).learn(total_timesteps=128)
print("torch._dynamo" in sys.modules)
"""
    args = [clone.url, str(clone.folder / "policy_best.pt"), str(BASELINE), SYMBOL]
    args += [TRAIN[0].isoformat(), TRAIN[1].isoformat()]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "False\n"


def test_bad_options_are_one_line_errors(clone: Clone) -> None:
    with pytest.raises(RlError, match="mode: got 'boss'"):
        FinetuneConfig(mode="boss")
    with pytest.raises(RlError, match="batch_size is 128; expected at most n_steps \\(64\\)"):
        _ppo(clone, FinetuneConfig(n_steps=64, batch_size=128))


def _cli(*args: str, tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "finetune", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_finetune_writes_a_model_the_runtime_serves(clone: Clone, tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    scratch = tmp_path / "tmp"  # the process's temp directory: SB3's logger leaves nothing
    scratch.mkdir()
    spans = ("--start-date", TRAIN[0].isoformat())  # the end from the clone's training data
    done = _cli(
        "--from", str(clone.folder), "--out", str(out), "--symbol", SYMBOL, *spans,
        "--eval-start-date", EVAL[0].isoformat(), "--eval-end-date", EVAL[1].isoformat(),
        "--timesteps", "128", "--n-steps", "64", "--batch-size", "32", "--n-epochs", "1",
        "--strategy-path", str(BASELINE), "--database-url", clone.url, tmpdir=scratch,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(
        f"training days: {TRAIN[0]} .. {TRAIN[1]} (the end from the clone's training period in "
        f"{clone.folder / 'metadata.json'}; --start-date/--end-date choose others)\n"
    )
    assert "fine-tuned (voter, 128 steps)" in done.stdout
    assert [p.name for p in scratch.iterdir() if p.name.startswith("SB3-")] == []
    # SB3 imports the unmaintained gym when installed (d3rlpy pulls it): hidden, no notice
    assert done.stderr == "", done.stderr
    report = json.loads((out / "finetune.json").read_text())
    policy = load_rl_policy(out)  # sealed, parity-checked, loads in the runtime
    meta = policy.get_metadata()
    assert meta["finetune_train_return_after"] == report["train_return_after"]
    # judged in the backtester as the 4th voter: the return the fine-tuning reported
    with get_session(clone.url) as session:
        run = run_backtest(
            session, load_strategy(BASELINE), [SYMBOL], *EVAL, use_rl=True, policy=policy
        )
    assert run.metrics.total_return == pytest.approx(report["eval_return_after"], abs=1e-6)


def test_finetune_refuses_a_folder_without_a_clone(clone: Clone, tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    done = _cli(
        "--from", str(tmp_path), "--out", str(out), "--symbol", SYMBOL,
        "--start-date", TRAIN[0].isoformat(), "--end-date", TRAIN[1].isoformat(),
        "--database-url", clone.url,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: --from {tmp_path} holds no policy_best.pt; expected a training run's folder"
    ]
    assert not out.exists()


def test_the_training_days_default_to_the_clones_training_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from otonom_trainer.rl.finetune import _training_days

    given = (dt.date(2021, 2, 1), dt.date(2021, 3, 1))
    assert _training_days(tmp_path, *given) == given  # both given: nothing read, nothing said
    assert capsys.readouterr().out == ""
    with pytest.raises(RlError, match="names no training period to take them from"):
        _training_days(tmp_path, given[0], None)  # no metadata.json
    record = {"dataset": {"metadata": {"start_date": "2021-01-04", "end_date": "2021-08-31"}}}
    (tmp_path / "metadata.json").write_text(json.dumps(record))
    assert _training_days(tmp_path, None, None) == (dt.date(2021, 1, 4), dt.date(2021, 8, 31))
    assert "(the start and the end from the clone's training period in" in capsys.readouterr().out
    assert _training_days(tmp_path, None, given[1]) == (dt.date(2021, 1, 4), given[1])
    assert "(the start from the clone's" in capsys.readouterr().out
