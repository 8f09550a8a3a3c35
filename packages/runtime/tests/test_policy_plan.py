"""The batch plan (``serving.plan``): batches over 64 rows run on onnxruntime's pool or on a
one-thread session of the same model, whichever ran faster at the bucket's first calls (from
4,096 rows in chunks); the outputs are the same bit for bit either way."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest

import otonom_schema as s
from otonom_runtime.policy import load_rl_policy
from otonom_runtime.serving import plan as plan_module
from otonom_runtime.serving.plan import (
    FIRST_BUCKET,
    LAST_BUCKET,
    TRIAL_CALLS,
    TRIAL_SECONDS,
    BatchPlan,
)
from otonom_runtime.testing.models import make_policy_model

F32 = npt.NDArray[np.float32]
SIZES = (1, 7, 64, 65, 256, 1000, 2048, 4095)
ALL_BUCKETS = [1 << (b - 1) for b in range(FIRST_BUCKET, LAST_BUCKET + 1)]  # 64 .. 2**62


def random_states(n: int, seed: int = 0) -> F32:
    """``n`` valid states: every feature uniform inside its range, a random regime one-hot."""
    rng = np.random.default_rng(seed)
    low = np.array([f.low for f in s.FEATURES])
    high = np.array([f.high for f in s.FEATURES])
    x = rng.uniform(low, high, size=(n, s.STATE_DIM))
    regime = slice(s.feature_index("regime_low_vol"), s.feature_index("regime_high_vol") + 1)
    x[:, regime] = np.eye(3)[rng.integers(0, 3, size=n)]
    return s.validate_states(x)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "policy_best.onnx"
    make_policy_model(path, hidden=128, layers=2, seed=5)
    return path


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden": 128, "layers": 2},
        {"hidden": 32, "layers": 3},
        {"hidden": 256, "layers": 1, "extra_outputs": [("risk_probs", 3), ("attention", 34)]},
    ],
)
def test_one_thread_and_the_pool_give_the_same_bits(tmp_path: Path, kwargs: Any) -> None:
    """The plan's premise: onnxruntime's pool and a one-thread session of the same model give
    the same outputs bit for bit, at every batch size (each output element is one thread's
    dot product whatever the split), every output included."""
    path = tmp_path / "policy_best.onnx"
    make_policy_model(path, seed=7, **kwargs)
    policy = load_rl_policy(path)
    pool, one = policy._plan.pool, policy._plan.one_thread()
    assert one is not None
    assert one is not pool
    assert one.get_session_options().intra_op_num_threads == 1
    assert pool.get_session_options().intra_op_num_threads == 0  # onnxruntime's default
    for n in SIZES:
        x = random_states(n, seed=n)
        for a, b in zip(pool.run(None, {"state": x}), one.run(None, {"state": x}), strict=True):
            assert np.array_equal(a, b), n


def test_forced_either_way_the_answers_are_the_pools(model: Path) -> None:
    """``fix(1)`` runs every bucket on the one-thread session, ``fix(None)`` on the pool, no
    trial; ``predict_batch`` answers the same bits both ways, and ``batch_plan`` says which."""
    one_policy, pool_policy = load_rl_policy(model), load_rl_policy(model)
    one_policy._plan.fix(1)
    pool_policy._plan.fix(None)
    assert one_policy.batch_plan == dict.fromkeys(ALL_BUCKETS, 1)
    assert pool_policy.batch_plan == dict.fromkeys(ALL_BUCKETS, None)
    one = one_policy._plan.one_thread()
    for bucket in range(FIRST_BUCKET, LAST_BUCKET + 1):
        for _ in range(3):  # for good: no trial ever again
            assert next(one_policy._chosen[bucket]) is one
            assert next(pool_policy._chosen[bucket]) is pool_policy._session
    assert pool_policy._plan._one is None  # never made
    for n in (*SIZES, 4096, 5000, 20481):  # from 4,096 rows: in chunks
        x = random_states(n, seed=100 + n)
        got, want = one_policy.predict_batch(x), pool_policy.predict_batch(x)
        for i in range(3):
            assert np.array_equal(got[i], want[i]), n
            assert got[i].dtype == want[i].dtype


def test_the_one_thread_session_is_made_at_the_first_mid_size_batch(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading makes no second session; nor do batches of up to 64 rows (pre-bound, on the
    pool); the first batch over 64 rows does, and the trial of its bucket then times
    ``TRIAL_CALLS`` calls of the pool, then as many of the one thread, before ``batch_plan``
    lists it; every answer is the pool's."""
    monkeypatch.setattr(plan_module, "TRIAL_SECONDS", 0.0)
    policy = load_rl_policy(model)
    for n in (1, 64):
        policy.predict_batch(random_states(n, seed=n))
    assert policy._plan._one is None
    assert policy.batch_plan == {}
    x = random_states(300, seed=1)
    expected = policy._session.run(None, {"state": x})
    for call in range(1 + 2 * TRIAL_CALLS):
        assert 256 not in policy.batch_plan, call
        _a, strength, probs = policy.predict_batch(x)
        assert np.array_equal(probs, expected[0])
        assert np.array_equal(strength, expected[1].reshape(-1))
        assert policy._plan._one is not None
    assert list(policy.batch_plan) == [256]
    assert policy.batch_plan[256] in (1, None)
    assert policy._plan._trials[9].calls == [TRIAL_CALLS, TRIAL_CALLS]
    assert next(policy._chosen[9]) in (policy._session, policy._plan._one)


