"""An ensemble model's predict latency against one member's (issue 14, "Ensembles of policies").

Usage::

    .venv/bin/python bench/ensemble.py [--quick] [--members 3] [--hidden 128] [--layers 2]
                                       [--threads N] [--layouts] [--ops] [--out FILE.json]

Builds ``--members`` PolicyNet members (random initialisation, seeds 0, 1, ...: the latency
does not depend on training) and exports, in a temporary folder, each member alone
(``export_onnx``) and all of them as one model (``otonom_trainer.ensemble.export_ensemble``,
combine ``mean`` and ``vote``). Each is loaded through ``load_rl_policy`` (onnxruntime's
default threads, as a daemon loads it; ``--threads 1`` as the backtester does) and measured,
interleaved round by round:

* ``predict(RlState)`` and ``predict(array (34,))`` of member 0, of the mean and of the vote
  ensemble, and the guide's ensemble by hand (Example 2: each member's ``predict``, then
  ``max(set(votes), key=votes.count)`` and ``np.mean(strengths)``);
* the bare pre-bound io_binding run of member 0's, the mean's and the vote's graph (the floor
  ``predict`` builds on), each session made by the runtime's own ``make_session`` and run
  through its ``_runner`` (bench/_ensemble_layouts.py, ``floor``): member and ensemble timed
  the same way;
* ``predict_batch`` at 10 rows (a backtest day of ten symbols), 256 and 4096 rows;
* with ``--layouts``: other graphs built with ``onnx.helper`` from the same members' weights
  (the first layers fused into one Gemm + Split, block-diagonal Gemms, batched MatMuls; each
  checked equal to the shipped graph, mean and vote) and the lower bounds (2 or 3 members'
  trunks alone, no combining step): onnxruntime's node count after its optimisations, the
  floor's p50 at 1, 10, 256 and 4,096 rows and its ratio to one member's;
* with ``--ops``: one-node graphs of the ops these graphs use, at one row (what a node adds).

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
import torch
from _ensemble_layouts import LAYOUT_ROWS, check_layouts, floor, layout_graphs, ops, time_layouts

import otonom_schema as s
from otonom_runtime.bench import interleaved_latency, throughput
from otonom_runtime.policy import load_rl_policy
from otonom_schema.synthetic import random_history
from otonom_trainer.ensemble import EnsembleMember, export_ensemble, member_weights
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


def layouts(
    nets: Sequence[PolicyNet], tmp: Path, states: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    """The layouts' check against the shipped graphs and their p50s at ``LAYOUT_ROWS`` rows."""
    weights = [member_weights(n) for n in nets]
    calls, rounds = (1000, 3) if args.quick else (4000, 6)
    graphs = layout_graphs(weights, tmp / "member_0.onnx")
    checks = check_layouts(graphs, np.ascontiguousarray(states[:256]))
    return {"timings": time_layouts(graphs, states, args.threads, calls, rounds), "checks": checks}


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
        "member io_binding floor": floor(tmp / "member_0.onnx", states[-1:], args.threads),
        "mean io_binding floor": floor(tmp / "ensemble_mean.onnx", states[-1:], args.threads),
        "vote io_binding floor": floor(tmp / "ensemble_vote.onnx", states[-1:], args.threads),
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


def _equal(name: str, checks: dict[str, dict[str, Any]]) -> str:
    """``yes`` when the layout's mean and vote graphs both equal the shipped ones (allclose and
    the same argmax on every row), ``NO`` otherwise; ``-`` for what is not a layout."""
    mine = [v for k, v in checks.items() if k.rsplit(", ", 1)[0] == name.rsplit(", ", 1)[0]]
    if not mine or name.startswith("shipped"):
        return "-"
    ok = all(v["allclose"] and v["same_argmax"] for v in mine)
    return ("yes" if ok else "NO") + f" ({max(v['max_abs_diff'] for v in mine):.0e})"


def report_layouts(r: dict[str, Any]) -> None:
    """The layouts' table: ORT nodes, equal to the shipped graph, p50 (us) and / one member."""
    timings, checks = r["timings"], r["checks"]
    ref = timings["one member"]
    head = "".join(f"{f'{n} row' + ('s' if n > 1 else ''):>17}" for n in LAYOUT_ROWS)
    print("\nlayouts: io_binding floor via make_session, p50 us (x one member)")
    print(f"  {'graph':<46} {'nodes':>5} {'equal (max diff)':>16}{head}")
    for name, v in timings.items():
        cells = "".join(
            f"{v[f'p50_us@{n}']:10.2f} ({v[f'p50_us@{n}'] / ref[f'p50_us@{n}']:4.2f})"
            for n in LAYOUT_ROWS
        )
        print(f"  {name:<46} {int(v['ort_nodes']):>5} {_equal(name, checks):>16}{cells}")


def report_ops(r: dict[str, dict[str, float]]) -> None:
    """The one-node graphs' table (one row)."""
    print("\none-node graphs, one row: p50 us of the graph; node_us = p50 - trivial graph's + a")
    print("trivial node's own cost ((Relu x9 chain - Relu) / 8)")
    print(f"  {'op':<34} {'nodes':>5} {'p50':>8} {'node_us':>8}")
    for name, v in r.items():
        print(f"  {name:<34} {int(v['ort_nodes']):>5} {v['p50_us']:8.2f} {v['node_us']:8.2f}")


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
        report_layouts(r["layouts"])
    if r.get("ops"):
        report_ops(r["ops"])
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
    parser.add_argument(
        "--layouts", action="store_true", help="also time other layouts and lower bounds"
    )
    parser.add_argument("--ops", action="store_true", help="also time one-node graphs")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="otonom-ens-bench-") as folder:
        tmp = Path(folder)
        with contextlib.redirect_stdout(io.StringIO()):
            nets, states = build(tmp, args.members, args.hidden, args.layers)
        result = measure(args, tmp, states)
        if args.layouts:
            result["layouts"] = layouts(nets, tmp, states, args)
        if args.ops:
            calls, rounds = (1000, 3) if args.quick else (4000, 6)
            result["ops"] = ops(args.threads, calls, rounds)
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
