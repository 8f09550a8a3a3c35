"""The onnxruntime session of a policy (providers, options, quiet logging) and the pre-bound
I/O bindings its hot paths run through."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import PolicyError
from otonom_runtime.serving.contract import INPUT_NAME
from otonom_schema import STATE_DIM

__all__ = ["CHUNK_ROWS", "DEVICES", "Slot", "make_session", "providers", "run_chunked"]

DEVICES: Final = ("cpu", "cuda", "auto")

F32 = npt.NDArray[np.float32]


def providers(ort: Any, device: str) -> list[str]:
    if device not in DEVICES:
        raise PolicyError(f"device={device!r}; expected one of {DEVICES}")
    available = list(ort.get_available_providers())
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise PolicyError(
            f"device='cuda' but onnxruntime {ort.__version__} has no CUDAExecutionProvider "
            f"(available: {available}); install onnxruntime-gpu matching your CUDA, or use "
            "device='cpu' or device='auto'"
        )
    if device == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def make_session(
    ort: Any, data: bytes, model: Path, providers: list[str], threads: int | None = None
) -> Any:
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    # A daemon mostly idles: the worker threads spin while a run lasts (onnxruntime's default:
    # a parallel node's pieces start without a wake-up) and stop spinning when it returns
    # instead of burning a core each for a while after every call. Measured, 4,096 rows: the
    # same states/s as without spinning's stop within a few %, 5-15 % more than no spinning at
    # all; 100 calls 10 ms apart cost 0.25 s of CPU, against 1.25 s with spinning left on.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    # fatal only: no warnings on stderr of the daemon, and the errors are raised (PolicyError)
    options.log_severity_level = 4
    try:
        # CPU only: no "EP Error ... Falling back to CPU and retrying" print and second try (the
        # same CPU session again) when the bytes are bad; the error is raised below
        fallback = {} if "CUDAExecutionProvider" in providers else {"enable_fallback": 0}
        return ort.InferenceSession(data, sess_options=options, providers=providers, **fallback)
    except Exception as exc:  # onnxruntime raises its own (pybind) exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PolicyError(
            f"{model} is not a valid ONNX model that onnxruntime {ort.__version__} can load: "
            f"{first}"
        ) from exc


class Slot:
    """One thread's pre-bound I/O binding for batches of ``n`` states and the buffers it points
    to (``predict``: n = 1; ``predict_batch``: one per small batch size).

    ``out`` holds both outputs, one after the other: ``probs`` (n, 3) and ``strength``
    (n, 1) are views of it (each contiguous, as a bound output must be), so a caller reads
    every output number with one ``tolist`` (n = 1: ``out`` is ``[p_hold, p_buy, p_sell,
    strength]``, what ``predict`` reads)."""

    __slots__ = ("binding", "out", "probs", "row", "run", "state", "strength")

    def __init__(self, session: Any, n: int = 1) -> None:
        self.state: F32 = np.zeros((n, STATE_DIM), dtype=np.float32)
        self.row: F32 = self.state[0]
        self.out: F32 = np.zeros(4 * n, dtype=np.float32)
        self.probs: F32 = self.out[: 3 * n].reshape(n, 3)
        self.strength: F32 = self.out[3 * n :].reshape(n, 1)
        binding = session.io_binding()
        binding.bind_input(INPUT_NAME, "cpu", 0, np.float32, [n, STATE_DIM], self.state.ctypes.data)
        binding.bind_output("action_probs", "cpu", 0, np.float32, [n, 3], self.probs.ctypes.data)
        binding.bind_output("strength", "cpu", 0, np.float32, [n, 1], self.strength.ctypes.data)
        self.binding = binding
        self.run: Callable[[], object] = _runner(session, binding)


CHUNK_ROWS: Final = 2048
"""Rows per run of ``run_chunked``. A 2 x 128 policy on 2 cores, one process, chunked runs
alternated call by call with one run of the whole batch (the same session, outputs bit for bit
equal): 1.15x the whole run's speed at 4,096 rows (2 chunks), 1.7x at 65,536 (32 chunks;
4,096-row chunks: 1.72x, 1,024: 1.59x, 256: 1.13x); below 4,096 rows no chunk size gained
(2,048 rows: 1,024-row chunks 0.97x). A layer's activations for 2,048 rows (1 MB at 128 wide)
stay in the cores' caches; a whole batch of 65,536 rows (32 MB a layer) streams through
memory."""


def run_chunked(session: Any, x: F32, rows: int = CHUNK_ROWS) -> tuple[F32, F32]:
    """``session.run`` of the (N, 34) float32 C-contiguous states ``x`` as runs of ``rows``
    rows (the last one shorter), each bound in place (``io_binding``: its input a slice of
    ``x``, its outputs slices of the arrays returned, nothing copied): the model's
    ``action_probs`` (N, 3) and ``strength`` (N, 1), fresh arrays, the values one run of
    the whole batch gives (each row's outputs depend on that row alone)."""
    n = x.shape[0]
    probs: F32 = np.empty((n, 3), dtype=np.float32)
    strength: F32 = np.empty((n, 1), dtype=np.float32)
    binding = session.io_binding()
    run = _runner(session, binding)
    base, out_p, out_s = x.ctypes.data, probs.ctypes.data, strength.ctypes.data
    f32 = np.float32
    for start in range(0, n, rows):
        k = min(rows, n - start)
        binding.bind_input(INPUT_NAME, "cpu", 0, f32, [k, STATE_DIM], base + start * 4 * STATE_DIM)
        binding.bind_output("action_probs", "cpu", 0, f32, [k, 3], out_p + start * 12)
        binding.bind_output("strength", "cpu", 0, f32, [k, 1], out_s + start * 4)
        run()
    return probs, strength


def _runner(session: Any, binding: Any) -> Callable[[], object]:
    """``session.run_with_iobinding(binding, options)`` as one call without a Python frame,
    with run options made once for the slot.

    onnxruntime's ``InferenceSession.run_with_iobinding`` is a one-line Python wrapper over its
    C++ session (``_sess``) and binding (``_iobinding``); on the single-state hot path that
    wrapper costs a tenth of the model, so the C++ method is bound directly. An onnxruntime
    without those attributes gets the public wrapper (same result, one frame slower). The
    options are onnxruntime's defaults, made here once: given None, each run makes its own,
    which costs about 1 us a run (a fifth of a one-state run).
    """
    import onnxruntime

    options = onnxruntime.RunOptions()
    inner, raw = getattr(session, "_sess", None), getattr(binding, "_iobinding", None)
    method = getattr(inner, "run_with_iobinding", None)
    if method is None or raw is None:
        return functools.partial(session.run_with_iobinding, binding, options)
    return functools.partial(method, raw, options)
