"""Reliability: 10,000 seeded mutants of a real sealed policy model (issue 12, "Model mutations").

Each mutant is written with its sha256 sidecar **regenerated** (what a bad copy, a broken export,
bit rot before signing or an insider who rewrites both files gives), loaded with
``load_rl_policy``, and, when it loads, asked ``predict_batch`` on 1,000 valid states that are not
the model's golden ones (and ``predict`` on 20 of them), the answers compared with the original
model's. Families, 10,000 mutants in all (mutant ``i`` is made by
``numpy.random.default_rng([SEED, i])``, so any one is reproducible alone):

* 5,200 single-bit flips inside the weight tensors' raw data (the byte ranges of the graph's
  initializers, located with ``onnx``);
* 1,400 truncations at a random length; 1,400 overwrites of 1-64 bytes with random bytes;
* 2,000 structural edits made with the ``onnx`` library (``STRUCTURAL``: the signature, outputs,
  opset and IR version, external data, the metadata (the digest, golden sample and model format
  among them) removed, altered, duplicated or added, nodes removed, swapped, rewired or changed,
  initializers replaced, recast or removed, a ``Mul`` by a constant on an output, ...).

Outcomes: ``refused`` (``PolicyError`` at load, or at predict by the output contract),
``identical`` (loaded; every action equal and every probability and strength within
``GOLDEN_ATOL``: metadata-only edits may do that), ``changed`` (loaded; an action differs, a
value is beyond the tolerance or not finite): must be 0. Every tenth mutant is also tried with
the original's (stale) sidecar: always refused. The loop runs in worker subprocesses (batches of
``BATCH`` mutants, ``WORKERS`` at a time), so a native crash of onnxruntime kills a worker, not the
test run, and is reported as a crash naming the mutant; a generous timeout names a hang (no
timed assertion). Nothing but the result lines may be printed by a worker.

A sample of broken models (one per family and kind of break) is then run through a real
backtest on a real SQLite store with the RL analyst enabled: each falls back on every decision
and says why.

Run alone: ``pytest tests/reliability/test_model_mutations.py -s`` prints the figures
(docs/reliability.md, "Model mutations").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this file
from _models import bitflip, initializer_ranges, overwrite, truncate, valid_states, worker_env

from otonom_runtime import PolicyError
from otonom_runtime.integrity import GOLDEN_ATOL
from otonom_runtime.policy import load_rl_policy, resolve_model_path, write_sha256_sidecar
from otonom_runtime.testing.models import make_policy_model

pytestmark = pytest.mark.reliability

SEED = 1212
STATES_SEED = 4242  # the 1,000 comparison states: another history than any golden sample's
N_STATES = 1000
N_SINGLE = 20  # of them also asked one at a time with predict()
PLAN: list[tuple[str, int]] = [
    ("bitflip", 5200),
    ("truncate", 1400),
    ("overwrite", 1400),
    ("structural", 2000),
]
TOTAL = sum(n for _, n in PLAN)
STRUCTURAL_FROM = TOTAL - dict(PLAN)["structural"]
SHIPPED_FROM, SHIPPED_STEP = 5, 10  # mutants 5, 15, ... also made of the shipped model
ROOT = Path(__file__).resolve().parents[2]
STALE_EVERY = 10
BATCH = 2500
WORKERS = 2
HANG_GUARD_S = 900  # per batch: a hang guard, not a time budget
SELFTEST_ENV = "OTONOM_MUTATION_SELFTEST"  # makes a worker crash or hang at a mutant (self-test)


def family_of(i: int) -> str:
    """The family of mutant ``i`` (ids run through ``PLAN`` in order)."""
    end = 0
    for family, n in PLAN:
        end += n
        if i < end:
            return family
    raise ValueError(f"mutant {i} is past the plan's {TOTAL}")


# --- structural edits ---------------------------------------------------------------------------
# Each edits a copy of the sealed model's proto in place and says what it did. ``j`` counts the
# mutants of that kind (round-robin over keys, nodes, ...), ``rng`` draws the rest.

Edit = Callable[[Any, np.random.Generator, int], str]


def _dims(value_info: Any) -> Any:
    return value_info.type.tensor_type.shape.dim


def _rename_everywhere(p: Any, old: str, new: str) -> None:
    for node in p.graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new


def _input_renamed(p: Any, rng: np.random.Generator, j: int) -> str:
    new = ["x", "input", "State", "state ", "states", ""][j % 6]
    old = p.graph.input[0].name
    p.graph.input[0].name = new
    if j % 2:
        _rename_everywhere(p, old, new)  # a valid graph with another input name
        return f"input renamed to {new!r} (nodes follow)"
    return f"input renamed to {new!r} (nodes do not)"


def _input_dim(p: Any, rng: np.random.Generator, j: int) -> str:
    axis = j % 2
    value = int(rng.choice([0, 1, 2, 33, 35, 68, 2**31, 2**62]))
    _dims(p.graph.input[0])[axis].dim_value = value
    return f"input dim {axis} set to {value}"


def _input_dtype(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import TensorProto

    names = ["DOUBLE", "FLOAT16", "BFLOAT16", "INT64", "INT32", "UINT8", "BOOL", "STRING"]
    name = names[j % len(names)]
    p.graph.input[0].type.tensor_type.elem_type = getattr(TensorProto, name)
    return f"input dtype set to {name}"


def _input_rank(p: Any, rng: np.random.Generator, j: int) -> str:
    dims = _dims(p.graph.input[0])
    if j % 2:
        dims.add().dim_value = 1
        return "input given a third dimension"
    del dims[0]
    return "input's batch dimension removed"


def _input_added(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import TensorProto, helper

    if j % 2:
        # an initializer also listed as a graph input: a caller could override the weights
        init = p.graph.initializer[j % len(p.graph.initializer)]
        p.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, init.dims))
        return f"initializer {init.name} also listed as a graph input"
    p.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", 1]))
    return "a second graph input"


def _output_removed(p: Any, rng: np.random.Generator, j: int) -> str:
    name = p.graph.output[j % 2].name
    del p.graph.output[j % 2]
    return f"output {name} removed"


def _output_renamed(p: Any, rng: np.random.Generator, j: int) -> str:
    k = j % 2
    old = p.graph.output[k].name
    new = ["probs", "strength_", "action", "out"][j % 4]
    p.graph.output[k].name = new
    _rename_everywhere(p, old, new)
    return f"output {old} renamed to {new}"


def _outputs_reordered(p: Any, rng: np.random.Generator, j: int) -> str:
    a, b = type(p.graph.output[0])(), type(p.graph.output[0])()
    a.CopyFrom(p.graph.output[0])
    b.CopyFrom(p.graph.output[1])
    if j % 2:  # the declared order swapped
        p.graph.output[0].CopyFrom(b)
        p.graph.output[1].CopyFrom(a)
        return "outputs reordered"
    # the names swapped: action_probs now carries the strength and the other way round
    n0, n1 = a.name, b.name
    _rename_everywhere(p, n0, "tmp-swap")
    _rename_everywhere(p, n1, n0)
    _rename_everywhere(p, "tmp-swap", n1)
    return "the two outputs' producers swapped"


def _inner(p: Any) -> list[str]:
    """The graph's inner tensors (node outputs that are not graph outputs)."""
    outputs = {o.name for o in p.graph.output}
    return [o for n in p.graph.node for o in n.output if o not in outputs]


