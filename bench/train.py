"""Training throughput: our behaviour-cloning trainer against d3rlpy's DiscreteBC, same data.

Usage::

    pip install "otonom-trainer[bench]"      # d3rlpy, a benchmark-only extra
    .venv/bin/python bench/train.py [--rows 200000] [--epochs 3] [--out FILE.json]

Data: ``--rows`` states from ``otonom_schema.compute_states`` over synthetic markets
(``otonom_runtime.synth``), labelled by the baseline ensemble's vote on each state (the tech,
news and risk analysts of ``strategies/baseline_v1.yaml``), so the task is the real one. The
last 10 % of rows (by date) are held out. Both learners get the same network shape (34 -> 128
-> 128 -> 3, ReLU), batch 256, Adam, lr 1e-3, the same action objective (cross-entropy +
0.5 x mean squared logit, DiscreteBC's default ``beta``; ours ``logit_penalty=0.5``), on the CPU.
Both learners train on our trainer's split (time split: the latest 10 % of dates are held out)
for ``--epochs`` x ``train_size // 256`` steps, and evaluate after every epoch.

* ours: ``BehaviorCloningTrainer`` (action + strength heads, dropout 0.1, gradient clipping),
  ``train()``. Two times: "training" is ``metrics.elapsed_s`` (reading the dataset, the epochs,
  the per-epoch evaluation of the validation split and of a 20,000-row train sample, the best
  epoch's checkpoints, the final validation pass); "whole call" adds writing metadata, history
  and the two PNG plots (about 1 s, mostly importing matplotlib).
* peer: d3rlpy ``DiscreteBCConfig`` (action head only), wall time of ``fit`` with an
  ``epoch_callback`` that predicts the same validation rows and train sample after every epoch;
  run at the default torch thread count and at one thread (our trainer's choice for a net this
  small on the CPU); the faster one is the reference.

``--repeats N`` runs every learner N times, interleaved, and keeps each one's fastest run (the
machine may be shared).

``--step-ratio`` (no d3rlpy needed; also printed after the learners) times one training step of
the bench's network (34 -> 128 -> 128 -> 3 + 1, batch 256, dropout 0.1, one intra-op thread:
forward, loss, backward, gradient clipping, optimizer step) with the trainer's fast path
(``FlatAdam`` on the flat parameter buffer) against ``torch.optim.Adam`` over the same flat
buffer and against the textbook step (``torch.optim.Adam`` over the 8 parameters,
``zero_grad`` and ``clip_grad_norm_``); the median of 7 interleaved rounds of 400 steps each.
Then ``optimizer.step()`` alone: ``FlatAdam`` against ``torch.optim.Adam`` over the 8
parameters (a fixed gradient, 7 x 2,000 steps). The ratios are torch's time / ours; the target
is >= 1.5x for the optimizer step.

Samples/s = gradient-step rows / seconds. Target (issue #5): ours >= 2.5x
d3rlpy with equal or better validation accuracy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch

import otonom_schema as s
from otonom_runtime.backtest import engine_params
from otonom_runtime.ensemble import aggregate_signal_arrays
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import generate_market
from otonom_trainer.config import TrainingConfig
from otonom_trainer.train import BehaviorCloningTrainer, train_eval_rows

ROOT = Path(__file__).resolve().parents[1]


def make_dataset(rows: int, path: Path) -> s.OfflineDataset:
    """Ensemble-labelled states of synthetic markets, ``rows`` of them, oldest dates first."""
    params = engine_params(load_strategy(ROOT / "strategies" / "baseline_v1.yaml"))
    parts, actions, strengths, symbols, dates = [], [], [], [], []
    total, i = 0, 0
    while total < rows:
        market = generate_market(f"BENCH-{i:03d}", dt.date(2000, 1, 1), dt.date(2023, 12, 31), 7)
        feats = s.market_feature_matrix(market.history, market.news, market.macro)[s.LOOKBACK :]
        vote = aggregate_signal_arrays(
            [params.tech.signals(feats), params.news.signals(feats), params.risk.signals(feats)],
            params.weights[:3],
            min_score=params.min_score,
        )
        parts.append(feats.astype(np.float32))
        actions.append(vote.actions)
        strengths.append(vote.strengths.astype(np.float32))
        symbols.append(np.full(feats.shape[0], market.symbol))
        dates.append(market.history.dates[s.LOOKBACK :])
        total += feats.shape[0]
        i += 1
    ds = s.OfflineDataset(
        states=np.concatenate(parts)[:rows],
        actions=np.concatenate(actions)[:rows],
        strengths=np.concatenate(strengths)[:rows],
        symbols=np.concatenate(symbols)[:rows],
        dates=np.concatenate(dates)[:rows],
        metadata={"source": "bench/train.py"},
    )
    s.save_dataset(ds, path)
    return ds


def run_ours(path: Path, out: Path, epochs: int) -> dict[str, Any]:
    cfg = TrainingConfig(
        dataset_path=str(path),
        output_dir=str(out),
        batch_size=256,
        lr=1e-3,
        max_epochs=epochs,
        hidden_dim=128,
        num_layers=2,
        logit_penalty=0.5,  # the peer's objective: DiscreteBC adds 0.5 * mean(logits^2)
        patience=0,
        device="cpu",
        progress=False,
        seed=0,
    )
    trainer = BehaviorCloningTrainer(cfg)
    with redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        metrics = trainer.train(export=False)  # training speed only
        elapsed = time.perf_counter() - t0
    rows = metrics.train_size * metrics.epochs_run
    return {
        "samples": rows,
        "seconds": metrics.elapsed_s,
        "per_s": rows / metrics.elapsed_s,
        "seconds_whole_call": elapsed,
        "per_s_whole_call": rows / elapsed,
        "val_acc": metrics.val_action_acc,
        "train_size": metrics.train_size,
        "val_size": metrics.val_size,
        "threads": torch.get_num_threads(),
        "split": trainer.split,
        "train_eval_rows": train_eval_rows(trainer.split.train, cfg.seed),
    }


def run_d3rlpy(
    ds: s.OfflineDataset,
    ours: dict[str, Any],
    epochs: int,
    threads: int,
) -> dict[str, Any]:
    """d3rlpy's DiscreteBC on our train split, ``epochs`` x ``train_size // 256`` steps, with the
    same per-epoch evaluation as ours (accuracy on our validation split and on our train-eval
    sample, through ``predict``), timed around ``fit``; ``threads`` intra-op threads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import d3rlpy
        from d3rlpy.dataset import MDPDataset
        from d3rlpy.models.encoders import VectorEncoderFactory

    logging.getLogger("d3rlpy").setLevel(logging.ERROR)
    split = ours["split"]
    train_rows, val_rows, eval_rows = split.train, split.val, ours["train_eval_rows"]
    n = int(train_rows.size)
    x = np.ascontiguousarray(ds.states[train_rows])
    y = ds.actions[train_rows].reshape(-1, 1)
    terminals = np.zeros(n, dtype=np.float32)
    terminals[-1] = 1.0
    data = MDPDataset(
        x,
        y,
        np.zeros(n, dtype=np.float32),
        terminals,
        action_space=d3rlpy.constants.ActionSpace.DISCRETE,
        action_size=3,
    )
    val_x, val_y = ds.states[val_rows], ds.actions[val_rows]
    ev_x, ev_y = ds.states[eval_rows], ds.actions[eval_rows]
    accs: list[tuple[float, float]] = []

    def evaluate(algo: Any, epoch: int, total_step: int) -> None:
        accs.append(
            (
                float((algo.predict(ev_x) == ev_y).mean()),
                float((algo.predict(val_x) == val_y).mean()),
            )
        )

    d3rlpy.seed(0)
    steps_per_epoch = n // 256
    steps = steps_per_epoch * epochs
    bc = d3rlpy.algos.DiscreteBCConfig(
        batch_size=256,
        learning_rate=1e-3,
        encoder_factory=VectorEncoderFactory(hidden_units=[128, 128]),
    ).create(device="cpu:0")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with (
            warnings.catch_warnings(),
            redirect_stdout(io.StringIO()),
            redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            bc.fit(
                data,
                n_steps=steps,
                n_steps_per_epoch=steps_per_epoch,
                show_progress=False,
                save_interval=10**9,
                experiment_name="bench",
                with_timestamp=False,
                logger_adapter=d3rlpy.logging.NoopAdapterFactory(),  # no d3rlpy_logs/ folder
                epoch_callback=evaluate,
            )
            elapsed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    return {
        "samples": steps * 256,
        "seconds": elapsed,
        "per_s": steps * 256 / elapsed,
        "val_acc": accs[-1][1],
        "train_acc": accs[-1][0],
        "threads": threads,
    }


def step_ratio(steps: int = 400, rounds: int = 7) -> dict[str, float]:
    """Microseconds per training step for the three optimizer paths (see the docstring)."""
    import statistics

    from torch import nn

    from otonom_trainer.model import PolicyNet
    from otonom_trainer.train import BehaviorCloningLoss, FlatAdam, clip_flat_grad_

    try:
        from otonom_trainer.training.optim import flatten_parameters
    except ImportError:  # the trainer before the training/ split
        from otonom_trainer.train import (  # type: ignore[attr-defined,no-redef]
            _flatten_parameters as flatten_parameters,
        )

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, s.STATE_DIM, generator=gen)
    y = torch.randint(0, 3, (256,), generator=gen)
    t = torch.rand(256, generator=gen)
    w = (y != 0).float() / max(1, int((y != 0).sum()))
    loss_fn = BehaviorCloningLoss()

    def flat_setup(kind: str) -> Any:
        torch.manual_seed(0)
        net = PolicyNet(s.STATE_DIM, 128, 2, 0.1)
        flat, _ = flatten_parameters(net)
        opt: Any
        if kind == "flat_adam":
            opt = FlatAdam(flat, lr=1e-3, weight_decay=1e-5)
        else:
            opt = torch.optim.Adam([flat], lr=1e-3, weight_decay=1e-5)
        grad = flat.grad

        def step() -> None:
            logits, strength = net(x)
            loss = loss_fn.batch_terms(logits, strength, y, t, w)
            grad.zero_()
            torch.autograd.backward(loss.total)
            clip_flat_grad_(grad, 1.0)
            opt.step()

        return step

    def textbook_setup() -> Any:
        torch.manual_seed(0)
        net = PolicyNet(s.STATE_DIM, 128, 2, 0.1)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)

        def step() -> None:
            opt.zero_grad()
            logits, strength = net(x)
            loss_fn.batch_terms(logits, strength, y, t, w).total.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()

        return step

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        paths = {
            "flat_adam": flat_setup("flat_adam"),
            "torch_adam_flat": flat_setup("torch_adam"),
            "torch_adam_textbook": textbook_setup(),
        }
        times: dict[str, list[float]] = {k: [] for k in paths}
        for step in paths.values():
            for _ in range(30):  # warm-up
                step()
        for _ in range(rounds):  # interleaved
            for name, step in paths.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                times[name].append((time.perf_counter() - t0) / steps * 1e6)
    finally:
        torch.set_num_threads(before)
    us = {k: statistics.median(v) for k, v in times.items()}
    opt_us = _optimizer_step_only(flatten_parameters, FlatAdam, rounds)
    return {
        **{f"{k}_us": v for k, v in us.items()},
        "ratio_vs_torch_adam_flat": us["torch_adam_flat"] / us["flat_adam"],
        "ratio_vs_textbook": us["torch_adam_textbook"] / us["flat_adam"],
        **{f"opt_{k}_us": v for k, v in opt_us.items()},
        "opt_ratio_vs_torch_adam": opt_us["torch_adam"] / opt_us["flat_adam"],
    }


