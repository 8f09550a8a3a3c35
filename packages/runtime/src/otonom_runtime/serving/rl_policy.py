"""``RlPolicy``: a loaded, checked ONNX policy and its predict paths (one state, a batch), each
result held to the output contract."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, overload

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import PolicyError
from otonom_runtime.integrity import PROBS_SUM_ATOL
from otonom_runtime.serving.contract import INPUT_NAME, OPTIONAL_OUTPUTS, OUTPUT_NAMES
from otonom_runtime.serving.plan import BatchPlan
from otonom_runtime.serving.session import CHUNK_ROWS, Slot, run_chunked
from otonom_schema import Action, RlState, validate_state_into, validate_states

if TYPE_CHECKING:
    from otonom_runtime.drift import TrainingSummary

__all__ = ["RlPolicy"]

_ACTIONS: Final = (Action.HOLD, Action.BUY, Action.SELL)
_NDARRAY: Final = np.ndarray
_SUM_LOW: Final = 1.0 - PROBS_SUM_ATOL
_SUM_HIGH: Final = 1.0 + PROBS_SUM_ATOL
_copyto: Final = np.copyto
_SAFE_LOW: Final = 1.0 - PROBS_SUM_ATOL + 1e-6
_SAFE_HIGH: Final = 1.0 + PROBS_SUM_ATOL - 1e-6
"""``predict_bound``'s bounds of a row's probability sum, in float64: a float32 sum of three
probabilities in [0, 1] is within 3e-7 of their float64 sum, so a row inside these bounds is
inside ``predict_valid_batch``'s (``_SUM_LOW`` .. ``_SUM_HIGH`` compared in float32)."""

F32 = npt.NDArray[np.float32]
_WHERE_ROWS: Final = 1024
"""From this many rows ``_argmax3`` compares the three columns instead of calling
``argmax``, whose reduction over a 3-wide axis costs 2.5-3x more on large batches."""


def _argmax3(probs: F32) -> npt.NDArray[np.int64]:
    """``probs.argmax(axis=1)`` as int64 (the first maximum on a tie) for (N, 3) probabilities
    without NaN (the output contract refuses NaN before this is called): 2 where the third
    column exceeds both others, else 1 where the second exceeds the first, else 0."""
    actions: npt.NDArray[np.int64]
    if probs.shape[0] < _WHERE_ROWS:
        actions = probs.argmax(axis=1).astype(np.int64, copy=False)
    else:
        p0, p1, p2 = probs[:, 0], probs[:, 1], probs[:, 2]
        actions = np.where(p2 > np.maximum(p0, p1), 2, p1 > p0).astype(np.int64, copy=False)
    return actions


_CHUNK_FROM: Final = 2 * CHUNK_ROWS
"""From this many rows ``predict_valid_batch`` runs the model in chunks of ``CHUNK_ROWS``
(``session.run_chunked``: 1.15x the speed of one run at 4,096 rows, 1.7x at 65,536)."""
_BOUND_BATCH: Final = 64
"""``predict_batch`` runs batches up to this size through a cached pre-bound I/O binding (one
per size and thread): for small batches, as a backtest that steps many symbols a day at a
time makes, ``InferenceSession.run`` costs more in binding and allocating than the model does."""


