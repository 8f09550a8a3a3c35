"""The ONNX Runtime policy: load a model that follows ``docs/model-format.md`` and predict.

``load_rl_policy(path, device="cpu")`` checks the model file (sha256 sidecar, ONNX validity,
input/output signature, metadata contract, state schema) and returns an ``RlPolicy``::

    policy = load_rl_policy("models/rl_bc/policy_best.pt")  # loads the sibling .onnx
    action, strength = policy.predict(state)                # Action, float in [0, 1]
    action, strength, probs = policy.predict(state, return_probs=True)
    actions, strengths, probs = policy.predict_batch(states)  # (N,), (N,), (N, 3)
    extras = policy.predict_extras(states)  # {"risk_probs": (N, 3), ...} of a multi-task model

No PyTorch, ever: a ``.pt`` path means "the ONNX export beside it". ``onnxruntime`` is imported
when a model is loaded, not when this module is imported. One ``InferenceSession`` per policy is
shared by every thread; each thread gets its own pre-bound I/O bindings and buffers for
``predict`` and for small ``predict_batch`` batches (a binding is not thread-safe), and every
result is a copy the caller owns.

Errors: ``PolicyError`` (a ``ValueError``) for a model that cannot be used, its subclass
``ModelSchemaMismatchError`` for a model trained under another state schema, and
``otonom_schema.SchemaError`` for a bad state at predict time.

The code lives in ``otonom_runtime.serving`` (one module per concern: ``paths``, ``files``,
``wire``, ``contract``, ``session``, ``rl_policy``, ``load``); this module is the public import
path and re-exports its names.
"""

from __future__ import annotations

from otonom_runtime.serving.contract import (
    EXTRA_OUTPUTS_KEY,
    INPUT_NAME,
    MODEL_FORMAT,
    OPTIONAL_OUTPUTS,
    OUTPUT_NAMES,
    REQUIRED_METADATA,
    REQUIRED_METRICS,
    RUN_ID_KEY,
    TRAINING_SUMMARY_KEY,
)
from otonom_runtime.serving.files import MAX_MODEL_BYTES, write_sha256_sidecar
from otonom_runtime.serving.load import load_rl_policy
from otonom_runtime.serving.paths import (
    CHECKPOINT_FILENAME,
    DEFAULT_POINTER,
    LATEST_POINTER,
    MODEL_FILENAME,
    TRAINING_RECORD,
    resolve_model_path,
    resolve_version_dir,
)
from otonom_runtime.serving.rl_policy import RlPolicy
from otonom_runtime.serving.session import DEVICES

__all__ = [
    "CHECKPOINT_FILENAME",
    "DEFAULT_POINTER",
    "DEVICES",
    "EXTRA_OUTPUTS_KEY",
    "INPUT_NAME",
    "LATEST_POINTER",
    "MAX_MODEL_BYTES",
    "MODEL_FILENAME",
    "MODEL_FORMAT",
    "OPTIONAL_OUTPUTS",
    "OUTPUT_NAMES",
    "REQUIRED_METADATA",
    "REQUIRED_METRICS",
    "RUN_ID_KEY",
    "TRAINING_RECORD",
    "TRAINING_SUMMARY_KEY",
    "RlPolicy",
    "load_rl_policy",
    "resolve_model_path",
    "resolve_version_dir",
    "write_sha256_sidecar",
]
