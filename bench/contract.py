"""What the output-contract checks cost on the hot path: ``predict`` and ``predict_batch(4096)``
with the checks (the runtime as it is) and without them (the same code minus the checks, as the
runtime ran before model format 2), measured interleaved in one process.

Usage::

    .venv/bin/python bench/contract.py [--rounds 30] [--out FILE.json]

Builds a policy model with ``otonom_runtime.testing.models`` (34 -> 64 x 2 -> 3 + 1) in a
temporary folder. "without" reruns ``RlPolicy.predict`` / ``predict_batch``'s own steps (the
thread's pre-bound I/O binding, the read-out, the argmax) with the contract check left out, so
the difference is the check alone. Samples are taken round by round, alternating the subjects,
so machine noise hits both alike; the median and the minimum of the rounds are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from otonom_runtime.integrity import PROBS_SUM_ATOL
from otonom_runtime.policy import INPUT_NAME, OUTPUT_NAMES, load_rl_policy
from otonom_runtime.serving.rl_policy import _ACTIONS
from otonom_runtime.serving.session import Slot as _Slot
from otonom_runtime.testing.models import golden_states, make_policy_model
from otonom_schema import RlState, validate_states


def _predict_unchecked(policy: Any, state: RlState) -> tuple[Any, float]:
    x = state.to_array(copy=False)
    try:
        slot = policy._local.slot
    except AttributeError:
        slot = policy._local.slot = _Slot(policy._session)
    np.copyto(slot.row, x)
    slot.run()
    p0, p1, p2 = slot.probs.tolist()[0]
    strength: float = slot.strength.item()
    action = _ACTIONS[(0 if p0 >= p2 else 2) if p0 >= p1 else (1 if p1 >= p2 else 2)]
    return action, strength


def _batch_unchecked(policy: Any, states: np.ndarray) -> tuple[Any, Any, Any]:
    x = validate_states(states)
    probs, strength = policy._session.run(OUTPUT_NAMES, {INPUT_NAME: x})
    return probs.argmax(axis=1).astype(np.int64, copy=False), strength.reshape(len(x)), probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "policy_best.onnx"
        make_policy_model(model, hidden=64, layers=2)
        policy = load_rl_policy(model, threads=1)
    states = golden_states(4096, seed=1)
    singles = [RlState.from_array(x) for x in states[:200]]
    # same answers both ways
    assert [policy.predict(s) for s in singles[:20]] == [
        _predict_unchecked(policy, s) for s in singles[:20]
    ]
    subjects = {
        "predict (checked)": lambda: [policy.predict(s) for s in singles],
        "predict (unchecked)": lambda: [_predict_unchecked(policy, s) for s in singles],
        "predict_batch(4096) (checked)": lambda: policy.predict_batch(states),
        "predict_batch(4096) (unchecked)": lambda: _batch_unchecked(policy, states),
    }
    probs, strength = policy._session.run(OUTPUT_NAMES, {INPUT_NAME: states})
    strength = strength.reshape(-1)

    def check_alone() -> bool:  # the contract check of predict_batch, on its own
        sums = probs[:, 0] + probs[:, 1]
        sums += probs[:, 2]
        return bool(
            probs.min() >= 0.0
            and strength.min() >= 0.0
            and strength.max() <= 1.0
            and sums.min() >= 1.0 - PROBS_SUM_ATOL
            and sums.max() <= 1.0 + PROBS_SUM_ATOL
        )

    subjects["contract check alone (4096 rows)"] = check_alone
    per_call = {"predict (checked)": 200, "predict (unchecked)": 200}
    samples: dict[str, list[float]] = {k: [] for k in subjects}
    for f in subjects.values():  # warm-up
        f()
    for r in range(args.rounds):
        order = list(subjects) if r % 2 == 0 else list(reversed(subjects))
        for name in order:
            t = time.perf_counter()
            subjects[name]()
            samples[name].append((time.perf_counter() - t) / per_call.get(name, 1) * 1e6)
    result = {k: statistics.median(v) for k, v in samples.items()}
    best = {k: min(v) for k, v in samples.items()}
    for k in subjects:
        print(f"{k:34s} median {result[k]:10.2f} us, min {best[k]:10.2f} us per call")
    ratios = {}
    for what in ("predict", "predict_batch(4096)"):
        for stat, table in (("median", result), ("min", best)):
            ratio = table[f"{what} (checked)"] / table[f"{what} (unchecked)"]
            ratios[f"{what} {stat}"] = ratio
            print(f"{what + ' ' + stat:34s} checked / unchecked = {ratio:.3f}")
    if args.out:
        args.out.write_text(
            json.dumps({"median_us": result, "min_us": best, "ratios": ratios}, indent=2)
        )


if __name__ == "__main__":
    main()