def _optimizer_step_only(flatten: Any, flat_adam: Any, rounds: int) -> dict[str, float]:
    """Microseconds of ``optimizer.step()`` alone (a fixed gradient), one thread: ``FlatAdam``
    on the flat buffer against ``torch.optim.Adam`` over the net's 8 parameters."""
    import statistics

    from otonom_trainer.model import PolicyNet

    torch.manual_seed(0)
    ours_net = PolicyNet(s.STATE_DIM, 128, 2, 0.1)
    flat, _ = flatten(ours_net)
    flat.grad.normal_()
    ref_net = PolicyNet(s.STATE_DIM, 128, 2, 0.1)
    for q in ref_net.parameters():
        q.grad = torch.randn_like(q)
    opts = {
        "flat_adam": flat_adam(flat, lr=1e-3, weight_decay=1e-5),
        "torch_adam": torch.optim.Adam(ref_net.parameters(), lr=1e-3, weight_decay=1e-5),
    }
    steps = 2000
    times: dict[str, list[float]] = {k: [] for k in opts}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for opt in opts.values():
            for _ in range(100):
                opt.step()
        for _ in range(rounds):
            for name, opt in opts.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    opt.step()
                times[name].append((time.perf_counter() - t0) / steps * 1e6)
    finally:
        torch.set_num_threads(before)
    return {k: statistics.median(v) for k, v in times.items()}


