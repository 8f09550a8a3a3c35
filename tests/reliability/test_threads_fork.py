"""Threads and fork: one loaded policy shared by 16 threads, a policy and a store after fork.

* 16 threads released together by a barrier each predict every state (single ``predict`` in
  a thread-own shuffled order, and ``predict_batch`` at batch sizes 1, 7, 64, 65 and 1000):
  every action, strength and probability is bit-identical to the single-threaded results.
* 16 threads, each with its own session on the store's one cached engine, build the states
  of 180 days in their own order: bit-identical to one thread's.
* After ``os.fork`` the child and the parent predict the same states again: bit-identical.
* A store engine used before ``fork``: the child gets its own connections (never the parent's
  pooled ones) and disposing them on exit leaves the parent's connection working (SQLite and
  PostgreSQL).

The fork cases run in a subprocess (``_fork_worker.py``, by file path) whose timeout guards
against a deadlock; nothing is timed.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from otonom_runtime.builder import RlStateBuilder
from otonom_runtime.policy import load_rl_policy
from otonom_runtime.store import get_session, init_db
from otonom_runtime.synth import generate_market, write_synthetic
from otonom_runtime.testing.models import make_policy_model
from otonom_runtime.testing.postgres import new_database
from otonom_schema import compute_states, portfolio_feature_matrix

WORKER = Path(__file__).resolve().parent / "_fork_worker.py"
THREADS = 16
N_STATES = 400
BATCH_SIZES = (1, 7, 64, 65, 1000)
GUARD_S = 300  # a guard against a deadlock, not a timed assertion


def _states(seed: int = 7) -> np.ndarray:
    """``N_STATES`` valid states from a synthetic market with seeded random portfolios."""
    market = generate_market("FORK-X", dt.date(2019, 1, 1), dt.date(2020, 12, 31), seed)
    rng = np.random.default_rng(seed)
    n = len(market.history.dates)
    position = rng.uniform(-1.0, 1.0, n)
    portfolio = portfolio_feature_matrix(
        position, np.abs(position), rng.uniform(0.0, 1.0, n), rng.uniform(0.0, 30.0, n)
    )
    every = compute_states(market.history, portfolio, news=market.news, macro=market.macro)
    pick = np.sort(rng.choice(np.arange(140, n), N_STATES, replace=False))
    return np.ascontiguousarray(every[pick])


def _predict_all(policy: Any, states: np.ndarray, order: list[int]) -> dict[str, np.ndarray]:
    single: list[Any] = [None] * len(states)
    for i in order:
        single[i] = policy.predict(states[i], return_probs=True)
    out = {
        "single_actions": np.array([int(a) for a, _, _ in single], dtype=np.int64),
        "single_strengths": np.array([s for _, s, _ in single], dtype=np.float64),
        "single_probs": np.stack([p for _, _, p in single]),
    }
    for size in BATCH_SIZES:
        parts = [policy.predict_batch(states[i : i + size]) for i in range(0, len(states), size)]
        out[f"batch{size}_actions"] = np.concatenate([p[0] for p in parts])
        out[f"batch{size}_strengths"] = np.concatenate([p[1] for p in parts])
        out[f"batch{size}_probs"] = np.concatenate([p[2] for p in parts])
    return out


def _differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, int]:
    """Per output, how many rows are not bit-identical."""
    assert sorted(a) == sorted(b)
    out = {}
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.shape == y.shape, key
        assert x.dtype == y.dtype, key
        rows = x.reshape(len(x), -1).view(np.uint8) != y.reshape(len(y), -1).view(np.uint8)
        out[key] = int(rows.any(axis=1).sum())
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "policy.onnx"
    make_policy_model(path, hidden=64, layers=2, seed=3)
    return path


@pytest.fixture(scope="module")
def states() -> np.ndarray:
    return _states()


def test_sixteen_threads_predict_bit_identically(model: Path, states: np.ndarray) -> None:
    policy = load_rl_policy(model)
    reference = _predict_all(policy, states, list(range(len(states))))
    assert len(set(reference["single_actions"].tolist())) >= 2  # the states reach >1 action
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def work(k: int) -> None:
        order = list(range(len(states)))
        random.Random(k).shuffle(order)
        try:
            barrier.wait(GUARD_S)
            results[k] = _predict_all(policy, states, order)
        except BaseException as exc:
            results[k] = exc

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD_S)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    differing = {}
    for k, got in enumerate(results):
        assert isinstance(got, dict), f"thread {k}: {got!r}"
        differing[k] = sum(_differences(reference, got).values())
    assert differing == dict.fromkeys(range(THREADS), 0)
    calls = len(states) + sum(-(-len(states) // s) for s in BATCH_SIZES)
    print(f"\n{THREADS} threads x {calls} calls ({len(states)} states each way): 0 differing")


def test_a_forked_child_predicts_bit_identically(
    model: Path, states: np.ndarray, tmp_path: Path
) -> None:
    states_file = tmp_path / "states.npy"
    np.save(states_file, states)
    out = tmp_path / "before.npz"
    done = subprocess.run(
        [sys.executable, str(WORKER), "policy", str(model), str(states_file), str(out)],
        capture_output=True,
        text=True,
        timeout=GUARD_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    before = dict(np.load(out))
    reference = _predict_all(load_rl_policy(model), states, list(range(len(states))))
    assert _differences(reference, before) == dict.fromkeys(reference, 0)
    for side in ("child", "parent"):
        after = dict(np.load(f"{out}.{side}.npz"))
        assert _differences(before, after) == dict.fromkeys(before, 0), side


def test_sixteen_threads_build_states_through_one_engine(tmp_path: Path) -> None:
    """A daemon's threads share the store's cached engine, each with its own session: the
    states they build and the decisions they get are those of one thread."""
    url = f"sqlite:///{(tmp_path / 'threads.db').as_posix()}"
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, ["THR-X"], dt.date(2019, 1, 1), dt.date(2020, 12, 31), 8)
    days = [dt.date(2019, 7, 1) + dt.timedelta(days=i) for i in range(0, 540, 3)]
    with get_session(url) as session:
        builder = RlStateBuilder(session)
        reference = np.stack([builder.build_state("THR-X", d).to_array() for d in days])
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def work(k: int) -> None:
        order = list(range(len(days)))
        random.Random(k).shuffle(order)
        try:
            barrier.wait(GUARD_S)
            out = np.empty_like(reference)
            with get_session(url) as session:
                builder = RlStateBuilder(session)
                for i in order:
                    out[i] = builder.build_state("THR-X", days[i]).to_array()
            results[k] = out
        except BaseException as exc:
            results[k] = exc

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD_S)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    for k, got in enumerate(results):
        assert isinstance(got, np.ndarray), f"thread {k}: {got!r}"
        assert got.tobytes() == reference.tobytes(), f"thread {k}"


# --- the store after fork ----------------------------------------------------------------------


def _store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{(tmp_path / 'fork.db').as_posix()}"
    return new_database(request.getfixturevalue("postgres_url"), "fork")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_forked_child_uses_its_own_store_connections(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _store_url(backend, tmp_path, request)
    out = tmp_path / "store.json"
    done = subprocess.run(
        [sys.executable, str(WORKER), "store", url, str(out)],
        capture_output=True,
        text=True,
        timeout=GUARD_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(out.read_text(encoding="utf-8"))
    assert seen["child_exit"] == 0, seen
    before, child, after = seen["before"], seen["child"], seen["after"]
    assert "error" not in child, child
    assert "error" not in after, after  # the child's exit did not close the parent's connection
    assert child["dbapi_id"] != before["dbapi_id"], "the child used the parent's connection"
    assert child["symbols"] == 1  # its own write, read back
    assert after["symbols"] == 1  # the parent sees the child's committed write
    if backend == "postgresql":
        assert child["backend_pid"] != before["backend_pid"]
        assert after["backend_pid"] == before["backend_pid"]  # the parent's pooled connection