def _output_extra(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import TensorProto, helper

    inner = _inner(p)
    name = inner[j % len(inner)]
    p.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return f"extra output {name}"


def _output_declared(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import TensorProto

    k = j % 2
    if j % 4 < 2:
        p.graph.output[k].type.tensor_type.elem_type = TensorProto.DOUBLE
        return f"output {k} declared DOUBLE"
    value = int(rng.choice([2, 4, 34]))
    _dims(p.graph.output[k])[1].dim_value = value
    return f"output {k} declared with dim 1 = {value}"


def _opset(p: Any, rng: np.random.Generator, j: int) -> str:
    versions = [1, 5, 7, 11, 13, 16, 18, 19, 21, 22, 99, 10_000]
    v = versions[j % len(versions)]
    p.opset_import[0].version = v
    return f"opset set to {v}"


def _opset_domain(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import helper

    if j % 2:
        p.opset_import[0].domain = "ai.onnx.ml"
        return "default opset's domain set to ai.onnx.ml"
    node = p.graph.node[j % len(p.graph.node)]
    node.domain = "com.evil"
    p.opset_import.append(helper.make_opsetid("com.evil", 1))
    return f"node {node.name or node.op_type} moved to a custom domain"


def _ir_version(p: Any, rng: np.random.Generator, j: int) -> str:
    versions = [0, 1, 3, 4, 7, 9, 10, 11, 99]
    v = versions[j % len(versions)]
    p.ir_version = v
    return f"IR version set to {v}"


def _external_data(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import TensorProto, external_data_helper

    tensor = p.graph.initializer[j % len(p.graph.initializer)]
    location = ["weights.bin", "../original.onnx", "/etc/passwd", "policy_best.onnx"][j % 4]
    external_data_helper.set_external_data(tensor, location, length=len(tensor.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    return f"initializer {tensor.name} moved to external data {location}"


_ALTER_MODES = ("char", "number-1e-7", "number-1e-3", "number-x2", "empty", "garbage", "long")


def _alter(value: str, mode: str, rng: np.random.Generator) -> str:
    if mode.startswith("number-"):
        numbers = list(re.finditer(r"-?\d+\.\d+(?:[eE][-+]?\d+)?|-?\d+", value))
        if numbers:
            m = numbers[int(rng.integers(len(numbers)))]
            x = float(m.group())
            factor = {"number-1e-7": 1 + 1e-7, "number-1e-3": 1 + 1e-3, "number-x2": 2.0}[mode]
            y = x * factor if x != 0 else factor - 1
            new = repr(y) if "." in m.group() or "e" in m.group().lower() else str(int(y) + 1)
            if new != m.group():
                return value[: m.start()] + new + value[m.end() :]
        mode = "char"
    if mode == "char" and value:
        k = int(rng.integers(len(value)))
        c = chr(int(rng.integers(32, 127)))
        if c == value[k]:
            c = "#" if c != "#" else "$"
        return value[:k] + c + value[k + 1 :]
    if mode == "empty" or not value:
        return "" if value else "x"
    if mode == "garbage":
        return "".join(chr(int(c)) for c in rng.integers(32, 127, int(rng.integers(1, 40))))
    return value + " " * 100_000  # long


def _meta_keys(p: Any) -> list[str]:
    return sorted(prop.key for prop in p.metadata_props)


def _meta_removed(p: Any, rng: np.random.Generator, j: int) -> str:
    keys = _meta_keys(p)
    key = keys[j % len(keys)]
    for k, prop in enumerate(p.metadata_props):
        if prop.key == key:
            del p.metadata_props[k]
            break
    return f"metadata {key} removed"


def _meta_altered(p: Any, rng: np.random.Generator, j: int) -> str:
    keys = _meta_keys(p)
    key = keys[j % len(keys)]
    mode = _ALTER_MODES[(j // len(keys)) % len(_ALTER_MODES)]
    for prop in p.metadata_props:
        if prop.key == key:
            prop.value = _alter(prop.value, mode, rng)
    return f"metadata {key} altered ({mode})"


def _meta_duplicated(p: Any, rng: np.random.Generator, j: int) -> str:
    keys = _meta_keys(p)
    key = keys[j % len(keys)]
    value = next(prop.value for prop in p.metadata_props if prop.key == key)
    extra = p.metadata_props.add()
    extra.key = key
    extra.value = _alter(value, _ALTER_MODES[(j // len(keys)) % 4], rng)
    if j % 2:  # the altered copy first
        props = list(p.metadata_props)
        del p.metadata_props[:]
        p.metadata_props.extend([props[-1], *props[:-1]])
    return f"metadata {key} given a second, altered entry"


def _meta_added(p: Any, rng: np.random.Generator, j: int) -> str:
    extra = p.metadata_props.add()
    extra.key = ["otonom.note", "note", "otonom.golden_v2", ""][j % 4]
    extra.value = "added by a copy tool"
    return f"metadata {extra.key!r} added"


def _toplevel_text(p: Any, rng: np.random.Generator, j: int) -> str:
    field = ["producer_name", "doc_string", "graph.name", "graph.doc_string", "domain"][j % 5]
    if field.startswith("graph."):
        setattr(p.graph, field[6:], "edited")
    else:
        setattr(p, field, "edited")
    return f"{field} edited"


def _node_removed(p: Any, rng: np.random.Generator, j: int) -> str:
    k = j % len(p.graph.node)
    op = p.graph.node[k].op_type
    del p.graph.node[k]
    return f"node {k} ({op}) removed"


def _nodes_swapped(p: Any, rng: np.random.Generator, j: int) -> str:
    n = len(p.graph.node)
    a = j % n
    b = (a + 1 + int(rng.integers(n - 1))) % n
    na, nb = type(p.graph.node[0])(), type(p.graph.node[0])()
    na.CopyFrom(p.graph.node[a])
    nb.CopyFrom(p.graph.node[b])
    p.graph.node[a].CopyFrom(nb)
    p.graph.node[b].CopyFrom(na)
    return f"nodes {a} and {b} swapped in the list"


_OPS = {
    "Relu": ["Sigmoid", "Tanh", "LeakyRelu", "Elu", "Identity", "Abs"],
    "Softmax": ["LogSoftmax", "Hardmax", "Identity", "Sigmoid"],
    "Sigmoid": ["Relu", "Tanh", "HardSigmoid", "Identity", "Softsign"],
    "Gemm": ["MatMul", "Add"],
}


def _node_op(p: Any, rng: np.random.Generator, j: int) -> str:
    node = p.graph.node[j % len(p.graph.node)]
    choices = _OPS[node.op_type]
    new = choices[(j // len(p.graph.node)) % len(choices)]
    old = node.op_type
    node.op_type = new
    if new in ("MatMul", "Add"):
        del node.input[2:]
    return f"a {old} node made {new}"


def _node_attr(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import helper

    gemms = [n for n in p.graph.node if n.op_type == "Gemm"]
    if j % 3 == 0:
        soft = next(n for n in p.graph.node if n.op_type == "Softmax")
        del soft.attribute[:]
        soft.attribute.append(helper.make_attribute("axis", int(rng.choice([0, 1, -2, 5]))))
        return "Softmax axis changed"
    gemm = gemms[j % len(gemms)]
    name, value = [
        ("alpha", 1.0001),
        ("alpha", -1.0),
        ("beta", 0.0),
        ("beta", 2.0),
        ("transB", 1),
        ("transA", 1),
    ][(j // 3) % 6]
    gemm.attribute.append(helper.make_attribute(name, value))
    return f"Gemm {gemm.output[0]} given {name}={value}"


def _node_rewired(p: Any, rng: np.random.Generator, j: int) -> str:
    nodes = list(p.graph.node)
    node = nodes[j % len(nodes)]
    produced = [o for n in nodes for o in n.output] + [p.graph.input[0].name]
    produced += [t.name for t in p.graph.initializer]
    k = int(rng.integers(len(node.input)))
    choices = [name for name in produced if name != node.input[k]]
    new = choices[int(rng.integers(len(choices)))]
    if j % 7 == 0:
        new = node.output[0]  # a cycle: the node reads its own output
    old = node.input[k]
    node.input[k] = new
    return f"{node.op_type} input {old} rewired to {new}"


def _initializer_replaced(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import numpy_helper

    inits = list(p.graph.initializer)
    k = j % len(inits)
    tensor = inits[k]
    a = numpy_helper.to_array(tensor)
    mode = (j // len(inits)) % 5
    same = [t for t in inits if t.name != tensor.name and list(t.dims) == list(tensor.dims)]
    if mode == 0 and same:
        other = same[int(rng.integers(len(same)))]
        new = numpy_helper.to_array(other)
        what = f"by {other.name}'s values"
    elif mode <= 1:
        new = rng.permutation(a.ravel()).reshape(a.shape)
        what = "by a permutation of its values"
    elif mode == 2:
        new = rng.normal(0, float(a.std()) or 1.0, a.shape).astype(a.dtype)
        what = "by random values of the same scale"
    elif mode == 3:
        factor = [1 + 1e-7, 1.001, -1.0, 0.0][(j // (5 * len(inits))) % 4]
        new = (a * factor).astype(a.dtype)
        what = f"scaled by {factor}"
    else:
        new = a.copy()
        new.flat[int(rng.integers(new.size))] = [np.nan, np.inf, 1e30][j % 3]
        what = "with one element set to nan/inf/1e30"
    if np.array_equal(new, a):
        new = new.copy()
        new.flat[0] = new.flat[0] + 1
    tensor.CopyFrom(numpy_helper.from_array(new.astype(a.dtype), tensor.name))
    return f"initializer {tensor.name} replaced {what}"


def _initializer_recast(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import numpy_helper

    tensor = p.graph.initializer[j % len(p.graph.initializer)]
    a = numpy_helper.to_array(tensor)
    if j % 3 == 2:
        tensor.CopyFrom(numpy_helper.from_array(a.reshape(-1)[: a.size - 1], tensor.name))
        return f"initializer {tensor.name} lost an element"
    dtype = [np.float64, np.float16][j % 2]
    tensor.CopyFrom(numpy_helper.from_array(a.astype(dtype), tensor.name))
    return f"initializer {tensor.name} recast to {np.dtype(dtype).name}"


def _initializer_removed(p: Any, rng: np.random.Generator, j: int) -> str:
    k = j % len(p.graph.initializer)
    name = p.graph.initializer[k].name
    del p.graph.initializer[k]
    return f"initializer {name} removed"


def _output_scaled(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import helper, numpy_helper

    k = j % 2
    out = p.graph.output[k].name
    op = "Mul" if j % 4 < 2 else "Add"
    c = float(rng.choice([0.0, 0.5, 1.0, 1.00001, 2.0, -1.0, np.nan]))
    if op == "Add":
        c = float(rng.choice([0.0, 1e-6, 0.01, 0.5, -1.0]))
    _rename_everywhere(p, out, f"{out}.raw")
    p.graph.initializer.append(numpy_helper.from_array(np.array(c, np.float32), f"{out}.c"))
    p.graph.node.append(helper.make_node(op, [f"{out}.raw", f"{out}.c"], [out]))
    return f"{op} by {c} added to output {out}"


def _value_info(p: Any, rng: np.random.Generator, j: int) -> str:
    from onnx import TensorProto, helper

    inner = _inner(p)
    name = inner[j % len(inner)]
    shape = [["batch", 7], [1, 1, 1], None][(j // 3) % 3]
    elem = [TensorProto.FLOAT, TensorProto.INT64][j % 2]
    p.graph.value_info.append(helper.make_tensor_value_info(name, elem, shape))
    return f"value_info for {name} declared {shape} of type {elem}"


def _node_duplicated(p: Any, rng: np.random.Generator, j: int) -> str:
    node = p.graph.node[j % len(p.graph.node)]
    copy = p.graph.node.add()
    copy.CopyFrom(node)
    return f"node {node.op_type} -> {node.output[0]} duplicated (two producers)"


STRUCTURAL: dict[str, Edit] = {
    "input renamed": _input_renamed,
    "input dim": _input_dim,
    "input dtype": _input_dtype,
    "input rank": _input_rank,
    "input added": _input_added,
    "output removed": _output_removed,
    "output renamed": _output_renamed,
    "outputs reordered": _outputs_reordered,
    "output added": _output_extra,
    "output declared type/dim": _output_declared,
    "opset version": _opset,
    "opset domain": _opset_domain,
    "IR version": _ir_version,
    "external data": _external_data,
    "metadata removed": _meta_removed,
    "metadata altered": _meta_altered,
    "metadata duplicated": _meta_duplicated,
    "metadata added": _meta_added,
    "top-level text edited": _toplevel_text,
    "node removed": _node_removed,
    "nodes swapped": _nodes_swapped,
    "node op changed": _node_op,
    "node attribute": _node_attr,
    "node rewired": _node_rewired,
    "node duplicated": _node_duplicated,
    "initializer replaced": _initializer_replaced,
    "initializer recast": _initializer_recast,
    "initializer removed": _initializer_removed,
    "Mul/Add on an output": _output_scaled,
    "value_info": _value_info,
}
# metadata kinds get more mutants: the digest, golden sample and model format are among the keys
_WEIGHT = {"metadata removed": 3, "metadata altered": 6, "metadata duplicated": 3}
_KINDS: list[str] = [k for k in STRUCTURAL for _ in range(_WEIGHT.get(k, 1))]


def mutant(
    i: int, data: bytes, proto: Any, weights: list[tuple[int, int]]
) -> tuple[str, str, bytes]:
    """Mutant ``i`` of the model ``data`` (``proto``: it parsed; ``weights``: its initializers'
    byte ranges): ``(kind, what was done, the mutated bytes)``."""
    rng = np.random.default_rng([SEED, i])
    family = family_of(i)
    if family == "bitflip":
        return "bitflip", "one bit in the weights", bitflip(data, rng, weights)
    if family == "truncate":
        out = truncate(data, rng)
        return "truncate", f"cut at {len(out)} bytes", out
    if family == "overwrite":
        return "overwrite", "1-64 bytes overwritten", overwrite(data, rng)
    n = i - STRUCTURAL_FROM
    kind = _KINDS[n % len(_KINDS)]
    j = n // len(_KINDS)
    p = type(proto)()
    p.CopyFrom(proto)
    what = STRUCTURAL[kind](p, rng, j)
    return kind, what, p.SerializeToString()


# --- one mutant ---------------------------------------------------------------------------------


def answers(policy: Any, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``predict_batch`` on ``states`` and ``predict`` on the first ``N_SINGLE``, concatenated:
    actions, strengths, probabilities."""
    actions, strengths, probs = policy.predict_batch(states)
    single = [policy.predict(x, return_probs=True) for x in states[:N_SINGLE]]
    return (
        np.concatenate([actions, [int(a) for a, _, _ in single]]),
        np.concatenate([strengths, [st for _, st, _ in single]]),
        np.concatenate([probs, np.stack([p for _, _, p in single])]),
    )


def try_model(
    model: Path, states: np.ndarray, ref: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """Load ``model`` and compare its answers with ``ref``: ``{"outcome": ..., "note": ...}``.

    Outcomes: ``refused`` (``PolicyError`` at load), ``refused at predict`` (``PolicyError``
    from the output contract), ``identical``, ``changed``, ``unexpected`` (another exception).
    """
    try:
        policy = load_rl_policy(model, threads=1)
    except PolicyError as exc:
        return {"outcome": "refused", "note": str(exc)[:300]}
    except BaseException:  # what the test is about
        return {"outcome": "unexpected", "note": f"load: {traceback.format_exc(limit=-3)}"[-900:]}
    try:
        a, st, p = answers(policy, states)
    except PolicyError as exc:
        return {"outcome": "refused at predict", "note": str(exc)[:300]}
    except BaseException:
        return {
            "outcome": "unexpected",
            "note": f"predict: {traceback.format_exc(limit=-3)}"[-900:],
        }
    ref_a, ref_s, ref_p = ref
    finite = bool(np.isfinite(st).all() and np.isfinite(p).all())
    n_actions = int((a != ref_a).sum())
    diff = float(max(np.abs(st - ref_s).max(), np.abs(p - ref_p).max())) if finite else np.inf
    if n_actions or not diff <= GOLDEN_ATOL:
        note = f"{n_actions} of {len(a)} actions changed; max value difference {diff:.3g}"
        return {"outcome": "changed", "note": note}
    return {"outcome": "identical", "note": f"max value difference {diff:.3g}"}


# --- the worker ---------------------------------------------------------------------------------


def _golden_rows(data: bytes) -> np.ndarray:
    """The golden states sealed into the model (``otonom.golden``)."""
    from otonom_runtime.integrity import GOLDEN_KEY, decode_golden, scan_model

    return decode_golden(scan_model(data).metadata[GOLDEN_KEY]).states


def _worker(folder: Path, start: int, count: int, step: int = 1) -> None:
    """Mutants ``start, start + step, ...`` (``count`` of them) of ``folder/original.onnx``: one
    JSON line each on stdout, flushed as it goes (so the parent knows which mutant a crash or a
    hang was in)."""
    import onnx

    original = folder / "original.onnx"
    data = original.read_bytes()
    stale = (folder / "original.onnx.sha256").read_text(encoding="utf-8")
    states = valid_states(N_STATES, STATES_SEED)
    golden = _golden_rows(data)  # the comparison states are not the golden ones
    assert not (states[:, None, :] == golden[None, :, :]).all(axis=2).any()
    ref = answers(load_rl_policy(original, threads=1), states)
    proto = onnx.load_model_from_string(data)
    weights = [(lo, hi) for _, lo, hi in initializer_ranges(data)]
    work = folder / f"batch{start}"
    work.mkdir()
    model = work / "policy_best.onnx"
    inject = os.environ.get(SELFTEST_ENV, "")  # the harness's own test: "crash:I" / "hang:I"
    for i in range(start, start + count * step, step):
        if inject in (f"crash:{i}", f"hang:{i}"):
            if inject.startswith("crash"):
                os.kill(os.getpid(), signal.SIGSEGV)
            time.sleep(3600)
        kind, what, mutated = mutant(i, data, proto, weights)
        row: dict[str, Any] = {"i": i, "kind": kind, "what": what}
        if mutated == data:
            row.update(outcome="unexpected", note="the mutant equals the original")
        else:
            model.write_bytes(mutated)
            write_sha256_sidecar(model)
            row.update(try_model(model, states, ref))
            if i % STALE_EVERY == 0:
                (work / "policy_best.onnx.sha256").write_text(stale, encoding="utf-8")
                row["stale"] = try_model(model, states, ref)["outcome"]
        print(json.dumps(row), flush=True)


# --- the test -----------------------------------------------------------------------------------


def _run_batch(
    folder: Path,
    start: int,
    count: int,
    step: int = 1,
    *,
    guard_s: float = HANG_GUARD_S,
    inject: str = "",
) -> dict[str, Any]:
    args = [sys.executable, __file__, "--worker", str(folder), str(start), str(count), str(step)]
    hung = False
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env={**worker_env(), SELFTEST_ENV: inject},
            cwd=folder,
            timeout=guard_s,
            check=False,
        )
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        hung = True
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        rc = None
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for row in rows:
        row["model"] = folder.name
    ids = list(range(start, start + count * step, step))
    return {"model": folder.name, "ids": ids, "rows": rows, "rc": rc, "hung": hung, "stderr": err}


def _describe(i: int, model: str = "original") -> str:
    of = "" if model == "original" else f" of the {model} model"
    return f"mutant {i}{of} ({family_of(i)}, numpy.random.default_rng([{SEED}, {i}]))"


def _collect(
    batches: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[str], dict[str, Counter[str]], dict[str, Counter[str]]]:
    """The workers' result rows, and what went wrong: the failures (a crash or a hang named by
    the mutant it happened in, a worker that died otherwise or wrote to stderr, an accepted
    mutant that answers differently, an exception outside ``PolicyError``, a stale sidecar
    accepted), crashes and hangs per model and family."""
    failures: list[str] = []
    rows: list[dict[str, Any]] = []
    crashes: dict[str, Counter[str]] = defaultdict(Counter)
    hangs: dict[str, Counter[str]] = defaultdict(Counter)
    for b in batches:
        got = [r["i"] for r in b["rows"]]
        expected = b["ids"]
        rows += b["rows"]
        if got != expected[: len(got)]:
            failures.append(f"batch {b['ids'][0]}: mutants out of order {got[:5]}...")
        if len(got) < len(expected):
            culprit = expected[len(got)]
            if b["hung"]:
                hangs[b["model"]][family_of(culprit)] += 1
                failures.append(
                    f"HANG in {_describe(culprit, b['model'])} (no answer within the guard)"
                )
            elif b["rc"] is not None and b["rc"] < 0:
                crashes[b["model"]][family_of(culprit)] += 1
                failures.append(f"CRASH (signal {-b['rc']}) in {_describe(culprit, b['model'])}")
            else:
                failures.append(
                    f"worker for {b['ids'][0]}.. stopped at {_describe(culprit, b['model'])} "
                    f"(rc {b['rc']}): "
                    f"{b['stderr'][-2000:]}"
                )
        elif b["rc"] != 0:
            failures.append(f"worker for {b['ids'][0]}.. exited {b['rc']}: {b['stderr'][-2000:]}")
        elif b["stderr"]:
            # a refused model prints nothing: no onnxruntime log lines on a daemon's stderr
            failures.append(f"worker for {b['ids'][0]}.. wrote to stderr: {b['stderr'][:2000]}")
    for r in rows:
        if r["outcome"] in ("changed", "unexpected"):
            failures.append(
                f"{r['outcome'].upper()} {_describe(r['i'], r['model'])}: {r['what']}: {r['note']}"
            )
        if "stale" in r and r["stale"] != "refused":
            failures.append(
                f"STALE SIDECAR ACCEPTED {_describe(r['i'])}: {r['what']}: {r['stale']}"
            )
    return rows, failures, crashes, hangs


def _shipped(tmp_path: Path) -> Path:
    """A folder holding a copy of the repository's shipped default model (a trained export of
    the trainer, sealed) as ``original.onnx``, with its sidecar."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    model = resolve_model_path(ROOT / "models" / "rl_bc")
    shutil.copyfile(model, folder / "original.onnx")
    shutil.copyfile(model.with_name(model.name + ".sha256"), folder / "original.onnx.sha256")
    return folder


def test_ten_thousand_mutants_refused_or_identical(tmp_path: Path) -> None:
    original = tmp_path / "original"
    make_policy_model(original / "original.onnx", hidden=32, layers=2, seed=SEED)
    jobs: list[tuple[Path, int, int, int]] = [
        (original, start, min(BATCH, TOTAL - start), 1) for start in range(0, TOTAL, BATCH)
    ]
    # every tenth recipe again on the shipped model: the same seeds, its bytes
    jobs.append((_shipped(tmp_path), SHIPPED_FROM, TOTAL // SHIPPED_STEP, SHIPPED_STEP))
    with ThreadPoolExecutor(WORKERS) as pool:
        batches = list(pool.map(lambda job: _run_batch(*job), jobs))
    rows, failures, crashes, hangs = _collect(batches)
    print(f"\nseed {SEED}; {len(rows)} mutants answered; tolerance {GOLDEN_ATOL}")
    for model in ("original", "shipped"):
        mine = [r for r in rows if r["model"] == model]
        print(f"{model} model: {len(mine)} mutants")
        for line in _table(mine, crashes[model], hangs[model]):
            print(json.dumps(line))
        print("structural kinds:")
        for line in _kinds(mine):
            print(json.dumps(line))
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
    main = [r for r in rows if r["model"] == "original"]
    assert len(main) == TOTAL == 10_000
    assert sum(r["model"] == "shipped" for r in rows) == TOTAL // SHIPPED_STEP
    by_family = Counter(family_of(r["i"]) for r in main)
    assert by_family["bitflip"] >= TOTAL // 2
    assert sum(1 for r in main if "stale" in r) == TOTAL // STALE_EVERY
    for model in ("original", "shipped"):
        kinds = {r["kind"] for r in rows if r["model"] == model and r["i"] >= STRUCTURAL_FROM}
        assert kinds == set(STRUCTURAL), (model, set(STRUCTURAL) - kinds)


def test_the_harness_names_a_crash_a_hang_and_a_changed_answer(tmp_path: Path) -> None:
    """The harness itself can fail: a worker killed by SIGSEGV at a mutant, or stuck at one
    past its guard (12 s here), is reported naming that mutant; a sealed model with other
    weights (a valid model, so it loads) is "changed"; the original is "identical"."""
    folder = tmp_path / "original"
    make_policy_model(folder / "original.onnx", hidden=32, layers=2, seed=SEED)
    with ThreadPoolExecutor(2) as pool:
        crash, hang = pool.map(
            lambda kw: _run_batch(folder, 8000 + kw[0], 5, **kw[1]),
            [(0, {"inject": "crash:8002"}), (10, {"inject": "hang:8010", "guard_s": 12})],
        )
    rows, failures, crashes, hangs = _collect([crash, hang])
    assert [r["i"] for r in rows] == [8000, 8001]
    assert crashes == {"original": Counter({"structural": 1})}
    assert hangs == {"original": Counter({"structural": 1})}
    assert f"CRASH (signal {int(signal.SIGSEGV)}) in {_describe(8002)}" in failures
    # (the hang is at the batch's first mutant: a worker slow to start on a loaded machine
    # cannot be mistaken for one stuck later; without the hang it finishes well within 12 s)
    assert f"HANG in {_describe(8010)} (no answer within the guard)" in failures

    states = valid_states(N_STATES, STATES_SEED)
    ref = answers(load_rl_policy(folder / "original.onnx", threads=1), states)
    assert try_model(folder / "original.onnx", states, ref)["outcome"] == "identical"
    other = tmp_path / "other" / "policy_best.onnx"
    make_policy_model(other, hidden=32, layers=2, seed=SEED + 1)
    verdict = try_model(other, states, ref)
    assert verdict["outcome"] == "changed", verdict
    row = {"i": 9999, "model": "original", "kind": "x", "what": "y", **verdict}
    assert _collect([{"ids": [9999], "rows": [row], "rc": 0, "hung": False, "stderr": ""}])[1][
        0
    ].startswith("CHANGED mutant 9999")


_OUTCOMES = ("refused", "refused at predict", "identical", "changed", "unexpected")


def _table(
    rows: list[dict[str, Any]], crashes: Counter[str], hangs: Counter[str]
) -> list[dict[str, Any]]:
    out = []
    for family, _ in PLAN:
        mine = [r for r in rows if family_of(r["i"]) == family]
        c = Counter(r["outcome"] for r in mine)
        stale = Counter(r["stale"] for r in mine if "stale" in r)
        out.append(
            {
                "family": family,
                "tried": len(mine) + crashes[family] + hangs[family],
                **{k: c[k] for k in _OUTCOMES},
                "crashes": crashes[family],
                "hangs": hangs[family],
                "stale tried": sum(stale.values()),
                "stale refused": stale["refused"],
            }
        )
    return out


def _kinds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        if family_of(r["i"]) == "structural":
            per[r["kind"]][r["outcome"]] += 1
    return [{"kind": k, **{o: per[k][o] for o in _OUTCOMES if per[k][o]}} for k in STRUCTURAL]


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(Path(sys.argv[2]), *(int(a) for a in sys.argv[3:6]))


# --- a sample of broken models in a real backtest -----------------------------------------------

# (family or structural kind, how many): 20 broken models, the first mutants of each
SAMPLE: list[tuple[str, int]] = [
    ("bitflip", 6),
    ("truncate", 2),
    ("overwrite", 2),
    ("input dtype", 1),
    ("output removed", 1),
    ("outputs reordered", 1),
    ("external data", 1),
    ("metadata removed", 1),
    ("node op changed", 1),
    ("initializer replaced", 1),
    ("Mul/Add on an output", 1),
    ("nodes swapped", 1),
    ("top-level text edited", 1),
]


def _sample_ids() -> list[int]:
    ids: list[int] = []
    structural_start = STRUCTURAL_FROM
    for what, n in SAMPLE:
        if what in dict(PLAN):
            start = sum(m for f, m in PLAN[: [f for f, _ in PLAN].index(what)])
            ids += range(start, start + n)
        else:
            first = structural_start + _KINDS.index(what)
            ids += [first + k * len(_KINDS) for k in range(n)]
    return ids


def test_broken_models_fall_back_in_a_real_backtest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """About 20 of the mutants (each family, structural kinds among them) as the RL analyst of a
    real backtest on a real SQLite store: every decision falls back, and the run says why (in
    its report, its stored metrics and ``otonom runs show``). The original model in the same
    backtest: no fallback (the check can fail)."""
    import datetime as dt

    import onnx

    from otonom_runtime import cli
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.store import BacktestRun, get_session, init_db
    from otonom_runtime.strategy import parse_strategy
    from otonom_runtime.synth import write_synthetic

    url = f"sqlite:///{(tmp_path / 'store' / 'otonom.db').as_posix()}"
    init_db(url)
    monkeypatch.setenv("OTONOM_DATABASE_URL", url)
    with get_session(url) as session:
        write_synthetic(session, ["DEMO-BTC"], dt.date(2020, 1, 1), dt.date(2020, 6, 30), 7)
    original = tmp_path / "models" / "original" / "policy_best.onnx"
    make_policy_model(original, hidden=32, layers=2, seed=SEED)
    data = original.read_bytes()
    proto = onnx.load_model_from_string(data)
    weights = [(lo, hi) for _, lo, hi in initializer_ranges(data)]
    start, end = dt.date(2020, 5, 1), dt.date(2020, 5, 31)

    # the models live in the project's models/ folder (the strategy's models root), named by a
    # relative path from the project folder
    monkeypatch.chdir(tmp_path)

    def backtest(model: Path) -> tuple[Any, Any]:
        rl = {"enabled": True, "model_path": model.relative_to(tmp_path).as_posix()}
        cfg = parse_strategy({"name": "rl", "ensemble": {"rl_policy": rl}})
        with get_session(url) as session:
            report = run_backtest(session, cfg, ["DEMO-BTC"], start, end)
            run = session.get(BacktestRun, report.run_id)
            assert run is not None
            return report, (run.status, run.metrics)

    ids = _sample_ids()
    assert len(ids) == 20
    tried: list[str] = []
    for i in ids:
        kind, what, mutated = mutant(i, data, proto, weights)
        folder = tmp_path / "models" / f"m{i}"
        folder.mkdir(parents=True)
        model = folder / "policy_best.onnx"
        model.write_bytes(mutated)
        write_sha256_sidecar(model)
        report, (status, metrics) = backtest(model)
        label = f"{_describe(i)}: {kind}: {what}"
        assert report.rl_enabled, label
        assert report.bar_decisions == 31, label
        assert report.fallbacks == report.bar_decisions, (label, report.fallbacks)
        assert report.fallback_reason, label
        assert "PolicyError" in report.fallback_reason, (label, report.fallback_reason)
        assert str(model) in report.fallback_reason, (label, report.fallback_reason)
        assert status == "complete", label
        assert metrics["fallbacks"] == 31, label
        assert metrics["fallback_reason"] == report.fallback_reason[:2000], label
        capsys.readouterr()
        assert cli.main(["runs", "show", str(report.run_id)]) == 0
        shown = [x for x in capsys.readouterr().out.splitlines() if x.startswith("RL fell back: ")]
        assert shown == [f"RL fell back: {metrics['fallback_reason']}"], (label, shown)
        tried.append(f"{kind}: {report.fallback_reason[:160]}")
    print("\n" + "\n".join(tried))
    control, (_, metrics) = backtest(original)
    assert control.fallbacks == 0
    assert control.fallback_reason is None
    assert metrics["fallbacks"] == 0
    assert metrics["fallback_reason"] is None


# --- malicious pickles --------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs ``touch MARKER`` (what an attacker's checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def _evil_checkpoint(path: Path, marker: Path, *, zipped: bool) -> None:
    """A ``policy_best.pt`` that looks like the trainer's checkpoint but carries the payload:
    ``torch.save``'s zip format, or a bare pickle (torch's legacy format)."""
    import pickle

    ckpt = {"format": "otonom-rl/policy-checkpoint", "state_dict": {}, "hook": _Payload(marker)}
    if zipped:
        import torch

        torch.save(ckpt, path)
    else:
        path.write_bytes(pickle.dumps(ckpt, protocol=2))


def _unsafe_load_runs_the_payload(path: Path, marker: Path) -> None:
    """The control: an unsafe load (``weights_only=False``) does create the marker, so its
    absence elsewhere means the payload was refused, not that it was inert."""
    import contextlib

    import torch

    # a bare pickle is no torch file: torch says so only after unpickling it (the payload ran)
    with contextlib.suppress(RuntimeError):
        torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("zipped", [True, False], ids=["torch.save zip", "bare pickle"])
def test_malicious_checkpoint_refused_by_the_trainer(tmp_path: Path, zipped: bool) -> None:
    from otonom_trainer.train import CheckpointError, load_checkpoint

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "policy_best.pt"
    _evil_checkpoint(ckpt, marker, zipped=zipped)
    _unsafe_load_runs_the_payload(ckpt, marker)
    with pytest.raises(CheckpointError, match="cannot be read as a policy checkpoint") as info:
        load_checkpoint(ckpt)
    assert str(ckpt) in str(info.value)
    assert not marker.exists()


def test_malicious_checkpoint_refused_by_otonom_train_export(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "policy_best.pt"
    _evil_checkpoint(ckpt, marker, zipped=True)
    exe = Path(sys.executable).with_name("otonom-train")
    proc = subprocess.run(
        [str(exe), "export", "--checkpoint", str(ckpt)],
        capture_output=True,
        text=True,
        env=worker_env(),
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert str(ckpt) in errors[0]
    assert not marker.exists()
    assert not ckpt.with_suffix(".onnx").exists()


@pytest.mark.parametrize("name", ["policy_best.onnx", "policy_best.pt"])
def test_pickle_where_the_runtime_expects_a_model(tmp_path: Path, name: str) -> None:
    """A pickle named as the ONNX model (with a matching sidecar), or as the checkpoint the
    runtime stands for its ONNX export: refused, and nothing is unpickled."""
    import pickle

    marker = tmp_path / "pwned"
    model = tmp_path / name
    model.write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    write_sha256_sidecar(model)
    expected = "not a valid ONNX model" if name.endswith(".onnx") else "never loads PyTorch"
    with pytest.raises(PolicyError, match=expected) as info:
        load_rl_policy(model)
    assert str(model.with_suffix(".onnx") if name.endswith(".pt") else model) in str(info.value)
    assert not marker.exists()
    # the bytes do run the payload when unpickled: the refusal is what kept it from running
    pickle.loads(model.read_bytes())
    assert marker.exists()