def print_step_ratio(r: dict[str, float]) -> None:
    print("\ntraining step (batch 256, 34 -> 128 -> 128, 1 thread; median of 7 x 400 steps):")
    print(f"  FlatAdam, flat buffer (ours)          {r['flat_adam_us']:8.0f} us")
    print(
        f"  torch.optim.Adam, same flat buffer    {r['torch_adam_flat_us']:8.0f} us  "
        f"ratio {r['ratio_vs_torch_adam_flat']:.2f}x"
    )
    print(
        f"  torch.optim.Adam, per parameter       {r['torch_adam_textbook_us']:8.0f} us  "
        f"ratio {r['ratio_vs_textbook']:.2f}x"
    )
    print("optimizer.step() alone (a fixed gradient; median of 7 x 2000 steps):")
    print(f"  FlatAdam, flat buffer (ours)          {r['opt_flat_adam_us']:8.1f} us")
    print(
        f"  torch.optim.Adam, per parameter       {r['opt_torch_adam_us']:8.1f} us  "
        f"ratio {r['opt_ratio_vs_torch_adam']:.2f}x (target >= 1.5x)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--repeats", type=int, default=1, help="run every learner this many times, keep the best"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument(
        "--step-ratio", action="store_true", help="only the per-step optimizer ratio"
    )
    args = parser.parse_args(argv)
    if args.step_ratio:
        r = step_ratio()
        print_step_ratio(r)
        if args.out:
            args.out.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
        return 0
    try:
        import d3rlpy  # noqa: F401
    except ImportError:
        print('d3rlpy is not installed: pip install "otonom-trainer[bench]"')
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="otonom-bench-train-"))
    ds = make_dataset(args.rows, tmp / "bench.npz")
    counts = ds.action_counts()
    default_threads = torch.get_num_threads()
    runs: dict[str, list[dict[str, Any]]] = {}
    names = {
        "ours": "ours (BC trainer)",
        "peer": f"d3rlpy DiscreteBC, {default_threads} thr",
        "peer1": "d3rlpy DiscreteBC, 1 thread",
    }
    ours: dict[str, Any] = {}
    for _ in range(args.repeats):  # interleaved, so a busy spell hits every learner alike
        ours = run_ours(tmp / "bench.npz", tmp / "model", args.epochs)
        runs.setdefault("ours", []).append(ours)
        runs.setdefault("peer", []).append(run_d3rlpy(ds, ours, args.epochs, default_threads))
        if default_threads != 1:
            runs.setdefault("peer1", []).append(run_d3rlpy(ds, ours, args.epochs, 1))
    best = {k: max(v, key=lambda r: r["per_s"]) for k, v in runs.items()}
    peer = max((best[k] for k in best if k != "ours"), key=lambda r: r["per_s"])
    peer_acc = max(r["val_acc"] for k, v in runs.items() if k != "ours" for r in v)
    steps = ours["samples"] // 256
    print(
        f"{len(ds)} rows ({', '.join(f'{a.name} {n}' for a, n in counts.items())}), "
        f"train {ours['train_size']} / val {ours['val_size']} (time split, both learners), "
        f"{args.epochs} epochs = {steps} steps of 256, CPU, best of {args.repeats}"
    )
    print(f"\n{'learner':<34}{'samples/s':>12}{'seconds':>10}{'val acc':>9}  vs peer")
    rows = [(names["ours"] + ", training", best["ours"])]
    whole = max(runs["ours"], key=lambda r: r["per_s_whole_call"])
    rows.append(
        (
            "  same, whole train() call",
            {**whole, "per_s": whole["per_s_whole_call"], "seconds": whole["seconds_whole_call"]},
        )
    )
    rows += [(names[k], best[k]) for k in best if k != "ours"]
    for name, r in rows:
        print(
            f"  {name:<32}{r['per_s']:>12,.0f}{r['seconds']:>10.1f}{r['val_acc']:>9.3f}"
            f"  {r['per_s'] / peer['per_s']:6.2f}"
        )
    ratio = best["ours"]["per_s"] / peer["per_s"]
    ok = ratio >= 2.5 and best["ours"]["val_acc"] >= peer_acc
    print(
        f"\ntarget: >= 2.5x d3rlpy (its faster thread setting) with equal or better val accuracy:"
        f" {'MET' if ok else 'MISSED'} ({ratio:.2f}x training, "
        f"{whole['per_s_whole_call'] / peer['per_s']:.2f}x whole call; val acc "
        f"{best['ours']['val_acc']:.4f} vs {peer_acc:.4f})"
    )
    print_step_ratio(step_ratio())
    if args.out:
        plain = {
            names[k]: [{f: r[f] for f in r if f not in ("split", "train_eval_rows")} for r in v]
            for k, v in runs.items()
        }
        args.out.write_text(json.dumps(plain, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