class RlPolicy:
    """A loaded ONNX policy (make one with ``load_rl_policy``). Safe to share across threads.

    Attributes: ``path`` (the ``.onnx`` file), ``sha256`` (its verified hash), ``providers``
    (onnxruntime execution providers in use), ``device`` (as requested), ``extra_outputs``
    (the model's optional extra outputs, ``predict_extras``).
    """

    def __init__(
        self,
        session: Any,
        *,
        path: Path,
        sha256: str,
        metadata: dict[str, Any],
        device: str,
        extra_outputs: tuple[str, ...] = (),
        one_thread: Callable[[], Any] | None = None,
    ) -> None:
        self._session = session
        # batches over 64 rows: the pool's session or a one-thread one, whichever ran
        # faster here (``one_thread`` makes it; None: always the pool); ``batch_plan``
        self._plan = BatchPlan(session, one_thread)
        self._chosen = self._plan.chosen
        self.extra_outputs: tuple[str, ...] = tuple(extra_outputs)
        self._local = threading.local()
        self._metadata = metadata
        self.path = path
        self.sha256 = sha256
        self.device = device
        self.providers: list[str] = list(session.get_providers())

    def __repr__(self) -> str:
        return (
            f"RlPolicy(path={str(self.path)!r}, schema={self._metadata.get('schema_version')}, "
            f"providers={self.providers})"
        )

    @overload
    def predict(
        self, state: RlState | npt.ArrayLike, return_probs: Literal[False] = False
    ) -> tuple[Action, float]: ...

    @overload
    def predict(
        self, state: RlState | npt.ArrayLike, return_probs: Literal[True]
    ) -> tuple[Action, float, F32]: ...

    def predict(
        self, state: RlState | npt.ArrayLike, return_probs: bool = False
    ) -> tuple[Action, float] | tuple[Action, float, F32]:
        """The policy's decision for one state.

        ``state``: an ``RlState`` (already valid: used as is) or a (34,) array-like in
        ``FEATURE_NAMES`` order, validated with ``otonom_schema.validate_state_into`` (NaN,
        inf, out-of-range values or a wrong shape raise ``otonom_schema.SchemaError``).

        Returns ``(action, strength)``, or ``(action, strength, probs)`` with
        ``return_probs=True``: ``action`` is the ``Action`` with the highest probability (the
        first on a tie), ``strength`` a python float in [0, 1], ``probs`` a fresh float32 array
        of shape (3,) indexed by ``Action`` (HOLD, BUY, SELL).

        Raises ``PolicyError`` when the model's output breaks the contract (a non-finite value,
        a negative probability, probabilities that do not sum to 1 within
        ``integrity.PROBS_SUM_ATOL``, a strength outside [0, 1]), as ``predict_batch`` does.
        """
        try:
            slot: Slot = self._local.slot
        except AttributeError:  # this thread's first call
            slot = self._local.slot = Slot(self._session)
        if type(state) is not _NDARRAY and isinstance(state, RlState):
            _copyto(slot.row, state.to_array(copy=False))
        else:  # validated straight into the bound input (SchemaError: the buffer is rewritten)
            validate_state_into(state, slot.row)
        slot.run()
        # python floats read out of the bound buffer: the caller never sees that buffer
        p0, p1, p2, strength = slot.out.tolist()
        # the output contract (NaN fails every comparison; inf fails the sum or the range),
        # the sum's bounds as predict_batch writes them
        if not (
            p0 >= 0.0
            and p1 >= 0.0
            and p2 >= 0.0
            and _SUM_LOW <= p0 + p1 + p2 <= _SUM_HIGH
            and 0.0 <= strength <= 1.0
        ):
            raise _contract_error(self.path, 0, np.array([[p0, p1, p2]]), np.array([strength]))
        action = _ACTIONS[(0 if p0 >= p2 else 2) if p0 >= p1 else (1 if p1 >= p2 else 2)]
        if return_probs:
            return action, strength, np.array((p0, p1, p2), dtype=np.float32)
        return action, strength

    def predict_batch(self, states: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], F32, F32]:
        """Decisions for a batch: ``states`` (N, 34) -> ``(actions, strengths, probs)``.

        ``actions`` int64 (N,) (``Action`` values, argmax of ``probs``), ``strengths`` float32
        (N,), ``probs`` float32 (N, 3); all fresh arrays. ``states`` is validated with
        ``otonom_schema.validate_states`` (``SchemaError`` names the first bad row). N = 0
        (shape (0, 34)) gives three empty arrays without running the model. Raises
        ``PolicyError`` naming the first row whose output breaks the contract (see
        ``predict``).
        """
        return self.predict_valid_batch(validate_states(states))

    def predict_valid_batch(self, x: F32) -> tuple[npt.NDArray[np.int64], F32, F32]:
        """``predict_batch`` for states the caller has validated: ``x`` is what
        ``otonom_schema.validate_states`` returns (a C-contiguous float32 (N, 34) array of
        valid states), used as is, not checked again. For a caller that validates in bulk
        what it then feeds a few rows at a time (the backtester validates its market features
        once per chunk of days, and each day only the portfolio columns it writes). The
        output contract is held as ``predict_batch`` holds it."""
        n = x.shape[0]
        if n == 0:
            return (
                np.empty(0, dtype=np.int64),
                np.empty(0, dtype=np.float32),
                np.empty((0, 3), dtype=np.float32),
            )
        slot = self.bound_batch(n)
        if slot is not None:
            np.copyto(slot.state, x)
            slot.run()
            probs, strength = slot.probs.copy(), slot.strength.copy()  # fresh, the caller's
        else:
            # the session the plan chose for the batch's size bucket, the pool's or one
            # thread's (``serving.plan``; None: the plan times both on this call)
            session = next(self._chosen[n.bit_length()])
            if n >= _CHUNK_FROM and x.flags.c_contiguous and x.dtype == np.float32:
                # bound in place, chunk by chunk
                if session is None:
                    probs, strength = self._plan.run(x, chunked=True)
                else:
                    probs, strength = run_chunked(session, x)
            elif session is None:
                probs, strength = self._plan.run(x)
            else:
                # fresh arrays from onnxruntime; binding the whole batch per call measured
                # slower (three bind calls cost more than run's feed handling: 0.85-0.98x at
                # 256-65,536 rows), and so is chunking below _CHUNK_FROM rows
                probs, strength = session.run(OUTPUT_NAMES, {INPUT_NAME: x})
        strength = strength.reshape(n)
        # the output contract, by whole-array reductions (NaN propagates through min/max and
        # fails the comparisons); the offending row is looked for only on failure. The row
        # sums by three strided adds: numpy's sum over a short axis costs 6x more.
        sums = probs[:, 0] + probs[:, 1]
        sums += probs[:, 2]
        if not (
            probs.min() >= 0.0
            and strength.min() >= 0.0
            and strength.max() <= 1.0
            and sums.min() >= _SUM_LOW
            and sums.max() <= _SUM_HIGH
        ):
            raise _contract_error(self.path, None, probs, strength)
        return _argmax3(probs), strength, probs

    def predict_extras(self, states: npt.ArrayLike) -> dict[str, F32]:
        """The model's extra outputs for a batch: ``states`` (N, 34) -> ``{name: float32 (N,
        width)}`` for each of ``extra_outputs`` (``contract.OPTIONAL_OUTPUTS``): e.g.
        ``expected_return`` (N, 1), ``risk_probs`` (N, 3: low, mid, high volatility tercile),
        ``attention`` (N, 34, in ``FEATURE_NAMES`` order). ``{}`` for a model without extra
        outputs (the model is not run). ``states`` is validated as by ``predict_batch``.

        Each output is held to its contract: finite; ``risk_probs`` and ``attention`` rows are
        probabilities (>= 0, summing to 1 within ``PROBS_SUM_ATOL``). A violation raises
        ``PolicyError`` naming the output and the row. ``predict`` and ``predict_batch`` never
        run these outputs."""
        x = validate_states(states)
        if not self.extra_outputs:
            return {}
        n = x.shape[0]
        names = list(self.extra_outputs)
        if n == 0:
            outs = [np.empty((0, OPTIONAL_OUTPUTS[k]), dtype=np.float32) for k in names]
        else:
            outs = self._session.run(names, {INPUT_NAME: x})
        result: dict[str, F32] = {}
        for name, out in zip(names, outs, strict=True):
            values = np.asarray(out, dtype=np.float32).reshape(n, OPTIONAL_OUTPUTS[name])
            _check_extra(self.path, name, values)
            result[name] = values
        return result

    def bound_batch(self, n: int) -> Slot | None:
        """This thread's pre-bound slot for batches of ``n`` states, the one
        ``predict_valid_batch`` runs such batches through, or None when ``n`` is outside
        1 .. 64 (``_BOUND_BATCH``). For ``predict_bound``: its caller writes valid states (as
        ``predict_valid_batch`` takes them) into the slot's ``state`` (n, 34) float32 buffer."""
        if not 1 <= n <= _BOUND_BATCH:
            return None
        try:
            slots: dict[int, Slot] = self._local.batch_slots
        except AttributeError:  # this thread's first call
            slots = self._local.batch_slots = {}
        slot = slots.get(n)
        if slot is None:
            slot = slots[n] = Slot(self._session, n)
        return slot

    def predict_bound(self, slot: Slot) -> list[float] | None:
        """``predict_valid_batch`` of the states in ``slot.state`` (``bound_batch``) as plain
        Python numbers, for a caller that handles a few rows at a time: per row its action,
        strength and top probability, flat (three numbers a row, as ``decide_rows`` takes
        votes), the action as ``predict_valid_batch``'s argmax (the first on a tie, an
        ``int``) and the numbers its float32 outputs converted exactly.

        Returns None unless every row is clearly within the output contract: each
        probability and the strength in [0, 1], and the probabilities' sum within
        ``PROBS_SUM_ATOL`` of 1 by a margin (``_SAFE_LOW`` .. ``_SAFE_HIGH``, in float64)
        that covers the float32 rounding of ``predict_valid_batch``'s own sum. On None the
        caller runs ``predict_valid_batch`` on the same states, which applies the contract
        exactly (and raises its ``PolicyError``); every output it accepts, this accepts too
        unless a row sits within 1e-6 of a bound of the sum or has a probability above 1.
        """
        slot.run()
        flat = slot.out.tolist()  # the probabilities row by row, then the strengths
        low, high = _SAFE_LOW, _SAFE_HIGH
        out: list[float] = []
        put = out.extend
        p = iter(flat)  # the probabilities, three a row; zip ends with the strengths
        for p0, p1, p2, strength in zip(p, p, p, flat[3 * slot.state.shape[0] :], strict=False):
            # each number in [0, 1] (NaN fails every comparison), then the row's sum; row by
            # row (builtin min, max and sum over the whole output cost more), unchained (each
            # a specialised float compare and jump; chained ones are not)
            total = p0 + p1 + p2
            if not (
                p0 >= 0.0
                and p0 <= 1.0
                and p1 >= 0.0
                and p1 <= 1.0
                and p2 >= 0.0
                and p2 <= 1.0
                and strength >= 0.0
                and strength <= 1.0
                and low <= total
                and total <= high
            ):
                return None
            if p0 >= p1:
                put((0, strength, p0) if p0 >= p2 else (2, strength, p2))
            else:
                put((1, strength, p1) if p1 >= p2 else (2, strength, p2))
        return out

    @property
    def batch_plan(self) -> dict[int, int | None]:
        """The session each batch size runs on, as far as chosen: the smallest size of each
        bucket (batches of ``k`` .. ``2k - 1`` rows, 65 and over) -> its threads: 1 (a
        one-thread session of the same model) or None (onnxruntime's pool, one thread per
        core), e.g. ``{256: 1, 4096: None}``. Chosen by timing both on a bucket's first calls
        and again every ``plan.PERIOD_ROWS`` rows (``serving.plan``); the outputs are the same
        either way. ``{}`` for a policy without a plan (every batch on its one session):
        loaded with ``threads`` set or on CUDA, or a model whose one-thread outputs differ."""
        return self._plan.threads()

    @property
    def degenerate_reason(self) -> str | None:
        """Why training marked this model degenerate (its metrics' ``degenerate.reason``: e.g.
        it predicts one action on almost every validation row), or None: not marked, or a
        model trained before the mark existed. Read from the metadata only."""
        mark = self._metadata.get("degenerate")
        if not isinstance(mark, dict):
            return None
        return str(mark.get("reason") or "marked degenerate at training")

    def training_summary(self) -> TrainingSummary | None:
        """The training data's summary (``otonom.training_summary``, for monitoring), or None
        for a model exported before it existed; ``PolicyError`` when it is malformed."""
        from otonom_runtime.drift import TrainingSummary

        return TrainingSummary.from_metadata(self.get_metadata())

    def get_metadata(self) -> dict[str, Any]:
        """The model's metadata, decoded (a fresh copy the caller may change).

        Every ``otonom.*`` key without its prefix (``schema_version``, ``feature_names`` (a
        list), ``metrics`` (a dict), ``training_config``, ...), the metrics also at the top level
        (``get_metadata()["val_action_acc"]``), other keys as stored, and ``path``, ``sha256``
        and ``providers``.
        """
        out = copy.deepcopy(self._metadata)
        out.update(path=str(self.path), sha256=self.sha256, providers=list(self.providers))
        return out


