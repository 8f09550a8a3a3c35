"""Other layouts of an ensemble's merged graph, its lower bounds and one-node graphs: what
``bench/ensemble.py --layouts`` and ``--ops`` time (issue 14).

Every graph is timed the same way as a policy's ``predict`` runs it (``floor``): a session from
the runtime's own factory (``otonom_runtime.serving.session.make_session``: its options,
``force_spinning_stop``) and a pre-bound io_binding run through the same C++ call as ``Slot``
(``_runner``), every output bound to a buffer made once.

Layouts (``layout_graphs``), all built with ``onnx.helper`` from the same members' weights:

* the shipped graphs (``ensemble_graph``, combine ``mean`` and ``vote``);
* the shipped graph with its members' trunks replaced (the combining tail kept node for node,
  so a layout's outputs must equal the shipped graph's): the first layers as one Gemm 34 -> 3 x
  128 then a ``Split`` (``fused``), every layer one block-diagonal Gemm (``blockdiag``: the first
  one the members' weights side by side, the later ones 384 x 384 with two thirds zeros), or one
  batched MatMul + Add + Relu per layer over [members, batch, 128] (``batched``);
* lower bounds, not ensembles: the first ``k`` members' trunks alone, each hidden layer an
  output, no heads and no combining step (``k trunks, no combine``): any graph that computes
  ``k`` members' trunks costs at least this; and the shipped graph cut after its heads' one
  Gemm (``trunks + Concat + heads Gemm``): the logits of every member, no softmax, no mean.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from otonom_runtime.bench import interleaved_latency
from otonom_runtime.serving.session import _runner, make_session
from otonom_trainer.ensemble_graph import MemberWeights, block_diagonal, ensemble_graph

__all__ = ["LAYOUT_ROWS", "check_layouts", "floor", "layout_graphs", "ops", "time_layouts"]

LAYOUT_ROWS = (1, 10, 256, 4096)
_TRUNK = re.compile(r"m\d+_")  # the shipped graph's per-member trunk nodes and weights
_OPSET = 17


def _bytes(model: bytes | str | Path | onnx.ModelProto) -> bytes:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    return model if isinstance(model, bytes) else Path(model).read_bytes()


def floor(
    model: bytes | str | Path | onnx.ModelProto, x: np.ndarray, threads: int | None
) -> Callable[[], object]:
    """A bare pre-bound io_binding run of ``model`` on ``x`` (its one input), made as the
    runtime makes a policy's (``make_session``, ``_runner``): every output bound to a buffer of
    the shape one plain run gives."""
    session = make_session(ort, _bytes(model), Path("<bench>"), ["CPUExecutionProvider"], threads)
    x = np.ascontiguousarray(x, dtype=np.float32)
    binding = session.io_binding()
    binding.bind_input(session.get_inputs()[0].name, "cpu", 0, np.float32, x.shape, x.ctypes.data)
    names = [o.name for o in session.get_outputs()]
    outs = [np.zeros_like(y) for y in session.run(None, {session.get_inputs()[0].name: x})]
    for name, y in zip(names, outs, strict=True):
        binding.bind_output(name, "cpu", 0, np.float32, y.shape, y.ctypes.data)
    run = _runner(session, binding)
    run.keep = (session, binding, x, outs)  # type: ignore[attr-defined]  # the buffers live on
    return run


def ort_nodes(model: bytes | str | Path | onnx.ModelProto) -> int:
    """Nodes of ``model`` after onnxruntime's graph optimisations (Gemm + Relu fused, ...)."""
    with tempfile.TemporaryDirectory(prefix="otonom-ens-opt-") as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "opt.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(_bytes(model), options, providers=["CPUExecutionProvider"])
        return len(onnx.load(options.optimized_model_filepath).graph.node)


# --- graphs --------------------------------------------------------------------------------------


class _Nodes:
    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: Any, dtype: Any = np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], out: str | list[str], **attrs: Any) -> str:
        outs = [out] if isinstance(out, str) else out
        self.nodes.append(helper.make_node(op, inputs, outs, name=outs[0], **attrs))
        return outs[0]


