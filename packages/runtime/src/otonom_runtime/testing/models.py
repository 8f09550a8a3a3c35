"""Small real ONNX policies that follow ``docs/model-format.md`` (a public test helper).

``make_policy_model`` writes a genuine ONNX MLP shaped like the trainer's ``PolicyNet``
(34 -> hidden (ReLU) x layers, then an action head 3 (softmax) and a strength head 1 (sigmoid)
from the shared trunk) with random weights, the full metadata contract, sealed as model format
2 (digest and golden sample, ``otonom_runtime.integrity.seal_model``) and the sha256 sidecar.
``golden_states`` gives the valid states it seals with; ``open_unchecked`` opens a model
without the load checks (for tests of the output contract on models that cannot be sealed).
``numpy_forward`` runs the same weights in plain numpy, so a test can check the runtime's
answers against an independent implementation.

``onnx`` is needed only when a model is built (it is a test/development dependency, not a runtime
one): it is imported inside ``make_policy_model``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime.integrity import (
    DIGEST_KEY,
    FORMAT_KEY,
    GOLDEN_KEY,
    seal_model,
    with_metadata,
)
from otonom_runtime.policy import (
    EXTRA_OUTPUTS_KEY,
    MODEL_FORMAT,
    RlPolicy,
    write_sha256_sidecar,
)
from otonom_schema import FEATURE_NAMES, SCHEMA_VERSION, STATE_DIM, schema_fingerprint

__all__ = [
    "MODEL_FORMAT",
    "OPSET",
    "MlpWeights",
    "default_metadata",
    "golden_states",
    "make_policy_model",
    "numpy_forward",
    "open_unchecked",
    "random_weights",
]

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


def golden_states(n: int = 300, *, seed: int = 0) -> F32:
    """``n`` valid, varied states (``otonom_schema.compute_states`` of a random history) to
    seal a model with (its golden sample is chosen among them)."""
    from otonom_schema import compute_states, validate_states
    from otonom_schema.testing import random_history

    states = compute_states(random_history(n + 100, seed=seed))[-n:]
    return np.ascontiguousarray(validate_states(states))


@functools.cache
def _default_golden_states() -> F32:
    states = golden_states()
    states.setflags(write=False)
    return states


def open_unchecked(path: str | Path) -> RlPolicy:
    """An ``RlPolicy`` over the model at ``path`` without any load check (no sidecar, digest,
    golden sample, signature or metadata check): for tests of the output contract with models
    that break it everywhere (and so cannot be sealed). Never for serving."""
    import onnxruntime as ort

    model = Path(path)
    session = ort.InferenceSession(model.read_bytes(), providers=["CPUExecutionProvider"])
    return RlPolicy(session, path=model, sha256="0" * 64, metadata={}, device="cpu")


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


_CONTRACT_SIGNATURE: Final = (
    "state",
    STATE_DIM,
    True,
    ("action_probs", "strength"),
    3,
    "float32",
    OPSET,
)
"""(input name, width, a symbolic batch dimension, output names, actions, dtype, opset): the
model contract's signature; a model made with another is sealed with a placeholder sample."""


def _mlp_graph(
    weights: MlpWeights,
    *,
    input_name: str,
    input_dim: int,
    batch_dim: int | str,
    output_names: Sequence[str],
    action_dim: int,
    elem_type: str,
    probs_op: str,
    strength_op: str,
    extras: Sequence[tuple[str, int]] = (),
) -> Any:
    """The policy MLP as an ONNX graph (``make_policy_model``'s arguments, see there)."""
    from onnx import TensorProto, helper, numpy_helper

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
    probs_args: dict[str, Any] = {"axis": -1} if probs_op in ("Softmax", "LogSoftmax") else {}
    nodes += [
        helper.make_node(probs_op, ["action.logits"], [probs_name], **probs_args),
        helper.make_node(strength_op, ["strength.logits"], [strength_name]),
    ]
    outputs = [
        helper.make_tensor_value_info(probs_name, onnx_type, [batch_dim, action_dim]),
        helper.make_tensor_value_info(strength_name, onnx_type, [batch_dim, 1]),
    ]
    rng = np.random.default_rng(len(extras))
    for name, width in extras:  # a linear head on the trunk; softmax for a distribution
        scale = np.sqrt(2.0 / weights.hidden)
        w_extra = rng.normal(0.0, scale, size=(weights.hidden, width))
        initializers += [
            numpy_helper.from_array(w_extra.astype(np_type), f"{name}.weight"),
            numpy_helper.from_array(np.zeros(width, np_type), f"{name}.bias"),
        ]
        op = "Softmax" if name in _DISTRIBUTIONS else "Identity"
        args: dict[str, Any] = {"axis": -1} if name in _DISTRIBUTIONS else {}
        nodes += [
            helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], [f"{name}.z"]),
            helper.make_node(op, [f"{name}.z"], [name], **args),
        ]
        outputs.append(helper.make_tensor_value_info(name, onnx_type, [batch_dim, width]))
    return helper.make_graph(
        nodes,
        "otonom_policy",
        [helper.make_tensor_value_info(input_name, onnx_type, [batch_dim, input_dim])],
        outputs,
        initializer=initializers,
    )


