"""An ensemble model's predict latency against one member's (issue 14, "Ensembles of policies").

Usage::

    .venv/bin/python bench/ensemble.py [--quick] [--members 3] [--hidden 128] [--layers 2]
                                       [--threads N] [--layouts] [--out FILE.json]

Builds ``--members`` PolicyNet members (random initialisation, seeds 0, 1, ...: the latency
does not depend on training) and exports, in a temporary folder, each member alone
(``export_onnx``) and all of them as one model (``otonom_trainer.ensemble.export_ensemble``,
combine ``mean`` and ``vote``). Each is loaded through ``load_rl_policy`` (onnxruntime's
default threads, as a daemon loads it; ``--threads 1`` as the backtester does) and measured,
interleaved round by round:

* ``predict(RlState)`` and ``predict(array (34,))`` of member 0, of the mean and of the vote
  ensemble, and the guide's ensemble by hand (Example 2: each member's ``predict``, then
  ``max(set(votes), key=votes.count)`` and ``np.mean(strengths)``);
* the bare pre-bound io_binding run of member 0's and of the ensemble's graph (the floor
  ``predict`` builds on);
* ``predict_batch`` at 10 rows (a backtest day of ten symbols), 256 and 4096 rows;
* with ``--layouts``: the io_binding floor at 1 and 256 rows of the merged graph with its
  members' trunks laid out otherwise (one block-diagonal Gemm per layer; one batched MatMul per
  layer): why ``ensemble_graph`` keeps them separate.

Prints the ratios ensemble / member 0. Target: ``predict(RlState)`` of the ensemble <= 1.5x
one member's, for 3 members. A ratio, never a timed test (docs/benchmarks.md, "Ensembles").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

import otonom_schema as s
from otonom_runtime.bench import interleaved_latency, throughput
from otonom_runtime.policy import load_rl_policy
from otonom_schema.synthetic import random_history
from otonom_trainer.ensemble import EnsembleMember, export_ensemble, member_weights
from otonom_trainer.ensemble_graph import MemberWeights, block_diagonal, ensemble_graph
from otonom_trainer.export import export_onnx
from otonom_trainer.model import PolicyNet

TARGET = 1.5
METRICS = {"val_action_acc": 0.5, "train_action_acc": 0.5, "best_val_loss": 1.0, "best_epoch": 1}
BATCH_ROWS = (10, 256, 4096)


def _dataset(path: Path) -> np.ndarray:
    history = random_history(700, seed=1)
    states = s.compute_states(history)[s.LOOKBACK :]
    n = states.shape[0]
    actions = np.random.default_rng(1).integers(0, 3, size=n)
    ds = s.OfflineDataset(
        states,
        actions.astype(np.int64),
        np.where(actions > 0, 0.5, 0.0).astype(np.float32),
        np.repeat(["DEMO"], n),
        history.dates[s.LOOKBACK :],
        {"source": "bench/ensemble.py"},
    )
    s.save_dataset(ds, path)
    return states


def _floor(model: bytes | str, rows: np.ndarray, threads: int | None) -> Callable[[], object]:
    """A bare pre-bound io_binding run of ``model`` on ``rows`` (what ``predict`` builds on)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    n = rows.shape[0]
    x = np.ascontiguousarray(rows, dtype=np.float32)
    out = np.zeros(4 * n, np.float32)
    binding = session.io_binding()
    binding.bind_input("state", "cpu", 0, np.float32, [n, 34], x.ctypes.data)
    binding.bind_output("action_probs", "cpu", 0, np.float32, [n, 3], out.ctypes.data)
    binding.bind_output("strength", "cpu", 0, np.float32, [n, 1], out[3 * n :].ctypes.data)

    def run() -> object:
        return session.run_with_iobinding(binding), x, out  # keeps the buffers alive

    return run


# --- other layouts of the members' trunks (--layouts) -------------------------------------------