def _trunk_nodes(members: Sequence[MemberWeights], layout: str) -> _Nodes:
    """Nodes computing ``hidden`` [batch, H1 + ... + HN] (the shipped graph's Concat) in
    ``layout`` (``fused``, ``blockdiag`` or ``batched``)."""
    g, n, layers = _Nodes(), len(members), len(members[0].trunk)
    ws = [[m.trunk[i][0] for m in members] for i in range(layers)]
    bs = [[m.trunk[i][1] for m in members] for i in range(layers)]
    if layout == "batched":  # [batch, 34] x [n, 34, h] -> [n, batch, h]
        x = "state"
        for i in range(layers):
            z = g.node("MatMul", [x, g.const(f"x_w{i}", np.stack(ws[i]))], f"x_m{i}")
            z = g.node("Add", [z, g.const(f"x_b{i}", np.stack(bs[i])[:, None, :])], f"x_z{i}")
            x = g.node("Relu", [z], f"x_h{i}")
        t = g.node("Transpose", [x], "x_t", perm=[1, 0, 2])  # [batch, n, h]
        g.node("Reshape", [t, g.const("x_flat", [0, -1], np.int64)], "hidden")
        return g
    w0, b0 = g.const("x_w0", np.concatenate(ws[0], axis=1)), g.const("x_b0", np.concatenate(bs[0]))
    x = g.node(
        "Relu", [g.node("Gemm", ["state", w0, b0], "x_z0")], "x_h0" if layers > 1 else "hidden"
    )
    if layout == "blockdiag":
        for i in range(1, layers):
            w, b = (
                g.const(f"x_w{i}", block_diagonal(ws[i])),
                g.const(f"x_b{i}", np.concatenate(bs[i])),
            )
            out = "hidden" if i == layers - 1 else f"x_h{i}"
            x = g.node("Relu", [g.node("Gemm", [x, w, b], f"x_z{i}")], out)
        return g
    if layers == 1:
        return g
    widths = g.const("x_split", [w.shape[1] for w in ws[0]], np.int64)
    parts = [f"x_s{k}" for k in range(n)]
    g.node("Split", [x, widths], parts, axis=1)
    for k in range(n):
        x = parts[k]
        for i in range(1, layers):
            w, b = g.const(f"x_m{k}_w{i}", ws[i][k]), g.const(f"x_m{k}_b{i}", bs[i][k])
            x = g.node("Relu", [g.node("Gemm", [x, w, b], f"x_m{k}_z{i}")], f"x_m{k}_h{i}")
        parts[k] = x
    g.node("Concat", parts, "hidden", axis=1)
    return g


def _model(graph: Any, check: bool = True) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], ir_version=8)
    if check:  # a one-node graph's outputs have no shape (onnxruntime infers them)
        onnx.checker.check_model(model)
    return model


def _relaid(shipped: onnx.ModelProto, members: Sequence[MemberWeights], layout: str) -> Any:
    """``shipped`` with its trunks (and their Concat) replaced by ``layout``'s nodes."""
    g = _trunk_nodes(members, layout)
    tail = [v for v in shipped.graph.node if not _TRUNK.match(v.name) and v.name != "hidden"]
    inits = [v for v in shipped.graph.initializer if not _TRUNK.match(v.name)]
    graph = helper.make_graph(
        g.nodes + tail, layout, shipped.graph.input, shipped.graph.output, g.inits + inits
    )
    return _model(graph)


def _trunks_only(shipped: onnx.ModelProto, members: Sequence[MemberWeights], k: int) -> Any:
    """The first ``k`` members' trunks of ``shipped``, each last hidden layer an output."""
    keep = [f"m{j}_" for j in range(k)]
    nodes = [v for v in shipped.graph.node if v.name[:3] in keep]
    inits = [v for v in shipped.graph.initializer if v.name[:3] in keep]
    last = [[v for v in nodes if v.name.startswith(p)][-1] for p in keep]
    outputs = [
        helper.make_tensor_value_info(v.output[0], TensorProto.FLOAT, ["batch", m.width])
        for v, m in zip(last, members, strict=False)
    ]
    return _model(helper.make_graph(nodes, f"trunks_{k}", shipped.graph.input, outputs, inits))