class FakeSession:
    """A session whose runs cost ``costs`` in turn on the plan's clock, answering ``answer``."""

    clock: ClassVar[list[float]] = [0.0]
    load: ClassVar[list[float]] = [1.0]  # every run's cost times this (the machine's load)

    def __init__(self, *costs: float, answer: float = 0.5) -> None:
        self.costs, self.answer, self.runs = costs, answer, 0

    def run(self, names: object, feeds: dict[str, F32]) -> list[F32]:
        FakeSession.clock[0] += self.costs[self.runs % len(self.costs)] * FakeSession.load[0]
        self.runs += 1
        n = feeds["state"].shape[0]
        return [np.full((n, 3), self.answer, np.float32), np.full((n, 1), 0.5, np.float32)]


def plan_of(pool: FakeSession, one: FakeSession, monkeypatch: pytest.MonkeyPatch) -> BatchPlan:
    monkeypatch.setattr(plan_module, "_perf", lambda: FakeSession.clock[0])
    return BatchPlan(pool, lambda: one)


def calls(plan: BatchPlan, x: F32, k: int) -> list[object]:
    """``k`` calls as ``predict_valid_batch`` makes them: the sessions that ran (None: the
    plan's trial)."""
    ran = []
    for _ in range(k):
        session = next(plan.chosen[x.shape[0].bit_length()])
        ran.append(session)
        if session is None:
            plan.run(x)
        else:
            session.run(None, {"state": x})
    return ran


@pytest.mark.parametrize(
    ("pool_costs", "one_costs", "chosen"),
    [
        ((0.02,), (0.01,), 1),
        ((0.01,), (0.02,), None),
        ((0.0098,), (0.01,), 1),  # a tie (within TIE): the one thread, fewer CPU seconds
        ((0.0094,), (0.01,), None),
        # the pool's median call is the faster, but one call in 8 stalls (a worker thread
        # descheduled): its mean is the slower, and the mean decides
        ((0.009,) * 7 + (0.1,), (0.01,), 1),
    ],
)
def test_the_lower_mean_is_chosen_then_timed_again(
    monkeypatch: pytest.MonkeyPatch,
    pool_costs: tuple[float, ...],
    one_costs: tuple[float, ...],
    chosen: int | None,
) -> None:
    """On a clock where one session runs faster on the mean, the trial chooses it for the
    bucket (the two timed in turn, call by call, each for ``TRIAL_CALLS`` calls and
    ``TRIAL_SECONDS``); it runs the bucket's next ``PERIOD_ROWS`` rows (in calls: rows over
    the bucket's smallest size, at least ``MIN_PERIOD``; the first choices 1/8, 1/4 and 1/2
    of that), then the bucket is timed again; other buckets stay undecided."""
    monkeypatch.setattr(plan_module, "PERIOD_ROWS", 40 << 6)  # 40 calls of 64..127 rows
    monkeypatch.setattr(plan_module, "MIN_PERIOD", 1)
    pool, one = FakeSession(*pool_costs), FakeSession(*one_costs)
    plan = plan_of(pool, one, monkeypatch)
    x = np.zeros((100, 34), np.float32)
    assert calls(plan, x, 1) == [None]  # both, untimed, compared
    assert (pool.runs, one.runs) == (1, 1)
    assert calls(plan, x, 2 * TRIAL_CALLS) == [None] * 2 * TRIAL_CALLS
    assert (pool.runs, one.runs) == (1 + TRIAL_CALLS, 1 + TRIAL_CALLS)
    assert plan.threads() == {64: chosen}
    winner = one if chosen == 1 else pool
    assert calls(plan, x, 6) == [winner] * 5 + [None]  # 1/8 of the period, then a new trial
    assert plan._trials[7].calls == [1, 0]
    assert plan.threads() == {64: chosen}  # the last choice, while timed again
    calls(plan, x, 2 * TRIAL_CALLS - 1)
    assert calls(plan, x, 11) == [winner] * 10 + [None]  # 1/4 of it
    for period in (20, 40, 40):  # 1/2, then the whole
        calls(plan, x, 2 * TRIAL_CALLS - 1)
        assert calls(plan, x, period + 1) == [winner] * period + [None]
    assert plan.off_reason is None