def _layout_graph(members: Sequence[MemberWeights], layout: str) -> bytes:
    """The mean ensemble with its trunks as one block-diagonal Gemm per layer (``blockdiag``) or
    one batched MatMul per layer (``batched``; every member of the same shape)."""
    n, nodes, inits = len(members), [], []

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    x, layers = "state", len(members[0].trunk)
    for i in range(layers):
        ws, bs = [m.trunk[i][0] for m in members], [m.trunk[i][1] for m in members]
        if layout == "blockdiag":
            w = np.concatenate(ws, axis=1) if i == 0 else block_diagonal(ws)
            z = node("Gemm", [x, const(f"w{i}", w), const(f"b{i}", np.concatenate(bs))], f"z{i}")
        else:  # [batch, 34] x [n, 34, h] -> [n, batch, h]
            z = node("MatMul", [x, const(f"w{i}", np.stack(ws))], f"m{i}")
            z = node("Add", [z, const(f"b{i}", np.stack(bs)[:, None, :])], f"z{i}")
        x = node("Relu", [z], f"h{i}")
    if layout == "batched":  # [n, batch, h] -> [batch, n * h]
        x = node("Transpose", [x], "t", perm=[1, 0, 2])
        x = node("Reshape", [x, const("flat", [0, -1], np.int64)], "hidden")
    wa, ba = (
        block_diagonal([m.action[0] for m in members]),
        np.concatenate([m.action[1] for m in members]),
    )
    logits = node("Gemm", [x, const("wa", wa), const("ba", ba)], "la")
    logits = node("Reshape", [logits, const("shape", [0, n, 3], np.int64)], "la3")
    probs = node("Softmax", [logits], "p3", axis=-1)
    node("ReduceMean", [probs], "action_probs", axes=[1], keepdims=0)
    ws_, bs_ = (
        block_diagonal([m.strength[0] for m in members]),
        np.concatenate([m.strength[1] for m in members]),
    )
    z = node("Sigmoid", [node("Gemm", [x, const("ws", ws_), const("bs", bs_)], "ls")], "s")
    node("ReduceMean", [z], "strength", axes=[1], keepdims=1)
    io_ = [
        helper.make_tensor_value_info(k, TensorProto.FLOAT, ["batch", w])
        for k, w in (("state", 34), ("action_probs", 3), ("strength", 1))
    ]
    graph = helper.make_graph(nodes, layout, io_[:1], io_[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def layouts(
    nets: Sequence[PolicyNet], tmp: Path, states: np.ndarray, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """p50 (us) of the io_binding floor at 1 and 256 rows for each trunk layout (and member 0)."""
    weights = [member_weights(n) for n in nets]
    calls, rounds = (1000, 3) if args.quick else (4000, 6)
    threads = args.threads
    graphs: dict[str, bytes | str] = {
        "one member": str(tmp / "member_0.onnx"),
        "separate trunks (ensemble_graph)": ensemble_graph(weights, "mean").SerializeToString(),
        "block-diagonal Gemm": _layout_graph(weights, "blockdiag"),
        "batched MatMul": _layout_graph(weights, "batched"),
    }
    out: dict[str, dict[str, float]] = {}
    for rows in (1, 256):
        x = states[:rows]
        subjects = {name: _floor(g, x, threads) for name, g in graphs.items()}
        lat = interleaved_latency(subjects, max(calls // rows, 50), rounds)
        for name, v in lat.items():
            out.setdefault(name, {})[f"p50_us@{rows}"] = v["p50_us"]
    return out


# --- the measurement ---------------------------------------------------------------------------


def build(tmp: Path, members: int, hidden: int, layers: int) -> tuple[list[PolicyNet], np.ndarray]:
    states = _dataset(tmp / "ds.npz")
    nets = []
    for k in range(members):
        torch.manual_seed(k)
        nets.append(PolicyNet(hidden_dim=hidden, num_layers=layers).eval())
        export_onnx(
            nets[k],
            tmp / f"member_{k}.onnx",
            metrics=METRICS,
            training_config={},
            dataset_sha256="0" * 64,
            parity_states=states,
        )
    for combine in ("mean", "vote"):
        export_ensemble(
            [EnsembleMember(n) for n in nets],
            tmp / f"ensemble_{combine}.onnx",
            combine=combine,
            dataset=tmp / "ds.npz",
        )
    return nets, states


def measure(args: argparse.Namespace, tmp: Path, states: np.ndarray) -> dict[str, Any]:
    calls, rounds = (1000, 3) if args.quick else (4000, 6)
    budget = 0.3 if args.quick else 1.2
    load = lambda name: load_rl_policy(tmp / name, threads=args.threads)  # noqa: E731
    member = load("member_0.onnx")
    members = [load(f"member_{k}.onnx") for k in range(args.members)]
    mean, vote = load("ensemble_mean.onnx"), load("ensemble_vote.onnx")
    state, row = s.RlState.from_array(states[-1]), states[-1].copy()

    def by_hand() -> object:  # the guide's Example 2
        votes, strengths = [], []
        for policy in members:
            action, strength = policy.predict(state)
            votes.append(action)
            strengths.append(strength)
        return max(set(votes), key=votes.count), float(np.mean(strengths))

    subjects: dict[str, Callable[[], object]] = {
        "member predict(RlState)": lambda: member.predict(state),
        "mean predict(RlState)": lambda: mean.predict(state),
        "vote predict(RlState)": lambda: vote.predict(state),
        "member predict(array)": lambda: member.predict(row),
        "mean predict(array)": lambda: mean.predict(row),
        "by hand (guide Example 2)": by_hand,
        "member io_binding floor": _floor(str(tmp / "member_0.onnx"), states[-1:], args.threads),
        "mean io_binding floor": _floor(str(tmp / "ensemble_mean.onnx"), states[-1:], args.threads),
    }
    single = interleaved_latency(subjects, calls, rounds)
    batch: dict[str, dict[str, float]] = {}
    for n in BATCH_ROWS:
        x = np.ascontiguousarray(np.resize(states, (n, 34)))
        batch[str(n)] = {
            name: throughput(lambda p=p, x=x: p.predict_batch(x), n, budget)
            for name, p in (("member", member), ("mean", mean), ("vote", vote))
        }
    return {"single_state_us": single, "batch_states_per_s": batch}


def _baseline(name: str) -> str:
    """The member subject a row is compared with."""
    if "floor" in name:
        return "member io_binding floor"
    return "member predict(array)" if "array" in name else "member predict(RlState)"


def report(r: dict[str, Any]) -> None:
    single = r["single_state_us"]
    ref = single["member predict(RlState)"]["p50_us"]
    print(f"{r['members']} members of {r['layers']} x {r['hidden']}, threads {r['threads']}")
    print("\nsingle state (us)                      p50      p99     mean   p50/member")
    for name, v in single.items():
        base = single[_baseline(name)]["p50_us"]
        print(
            f"  {name:<34} {v['p50_us']:8.2f} {v['p99_us']:8.2f} {v['mean_us']:8.2f} "
            f"{v['p50_us'] / base:10.2f}"
        )
    print("\npredict_batch (M states/s)     member      mean      vote   member/mean  member/vote")
    for rows, v in r["batch_states_per_s"].items():
        m, a, b = (v[k] / 1e6 for k in ("member", "mean", "vote"))
        print(f"  {rows:<24} {m:9.3f} {a:9.3f} {b:9.3f} {m / a:12.2f} {m / b:12.2f}")
    if r.get("layouts"):
        print("\ntrunk layouts, io_binding floor p50 (us)      1 row   256 rows")
        for name, v in r["layouts"].items():
            print(f"  {name:<40} {v['p50_us@1']:9.2f} {v['p50_us@256']:10.2f}")
    ratio = {k: single[f"{k} predict(RlState)"]["p50_us"] / ref for k in ("mean", "vote")}
    hand = single["by hand (guide Example 2)"]["p50_us"] / ref
    r["ratios"] = {**{f"{k} / member": v for k, v in ratio.items()}, "by hand / member": hand}
    print(f"\nratios (p50 of predict(RlState)), target <= {TARGET}x")
    for k, v in ratio.items():
        print(f"  {'MET   ' if v <= TARGET else 'MISSED'} {k} ensemble / one member   {v:5.2f}x")
    print(f"         the guide's by-hand vote / one member  {hand:5.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--members", type=int, default=3, help="ensemble members (3)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden width (128)")
    parser.add_argument("--layers", type=int, default=2, help="hidden layers (2)")
    parser.add_argument(
        "--threads", type=int, help="onnxruntime intra-op threads (default: its own, one a core)"
    )
    parser.add_argument("--layouts", action="store_true", help="also time other trunk layouts")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="otonom-ens-bench-") as folder:
        tmp = Path(folder)
        with contextlib.redirect_stdout(io.StringIO()):
            nets, states = build(tmp, args.members, args.hidden, args.layers)
        result = measure(args, tmp, states)
        if args.layouts:
            result["layouts"] = layouts(nets, tmp, states, args)
    result.update(
        members=args.members,
        hidden=args.hidden,
        layers=args.layers,
        threads=args.threads,
        command=" ".join([".venv/bin/python", "bench/ensemble.py", *(argv or sys.argv[1:])]),
    )
    report(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
