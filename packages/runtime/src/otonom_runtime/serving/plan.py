"""``BatchPlan``: which of two sessions of the same model runs a batch of a given size,
onnxruntime's pool of worker threads or one thread, chosen per batch-size bucket by timing both
on this machine (as FFTW's planner or cuDNN's benchmark mode choose an algorithm).

Why: at a few hundred rows a run split over the pool's threads first wakes them (the policy's
session stops their spinning when a run returns, so an idle daemon burns no CPU), and on a
2-core VM shared with other jobs that wake-up made a 256-row run ~2x slower than one thread's
(docs/benchmarks.md, issue 13); at large batches, or on a quiet machine with many cores, the
pool wins. Where the two cross depends on the machine and its load, so it is measured, not set.

How: the first call of a bucket (``bucket``: ``n.bit_length()``, batches of 2**(b-1) ..
2**b - 1 rows) runs both sessions on the caller's states, untimed (each session's first run of
a shape allocates), and compares their outputs bit for bit: if they differ the plan is off for
the model (every batch runs on the pool, as without a plan). The next ``TRIAL_RUNS`` calls of
each session are timed (the run alone), alternated call by call, on the caller's own calls (so
the gaps between runs are the caller's: a loop of back-to-back runs at load would keep the
pool's threads hot, which a caller doing any work between calls never sees); then the faster
median is fixed for the bucket. The outputs are the same whichever session runs.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime.serving.contract import INPUT_NAME, OUTPUT_NAMES

__all__ = ["FIRST_BUCKET", "LAST_BUCKET", "MAX_PLAN_BYTES", "TRIAL_RUNS", "BatchPlan"]

F32 = npt.NDArray[np.float32]

FIRST_BUCKET: Final = 7
"""65 .. 127 rows: smaller batches run through the policy's pre-bound slots (on the pool)."""
LAST_BUCKET: Final = 12
"""2,048 .. 4,095 rows: from 4,096 the policy runs chunks of 2,048 rows on the pool."""
TRIAL_RUNS: Final = 5
"""Timed runs of each session per bucket before the choice is fixed."""
MAX_PLAN_BYTES: Final = 16 << 20
"""The largest model whose bytes a plan keeps for its one-thread session (made lazily, from
them: the file may have been replaced since it was verified); a bigger model has no plan."""

_perf: Final = time.perf_counter


class BatchPlan:
    """The sessions a policy runs its mid-size batches on (``RlPolicy.predict_valid_batch``).

    ``chosen``: bucket -> the session fixed for it; the policy reads it on every call (one dict
    lookup), and calls ``run`` for a bucket that has no entry yet. ``pool``: the policy's
    session. ``one_thread``: makes the one-thread session of the same model (called once, at
    the first call of a bucket), or None for a policy without a plan (a thread count chosen by
    the caller, a CUDA session, a model over ``MAX_PLAN_BYTES``): every bucket is the pool's.

    Safe to share across threads: ``chosen`` is only ever given entries whose session gives the
    outputs the pool gives; two threads ending a bucket's trial at once may both write it, the
    last write wins. The one-thread session is made under a lock.
    """

    __slots__ = ("_lock", "_make", "_one", "_times", "chosen", "off_reason", "pool")

    def __init__(self, pool: Any, one_thread: Callable[[], Any] | None) -> None:
        self.pool = pool
        self._make = one_thread
        self._one: Any = None
        self._lock = threading.Lock()
        self._times: dict[int, tuple[list[float], list[float]]] = {}
        self.chosen: dict[int, Any] = {}
        self.off_reason: str | None = None
        if one_thread is None:
            self._off("no one-thread session")

    def run(self, x: F32) -> tuple[F32, F32]:
        """The model's ``action_probs`` and ``strength`` for ``x`` (N, 34), N over 64, during
        the trial of its bucket (or outside the plan's buckets: the pool's run)."""
        bucket = x.shape[0].bit_length()
        pool = self.pool
        if self._make is None or not FIRST_BUCKET <= bucket <= LAST_BUCKET:
            return _run(pool, x)
        one = self.one_thread()
        times = self._times.get(bucket)
        if times is None or one is None:
            expected = _run(pool, x)
            if one is not None and not _same(expected, _run(one, x)):
                self._off(f"its one-thread outputs differ from the pool's at {x.shape[0]} rows")
            else:
                self._times.setdefault(bucket, ([], []))
            return expected
        pool_t, one_t = times
        session, spent = (pool, pool_t) if len(pool_t) <= len(one_t) else (one, one_t)
        t0 = _perf()
        out = _run(session, x)
        spent.append(_perf() - t0)
        if len(pool_t) >= TRIAL_RUNS and len(one_t) >= TRIAL_RUNS:
            faster = statistics.median(one_t) < statistics.median(pool_t)
            self.chosen[bucket] = one if faster and self._make is not None else pool
        return out

    def one_thread(self) -> Any:
        """The one-thread session, made at the first call (None: no plan)."""
        if self._one is None and self._make is not None:
            with self._lock:
                if self._one is None and self._make is not None:
                    try:
                        self._one = self._make()
                    except Exception as exc:  # e.g. out of memory: the pool runs everything
                        self._off(f"its one-thread session could not be made: {exc}")
        return self._one

    def fix(self, threads: int | None) -> None:
        """Every bucket to the pool (None) or the one-thread session (1), no trial: for tests,
        and for a caller that knows its machine."""
        one = self.one_thread() if threads == 1 else None
        if threads == 1 and one is None:
            raise ValueError(f"no one-thread session: {self.off_reason}")
        for bucket in range(FIRST_BUCKET, LAST_BUCKET + 1):
            self.chosen[bucket] = one if threads == 1 else self.pool

    def threads(self) -> dict[int, int | None]:
        """Each fixed bucket's smallest batch size -> its session's threads (1, or None:
        onnxruntime's pool, as ``load_rl_policy``'s ``threads=None``)."""
        one = self._one
        return {
            1 << (bucket - 1): 1 if session is one and one is not None else None
            for bucket, session in sorted(self.chosen.items())
        }

    def _off(self, reason: str) -> None:
        self.off_reason = reason
        self._make = None
        self._one = None
        for bucket in range(FIRST_BUCKET, LAST_BUCKET + 1):
            self.chosen[bucket] = self.pool


def _run(session: Any, x: F32) -> tuple[F32, F32]:
    probs, strength = session.run(OUTPUT_NAMES, {INPUT_NAME: x})
    return probs, strength


def _same(a: tuple[F32, F32], b: tuple[F32, F32]) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