def test_a_load_that_comes_during_the_trial_slows_both_sessions_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The machine's load triples halfway through a trial: the two sessions, timed in turn,
    both pay it, and the faster one (here the one thread) is chosen. Timed one block after
    the other, the pool would have been timed before the load and chosen."""
    monkeypatch.setattr(FakeSession, "load", [1.0])
    pool, one = FakeSession(0.015), FakeSession(0.01)
    plan = plan_of(pool, one, monkeypatch)
    x = np.zeros((100, 34), np.float32)
    calls(plan, x, 1)  # both, untimed
    ran = calls(plan, x, TRIAL_CALLS)  # half of the trial
    assert (pool.runs, one.runs) == (1 + TRIAL_CALLS // 2, 1 + TRIAL_CALLS // 2)
    FakeSession.load[0] = 3.0
    calls(plan, x, TRIAL_CALLS)
    assert ran == [None] * TRIAL_CALLS
    assert plan.threads() == {64: 1}


def test_a_short_trial_goes_on_until_trial_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast runs: each session is timed until its runs add up to ``TRIAL_SECONDS``."""
    pool, one = FakeSession(0.001), FakeSession(0.002)
    plan = plan_of(pool, one, monkeypatch)
    x = np.zeros((3000, 34), np.float32)
    calls(plan, x, 1)
    need_pool = round(TRIAL_SECONDS / 0.001)
    need_one = round(TRIAL_SECONDS / 0.002)
    calls(plan, x, need_pool + need_one - 2)  # (the fake clock's sums round either way)
    assert plan.threads() == {}
    calls(plan, x, 4)
    assert plan.threads() == {2048: None}


def test_a_model_whose_one_thread_outputs_differ_has_no_plan() -> None:
    """Outputs that differ by a single bit at a bucket's first call turn the plan off for the
    model: every bucket the pool's, and the caller gets the pool's answer."""
    pool = FakeSession(1.0)
    one = FakeSession(1.0, answer=float(np.nextafter(np.float32(0.5), np.float32(1))))
    plan = BatchPlan(pool, lambda: one)
    probs, _ = plan.run(np.zeros((100, 34), np.float32))
    assert (probs == 0.5).all()
    assert plan.off_reason is not None
    assert "differ" in plan.off_reason
    assert plan.threads() == {}
    plan.run(np.zeros((3000, 34), np.float32))
    assert one.runs == 1
    with pytest.raises(ValueError, match="no one-thread session"):
        plan.fix(1)


def test_a_session_that_cannot_be_made_leaves_the_pool() -> None:
    def fail() -> object:
        raise MemoryError("no room")

    pool = FakeSession(1.0)
    plan = BatchPlan(pool, fail)
    probs, _ = plan.run(np.zeros((100, 34), np.float32))
    assert probs.shape == (100, 3)
    assert plan.off_reason is not None
    assert "no room" in plan.off_reason
    assert plan.threads() == {}


