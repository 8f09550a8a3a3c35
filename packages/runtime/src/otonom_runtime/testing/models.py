"""Small real ONNX policies that follow ``docs/model-format.md`` (a public test helper).

``make_policy_model`` writes a genuine ONNX MLP shaped like the trainer's ``PolicyNet``
(34 -> hidden (ReLU) x layers, then an action head 3 (softmax) and a strength head 1 (sigmoid)
from the shared trunk) with random weights, the full metadata contract and the sha256 sidecar.
``numpy_forward`` runs the same weights in plain numpy, so a test can check the runtime's
answers against an independent implementation.

``onnx`` is needed only when a model is built (it is a test/development dependency, not a runtime
one): it is imported inside ``make_policy_model``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime.policy import write_sha256_sidecar
from otonom_schema import FEATURE_NAMES, SCHEMA_VERSION, STATE_DIM, schema_fingerprint

__all__ = [
    "MODEL_FORMAT",
    "OPSET",
    "MlpWeights",
    "default_metadata",
    "make_policy_model",
    "numpy_forward",
    "random_weights",
]

MODEL_FORMAT: Final = "1"
"""Value of ``otonom.model_format`` this helper writes (docs/model-format.md)."""

OPSET: Final = 17
"""The ai.onnx opset the contract pins (docs/model-format.md)."""

_IR_VERSION: Final = 8  # the IR version that goes with opset 17

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class MlpWeights:
    """The weights of a policy MLP, numpy float32, ``y = x @ w + b`` per layer.

    ``trunk``: ``layers`` pairs ``(w, b)``, the first (34, hidden), the rest (hidden, hidden);
    ``action``: ``(w (hidden, 3), b (3,))``; ``strength``: ``(w (hidden, 1), b (1,))``.
    """

    trunk: tuple[tuple[F32, F32], ...]
    action: tuple[F32, F32]
    strength: tuple[F32, F32]

    @property
    def hidden(self) -> int:
        """Width of the trunk's layers."""
        return int(self.trunk[0][0].shape[1])


def random_weights(
    *, hidden: int = 64, layers: int = 2, seed: int = 0, n_in: int = STATE_DIM, n_actions: int = 3
) -> MlpWeights:
    """Random weights (He-style scale) for a ``layers``-deep trunk of width ``hidden``."""
    if hidden < 1 or layers < 1:
        raise ValueError(f"hidden={hidden}, layers={layers}; expected both >= 1")
    rng = np.random.default_rng(seed)

    def dense(a: int, b: int) -> tuple[F32, F32]:
        w = rng.normal(0.0, np.sqrt(2.0 / a), size=(a, b)).astype(np.float32)
        bias = rng.normal(0.0, 0.1, size=(b,)).astype(np.float32)
        return w, bias

    trunk = [dense(n_in, hidden)] + [dense(hidden, hidden) for _ in range(layers - 1)]
    return MlpWeights(tuple(trunk), dense(hidden, n_actions), dense(hidden, 1))


def numpy_forward(weights: MlpWeights, states: npt.ArrayLike) -> tuple[F32, F32]:
    """Plain numpy forward pass: ``states`` (N, 34) -> ``(probs (N, 3), strength (N,))``.

    Computed in float64 and returned as float32 (an independent reference for the runtime).
    """
    h = np.asarray(states, dtype=np.float64)
    if h.ndim == 1:
        h = h[None, :]
    for w, b in weights.trunk:
        h = np.maximum(h @ w.astype(np.float64) + b, 0.0)
    logits = h @ weights.action[0].astype(np.float64) + weights.action[1]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    probs = e / e.sum(axis=1, keepdims=True)
    z = (h @ weights.strength[0].astype(np.float64) + weights.strength[1])[:, 0]
    strength = 1.0 / (1.0 + np.exp(-z))
    return probs.astype(np.float32), strength.astype(np.float32)


