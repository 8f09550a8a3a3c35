"""Training throughput: our behaviour-cloning trainer against d3rlpy's DiscreteBC, same data.

Usage::

    pip install "otonom-trainer[bench]"      # d3rlpy, a benchmark-only extra
    .venv/bin/python bench/train.py [--rows 200000] [--epochs 3] [--out FILE.json]

Data: ``--rows`` states from ``otonom_schema.compute_states`` over synthetic markets
(``otonom_runtime.synth``), labelled by the baseline ensemble's vote on each state (the tech,
news and risk analysts of ``strategies/baseline_v1.yaml``), so the task is the real one. The
last 10 % of rows (by date) are held out. Both learners get the same network shape (34 -> 128
-> 128 -> 3, ReLU), batch 256, Adam, lr 1e-3, on the CPU.

* ours: ``BehaviorCloningTrainer`` (action + strength heads, dropout 0.1), wall time of
  ``train()`` for ``--epochs`` epochs, which includes its per-epoch evaluation of both splits;
* peer: d3rlpy ``DiscreteBCConfig`` (action head only) ``fit`` for the same number of
  gradient steps.

Samples/s = gradient-step rows / wall time. Target (issue #5): ours >= 2.5x d3rlpy with equal
or better validation accuracy.
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

import otonom_schema as s
from otonom_runtime.backtest import engine_params
from otonom_runtime.ensemble import aggregate_signal_arrays
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import generate_market
from otonom_trainer.config import TrainingConfig
from otonom_trainer.train import BehaviorCloningTrainer

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
        patience=0,
        device="cpu",
        progress=False,
        seed=0,
    )
    trainer = BehaviorCloningTrainer(cfg)
    with redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        metrics = trainer.train()
        elapsed = time.perf_counter() - t0
    rows = metrics.train_size * metrics.epochs_run
    return {
        "samples": rows,
        "seconds": elapsed,
        "per_s": rows / elapsed,
        "val_acc": metrics.val_action_acc,
        "train_size": metrics.train_size,
        "val_size": metrics.val_size,
    }


def run_d3rlpy(ds: s.OfflineDataset, train_size: int, steps: int) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import d3rlpy
        from d3rlpy.dataset import MDPDataset
        from d3rlpy.models.encoders import VectorEncoderFactory

    logging.getLogger("d3rlpy").setLevel(logging.ERROR)
    x = ds.states[:train_size]
    y = ds.actions[:train_size].reshape(-1, 1)
    terminals = np.zeros(train_size, dtype=np.float32)
    terminals[-1] = 1.0
    data = MDPDataset(
        x,
        y,
        np.zeros(train_size, dtype=np.float32),
        terminals,
        action_space=d3rlpy.constants.ActionSpace.DISCRETE,
        action_size=3,
    )
    bc = d3rlpy.algos.DiscreteBCConfig(
        batch_size=256,
        learning_rate=1e-3,
        encoder_factory=VectorEncoderFactory(hidden_units=[128, 128]),
    ).create(device="cpu:0")
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        bc.fit(
            data,
            n_steps=steps,
            n_steps_per_epoch=steps,
            show_progress=False,
            save_interval=10**9,
            experiment_name="bench",
            with_timestamp=False,
            logger_adapter=d3rlpy.logging.NoopAdapterFactory(),  # no d3rlpy_logs/ folder
        )
        elapsed = time.perf_counter() - t0
    pred = bc.predict(ds.states[train_size:])
    val_acc = float((pred == ds.actions[train_size:]).mean())
    return {
        "samples": steps * 256,
        "seconds": elapsed,
        "per_s": steps * 256 / elapsed,
        "val_acc": val_acc,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    try:
        import d3rlpy  # noqa: F401
    except ImportError:
        print('d3rlpy is not installed: pip install "otonom-trainer[bench]"')
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="otonom-bench-train-"))
    ds = make_dataset(args.rows, tmp / "bench.npz")
    counts = ds.action_counts()
    ours = run_ours(tmp / "bench.npz", tmp / "model", args.epochs)
    steps = ours["samples"] // 256
    peer = run_d3rlpy(ds, ours["train_size"], steps)
    results = {"ours (BehaviorCloningTrainer)": ours, "d3rlpy DiscreteBC (peer)": peer}
    print(
        f"{len(ds)} rows ({', '.join(f'{a.name} {n}' for a, n in counts.items())}), "
        f"train {ours['train_size']} / val {ours['val_size']} (time split), "
        f"{args.epochs} epochs = {steps} steps of 256, CPU"
    )
    print(f"\n{'learner':<34}{'samples/s':>12}{'seconds':>10}{'val acc':>9}  vs peer")
    for name, r in results.items():
        print(
            f"  {name:<32}{r['per_s']:>12,.0f}{r['seconds']:>10.1f}{r['val_acc']:>9.3f}"
            f"  {r['per_s'] / peer['per_s']:6.2f}"
        )
    ratio = ours["per_s"] / peer["per_s"]
    ok = ratio >= 2.5 and ours["val_acc"] >= peer["val_acc"]
    print(
        f"\ntarget: >= 2.5x d3rlpy with equal or better val accuracy: "
        f"{'MET' if ok else 'MISSED'} ({ratio:.2f}x)"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
