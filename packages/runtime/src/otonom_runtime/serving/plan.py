"""``BatchPlan``: which of two sessions of the same model runs a batch of a given size,
onnxruntime's pool of worker threads or one thread, chosen per batch-size bucket by timing both
on this machine (as FFTW's planner or cuDNN's benchmark mode choose an algorithm).

Why: a run split over the pool's threads waits for its slowest piece. On a machine whose cores
other jobs share, the pool's worker is now and then descheduled for a time slice mid-run:
measured on the 2-core VM at load ~2, 256 rows, 3,000 calls each: the pool's median call 179
us, one thread's 177 us, but the pool's mean 387 us against 186 us (its p99 4.3 ms: 54 % of
its time in calls over twice the median). On a quiet machine, or at larger batches, the pool
wins (3,000 rows: 975 us against 1,645 us a run). Where the two cross depends on the machine
and its load, so it is measured, not set.

How: buckets by ``n.bit_length()`` (batches of 2**(b-1) .. 2**b - 1 rows). A bucket's first
call runs both sessions on the caller's states, untimed (each session's first run of a shape
allocates), and compares their outputs bit for bit: if they differ the plan is off for the
model (every batch runs on the pool, as without a plan). Then the caller's own calls are timed
(the run alone), on the pool and the one thread in turn, call by call (timed one block after
the other, a load that came or went between the blocks decided the trial: at 65,536 rows the
one thread was once chosen and ran at 0.90x a bare run, the pool at 1.42x), each for at least
``TRIAL_CALLS`` calls and ``TRIAL_SECONDS`` of runs (the stalls are rare: a handful of calls
would miss them, hence a mean over sustained use, not a median of a few); the lower mean (a
tie, within ``TIE``, to the one thread) is used for the bucket's next ``PERIOD_ROWS`` rows (at
least ``MIN_PERIOD`` calls; the first choices shorter: ``SHORTER_FIRST``), after which it is
measured again (the load changes). Timing the caller's calls, not a loop at load, keeps the
caller's gaps between runs (which decide whether the pool's threads are asleep when a run
starts). The outputs are the same whichever session runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from itertools import chain, repeat
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime.serving.contract import INPUT_NAME, OUTPUT_NAMES
from otonom_runtime.serving.session import run_chunked

__all__ = [
    "FIRST_BUCKET",
    "LAST_BUCKET",
    "MAX_PLAN_BYTES",
    "MIN_PERIOD",
    "PERIOD_ROWS",
    "SHORTER_FIRST",
    "TIE",
    "TRIAL_CALLS",
    "TRIAL_SECONDS",
    "BatchPlan",
]

F32 = npt.NDArray[np.float32]

FIRST_BUCKET: Final = 7
"""65 .. 127 rows: smaller batches run through the policy's pre-bound slots (on the pool)."""
LAST_BUCKET: Final = 63
"""Every larger batch (from 4,096 rows the chosen session runs it in chunks of 2,048 rows:
``session.run_chunked``)."""
TRIAL_CALLS: Final = 8
TRIAL_SECONDS: Final = 0.05
"""A trial times each session for at least ``TRIAL_CALLS`` calls and this many seconds of runs
(at 256 rows ~300 calls: the pool's stalls come in a few % of the calls under load). Measured at
load 3, 256 rows, 20 trials each: 20 ms of runs chose the faster session 19 times (the pool's
mean was 1.8-3.0x one thread's, once 0.76x), 100 ms 20 times."""
TIE: Final = 0.05
"""Means within this fraction of each other are a tie, which the one-thread session wins: it
does the same work in fewer CPU seconds (the pool's threads also hand work over and wait), and
its time has no tail (no peer thread to wait for), which a 20 ms trial may not see."""
PERIOD_ROWS: Final = 1 << 23
MIN_PERIOD: Final = 1024
"""A bucket's choice lasts ``PERIOD_ROWS`` rows of its batches, at least ``MIN_PERIOD`` calls,
then it is measured again (the load changes): 32,768 calls of 256 rows (~6 s back to back),
2,048 of 4,096 (~4 s), 1,024 of 65,536 (~40 s; a trial there is 16 calls of ~50 ms). A trial's
~0.1 s then costs ~1-2 % when half of it runs 2x slow."""
SHORTER_FIRST: Final = 3
"""The first choice of a bucket lasts 1/8 of the period, the next ones 1/4, 1/2, then the
whole: a first trial, made at a bucket's first calls, is one sample of the load; it is checked
again sooner (at 256 rows: after ~1, 2 and 3 s of back-to-back calls, then every ~6 s)."""
MAX_PLAN_BYTES: Final = 16 << 20
"""The largest model whose bytes a plan keeps for its one-thread session (made lazily, from
them: the file may have been replaced since it was verified); a bigger model has no plan."""

_perf: Final = time.perf_counter
_BUCKETS: Final = range(FIRST_BUCKET, LAST_BUCKET + 1)


class _Trial:
    """A bucket's measurement: calls and seconds of runs of the pool [0] and one thread [1]."""

    __slots__ = ("calls", "chosen", "decided", "seconds")

    def __init__(self) -> None:
        self.chosen = False  # True once a choice is made (until the bucket is timed again)
        self.calls = [0, 0]
        self.seconds = [0.0, 0.0]
        self.decided = 0  # choices made so far (the period doubles with each, up to the full)

    def restart(self) -> None:
        self.chosen, self.calls, self.seconds = False, [0, 0], [0.0, 0.0]

    def timed(self, side: int) -> bool:
        """Whether the pool (0) or the one thread (1) has been timed enough."""
        return self.calls[side] >= TRIAL_CALLS and self.seconds[side] >= TRIAL_SECONDS