_DISTRIBUTIONS: Final = ("risk_probs", "attention")


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
    weights: MlpWeights | None = None,
    strength_op: str = "Sigmoid",
    probs_op: str = "Softmax",
    seal: bool = True,
    seal_states: npt.ArrayLike | None = None,
    extra_outputs: Sequence[tuple[str, int]] = (),
) -> MlpWeights:
    """Write a real ONNX policy MLP to ``path`` and return its weights.

    The defaults follow the contract in ``docs/model-format.md``; the other keyword arguments
    exist to build models that break it (for the runtime's error tests):

    * ``metadata_overrides``: keys to set, or to delete with ``None``;
    * ``write_sidecar``: write ``<path>.sha256`` (default) or not;
    * ``input_name``, ``input_dim``, ``batch_dim`` (an int fixes the batch size),
      ``output_names``, ``action_dim``, ``elem_type`` (``"float32"`` or ``"float64"``), ``opset``;
    * ``weights``: these weights instead of ``random_weights(hidden=, layers=, seed=)``;
    * ``strength_op`` / ``probs_op``: the unary ONNX op on the strength logits (default
      ``"Sigmoid"``) / on the action logits (default ``"Softmax"``), e.g. ``"Identity"``
      (strengths of 7.8 or negative), ``"Sqrt"`` (NaN for negative logits), ``"Sigmoid"`` on
      the actions (probabilities that do not sum to 1);
    * ``seal``: seal the model as format 2 (default; ``False`` writes an unsealed format-1
      model, as made before format 2). With the contract's signature and opset the golden
      sample is the model's own answers for ``seal_states`` (default ``golden_states()``);
      with any other signature a placeholder the model cannot pass (its signature is refused
      first anyway). ``metadata_overrides`` win over what sealing writes (``otonom.model_format``,
      ``otonom.digest``, ``otonom.golden``);
    * ``extra_outputs``: ``(name, width)`` extra outputs after the two, each a linear head on
      the trunk (a softmax for ``risk_probs`` and ``attention``, else none), listed in
      ``otonom.extra_outputs`` (the contract's optional outputs, or any other name for the
      error tests).
    """
    import onnx
    from onnx import helper

    # odd shapes (error tests): the weights follow them, so the graph is still a valid model
    if weights is None:
        weights = random_weights(
            hidden=hidden, layers=layers, seed=seed, n_in=input_dim, n_actions=action_dim
        )
    graph = _mlp_graph(
        weights,
        input_name=input_name,
        input_dim=input_dim,
        batch_dim=batch_dim,
        output_names=output_names,
        action_dim=action_dim,
        elem_type=elem_type,
        probs_op=probs_op,
        strength_op=strength_op,
        extras=extra_outputs,
    )
    model = helper.make_model(
        graph,
        producer_name="otonom_runtime.testing.models",
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = _IR_VERSION
    overrides = dict(metadata_overrides or {})
    listed = {EXTRA_OUTPUTS_KEY: json.dumps([n for n, _ in extra_outputs])} if extra_outputs else {}
    metadata = default_metadata(weights) | ({} if seal else {FORMAT_KEY: "1"}) | listed | overrides
    helper.set_model_props(model, {k: v for k, v in metadata.items() if v is not None})
    onnx.checker.check_model(model)

    data = model.SerializeToString()
    if seal:
        shape = (input_name, input_dim, isinstance(batch_dim, str), tuple(output_names))
        contract = (*shape, action_dim, elem_type, opset) == _CONTRACT_SIGNATURE
        states = _default_golden_states() if seal_states is None else seal_states
        if contract:
            data = seal_model(data, states)
        else:  # a placeholder: such a model's signature is refused before its golden sample
            n = len(np.asarray(states))
            placeholder = (np.tile([0.9, 0.05, 0.05], (n, 1)), np.full(n, 0.5))
            data = seal_model(data, states, outputs=placeholder)
        # what sealing writes, overridden or removed afterwards (error tests)
        late = {k: v for k, v in overrides.items() if k in (FORMAT_KEY, DIGEST_KEY, GOLDEN_KEY)}
        if late:
            data = with_metadata(data, late)

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    if write_sidecar:
        write_sha256_sidecar(out)
    return weights
