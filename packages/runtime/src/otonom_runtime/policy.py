"""The ONNX Runtime policy: load a model that follows ``docs/model-format.md`` and predict.

``load_rl_policy(path, device="cpu")`` checks the model file (sha256 sidecar, ONNX validity,
input/output signature, metadata contract, state schema) and returns an ``RlPolicy``::

    policy = load_rl_policy("models/rl_bc/policy_best.pt")  # loads the sibling .onnx
    action, strength = policy.predict(state)                # Action, float in [0, 1]
    action, strength, probs = policy.predict(state, return_probs=True)
    actions, strengths, probs = policy.predict_batch(states)  # (N,), (N,), (N, 3)

No PyTorch, ever: a ``.pt`` path means "the ONNX export beside it". ``onnxruntime`` is imported
when a model is loaded, not when this module is imported. One ``InferenceSession`` per policy is
shared by every thread; each thread gets its own pre-bound I/O bindings and buffers for
``predict`` and for small ``predict_batch`` batches (a binding is not thread-safe), and every
result is a copy the caller owns.

Errors: ``PolicyError`` (a ``ValueError``) for a model that cannot be used, its subclass
``ModelSchemaMismatchError`` for a model trained under another state schema, and
``otonom_schema.SchemaError`` for a bad state at predict time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Final, Literal, overload

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import ModelSchemaMismatchError, PolicyError
from otonom_runtime.integrity import (
    DIGEST_KEY,
    GOLDEN_KEY,
    PROBS_SUM_ATOL,
    check_format,
    check_golden,
    decode_golden,
    scan_model,
)
from otonom_schema import (
    FEATURE_NAMES,
    SCHEMA_VERSION,
    STATE_DIM,
    Action,
    RlState,
    schema_fingerprint,
    validate_state_array,
    validate_states,
)

__all__ = [
    "CHECKPOINT_FILENAME",
    "DEFAULT_POINTER",
    "DEVICES",
    "INPUT_NAME",
    "LATEST_POINTER",
    "MAX_MODEL_BYTES",
    "MODEL_FILENAME",
    "MODEL_FORMAT",
    "OUTPUT_NAMES",
    "REQUIRED_METADATA",
    "REQUIRED_METRICS",
    "RUN_ID_KEY",
    "TRAINING_RECORD",
    "RlPolicy",
    "load_rl_policy",
    "resolve_model_path",
    "resolve_version_dir",
    "write_sha256_sidecar",
]

logger = logging.getLogger(__name__)

MODEL_FILENAME: Final = "policy_best.onnx"
"""The model a model folder holds."""
CHECKPOINT_FILENAME: Final = "policy_best.pt"
"""The trainer's PyTorch checkpoint (never loaded here: it stands for the ``.onnx`` beside it)."""
LATEST_POINTER: Final = "latest"
"""A file in a model folder holding the name of the promoted sub-folder (versioned exports)."""
DEFAULT_POINTER: Final = "default"
"""A file in a model folder naming the sub-folder to use while nothing is promoted (the
repository's shipped default model; ``latest``, when present, wins)."""
TRAINING_RECORD: Final = "metadata.json"
"""The trainer's record of the training run, beside the checkpoint and its export."""
RUN_ID_KEY: Final = "otonom.training_run_id"
"""Optional metadata key: the id of the training run the model was exported from (the same id
as in the checkpoint and in ``metadata.json``; see ``load_rl_policy``)."""
MODEL_FORMAT: Final = "2"
"""The ``otonom.model_format`` this runtime reads (2: sealed with a digest and a golden sample,
``otonom_runtime.integrity``; format 1 models are refused)."""
INPUT_NAME: Final = "state"
OUTPUT_NAMES: Final = ("action_probs", "strength")
DEVICES: Final = ("cpu", "cuda", "auto")
MAX_MODEL_BYTES: Final = 256 * 2**20
"""The largest model file ``load_rl_policy`` reads (256 MiB), checked before reading anything;
``load_rl_policy(..., max_bytes=N)`` raises it. A policy MLP is a few hundred KiB."""

REQUIRED_METADATA: Final = (
    "otonom.model_format",
    "otonom.schema_version",
    "otonom.schema_fingerprint",
    "otonom.feature_names",
    "otonom.metrics",
    "otonom.training_config",
    "otonom.dataset_sha256",
    "otonom.created_at",
    "otonom.package_versions",
    DIGEST_KEY,
    GOLDEN_KEY,
)
"""``metadata_props`` keys every model must carry (docs/model-format.md)."""
REQUIRED_METRICS: Final = ("val_action_acc", "train_action_acc", "best_val_loss", "best_epoch")
"""Keys ``otonom.metrics`` must hold (numbers)."""

