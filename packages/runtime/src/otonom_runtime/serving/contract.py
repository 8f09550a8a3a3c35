"""The model format's contract as onnxruntime sees it: the graph's signature, the required
metadata and its JSON types, the state schema the model was trained under, and the training
run the model must be the export of (docs/model-format.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from otonom_runtime._errors import ModelSchemaMismatchError, PolicyError
from otonom_runtime.integrity import DIGEST_KEY, GOLDEN_KEY
from otonom_runtime.serving.paths import CHECKPOINT_FILENAME, TRAINING_RECORD, logger
from otonom_schema import FEATURE_NAMES, SCHEMA_VERSION, STATE_DIM, schema_fingerprint

__all__ = [
    "EXTRA_OUTPUTS_KEY",
    "INPUT_NAME",
    "MODEL_FORMAT",
    "OPTIONAL_OUTPUTS",
    "OUTPUT_NAMES",
    "REQUIRED_METADATA",
    "REQUIRED_METRICS",
    "RUN_ID_KEY",
    "TRAINING_SUMMARY_KEY",
    "check_extra_outputs",
    "check_signature",
    "check_training_run",
    "decode_metadata",
    "public_metadata",
]

RUN_ID_KEY: Final = "otonom.training_run_id"
"""Optional metadata key: the id of the training run the model was exported from (the same id
as in the checkpoint and in ``metadata.json``; see ``load_rl_policy``)."""
TRAINING_SUMMARY_KEY: Final = "otonom.training_summary"
"""Optional metadata key: a JSON object summarising the training data (action shares, per
feature quantile bins and their shares) for monitoring (``otonom_runtime.drift``); models
exported before it existed lack it and load as before."""
MODEL_FORMAT: Final = "2"
"""The ``otonom.model_format`` this runtime reads (2: sealed with a digest and a golden sample,
``otonom_runtime.integrity``; format 1 models are refused)."""
INPUT_NAME: Final = "state"
OUTPUT_NAMES: Final = ("action_probs", "strength")
OPTIONAL_OUTPUTS: Final = {"expected_return": 1, "risk_probs": 3, "attention": STATE_DIM}
"""The extra outputs a model may have beside ``OUTPUT_NAMES`` (name -> width of its float32
[batch, width] tensor): the multi-task heads (``expected_return``: the forward log return over
the training labels' horizon; ``risk_probs``: softmax over the forward volatility's terciles
low/mid/high) and an attention network's ``attention`` (softmax weights over the 34 features).
Any other output is refused. ``RlPolicy.predict_extras`` runs them."""
EXTRA_OUTPUTS_KEY: Final = "otonom.extra_outputs"
"""Metadata key: a JSON list of the model's extra outputs, in graph order (required when it has
any; absent or ``[]`` otherwise)."""

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
_OUTPUT_DIMS: Final = {"action_probs": 3, "strength": 1}


def check_signature(session: Any, model: Path) -> tuple[str, ...]:
    """``PolicyError`` unless the graph has the contract's input and outputs (and only known
    optional outputs besides, ``OPTIONAL_OUTPUTS``); returns the extra outputs' names in graph
    order."""
    expected = (
        f"expected one input {INPUT_NAME!r} float32 [batch, {STATE_DIM}] and outputs "
        "'action_probs' float32 [batch, 3], 'strength' float32 [batch, 1], optionally "
        + ", ".join(f"{k!r} float32 [batch, {w}]" for k, w in OPTIONAL_OUTPUTS.items())
        + " (docs/model-format.md)"
    )

    def describe(args: Any) -> str:
        return ", ".join(f"{a.name!r} {a.type} {list(a.shape)}" for a in args)

    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems: list[str] = []
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        problems.append(f"inputs are [{describe(inputs)}]")
    else:
        problems += _tensor_problems(inputs[0], STATE_DIM, "input")
    names = [o.name for o in outputs]
    known = {**_OUTPUT_DIMS, **OPTIONAL_OUTPUTS}
    if sorted(n for n in names if n in OUTPUT_NAMES) != sorted(OUTPUT_NAMES) or any(
        n not in known for n in names
    ):
        problems.append(f"outputs are [{describe(outputs)}]")
    elif len(set(names)) != len(names):
        problems.append(f"outputs are [{describe(outputs)}], a name twice")
    else:
        for o in outputs:
            problems += _tensor_problems(o, known[o.name], "output")
    if problems:
        raise PolicyError(f"{model} has the wrong signature: {'; '.join(problems)}; {expected}")
    return tuple(n for n in names if n not in OUTPUT_NAMES)


def check_extra_outputs(extras: tuple[str, ...], decoded: dict[str, Any], model: Path) -> None:
    """``PolicyError`` unless ``EXTRA_OUTPUTS_KEY`` lists exactly the graph's extra outputs
    ``extras`` (in order; absent or ``[]`` when there is none); the key, when present, is left
    JSON-decoded in ``decoded``."""
    raw = decoded.get(EXTRA_OUTPUTS_KEY)
    listed: Any = [] if raw is None else raw
    if isinstance(raw, str):
        try:
            listed = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            listed = raw
    if listed != list(extras):
        raise PolicyError(
            f"{model}: metadata {EXTRA_OUTPUTS_KEY} is {raw!r} but the graph's extra outputs "
            f"are {list(extras)}; expected a JSON list of exactly those (docs/model-format.md)"
        )
    if raw is not None:
        decoded[EXTRA_OUTPUTS_KEY] = listed


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


def decode_metadata(props: dict[str, str], model: Path) -> dict[str, Any]:
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


def check_training_run(model: Path, props: dict[str, str], metrics: dict[str, Any]) -> None:
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


def public_metadata(decoded: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in decoded.items():
        out[key.removeprefix(_PREFIX) if key.startswith(_PREFIX) else key] = value
    for key, value in decoded["otonom.metrics"].items():
        out.setdefault(key, value)
    return out
