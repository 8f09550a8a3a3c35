"""Model integrity: the digest and the golden sample of model format 2 (docs/model-format.md).

A model is *sealed* at export (``seal_model``): its ``metadata_props`` get

* ``otonom.digest``: ``model_digest(bytes)``, the sha256 of the ONNX file with every top-level
  ``ModelProto.metadata_props`` field (field 14) left out, i.e. of the graph, the weights and
  everything else but the metadata, so the digest can live in the metadata it leaves out;
* ``otonom.golden``: a JSON object ``{"states": [[34 floats] x n], "probs": [[3 floats] x n],
  "strength": [n floats]}``, ``GOLDEN_ROWS`` valid states chosen away from the decision
  boundary (``golden_candidates``) with the outputs the model gave for them at export;
* ``otonom.model_format``: ``"2"``.

``load_rl_policy`` recomputes the digest from the bytes it read and compares it with
``otonom.digest`` before onnxruntime sees the model (any change to a weight, a node or the
graph after export is refused), then re-runs the golden states and refuses a model whose
action changes on any of them or whose outputs differ by more than ``GOLDEN_ATOL``
(``check_golden``). Every prediction is then held to the output contract (finite probabilities
>= 0 that sum to 1 within ``PROBS_SUM_ATOL``, strength in [0, 1]).

The protobuf wire format is walked by hand (the runtime does not depend on ``onnx``): only the
top level of ``ModelProto`` and its ``StringStringEntryProto`` entries are parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import PolicyError
from otonom_runtime.serving.wire import (
    METADATA_FIELD,
    Malformed,
    encode_varint,
    split_metadata,
)
from otonom_schema import STATE_DIM, SchemaError, atomic_write, validate_states

if TYPE_CHECKING:
    from otonom_runtime.serving.rl_policy import RlPolicy

__all__ = [
    "DIGEST_KEY",
    "FORMAT_KEY",
    "GOLDEN_ATOL",
    "GOLDEN_KEY",
    "GOLDEN_MAX_ROWS",
    "GOLDEN_MIN_MARGIN",
    "GOLDEN_ROWS",
    "GOLDEN_STRENGTH_RANGE",
    "PROBS_SUM_ATOL",
    "Golden",
    "ModelScan",
    "build_golden",
    "check_format",
    "check_golden",
    "decode_golden",
    "golden_candidates",
    "model_digest",
    "scan_model",
    "seal_model",
    "with_metadata",
]

FORMAT_KEY: Final = "otonom.model_format"
DIGEST_KEY: Final = "otonom.digest"
"""Metadata key: ``model_digest`` of the file (64 lowercase hex digits)."""
GOLDEN_KEY: Final = "otonom.golden"
"""Metadata key: the golden sample (JSON; see the module docstring)."""

GOLDEN_ATOL: Final = 1e-4
"""The largest absolute difference allowed between a golden output stored at export and the
same output recomputed at load (each probability and the strength). The model is a float32
MLP whose outputs lie in [0, 1]: another CPU's kernels (other SIMD widths, FMA, summation
order) or CUDA change them by a few float32 ulps, about 1e-7 (parity of PyTorch and
onnxruntime is checked to 1e-5 at export), far below 1e-4; a changed weight that matters moves
them by more. The golden rows have a top-probability margin >= ``GOLDEN_MIN_MARGIN`` (0.05),
so no difference within the tolerance can change their action."""
PROBS_SUM_ATOL: Final = 1e-4
"""How far the action probabilities of one state may sum away from 1 (the output contract;
a float32 softmax is off by about 1e-7)."""
GOLDEN_ROWS: Final = 16
"""How many golden states ``seal_model`` stores."""
GOLDEN_MAX_ROWS: Final = 256
"""The most golden states a model may carry (a bound on what a load re-runs)."""
GOLDEN_MIN_MARGIN: Final = 0.05
"""A golden state's top probability exceeds the second by at least this much (preferred)."""
GOLDEN_STRENGTH_RANGE: Final = (0.02, 0.98)
"""A golden state's strength lies in this range (preferred): away from the sigmoid's flat
tails, where a changed weight barely moves the output."""

_FALLBACK_MARGIN: Final = 4 * GOLDEN_ATOL
"""The least margin of a golden state when too few states meet the preferred rules: still
twice what the tolerance can move."""

F32 = npt.NDArray[np.float32]


def _malformed(source: object, exc: Malformed) -> PolicyError:
    return PolicyError(
        f"{source} is not a valid ONNX model: its protobuf encoding is malformed ({exc})"
    )