def _trunks_and_heads(shipped: onnx.ModelProto) -> Any:
    """``shipped`` up to its heads' logits: the trunks, their Concat and one Gemm of both heads
    (action and strength weights side by side), the logits the output; no softmax, sigmoid or
    mean. Any merged graph reading each member's logits does at least this much."""
    g = _Nodes()
    init = {v.name: numpy_helper.to_array(v) for v in shipped.graph.initializer}
    w = np.concatenate([init["action_w"], init["strength_w"]], axis=1)
    b = np.concatenate([init["action_b"], init["strength_b"]])
    g.node("Gemm", ["hidden", g.const("heads_w", w), g.const("heads_b", b)], "logits")
    nodes = [v for v in shipped.graph.node if _TRUNK.match(v.name) or v.name == "hidden"]
    inits = [v for v in shipped.graph.initializer if _TRUNK.match(v.name)]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", w.shape[1]])
    graph = helper.make_graph(nodes + g.nodes, "heads", shipped.graph.input, [out], inits + g.inits)
    return _model(graph)


def layout_graphs(
    members: Sequence[MemberWeights], member: str | Path
) -> dict[str, tuple[onnx.ModelProto | str, str | None]]:
    """``{name: (graph, combine it must equal or None for a lower bound)}``: one member's file,
    the shipped graphs, the other layouts (mean and vote each) and the trunks-only bounds."""
    out: dict[str, tuple[onnx.ModelProto | str, str | None]] = {"one member": (str(member), None)}
    shipped = {c: ensemble_graph(members, c) for c in ("mean", "vote")}
    out["shipped mean (ensemble_graph)"] = (shipped["mean"], "mean")
    out["shipped vote (ensemble_graph)"] = (shipped["vote"], "vote")
    same = len({tuple(w.shape for w, _ in m.trunk) for m in members}) == 1
    names = {
        "fused": "first layers fused: Gemm 34->384 + Split",
        "blockdiag": "block-diagonal Gemms",
    }
    if same:
        names["batched"] = "batched MatMul [n,h,h]"
    for layout, name in names.items():
        for c in ("mean", "vote"):
            out[f"{name}, {c}"] = (_relaid(shipped[c], members, layout), c)
    n = len(members)
    out[f"{n} trunks + Concat + heads Gemm (bound)"] = (
        _trunks_and_heads(shipped["mean"]),
        None,
    )
    for k in range(n, 0, -1):
        out[f"{k} trunk{'s' if k > 1 else ''}, no combine (bound)"] = (
            _trunks_only(shipped["mean"], members, k),
            None,
        )
    return out


def check_layouts(
    graphs: dict[str, tuple[onnx.ModelProto | str, str | None]], states: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Each real layout's outputs on ``states`` against the shipped graph of its combine:
    ``allclose`` (rtol 1e-5, atol 1e-6), the largest difference, the same argmax on every row."""

    def run(model: onnx.ModelProto | str) -> list[np.ndarray]:
        s = ort.InferenceSession(_bytes(model), providers=["CPUExecutionProvider"])
        return s.run(None, {"state": states.astype(np.float32)})

    ref = {c: run(graphs[f"shipped {c} (ensemble_graph)"][0]) for c in ("mean", "vote")}
    out: dict[str, dict[str, Any]] = {}
    for name, (model, combine) in graphs.items():
        if combine is None:
            continue
        got, want = run(model), ref[combine]
        out[name] = {
            "allclose": all(
                np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, want, strict=True)
            ),
            "max_abs_diff": float(max(np.abs(a - b).max() for a, b in zip(got, want, strict=True))),
            "same_argmax": bool((got[0].argmax(axis=1) == want[0].argmax(axis=1)).all()),
        }
    return out


def time_layouts(
    graphs: dict[str, tuple[onnx.ModelProto | str, str | None]],
    states: np.ndarray,
    threads: int | None,
    calls: int,
    rounds: int,
) -> dict[str, dict[str, float]]:
    """p50 (us) of each graph's ``floor`` at ``LAYOUT_ROWS`` rows, interleaved per row count
    (the vote variants of the other layouts are checked, not timed: their tail is the shipped
    vote's, timed)."""
    timed = {k: v for k, v in graphs.items() if not k.endswith(", vote")}
    out: dict[str, dict[str, float]] = {
        k: {"ort_nodes": ort_nodes(m)} for k, (m, _) in timed.items()
    }
    for rows in LAYOUT_ROWS:
        x = np.ascontiguousarray(np.resize(states, (rows, states.shape[1])), dtype=np.float32)
        subjects = {name: floor(m, x, threads) for name, (m, _) in timed.items()}
        n = max(calls // rows, 30)
        lat = interleaved_latency(subjects, n, rounds, warmup=min(200, n))
        for name, v in lat.items():
            out[name][f"p50_us@{rows}"] = v["p50_us"]
    return out


# --- one-node graphs (--ops) ---------------------------------------------------------------------


def _one_node(
    op: str, shape: Sequence[int], consts: dict[str, Any], n_out: int = 1, **attrs: Any
) -> Any:
    """A graph of one ``op`` node on input ``x`` of ``shape`` and the constants ``consts``
    (inputs after ``x``, in order), ``n_out`` outputs of inferred shapes."""
    g = _Nodes()
    inputs = ["x", *(g.const(k, v, v.dtype) for k, v in consts.items())]
    if op == "Concat":
        inputs = ["x", "x", "x"]
    outs = [f"y{i}" for i in range(n_out)]
    g.node(op, inputs, outs, **attrs)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    return _model(helper.make_graph(g.nodes, op, [x], ys, g.inits), check=False)


def _relu_chain(k: int) -> Any:
    g = _Nodes()
    x = "x"
    for i in range(k):
        x = g.node("Relu", [x], f"r{i}")
    io_ = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 128]) for v in ("x", x)]
    return _model(helper.make_graph(g.nodes, "chain", io_[:1], io_[1:], g.inits))