_JSON_KEYS: Final = {
    "otonom.feature_names": list,
    "otonom.metrics": dict,
    "otonom.training_config": dict,
    "otonom.package_versions": dict,
}
_PREFIX: Final = "otonom."
_SHA256_RE: Final = re.compile(r"^[0-9a-fA-F]{64}$")
_ACTIONS: Final = (Action.HOLD, Action.BUY, Action.SELL)
_OUTPUT_DIMS: Final = {"action_probs": 3, "strength": 1}
_CHUNK: Final = 1 << 20
_SIDECAR_READ: Final = 4096

F32 = npt.NDArray[np.float32]


# --- paths -------------------------------------------------------------------------------------


def _listing(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:20])
    more = f" (+{len(names) - 20} more)" if len(names) > 20 else ""
    return f"it holds: {shown}{more}"


def _pointer(folder: Path) -> Path | None:
    """The pointer file ``folder`` follows: ``latest`` when present, else ``default``."""
    for name in (LATEST_POINTER, DEFAULT_POINTER):
        if (folder / name).is_file():
            return folder / name
    return None


def _follow(pointer: Path) -> Path:
    folder = pointer.parent
    target = pointer.read_text(encoding="utf-8").strip()
    if not target or Path(target).is_absolute() or ".." in Path(target).parts:
        raise PolicyError(
            f"{pointer} holds {target!r}; expected the name of a sub-folder of {folder} "
            "(a relative path without '..')"
        )
    sub = folder / target
    if not sub.is_dir():
        raise PolicyError(
            f"{pointer} points to {target!r} but {sub} is not a folder; {_listing(folder)}"
        )
    return sub


def resolve_version_dir(folder: str | os.PathLike[str]) -> Path | None:
    """The version sub-folder a versioned model folder stands for, by its pointer files: the
    one ``folder/latest`` names (the promoted version), else the one ``folder/default`` names
    (the shipped default), else None. Only the pointers are read.

    The rule ``load_rl_policy`` follows (after a model of the folder's own, which wins) and the
    trainer's registry uses. Raises ``PolicyError`` for a pointer that names no sub-folder.
    """
    pointer = _pointer(Path(folder))
    return None if pointer is None else _follow(pointer)


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """The ``.onnx`` file that ``path`` stands for (see ``load_rl_policy``); nothing is read
    but pointer files.

    Raises ``PolicyError`` when there is none, saying what was found and what was expected.
    """
    p = Path(path)
    if p.suffix == ".pt":
        onnx_path = p.with_suffix(".onnx")
        pointer = _pointer(p.parent)
        if not onnx_path.is_file() and not p.exists() and pointer is not None:
            # the guide's "models/rl_bc/policy_best.pt" in a versioned model folder: the
            # promoted (else the default) version's export
            onnx_path = _follow(pointer) / onnx_path.name
            logger.info("%s: following %s to %s", p, pointer, onnx_path)
        if not onnx_path.is_file():
            if p.exists():
                step = (
                    f"export it: otonom-train export --checkpoint {p}, or pass the path of "
                    "an .onnx file"
                )
            else:
                step = (
                    f"{p} does not exist either: train a model first (otonom-train train "
                    f"--dataset FILE.npz --output {p.parent}), or pass an existing .onnx file "
                    "or model folder"
                )
            raise PolicyError(
                f"there is no ONNX model for {p}: the runtime never loads PyTorch checkpoints, "
                f"it loads the ONNX export beside one, and there is no {onnx_path}; {step}"
            )
        logger.info("%s is a PyTorch checkpoint: loading the ONNX export %s", p, onnx_path)
        return onnx_path
    if p.is_dir():
        own = p / MODEL_FILENAME
        pointer = _pointer(p)
        if own.is_file():
            # a folder holding a model is that model (what `otonom-train train --output DIR`
            # writes); its pointers, if any, are for folders that hold only versions
            if pointer is not None:
                logger.warning(
                    "%s holds %s and a %r pointer: using %s (the %s version is used once the "
                    "folder holds no %s of its own)",
                    p,
                    MODEL_FILENAME,
                    pointer.name,
                    own,
                    "promoted" if pointer.name == LATEST_POINTER else "default",
                    MODEL_FILENAME,
                )
            return own
        folder = _follow(pointer) if pointer is not None else p
        model = folder / MODEL_FILENAME
        if not model.is_file():
            via = f" (followed {pointer})" if pointer is not None else ""
            checkpoint = folder / CHECKPOINT_FILENAME
            step = (
                f" Its checkpoint is not exported: otonom-train export --checkpoint {checkpoint}"
                if checkpoint.is_file()
                else ""
            )
            raise PolicyError(
                f"model folder {folder}{via} has no {MODEL_FILENAME}; {_listing(folder)}. "
                f"Expected {MODEL_FILENAME} (+ its .sha256 sidecar), or a {LATEST_POINTER!r} "
                f"or {DEFAULT_POINTER!r} file naming a sub-folder that holds one.{step}"
            )
        return model
    if not p.exists():
        raise PolicyError(
            f"model path {p} does not exist; expected a .onnx file, a model folder holding "
            f"{MODEL_FILENAME} (or a {LATEST_POINTER!r} / {DEFAULT_POINTER!r} pointer), or a "
            f"{CHECKPOINT_FILENAME} path with the .onnx export beside it"
        )
    if not p.is_file():
        raise PolicyError(f"model path {p} is not a regular file or folder")
    return p