def model_digest(data: bytes) -> str:
    """The model digest (64 lowercase hex digits): the sha256 of the ONNX file's bytes with
    every top-level ``metadata_props`` field (``ModelProto`` field 14) removed, the other
    fields kept byte for byte in their order. Raises ``PolicyError`` for bytes that are not a
    well-formed protobuf message."""
    try:
        rest, _, _ = split_metadata(data)
    except Malformed as exc:
        raise _malformed("the data", exc) from None
    h = hashlib.sha256()
    for _, raw in rest:
        h.update(raw)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelScan:
    """What ``scan_model`` reads from a model's bytes without onnxruntime: the ``digest``
    (``model_digest``) and the ``metadata`` (key -> value, decoded as UTF-8)."""

    digest: str
    metadata: dict[str, str]


def scan_model(data: bytes, source: str | os.PathLike[str] = "<model bytes>") -> ModelScan:
    """Compute the digest and read the metadata of an ONNX model's bytes.

    Raises ``PolicyError`` naming ``source`` for a malformed protobuf, a metadata key or value
    that is not valid UTF-8, or a key that occurs twice (which of two values a reader takes is
    not something to leave to chance)."""
    try:
        rest, entries, _ = split_metadata(data)
    except Malformed as exc:
        raise _malformed(source, exc) from None
    h = hashlib.sha256()
    for _, raw in rest:
        h.update(raw)
    metadata: dict[str, str] = {}
    for raw_key, raw_value in entries:
        try:
            key = raw_key.decode("utf-8")
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError(
                f"{source}: its metadata_props hold bytes that are not valid UTF-8 "
                f"({exc.reason} at byte {exc.start} of the entry "
                f"{raw_key[:40].decode('utf-8', errors='replace')!r}); expected UTF-8 text "
                "keys and values (docs/model-format.md)"
            ) from None
        if key in metadata:
            raise PolicyError(
                f"{source}: its metadata_props hold the key {key!r} twice; expected each key "
                "once (docs/model-format.md)"
            )
        metadata[key] = value
    return ModelScan(h.hexdigest(), metadata)


def with_metadata(data: bytes, updates: Mapping[str, str | None]) -> bytes:
    """``data`` (an ONNX model's bytes) with its metadata changed: each key of ``updates`` set
    to its value, or removed when the value is None; the other entries and every other field
    are kept byte for byte (so ``model_digest`` does not change). The entries are written where
    protobuf writes them (in field-number order). Raises ``PolicyError`` for malformed bytes."""
    try:
        rest, entries, where = split_metadata(data)
    except Malformed as exc:
        raise _malformed("the data", exc) from None
    pending = {k.encode("utf-8"): v for k, v in updates.items()}
    kept: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    for key, value in entries:
        if key in pending:
            if key in seen:
                continue
            seen.add(key)
            new = pending[key]
            if new is not None:
                kept.append((key, new.encode("utf-8")))
        else:
            kept.append((key, value))
    kept += [(k, v.encode("utf-8")) for k, v in pending.items() if k not in seen and v is not None]
    blob = bytearray()
    for key, value in kept:
        entry = (
            b"\x0a" + encode_varint(len(key)) + key + b"\x12" + encode_varint(len(value)) + value
        )
        blob += bytes([(METADATA_FIELD << 3) | 2]) + encode_varint(len(entry)) + entry
    if where is None:
        where = next((n for n, (f, _) in enumerate(rest) if f > METADATA_FIELD), len(rest))
    raws = [raw for _, raw in rest]
    return b"".join(raws[:where]) + bytes(blob) + b"".join(raws[where:])


# --- the golden sample -------------------------------------------------------------------------


@dataclass(frozen=True)
class Golden:
    """A decoded golden sample: ``states`` (n, 34), ``probs`` (n, 3), ``strength`` (n,), all
    float32."""

    states: F32
    probs: F32
    strength: F32

    def to_json(self) -> str:
        """The ``otonom.golden`` value (floats written exactly: they round-trip to float32)."""
        return json.dumps(
            {
                "states": self.states.astype(np.float64).tolist(),
                "probs": self.probs.astype(np.float64).tolist(),
                "strength": self.strength.astype(np.float64).tolist(),
            },
            separators=(",", ":"),
            allow_nan=False,
        )