def op_graphs() -> dict[str, Any]:
    """One-node graphs at one row, the ops of the ensemble graphs at their shapes."""
    rng = np.random.default_rng(0)

    def w(i: int, o: int) -> dict[str, Any]:
        return {
            "w": rng.standard_normal((i, o)).astype(np.float32) * 0.1,
            "b": np.zeros(o, np.float32),
        }

    return {
        "Relu [1,128] (a trivial node)": _one_node("Relu", [1, 128], {}),
        "Relu x9 chain [1,128]": _relu_chain(9),
        "Gemm 34->128": _one_node("Gemm", [1, 34], w(34, 128)),
        "Gemm 128->128": _one_node("Gemm", [1, 128], w(128, 128)),
        "Gemm 34->384": _one_node("Gemm", [1, 34], w(34, 384)),
        "Gemm 384->128": _one_node("Gemm", [1, 384], w(384, 128)),
        "Gemm 384->384 (dense)": _one_node("Gemm", [1, 384], w(384, 384)),
        "Gemm 384->9 (heads)": _one_node("Gemm", [1, 384], w(384, 9)),
        "MatMul [3,1,128]x[3,128,128]": _one_node(
            "MatMul", [3, 1, 128], {"w": rng.standard_normal((3, 128, 128)).astype(np.float32)}
        ),
        "Split [1,384] -> 3": _one_node(
            "Split", [1, 384], {"s": np.array([128] * 3, np.int64)}, n_out=3, axis=1
        ),
        "Concat 3 x [1,128]": _one_node("Concat", [1, 128], {}, axis=1),
        "Reshape [1,9] -> [1,3,3]": _one_node(
            "Reshape", [1, 9], {"s": np.array([0, 3, 3], np.int64)}
        ),
        "Softmax [1,3,3]": _one_node("Softmax", [1, 3, 3], {}, axis=-1),
        "ReduceMean [1,3,3] axis 1": _one_node("ReduceMean", [1, 3, 3], {}, axes=[1], keepdims=0),
        "Hardmax [1,3,3]": _one_node("Hardmax", [1, 3, 3], {}, axis=-1),
        "Sigmoid [1,3]": _one_node("Sigmoid", [1, 3], {}),
        "MatMul [1,18]x[18,3] (vote mix)": _one_node(
            "MatMul", [1, 18], {"w": rng.standard_normal((18, 3)).astype(np.float32)}
        ),
    }


def ops(threads: int | None, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    """p50 (us) of each one-node graph's ``floor`` at one row, interleaved; ``node_us``: its
    p50 less the trivial one-node graph's plus a trivial node's own cost (the Relu chain's
    (p50 - trivial graph's p50) / 8): an estimate of what the node adds to a graph."""
    graphs = op_graphs()
    subjects = {}
    for name, model in graphs.items():
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        subjects[name] = floor(model, x, threads)
    lat = interleaved_latency(subjects, calls, rounds)
    base = lat["Relu [1,128] (a trivial node)"]["p50_us"]
    trivial = (lat["Relu x9 chain [1,128]"]["p50_us"] - base) / 8
    return {
        name: {
            "ort_nodes": float(ort_nodes(graphs[name])),
            "p50_us": v["p50_us"],
            "node_us": v["p50_us"] - base + trivial,
        }
        for name, v in lat.items()
    }