def default_metadata(weights: MlpWeights | None = None) -> dict[str, str]:
    """The full ``metadata_props`` contract with plausible fixed values (all strings)."""
    hidden = weights.hidden if weights is not None else 64
    layers = len(weights.trunk) if weights is not None else 2
    return {
        "otonom.model_format": MODEL_FORMAT,
        "otonom.schema_version": SCHEMA_VERSION,
        "otonom.schema_fingerprint": schema_fingerprint(),
        "otonom.feature_names": json.dumps(list(FEATURE_NAMES)),
        "otonom.metrics": json.dumps(
            {
                "val_action_acc": 0.8125,
                "train_action_acc": 0.8431,
                "best_val_loss": 0.4721,
                "best_epoch": 17,
                "val_strength_mae": 0.0912,
            }
        ),
        "otonom.training_config": json.dumps(
            {
                "hidden": hidden,
                "layers": layers,
                "epochs": 40,
                "batch_size": 256,
                "lr": 0.001,
                "seed": 0,
                "producer": "otonom_runtime.testing.models",
            }
        ),
        "otonom.dataset_sha256": "0" * 64,
        "otonom.created_at": "2026-01-01T00:00:00Z",
        "otonom.package_versions": json.dumps({"otonom-schema": "0.1.0", "numpy": np.__version__}),
    }


def make_policy_model(
    path: str | Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    metadata_overrides: Mapping[str, str | None] | None = None,
    write_sidecar: bool = True,
    input_name: str = "state",
    input_dim: int = STATE_DIM,
    batch_dim: int | str = "batch",
    output_names: Sequence[str] = ("action_probs", "strength"),
    action_dim: int = 3,
    elem_type: str = "float32",
    opset: int = OPSET,
) -> MlpWeights:
    """Write a real ONNX policy MLP to ``path`` and return its weights.

    The defaults follow the contract in ``docs/model-format.md``; the other keyword arguments
    exist to build models that break it (for the runtime's error tests):

    * ``metadata_overrides``: keys to set, or to delete with ``None``;
    * ``write_sidecar``: write ``<path>.sha256`` (default) or not;
    * ``input_name``, ``input_dim``, ``batch_dim`` (an int fixes the batch size),
      ``output_names``, ``action_dim``, ``elem_type`` (``"float32"`` or ``"float64"``), ``opset``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # odd shapes (error tests): the weights follow them, so the graph is still a valid model
    weights = random_weights(
        hidden=hidden, layers=layers, seed=seed, n_in=input_dim, n_actions=action_dim
    )
    np_type: Any = {"float32": np.float32, "float64": np.float64}[elem_type]
    onnx_type = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[elem_type]

    initializers = []
    nodes = []
    x = input_name
    for i, (w, b) in enumerate(weights.trunk):
        initializers += [
            numpy_helper.from_array(w.astype(np_type), f"trunk{i}.weight"),
            numpy_helper.from_array(b.astype(np_type), f"trunk{i}.bias"),
        ]
        nodes += [
            helper.make_node("Gemm", [x, f"trunk{i}.weight", f"trunk{i}.bias"], [f"trunk{i}.z"]),
            helper.make_node("Relu", [f"trunk{i}.z"], [f"trunk{i}.h"]),
        ]
        x = f"trunk{i}.h"
    probs_name, strength_name = output_names
    for head, (w, b) in (("action", weights.action), ("strength", weights.strength)):
        initializers += [
            numpy_helper.from_array(w.astype(np_type), f"{head}.weight"),
            numpy_helper.from_array(b.astype(np_type), f"{head}.bias"),
        ]
        nodes.append(
            helper.make_node("Gemm", [x, f"{head}.weight", f"{head}.bias"], [f"{head}.logits"])
        )
    nodes += [
        helper.make_node("Softmax", ["action.logits"], [probs_name], axis=-1),
        helper.make_node("Sigmoid", ["strength.logits"], [strength_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "otonom_policy",
        [helper.make_tensor_value_info(input_name, onnx_type, [batch_dim, input_dim])],
        [
            helper.make_tensor_value_info(probs_name, onnx_type, [batch_dim, action_dim]),
            helper.make_tensor_value_info(strength_name, onnx_type, [batch_dim, 1]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="otonom_runtime.testing.models",
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = _IR_VERSION
    metadata = default_metadata(weights)
    for key, value in (metadata_overrides or {}).items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.SerializeToString())
    if write_sidecar:
        write_sha256_sidecar(out)
    return weights