def _margins(probs: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    p = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    out: npt.NDArray[np.float64] = p[:, -1] - p[:, -2]
    return out


def golden_candidates(probs: npt.ArrayLike, strength: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Indices of the rows that make good golden states (ascending): top-probability margin
    >= ``GOLDEN_MIN_MARGIN`` and strength within ``GOLDEN_STRENGTH_RANGE``; rows with any
    non-finite output never qualify."""
    p = np.asarray(probs, dtype=np.float64)
    s = np.asarray(strength, dtype=np.float64).reshape(-1)
    if p.ndim != 2 or p.shape[1] != 3 or s.shape[0] != p.shape[0]:
        raise ValueError(f"probs {p.shape} and strength {s.shape}; expected (N, 3) and (N,)")
    lo, hi = GOLDEN_STRENGTH_RANGE
    with np.errstate(invalid="ignore"):
        ok = _in_contract(p, s) & (_margins(p) >= GOLDEN_MIN_MARGIN) & (s >= lo) & (s <= hi)
    return np.flatnonzero(ok).astype(np.int64)


def _in_contract(p: npt.NDArray[np.float64], s: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Per row: finite probabilities >= 0 summing to 1 (``PROBS_SUM_ATOL``), strength in
    [0, 1] (the output contract)."""
    with np.errstate(invalid="ignore"):
        out: npt.NDArray[np.bool_] = (
            np.isfinite(p).all(axis=1)
            & (p >= 0).all(axis=1)
            & (np.abs(p.sum(axis=1) - 1.0) <= PROBS_SUM_ATOL)
            & (s >= 0)
            & (s <= 1)
        )
    return out


def _spread(indices: npt.NDArray[np.int64], actions: npt.NDArray[np.int64], rows: int) -> list[int]:
    """Up to ``rows`` of ``indices``, taken in turn from each action's rows, each spread evenly
    over that action's rows (so every action the model gives is in the sample)."""
    groups = []
    for a in range(3):
        g = indices[actions[indices] == a]
        if g.size:
            pos = np.unique(np.round(np.linspace(0, g.size - 1, min(g.size, rows))).astype(int))
            groups.append([int(x) for x in g[pos]])
    out: list[int] = []
    k = 0
    while len(out) < rows and any(k < len(g) for g in groups):
        out += [g[k] for g in groups if k < len(g)]
        k += 1
    return sorted(out[:rows])


def build_golden(
    states: npt.ArrayLike, probs: npt.ArrayLike, strength: npt.ArrayLike, rows: int = GOLDEN_ROWS
) -> Golden:
    """The golden sample from ``states`` (N, 34, valid) and the model's outputs for them.

    Rows from ``golden_candidates`` first (spread over the actions); when there are fewer than
    ``rows``, the rest from the remaining rows with finite outputs in the contract, a margin
    >= 4 x ``GOLDEN_ATOL`` and a strength in (0, 1), widest margin first. Raises ``ValueError``
    when no row qualifies (e.g. every output is NaN), or for mismatched shapes."""
    x = validate_states(states)
    p = np.asarray(probs, dtype=np.float32)
    s = np.asarray(strength, dtype=np.float32).reshape(-1)
    if p.shape != (x.shape[0], 3) or s.shape != (x.shape[0],):
        raise ValueError(
            f"states {x.shape}, probs {p.shape}, strength {s.shape}; expected (N, 34), (N, 3), (N,)"
        )
    if not 1 <= rows <= GOLDEN_MAX_ROWS:
        raise ValueError(f"rows={rows}; expected 1..{GOLDEN_MAX_ROWS}")
    actions = np.argmax(p, axis=1).astype(np.int64) if p.size else np.zeros(0, np.int64)
    picked = _spread(golden_candidates(p, s), actions, rows)
    if len(picked) < rows:
        margin = _margins(p) if p.size else np.zeros(0)
        with np.errstate(invalid="ignore"):
            ok = (
                _in_contract(p.astype(np.float64), s.astype(np.float64))
                & (s > 0)
                & (s < 1)
                & (margin >= _FALLBACK_MARGIN)
            )
        ok[picked] = False
        extra = np.flatnonzero(ok)
        extra = extra[np.argsort(-margin[extra], kind="stable")][: rows - len(picked)]
        picked = sorted(picked + [int(i) for i in extra])
    if not picked:
        raise ValueError(
            f"none of the {x.shape[0]} states gives finite outputs within the contract away from "
            f"the decision boundary (top-probability margin >= {_FALLBACK_MARGIN:g}, strength "
            "in (0, 1)): no golden sample can be built; pass more, more varied states"
        )
    idx = np.asarray(picked, dtype=np.int64)
    return Golden(x[idx].copy(), p[idx].copy(), s[idx].copy())


def _floats(value: Any, shape: tuple[int, ...], what: str, source: object) -> F32:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != shape or not np.isfinite(arr).all():
        raise PolicyError(
            f"{source}: metadata {GOLDEN_KEY} {what} has shape {arr.shape} (or non-numbers); "
            f"expected finite numbers of shape {shape} (docs/model-format.md)"
        )
    return arr.astype(np.float32)


def decode_golden(text: str, source: str | os.PathLike[str] = "<model>") -> Golden:
    """Decode and check an ``otonom.golden`` value: 1..``GOLDEN_MAX_ROWS`` valid states, their
    probabilities (the contract) and strengths, each row away from the decision boundary
    (margin >= 4 x ``GOLDEN_ATOL``). Raises ``PolicyError`` naming ``source``."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PolicyError(
            f"{source}: metadata {GOLDEN_KEY} is not valid JSON ({exc}); expected an object "
            "with 'states', 'probs' and 'strength' (docs/model-format.md)"
        ) from None
    if not isinstance(raw, dict) or not {"states", "probs", "strength"} <= raw.keys():
        raise PolicyError(
            f"{source}: metadata {GOLDEN_KEY} is a JSON {type(raw).__name__} with keys "
            f"{sorted(raw) if isinstance(raw, dict) else '-'}; expected an object with "
            "'states', 'probs' and 'strength' (docs/model-format.md)"
        )
    states = raw["states"]
    n = len(states) if isinstance(states, list) else -1
    if not 1 <= n <= GOLDEN_MAX_ROWS:
        raise PolicyError(
            f"{source}: metadata {GOLDEN_KEY} holds {max(n, 0)} states; expected 1 to "
            f"{GOLDEN_MAX_ROWS} (docs/model-format.md)"
        )
    x = _floats(states, (n, STATE_DIM), "states", source)
    try:
        x = validate_states(x)
    except SchemaError as exc:
        raise PolicyError(
            f"{source}: metadata {GOLDEN_KEY} holds an invalid state: {exc}"
        ) from None
    p = _floats(raw["probs"], (n, 3), "probs", source)
    s = _floats(raw["strength"], (n,), "strength", source)
    bad = np.flatnonzero(
        (p < 0).any(axis=1)
        | (np.abs(p.sum(axis=1, dtype=np.float64) - 1.0) > PROBS_SUM_ATOL)
        | (s < 0)
        | (s > 1)
        | (_margins(p) < _FALLBACK_MARGIN)
    )
    if bad.size:
        i = int(bad[0])
        raise PolicyError(
            f"{source}: metadata {GOLDEN_KEY} row {i} (probs {p[i].tolist()}, strength "
            f"{float(s[i])}) breaks the output contract or sits on the decision boundary "
            f"(margin < {_FALLBACK_MARGIN:g}); expected the outputs of states chosen away from "
            "it (docs/model-format.md)"
        )
    return Golden(x, p, s)


def check_format(metadata: Mapping[str, str], source: str | os.PathLike[str]) -> None:
    """Refuse a model that is not model format 2 or lacks its digest or golden sample, saying
    how to make one that is. Raises ``PolicyError`` naming ``source``."""
    from otonom_runtime.serving.contract import MODEL_FORMAT

    fmt = metadata.get(FORMAT_KEY)
    fix = (
        "re-export it with this trainer (`otonom-train export --checkpoint "
        "<its policy_best.pt>`, which seals it), or regenerate the shipped default model "
        "(models/README.md, 'Regenerating the default model')"
    )
    if fmt != MODEL_FORMAT:
        if fmt is None or fmt == "1":
            raise PolicyError(
                f"{source} is model format {fmt or '1 (no otonom.model_format)'}, made before "
                f"models carried a digest and a golden sample; this runtime reads format "
                f"{MODEL_FORMAT!r} only, whose outputs it can verify: {fix} "
                "(docs/model-format.md)"
            )
        raise PolicyError(
            f"{source} has otonom.model_format {fmt!r}; this runtime reads format "
            f"{MODEL_FORMAT!r} (docs/model-format.md)"
        )
    missing = [k for k in (DIGEST_KEY, GOLDEN_KEY) if k not in metadata]
    if missing:
        raise PolicyError(
            f"{source} lacks required metadata {missing} (model format {MODEL_FORMAT}); "
            f"expected both "
            f"{DIGEST_KEY} and {GOLDEN_KEY}: {fix} (docs/model-format.md)"
        )


def check_golden(policy: RlPolicy, golden: Golden) -> None:
    """Re-run the golden states through ``policy`` (``predict_batch``, and ``predict`` row by
    row) and refuse it when an action differs from the stored one or an output differs by more
    than ``GOLDEN_ATOL``. Raises ``PolicyError`` naming the model, the row and the values."""
    source = policy.path
    want_actions = np.argmax(golden.probs, axis=1)
    try:
        actions, strength, probs = policy.predict_batch(golden.states)
        single = [policy.predict(row, return_probs=True) for row in golden.states]
    except PolicyError as exc:
        raise PolicyError(f"{source} fails its golden sample: {exc}") from None
    s_actions = np.array([int(a) for a, _, _ in single], dtype=np.int64)
    s_strength = np.array([st for _, st, _ in single], dtype=np.float32)
    s_probs = np.stack([p for _, _, p in single])
    for how, a, st, p in (
        ("predict_batch", actions, strength, probs),
        ("predict", s_actions, s_strength, s_probs),
    ):
        diff = np.maximum(
            np.abs(p.astype(np.float64) - golden.probs).max(axis=1),
            np.abs(st.astype(np.float64) - golden.strength),
        )
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero((a != want_actions) | ~(diff <= GOLDEN_ATOL))
        if bad.size:
            i = int(bad[0])
            raise PolicyError(
                f"{source} fails its golden sample ({how}, row {i} of {len(golden.states)}): "
                f"it answers {_ACTION_NAMES[int(a[i])]} probs {_fmt(p[i])} strength "
                f"{float(st[i]):.6g} where the export answered "
                f"{_ACTION_NAMES[int(want_actions[i])]} probs {_fmt(golden.probs[i])} strength "
                f"{float(golden.strength[i]):.6g} (tolerance {GOLDEN_ATOL:g}; {bad.size} of "
                f"{len(golden.states)} rows differ): the model was changed after export, or "
                "this runtime computes it differently; re-export it"
            )


_ACTION_NAMES: Final = ("HOLD", "BUY", "SELL")


def _fmt(values: npt.NDArray[Any]) -> str:
    return "[" + ", ".join(f"{float(v):.6g}" for v in values) + "]"


# --- sealing -----------------------------------------------------------------------------------


def _run(data: bytes, states: F32) -> tuple[F32, F32]:
    import onnxruntime as ort

    from otonom_runtime.serving.contract import INPUT_NAME, OUTPUT_NAMES

    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    probs, strength = session.run(list(OUTPUT_NAMES), {INPUT_NAME: states})
    return np.asarray(probs, dtype=np.float32), np.asarray(strength, dtype=np.float32).reshape(-1)


def seal_model(
    model: str | os.PathLike[str] | bytes,
    states: npt.ArrayLike,
    *,
    outputs: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    rows: int = GOLDEN_ROWS,
    write_sidecar: bool = True,
) -> bytes:
    """Seal a model as format 2 and return its sealed bytes.

    ``model``: the ONNX bytes, or a file path (then the file is rewritten in place, through a
    temporary file and a rename, with its ``.sha256`` sidecar unless ``write_sidecar=False``).
    ``states``: valid states (N, 34) to choose the golden rows from (``build_golden``); the
    model is run on them with onnxruntime (CPU) unless ``outputs=(probs, strength)`` gives
    the outputs to store instead (for tests that need a wrong golden sample). Sets
    ``otonom.model_format`` (``"2"``), ``otonom.golden`` and ``otonom.digest``; other metadata
    is kept. Raises ``ValueError`` when no golden row qualifies, ``PolicyError`` for bytes that
    are not a protobuf message."""
    from otonom_runtime.serving.contract import MODEL_FORMAT
    from otonom_runtime.serving.files import write_sha256_sidecar

    path: Path | None = None
    if isinstance(model, (bytes, bytearray)):
        data = bytes(model)
    else:
        path = Path(model)
        data = path.read_bytes()
    x = validate_states(states)
    probs, strength = _run(data, x) if outputs is None else outputs
    golden = build_golden(x, probs, strength, rows)
    sealed = with_metadata(data, {FORMAT_KEY: MODEL_FORMAT, GOLDEN_KEY: golden.to_json()})
    sealed = with_metadata(sealed, {DIGEST_KEY: model_digest(sealed)})
    if path is not None:
        atomic_write(path, sealed)
        if write_sidecar:
            write_sha256_sidecar(path)
    return sealed