def _sidecar_path(model: Path) -> Path:
    return model.with_name(model.name + ".sha256")


def write_sha256_sidecar(model_path: str | os.PathLike[str]) -> Path:
    """Write ``<model>.sha256`` beside the model in ``sha256sum`` format and return its path.

    The content is ``"<64 hex digits>  <file name>\\n"``, so ``sha256sum -c`` checks it.
    """
    model = Path(model_path)
    h = hashlib.sha256()
    with model.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    sidecar = _sidecar_path(model)
    sidecar.write_text(f"{h.hexdigest()}  {model.name}\n", encoding="utf-8")
    return sidecar


def _read_sidecar(model: Path) -> str:
    """The digest the model's sidecar names (64 lowercase hex digits)."""
    sidecar = _sidecar_path(model)
    if not sidecar.is_file():
        raise PolicyError(
            f"no sha256 sidecar for {model}: expected {sidecar} in sha256sum format "
            f"('<hex>  {model.name}'). Make one with `cd {model.parent} && sha256sum "
            f"{model.name} > {sidecar.name}` or "
            "otonom_runtime.policy.write_sha256_sidecar(path)"
        )
    try:
        with sidecar.open("rb") as f:
            head = f.read(_SIDECAR_READ)  # a digest and a file name: never more than this
    except OSError as exc:
        raise PolicyError(f"cannot read sha256 sidecar {sidecar}: {exc}") from exc
    fields = head.decode("utf-8", errors="replace").split()
    expected = fields[0].lower() if fields else ""
    if not _SHA256_RE.match(expected):
        raise PolicyError(
            f"sha256 sidecar {sidecar} starts with {expected[:80]!r}; expected 64 hex digits "
            f"then the file name (sha256sum format: '<hex>  {model.name}')"
        )
    return expected


def _read_verified(model: Path, max_bytes: int = MAX_MODEL_BYTES) -> tuple[bytes, str]:
    """The model's bytes and sha256, checked against the sidecar.

    The size is checked (on the opened file) before anything is read; the file is then read
    once, in chunks that feed the hash, and these very bytes are what onnxruntime loads.
    """
    expected = _read_sidecar(model)
    try:
        with model.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise PolicyError(
                    f"{model} is {size} bytes; expected at most {max_bytes} bytes "
                    f"({max_bytes / 2**20:g} MiB, MAX_MODEL_BYTES; a policy MLP is a few "
                    "hundred KiB): refused by its size before reading it (raise the limit "
                    "with load_rl_policy(..., max_bytes=N) for a model that is this big on "
                    "purpose)"
                )
            h = hashlib.sha256()
            buf = bytearray()
            # a file that grows while it is read stops at the limit (+1 to notice)
            while chunk := f.read(min(_CHUNK, max_bytes + 1 - len(buf))):
                h.update(chunk)
                buf += chunk
    except OSError as exc:
        raise PolicyError(f"cannot read model file {model}: {exc}") from exc
    if len(buf) > max_bytes:
        raise PolicyError(
            f"{model} grew past {max_bytes} bytes while it was read; expected a file that "
            "does not change while it is loaded (write models to a temporary name, then rename)"
        )
    actual = h.hexdigest()
    if actual != expected:
        raise PolicyError(
            f"sha256 mismatch for {model}: the file hashes to {actual} but "
            f"{_sidecar_path(model).name} says {expected}; the model was changed or corrupted "
            "after export (re-export it, or re-copy both files)"
        )
    return bytes(buf), actual