_DISTRIBUTIONS: Final = ("risk_probs", "attention")


def _check_extra(path: Path, name: str, values: F32) -> None:
    """``PolicyError`` naming the first row of the extra output ``name`` that is not finite,
    or (for a distribution) has a value < 0 or does not sum to 1 within ``PROBS_SUM_ATOL``."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values).all(axis=1)
        if name in _DISTRIBUTIONS:
            sums = values.sum(axis=1, dtype=np.float64)
            bad |= ~((values >= 0.0).all(axis=1) & (np.abs(sums - 1.0) <= PROBS_SUM_ATOL))
    if bad.any():
        row = int(np.argmax(bad))
        shown = np.round(values[row, :6].astype(np.float64), 6).tolist()
        expected = (
            f"finite probabilities >= 0 summing to 1 (within {PROBS_SUM_ATOL:g})"
            if name in _DISTRIBUTIONS
            else "finite numbers"
        )
        raise PolicyError(
            f"{path} broke the output contract of {name!r} for row {row} of {len(values)}: "
            f"{shown}{' ...' if values.shape[1] > 6 else ''}, expected {expected} "
            "(docs/model-format.md)"
        )


def _contract_error(
    path: Path, row: int | None, probs: npt.NDArray[Any], strength: npt.NDArray[Any]
) -> PolicyError:
    """The ``PolicyError`` for outputs that break the contract: names the model, the first
    offending row (``row``: the single state's index, or None to find it in the batch) and the
    value."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1, 3)
    s = np.asarray(strength, dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        sums = p.sum(axis=1)
        bad_p = np.logical_not((p >= 0.0).all(axis=1))
        bad_sum = np.logical_not(np.abs(sums - 1.0) <= PROBS_SUM_ATOL)
        bad_s = np.logical_not((s >= 0.0) & (s <= 1.0))
    if row is None:
        rows = np.flatnonzero(bad_p | bad_sum | bad_s)
        row = int(rows[0]) if rows.size else 0
        where = f"row {row} of {len(s)}"
    else:
        where = "the state"
    i = row if row < len(s) else 0
    if bad_s[i]:
        what = f"strength {float(s[i])!r}, expected a finite number in [0, 1]"
    elif bad_p[i]:
        what = f"action_probs {p[i].tolist()}, expected finite probabilities >= 0"
    else:
        what = (
            f"action_probs {p[i].tolist()} summing to {float(sums[i])!r}, expected a sum of 1 "
            f"(within {PROBS_SUM_ATOL:g})"
        )
    return PolicyError(
        f"{path} broke the output contract for {where}: {what} (docs/model-format.md); the "
        "model is broken: no decision is made from it"
    )