@pytest.mark.parametrize("threads", [1, 2])
def test_a_thread_count_chosen_by_the_caller_has_no_plan(model: Path, threads: int) -> None:
    """``load_rl_policy(..., threads=k)``: every batch on that session; no second one made."""
    policy = load_rl_policy(model, threads=threads)
    assert policy.batch_plan == {}
    policy.predict_batch(random_states(300))
    assert policy._plan.one_thread() is None
    assert policy._plan.off_reason == "no one-thread session"


def test_concurrent_calls_during_the_trials_get_the_pools_answers(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads calling ``predict_batch`` at several sizes while the buckets' trials run (and
    the one-thread session is made, and buckets are timed again) all get the answers of the
    pool's own run."""
    monkeypatch.setattr(plan_module, "TRIAL_SECONDS", 0.0)
    monkeypatch.setattr(plan_module, "PERIOD_ROWS", 1 << 8)  # 4 calls of 64..127 rows, ...
    monkeypatch.setattr(plan_module, "MIN_PERIOD", 2)
    policy = load_rl_policy(model)
    sizes = (65, 200, 256, 700, 1500, 3000)
    inputs = {n: random_states(n, seed=n) for n in sizes}
    expected = {n: policy._session.run(None, {"state": x}) for n, x in inputs.items()}
    errors: list[str] = []

    def worker(k: int) -> None:
        for i in range(12 * TRIAL_CALLS):
            n = sizes[(k + i) % len(sizes)]
            _a, strength, probs = policy.predict_batch(inputs[n])
            if not (
                np.array_equal(probs, expected[n][0])
                and np.array_equal(strength, expected[n][1].reshape(-1))
            ):
                errors.append(f"thread {k} call {i}: {n} rows")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(policy.batch_plan) == {64, 128, 256, 512, 1024, 2048}


def test_batch_plan_is_a_copy(model: Path) -> None:
    policy = load_rl_policy(model)
    policy._plan.fix(None)
    policy.batch_plan[256] = 1
    assert policy.batch_plan[256] is None
    with pytest.raises(AttributeError):
        policy.batch_plan = {}  # type: ignore[misc]


def test_an_idle_policy_burns_no_cpu_on_either_session(model: Path) -> None:
    """After a large batch on the one-thread session (no pool to spin) or on the pool (its
    spinning stops when a run returns), the process uses next to no CPU while it sleeps."""
    import time

    x = random_states(4096, seed=3)
    for threads in (1, None):
        policy = load_rl_policy(model)
        policy._plan.fix(threads)
        idle = []
        for _ in range(3):
            policy.predict_batch(x)
            c0 = time.process_time()
            time.sleep(0.1)
            idle.append(time.process_time() - c0)
        assert min(idle) < 0.003, (threads, idle)


def test_large_batches_run_in_chunks_on_the_chosen_session(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From 4,096 rows the plan's session runs the batch in chunks (``run_chunked``): during
    the trial both sessions (the first call: both, compared), then the chosen one."""
    from otonom_runtime.serving import rl_policy, session

    monkeypatch.setattr(plan_module, "TRIAL_SECONDS", 0.0)
    used: list[object] = []
    chunked = session.run_chunked

    def spy(sess: Any, x: Any, rows: int = session.CHUNK_ROWS) -> Any:
        used.append(sess)
        return chunked(sess, x, rows)

    monkeypatch.setattr(rl_policy, "run_chunked", spy)
    monkeypatch.setattr(plan_module, "run_chunked", spy)
    policy = load_rl_policy(model)
    x = random_states(5000, seed=4)
    expected = policy._session.run(None, {"state": x})
    for _ in range(1 + 2 * TRIAL_CALLS + 2):
        _a, strength, probs = policy.predict_batch(x)
        assert np.array_equal(probs, expected[0])
        assert np.array_equal(strength, expected[1].reshape(-1))
    pool, one = policy._session, policy._plan._one
    trial = [pool, one] + [pool, one] * TRIAL_CALLS  # the first call both, then in turn
    assert used[: len(trial)] == trial
    chosen = one if policy.batch_plan[4096] == 1 else pool
    assert used[len(trial) :] == [chosen, chosen]