# --- external data -----------------------------------------------------------------------------
# A minimal protobuf wire-format walk over the fields of onnx.proto that can hold a TensorProto
# (the runtime does not depend on the onnx package): ModelProto.graph (7), .training_info (20)
# and .functions (25); TrainingInfoProto.initialization (1), .algorithm (2); GraphProto.node
# (1), .initializer (5), .sparse_initializer (15); FunctionProto.node (7), .attribute_proto (11);
# NodeProto.attribute (5); AttributeProto.t (5), .g (6), .tensors (10), .graphs (11),
# .sparse_tensor (22), .sparse_tensors (23); SparseTensorProto.values (1), .indices (2);
# TensorProto.external_data (13), .data_location (14, EXTERNAL = 1).

_MODEL, _TRAINING, _GRAPH, _FUNCTION, _NODE, _ATTRIBUTE, _SPARSE, _TENSOR = range(8)
_SUBMESSAGES: Final[dict[int, dict[int, int]]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {},
}
_MAX_DEPTH: Final = 64


class _Malformed(Exception):
    pass


def _varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise _Malformed(f"a truncated or overlong varint at byte {i}")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _skip_group(buf: bytes, i: int, end: int, group: int, depth: int) -> int:
    """The index after the end-group tag of the group ``group`` that starts at ``i``."""
    if depth > _MAX_DEPTH:
        raise _Malformed(f"messages nested deeper than {_MAX_DEPTH}")
    while i < end:
        key, i = _varint(buf, i, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(buf, i, end)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(buf, i, end)
            i += n
        elif wire == 3:
            i = _skip_group(buf, i, end, field, depth + 1)
        elif wire == 4 and field == group:
            return i
        else:
            raise _Malformed(f"wire type {wire} at byte {i}")
    raise _Malformed(f"a group without its end (field {group})")


def _has_external_data(buf: bytes, start: int, end: int, kind: int, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        raise _Malformed(f"messages nested deeper than {_MAX_DEPTH}")
    subs = _SUBMESSAGES[kind]
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i, end)
            if kind == _TENSOR and field == 14 and value == 1:
                return True
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(buf, i, end)
            if i + n > end:
                raise _Malformed(f"a field of {n} bytes runs past its message at byte {i}")
            if kind == _TENSOR and field == 13:
                return True
            sub = subs.get(field)
            if sub is not None and _has_external_data(buf, i, i + n, sub, depth + 1):
                return True
            i += n
        elif wire == 3:  # a group (none in onnx.proto, but protobuf skips unknown ones)
            i = _skip_group(buf, i, end, field, depth + 1)
        else:  # an end-group without its start; 6 and 7 do not exist
            raise _Malformed(f"wire type {wire} at byte {i}")
    if i != end:
        raise _Malformed(f"a field runs past its message (byte {end})")
    return False


def _refuse_external_data(data: bytes, model: Path) -> None:
    """Refuse a model whose tensors keep their data in other files (ONNX external data).

    onnxruntime would read such data relative to the working directory (the model is loaded
    from its bytes), and the sidecar's sha256 does not cover it; the trainer never makes one.
    """
    try:
        external = _has_external_data(data, 0, len(data), _MODEL, 0)
    except _Malformed as exc:
        raise PolicyError(
            f"{model} is not a valid ONNX model: its protobuf encoding is malformed ({exc})"
        ) from None
    if external:
        raise PolicyError(
            f"{model} keeps tensor data in external files (ONNX external data); expected a "
            "self-contained model: external data is not supported (it would be read from "
            "outside the file the sha256 sidecar covers, and the trainer never makes it). "
            "Re-save it with all tensors inside the .onnx file (onnx.save_model(model, path, "
            "save_as_external_data=False))"
        )


# --- the session -------------------------------------------------------------------------------


def _providers(ort: Any, device: str) -> list[str]:
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


def _make_session(
    ort: Any, data: bytes, model: Path, providers: list[str], threads: int | None = None
) -> Any:
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    # A daemon mostly idles: worker threads sleep instead of spinning between calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
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


def _check_signature(session: Any, model: Path) -> None:
    expected = (
        f"expected one input {INPUT_NAME!r} float32 [batch, {STATE_DIM}] and outputs "
        "'action_probs' float32 [batch, 3], 'strength' float32 [batch, 1] "
        "(docs/model-format.md)"
    )

    def describe(args: Any) -> str:
        return ", ".join(f"{a.name!r} {a.type} {list(a.shape)}" for a in args)

    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems: list[str] = []
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        problems.append(f"inputs are [{describe(inputs)}]")
    else:
        problems += _tensor_problems(inputs[0], STATE_DIM, "input")
    names = sorted(o.name for o in outputs)
    if names != sorted(OUTPUT_NAMES):
        problems.append(f"outputs are [{describe(outputs)}]")
    else:
        for o in outputs:
            problems += _tensor_problems(o, _OUTPUT_DIMS[o.name], "output")
    if problems:
        raise PolicyError(f"{model} has the wrong signature: {'; '.join(problems)}; {expected}")


def _tensor_problems(arg: Any, width: int, kind: str) -> list[str]:
    problems = []
    if arg.type != "tensor(float)":
        problems.append(f"{kind} {arg.name!r} has element type {arg.type}, not tensor(float)")
    shape = list(arg.shape)
    if len(shape) != 2:
        problems.append(f"{kind} {arg.name!r} has shape {shape}, not [batch, {width}]")
    else:
        if isinstance(shape[0], int):
            problems.append(
                f"{kind} {arg.name!r} has a fixed batch size {shape[0]} (shape {shape}); "
                "the batch axis must be dynamic"
            )
        if shape[1] != width:
            problems.append(f"{kind} {arg.name!r} has shape {shape}, not [batch, {width}]")
    return problems


def _decode_metadata(props: dict[str, str], model: Path) -> dict[str, Any]:
    """Check the metadata contract and the state schema; return the props JSON-decoded."""
    fmt = props.get("otonom.model_format")
    if fmt is not None and fmt != MODEL_FORMAT:
        raise PolicyError(
            f"{model} has otonom.model_format {fmt!r}; this runtime reads format "
            f"{MODEL_FORMAT!r} (docs/model-format.md)"
        )
    missing = [k for k in REQUIRED_METADATA if k not in props]
    if missing:
        raise PolicyError(
            f"{model} lacks required metadata {missing}; found keys {sorted(props)}; expected "
            f"all of {list(REQUIRED_METADATA)} (docs/model-format.md)"
        )
    decoded: dict[str, Any] = dict(props)
    for key, kind in _JSON_KEYS.items():
        try:
            value = json.loads(props[key])
        except RecursionError:
            raise PolicyError(
                f"{model}: metadata {key} nests JSON too deeply to decode; expected a JSON "
                f"{'list' if kind is list else 'object'} (docs/model-format.md)"
            ) from None
        except json.JSONDecodeError as exc:
            raise PolicyError(
                f"{model}: metadata {key} = {props[key][:80]!r} is not valid JSON ({exc}); "
                f"expected a JSON {kind.__name__}"
            ) from None
        if not isinstance(value, kind):
            raise PolicyError(
                f"{model}: metadata {key} is a JSON {type(value).__name__}; expected a JSON "
                f"{'list' if kind is list else 'object'}"
            )
        decoded[key] = value

    installed_fp = schema_fingerprint()
    model_fp = props["otonom.schema_fingerprint"]
    model_names = decoded["otonom.feature_names"]
    if model_fp != installed_fp or tuple(model_names) != FEATURE_NAMES:
        raise ModelSchemaMismatchError(
            f"{model} was trained under state schema {props['otonom.schema_version']} "
            f"(fingerprint {model_fp}) but the installed otonom_schema is {SCHEMA_VERSION} "
            f"(fingerprint {installed_fp}); {_names_diff(model_names)}. Retrain and re-export "
            "the model under the installed schema (docs/schema.md); there is no silent "
            "conversion."
        )

    metrics = decoded["otonom.metrics"]
    bad = [
        k
        for k in REQUIRED_METRICS
        if not isinstance(metrics.get(k), (int, float)) or isinstance(metrics.get(k), bool)
    ]
    if bad:
        raise PolicyError(
            f"{model}: otonom.metrics lacks numbers for {bad} (found {metrics}); expected "
            f"numbers for all of {list(REQUIRED_METRICS)}"
        )
    return decoded


def _names_diff(names: list[Any]) -> str:
    if tuple(names) == FEATURE_NAMES:
        return "the feature names are equal"
    if len(names) != STATE_DIM:
        return f"the model has {len(names)} features, the schema {STATE_DIM}"
    i = next(i for i, (a, b) in enumerate(zip(names, FEATURE_NAMES, strict=True)) if a != b)
    return (
        f"the feature names differ first at index {i}: model {names[i]!r}, "
        f"schema {FEATURE_NAMES[i]!r}"
    )


def _check_training_run(model: Path, props: dict[str, str], metrics: dict[str, Any]) -> None:
    """Refuse a model that is not the export of the training run recorded beside it.

    Training writes ``metadata.json`` (with the run's id) before exporting, so an older export
    beside a newer record (training without export, a failed export, a copied file) shows as
    differing ids. Models and records made before run ids existed carry none: then their
    ``REQUIRED_METRICS`` must agree instead. No record beside the model: nothing to compare.
    """
    record_path = model.with_name(TRAINING_RECORD)
    if not record_path.is_file():
        return
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        logger.warning("%s is not readable JSON: not compared with %s", record_path, model)
        return
    if not isinstance(record, dict) or record.get("format") != "otonom-rl/training-run":
        return  # another tool's metadata.json
    model_id, record_id = props.get(RUN_ID_KEY), record.get("run_id")
    if model_id is None and record_id is None:
        recorded = record.get("metrics")
        recorded = recorded if isinstance(recorded, dict) else {}
        differ = [k for k in REQUIRED_METRICS if recorded.get(k) != metrics.get(k)]
        if not differ:
            return
        problem = (
            f"neither carries a training run id, and their metrics differ ({differ[0]}: model "
            f"{metrics.get(differ[0])}, {TRAINING_RECORD} {recorded.get(differ[0])})"
        )
    elif model_id == record_id:
        return
    else:
        problem = (
            f"the model comes from training run {model_id or '(none: an older export)'} but "
            f"{TRAINING_RECORD} records run {record_id or '(none: an older run)'}"
        )
    checkpoint = model.with_name(CHECKPOINT_FILENAME)
    fix = (
        f"re-export the checkpoint of that run: `otonom-train export --checkpoint {checkpoint}`"
        if checkpoint.is_file()
        else f"retrain into {model.parent}, or remove the stale {model.name} (and its sidecar)"
    )
    raise PolicyError(
        f"{model} is not the export of the training run recorded in {record_path}: {problem}; "
        f"the ONNX model is stale: {fix}"
    )


# --- the policy --------------------------------------------------------------------------------


class _Slot:
    """One thread's pre-bound I/O binding for batches of ``n`` states and the buffers it points
    to (``predict``: n = 1; ``predict_batch``: one per small batch size)."""

    __slots__ = ("binding", "probs", "row", "state", "strength")

    def __init__(self, session: Any, n: int = 1) -> None:
        self.state: F32 = np.zeros((n, STATE_DIM), dtype=np.float32)
        self.row: F32 = self.state[0]
        self.probs: F32 = np.zeros((n, 3), dtype=np.float32)
        self.strength: F32 = np.zeros((n, 1), dtype=np.float32)
        binding = session.io_binding()
        binding.bind_input(INPUT_NAME, "cpu", 0, np.float32, [n, STATE_DIM], self.state.ctypes.data)
        binding.bind_output("action_probs", "cpu", 0, np.float32, [n, 3], self.probs.ctypes.data)
        binding.bind_output("strength", "cpu", 0, np.float32, [n, 1], self.strength.ctypes.data)
        self.binding = binding


_BOUND_BATCH: Final = 64
"""``predict_batch`` runs batches up to this size through a cached pre-bound I/O binding (one
per size and thread): for small batches, as a backtest that steps many symbols a day at a
time makes, ``InferenceSession.run`` costs more in binding and allocating than the model does."""


class RlPolicy:
    """A loaded ONNX policy (make one with ``load_rl_policy``). Safe to share across threads.

    Attributes: ``path`` (the ``.onnx`` file), ``sha256`` (its verified hash), ``providers``
    (onnxruntime execution providers in use), ``device`` (as requested).
    """

    def __init__(
        self,
        session: Any,
        *,
        path: Path,
        sha256: str,
        metadata: dict[str, Any],
        device: str,
    ) -> None:
        self._session = session
        self._run = session.run_with_iobinding
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
        ``FEATURE_NAMES`` order, validated with ``otonom_schema.validate_state_array`` (NaN,
        inf, out-of-range values or a wrong shape raise ``otonom_schema.SchemaError``).

        Returns ``(action, strength)``, or ``(action, strength, probs)`` with
        ``return_probs=True``: ``action`` is the ``Action`` with the highest probability (the
        first on a tie), ``strength`` a python float in [0, 1], ``probs`` a fresh float32 array
        of shape (3,) indexed by ``Action`` (HOLD, BUY, SELL).

        Raises ``PolicyError`` when the model's output breaks the contract (a non-finite value,
        a negative probability, probabilities that do not sum to 1 within
        ``integrity.PROBS_SUM_ATOL``, a strength outside [0, 1]), as ``predict_batch`` does.
        """
        if isinstance(state, RlState):
            x = state.to_array(copy=False)
        else:
            x = validate_state_array(state)
        try:
            slot: _Slot = self._local.slot
        except AttributeError:  # this thread's first call
            slot = self._local.slot = _Slot(self._session)
        np.copyto(slot.row, x)
        self._run(slot.binding)
        # python floats read out of the bound buffers: the caller never sees those buffers
        p0, p1, p2 = slot.probs.tolist()[0]
        strength: float = slot.strength.item()
        # the output contract (NaN fails every comparison; inf fails the sum or the range)
        if not (
            p0 >= 0.0
            and p1 >= 0.0
            and p2 >= 0.0
            and abs(p0 + p1 + p2 - 1.0) <= PROBS_SUM_ATOL
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
        x = validate_states(states)
        n = x.shape[0]
        if n == 0:
            return (
                np.empty(0, dtype=np.int64),
                np.empty(0, dtype=np.float32),
                np.empty((0, 3), dtype=np.float32),
            )
        if n <= _BOUND_BATCH:
            try:
                slots: dict[int, _Slot] = self._local.batch_slots
            except AttributeError:  # this thread's first call
                slots = self._local.batch_slots = {}
            slot = slots.get(n)
            if slot is None:
                slot = slots[n] = _Slot(self._session, n)
            np.copyto(slot.state, x)
            self._run(slot.binding)
            probs, strength = slot.probs.copy(), slot.strength.copy()  # fresh, the caller's
        else:
            probs, strength = self._session.run(OUTPUT_NAMES, {INPUT_NAME: x})
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
            and sums.min() >= 1.0 - PROBS_SUM_ATOL
            and sums.max() <= 1.0 + PROBS_SUM_ATOL
        ):
            raise _contract_error(self.path, None, probs, strength)
        actions = probs.argmax(axis=1).astype(np.int64, copy=False)
        return actions, strength, probs

    @property
    def degenerate_reason(self) -> str | None:
        """Why training marked this model degenerate (its metrics' ``degenerate.reason``: e.g.
        it predicts one action on almost every validation row), or None: not marked, or a
        model trained before the mark existed. Read from the metadata only."""
        mark = self._metadata.get("degenerate")
        if not isinstance(mark, dict):
            return None
        return str(mark.get("reason") or "marked degenerate at training")

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


def _public_metadata(decoded: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in decoded.items():
        out[key.removeprefix(_PREFIX) if key.startswith(_PREFIX) else key] = value
    for key, value in decoded["otonom.metrics"].items():
        out.setdefault(key, value)
    return out


def load_rl_policy(
    path: str | os.PathLike[str],
    device: str = "cpu",
    *,
    threads: int | None = None,
    max_bytes: int = MAX_MODEL_BYTES,
) -> RlPolicy:
    """Load and check an ONNX policy.

    ``path``: a ``.onnx`` file; a model folder; or a ``policy_best.pt`` path, which stands for
    the ``policy_best.onnx`` beside it (PyTorch checkpoints are never loaded). A model folder
    stands for, in this order: its own ``policy_best.onnx`` (with a warning when it also has a
    pointer); the version sub-folder its ``latest`` file names (the promoted version); the one
    its ``default`` file names (the repository's shipped default model). A ``policy_best.pt``
    path with neither file there follows the same pointers, so the guide's
    ``models/rl_bc/policy_best.pt`` keeps working with versioned model folders
    (``resolve_version_dir``).

    ``device``: ``"cpu"``; ``"cuda"`` (onnxruntime's CUDAExecutionProvider, ``PolicyError`` if
    it has none); ``"auto"`` (CUDA when available, else CPU).

    ``threads``: onnxruntime's intra-op threads (None: its default, one per core). 1 suits a
    caller that makes many small calls in a row, as a backtest does: a call then never hands
    work to another thread and waits for it, which costs more than a small batch itself.

    ``max_bytes``: the largest model file accepted (``MAX_MODEL_BYTES``, 256 MiB), checked
    before anything is read.

    Checks, in order, each failing with a ``PolicyError`` that names the file and says what was
    found and what was expected: the file exists; its ``.sha256`` sidecar exists and is well
    formed; the file is at most ``max_bytes``; its bytes match the sidecar; it holds no ONNX
    external data (tensor data in other files, which the hash would not cover); its metadata is
    valid UTF-8 without repeated keys; it is model format 2 (``MODEL_FORMAT``: format 1 models,
    without a digest or golden sample, are refused with the command that re-exports them); its
    digest (``otonom_runtime.integrity.model_digest`` of the bytes read) equals its
    ``otonom.digest``, so a weight changed after export is refused even with a regenerated
    sidecar; its golden sample decodes; onnxruntime can load those same bytes; the signature is
    ``state`` float32 [batch, 34] -> ``action_probs`` float32 [batch, 3], ``strength`` float32
    [batch, 1] (names and dims valid UTF-8); the metadata holds every required key, and its JSON
    keys decode to the right types; when the training run's ``metadata.json`` is beside the
    model, the model is that run's export (the same training run id; for models made before run
    ids, the same metrics), else it is stale and refused, naming both ids and the command that
    re-exports it; last, the golden states are re-run (``predict_batch`` and ``predict``) and
    every action must equal the export's and every output agree to ``GOLDEN_ATOL`` (1e-4). A
    model made under another state schema (fingerprint or feature names) raises
    ``ModelSchemaMismatchError`` naming both schema versions and fingerprints.

    Every prediction of the returned policy is held to the output contract (finite
    probabilities >= 0 summing to 1 within ``PROBS_SUM_ATOL``, strength in [0, 1]); a
    violation raises ``PolicyError``.
    """
    import onnxruntime as ort

    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise PolicyError(f"threads={threads!r}; expected an integer >= 1, or None")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise PolicyError(f"max_bytes={max_bytes!r}; expected an integer >= 1")
    providers = _providers(ort, device)
    model = resolve_model_path(path)
    data, digest = _read_verified(model, max_bytes)
    _refuse_external_data(data, model)
    scan = scan_model(data, model)
    check_format(scan.metadata, model)
    stored = scan.metadata[DIGEST_KEY]
    if scan.digest != stored:
        raise PolicyError(
            f"model digest mismatch for {model}: its graph and weights hash to {scan.digest} "
            f"but its metadata {DIGEST_KEY} says {stored}; the model was changed after export "
            "(its sha256 sidecar was regenerated, or both were written by something else): "
            "re-export it, or re-copy it from a good source"
        )
    golden = decode_golden(scan.metadata[GOLDEN_KEY], model)
    session = _make_session(ort, data, model, providers, threads)
    del data
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise PolicyError(
            f"device='cuda' but onnxruntime could not start CUDAExecutionProvider for {model} "
            f"(session providers: {session.get_providers()}); check the CUDA/cuDNN install or "
            "use device='cpu' or 'auto'"
        )
    try:
        _check_signature(session, model)
    except UnicodeDecodeError as exc:  # onnxruntime decodes names and dims as UTF-8
        raise PolicyError(
            f"{model}: its graph's input/output names or dimensions are not valid UTF-8 "
            f"({exc.reason} at byte {exc.start}); expected the signature in "
            "docs/model-format.md"
        ) from None
    except PolicyError:
        raise
    except Exception as exc:  # onnxruntime's own (pybind) exception types
        raise PolicyError(
            f"{model}: onnxruntime cannot describe its inputs and outputs: {exc}"
        ) from exc
    props = scan.metadata  # what the digest check read, not a second parse by onnxruntime
    decoded = _decode_metadata(props, model)
    _check_training_run(model, props, decoded["otonom.metrics"])
    policy = RlPolicy(
        session,
        path=model,
        sha256=digest,
        metadata=_public_metadata(decoded),
        device=device,
    )
    check_golden(policy, golden)
    return policy