class BatchPlan:
    """The sessions a policy runs its batches of over 64 rows on
    (``RlPolicy.predict_valid_batch``).

    ``chosen``: per ``n.bit_length()`` (0 .. 63) an iterator the policy calls ``next`` on for
    every batch: the session to run it on, or None: call ``run`` (the bucket is being timed).
    ``pool``: the policy's session. ``one_thread``: makes the one-thread session of the same
    model (called once, at the first call of a bucket), or None for a policy without a plan (a
    thread count chosen by the caller, a CUDA session, a model over ``MAX_PLAN_BYTES``): every
    bucket is the pool's.

    Safe to share across threads: ``next`` on ``itertools.repeat`` and ``chain`` holds the GIL;
    a chosen iterator only ever yields a session whose outputs equal the pool's; two threads
    ending a bucket's trial at once may both write its choice (the last write wins), and
    counts may be off by a call or two. The one-thread session is made under a lock.
    """

    __slots__ = ("_lock", "_make", "_one", "_trials", "_winners", "chosen", "off_reason", "pool")

    def __init__(self, pool: Any, one_thread: Callable[[], Any] | None) -> None:
        self.pool = pool
        self._make = one_thread
        self._one: Any = None
        self._lock = threading.Lock()
        self._trials: dict[int, _Trial] = {}
        self._winners: dict[int, Any] = {}
        self.chosen: list[Iterator[Any]] = [repeat(pool)] * 64
        self.off_reason: str | None = None
        if one_thread is None:
            self._off("no one-thread session")
        else:
            for bucket in _BUCKETS:
                self.chosen[bucket] = repeat(None)

    def run(self, x: F32, chunked: bool = False) -> tuple[F32, F32]:
        """The model's ``action_probs`` and ``strength`` for ``x`` (N, 34), N over 64, while
        its bucket is timed: one more call of the trial. ``chunked``: in chunks of
        ``CHUNK_ROWS`` rows (``session.run_chunked``; ``x`` C-contiguous float32)."""
        bucket = x.shape[0].bit_length()
        pool = self.pool
        one = self.one_thread() if FIRST_BUCKET <= bucket <= LAST_BUCKET else None
        go = run_chunked if chunked else _whole
        if one is None:
            return go(pool, x)
        trial = self._trials.get(bucket)
        if trial is None:  # the bucket's first call: both sessions, compared
            expected = go(pool, x)
            if not _same(expected, go(one, x)):
                self._off(f"its one-thread outputs differ from the pool's at {x.shape[0]} rows")
            else:
                self._trials[bucket] = _Trial()
            return expected
        if trial.chosen:  # the chosen session's period is over: measure again
            trial.restart()
        # the two sessions in turn, call by call (a load that changes during the trial
        # slows both alike), each until it is timed enough; then the other alone
        behind = not trial.timed(1) and trial.calls[1] < trial.calls[0]
        side = 1 if trial.timed(0) or behind else 0
        t0 = _perf()
        out = go(one if side else pool, x)
        trial.seconds[side] += _perf() - t0
        trial.calls[side] += 1
        if trial.timed(0) and trial.timed(1):
            self._decide(bucket, trial, one)
        return out

    def _decide(self, bucket: int, trial: _Trial, one: Any) -> None:
        (pool_calls, one_calls), (pool_s, one_s) = trial.calls, trial.seconds
        # a tie (within TIE) goes to the one thread: the same wall time for fewer CPU seconds
        winner = one if one_s * pool_calls <= (1.0 + TIE) * pool_s * one_calls else self.pool
        trial.chosen = True
        if self._make is not None:  # not turned off meanwhile
            self._winners[bucket] = winner
            shorter = max(0, SHORTER_FIRST - trial.decided)
            period = max(MIN_PERIOD, PERIOD_ROWS >> (bucket - 1) >> shorter)
            trial.decided += 1
            self.chosen[bucket] = chain(repeat(winner, period), repeat(None))

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
        """Every bucket to the pool (None) or the one-thread session (1) for good, no trial:
        for tests, and for a caller that knows its machine."""
        session = self.one_thread() if threads == 1 else self.pool
        if session is None:
            raise ValueError(f"no one-thread session: {self.off_reason}")
        for bucket in _BUCKETS:
            self._winners[bucket] = session
            self.chosen[bucket] = repeat(session)

    def threads(self) -> dict[int, int | None]:
        """Each decided bucket's smallest batch size -> its session's threads (1, or None:
        onnxruntime's pool, as ``load_rl_policy``'s ``threads=None``); a bucket being timed
        again keeps its last choice; {} without a plan (``off_reason`` says why)."""
        one = self._one
        return {
            1 << (bucket - 1): 1 if session is one and one is not None else None
            for bucket, session in sorted(self._winners.items())
        }

    def _off(self, reason: str) -> None:
        self.off_reason = reason
        self._make = None
        self._one = None
        self._winners.clear()
        for bucket in _BUCKETS:
            self.chosen[bucket] = repeat(self.pool)


def _whole(session: Any, x: F32, rows: int = 0) -> tuple[F32, F32]:
    probs, strength = session.run(OUTPUT_NAMES, {INPUT_NAME: x})
    return probs, strength


def _same(a: tuple[F32, F32], b: tuple[F32, F32]) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
