"""``otonom bench``: how fast is *this* model (and store) on *this* machine?

The full benchmark with numpy and torch peers is ``bench/latency.py`` in the repository; it
uses the timing helpers below. This module needs nothing beyond the runtime's own dependencies:
its peer is a bare ONNX Runtime ``session.run`` of the same model, measured in the same run.
Samples are interleaved round by round, so machine noise hits every subject alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from otonom_runtime._errors import StateBuildError

__all__ = ["format_report", "interleaved_latency", "run_bench", "throughput"]

Latency = dict[str, dict[str, float]]


def interleaved_latency(
    subjects: dict[str, Callable[[], object]], calls: int, rounds: int, warmup: int = 200
) -> Latency:
    """p50/p99/mean (us) per subject; ``rounds`` rounds of ``calls`` calls, subjects in turn."""
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    clock = time.perf_counter_ns
    for fn in subjects.values():  # first-call allocations, thread-local bindings, caches
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in subjects.items():
            buf = np.empty(calls)
            for i in range(calls):
                t0 = clock()
                fn()
                buf[i] = clock() - t0
            samples[name].extend((buf / 1e3).tolist())
    out: Latency = {}
    for name, xs in samples.items():
        arr = np.asarray(xs)
        out[name] = {
            "p50_us": float(np.percentile(arr, 50)),
            "p99_us": float(np.percentile(arr, 99)),
            "mean_us": float(arr.mean()),
            "n": float(len(xs)),
        }
    return out


def throughput(fn: Callable[[], object], rows: int, budget_s: float) -> float:
    """States per second: best of 3 timed blocks, each at least ``budget_s / 3`` long."""
    fn()
    best = 0.0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= budget_s / 3:
                break
        best = max(best, rows * n / elapsed)
    return best


def _demo_states() -> np.ndarray:
    from otonom_schema import LOOKBACK, compute_states
    from otonom_schema.synthetic import random_history

    return compute_states(random_history(LOOKBACK + 300, seed=1))[LOOKBACK:]


def run_bench(
    model: str | Path,
    *,
    database_url: str | None = None,
    symbol: str | None = None,
    day: dt.date | None = None,
    calls: int = 2000,
    rounds: int = 3,
    budget_s: float = 0.6,
) -> dict[str, Any]:
    """Measure ``predict``, ``predict_batch`` and (with ``symbol``) a daemon tick.

    ``model``: anything ``load_rl_policy`` accepts. With ``symbol``, the tick is
    ``RlStateBuilder.build_state`` on the store at ``database_url`` for ``day`` (default: the
    symbol's newest bar) followed by ``predict``.
    """
    import onnxruntime as ort

    from otonom_runtime.policy import INPUT_NAME, load_rl_policy
    from otonom_schema import RlState

    policy = load_rl_policy(model)
    bare = ort.InferenceSession(str(policy.path), providers=["CPUExecutionProvider"])
    states = _demo_states().astype(np.float32)
    state = RlState.from_array(states[-1])
    row2d = states[-1:].copy()
    subjects: dict[str, Callable[[], object]] = {
        "predict(RlState)": lambda: policy.predict(state),
        "predict(array (34,))": lambda: policy.predict(states[-1]),
        "bare ORT session.run": lambda: bare.run(None, {INPUT_NAME: row2d}),
    }
    store_note = None
    with contextlib.ExitStack() as stack:
        if symbol is not None:
            from otonom_runtime.builder import RlStateBuilder
            from otonom_runtime.store import get_session, last_bar_date

            session = stack.enter_context(get_session(database_url))
            builder = RlStateBuilder(session)
            tick_day = day or last_bar_date(session, symbol)
            if tick_day is None:
                raise StateBuildError(f"{symbol!r} has no bars in the store")
            store_note = f"{symbol} at {tick_day.isoformat()}"

            def tick(when: dt.date = tick_day, name: str = symbol) -> object:
                return policy.predict(builder.build_state(name, when))

            subjects["build_state + predict"] = tick
        single = interleaved_latency(subjects, calls, rounds)
    big = np.resize(states, (4096, states.shape[1])).astype(np.float32)
    batch: dict[str, dict[str, float]] = {}
    for n in (1, 256, 4096):
        x = np.ascontiguousarray(big[:n])
        batch[str(n)] = {
            "predict_batch": throughput(functools.partial(policy.predict_batch, x), n, budget_s),
            "bare ORT session.run": throughput(
                functools.partial(bare.run, None, {INPUT_NAME: x}), n, budget_s
            ),
        }
    return {
        "model": str(policy.path),
        "providers": policy.providers,
        "store_tick": store_note,
        "single_state_us": single,
        "batch_states_per_s": batch,
    }


def format_report(result: dict[str, Any]) -> str:
    """The result of ``run_bench`` as a plain-text table with ratios against the bare peer."""
    lines = [f"model: {result['model']} ({', '.join(result['providers'])})"]
    if result["store_tick"]:
        lines.append(f"daemon tick: {result['store_tick']}")
    single = result["single_state_us"]
    ref = single["bare ORT session.run"]["p50_us"]
    lines.append("")
    lines.append(f"{'single state (us)':<26}{'p50':>9}{'p99':>9}{'mean':>9}  p50/bare run")
    for name, v in single.items():
        lines.append(
            f"  {name:<24}{v['p50_us']:9.2f}{v['p99_us']:9.2f}{v['mean_us']:9.2f}"
            f"  {v['p50_us'] / ref:11.2f}"
        )
    lines.append("")
    lines.append(f"{'batch (M states/s)':<26}{'predict_batch':>15}{'bare run':>12}  ratio")
    for rows, v in result["batch_states_per_s"].items():
        ours, peer = v["predict_batch"], v["bare ORT session.run"]
        lines.append(
            f"  {rows + ' rows':<24}{ours / 1e6:15.3f}{peer / 1e6:12.3f}  {ours / peer:5.2f}"
        )
    return "\n".join(lines)
