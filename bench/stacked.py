"""Many policies at once: N seeds trained with stacked weights against N single-model runs.

Usage::

    .venv/bin/python bench/stacked.py                       # CPU, small: well under a minute
    python bench/stacked.py --device cuda --rows 200000 --n 32 --epochs 3 --sequential 4
    python bench/stacked.py --device cuda --parts single,plain --batch 4096 --epochs 3

Data: ``--rows`` ensemble-labelled states of synthetic markets (``bench/train.py``'s
``make_dataset``: the baseline's tech, news and risk vote), the time split (latest 10 % of
dates held out). Every learner: the guide's MLP (34 -> ``--hidden`` x 2 -> 3 + 1, dropout
0.1), Adam lr 1e-3, batch ``--batch``, ``--epochs`` epochs, no early stopping, on ``--device``.

Parts (``--parts``, default all three):

* ``single``: the project's single-model path, ``BehaviorCloningTrainer.train(export=False)``
  per seed, one after another: the whole call (reading the dataset, the epochs, the per-epoch
  evaluation, the checkpoints, metadata and plots), and "training only", its
  ``metrics.elapsed_s`` (the same without metadata and plots). ``--sequential K`` times the
  first K of the N seeds (a run's speed does not depend on how many follow it); samples/s =
  train rows x epochs / seconds, summed over the runs.
* ``stacked``: ``otonom_trainer.stacked.train_many`` over the N seeds (the same outputs per
  member), and its ratio to ``single`` (target on a GPU: >= 20x at N = 32). For the seeds both
  ran, the held-out actions are compared (the issue's bar: >= 99.5 % identical, accuracy
  within 0.2 points).
* ``plain``: a plain torch loop of the same net as the single model's peer: ``nn.Sequential``
  layers, ``torch.optim.Adam``, cross-entropy + the strength MSE on BUY/SELL rows, the train
  split resident on the device, one ``randperm`` per epoch on the device, batches by index, no
  host sync in the loop, no evaluation (the floor a trainer can reach). Printed with the
  single model's ratio to it (the issue: at least as fast). On the CPU it runs on one intra-op
  thread, the trainer's choice for a net this small (two threads on a shared 2-core machine
  stall it 3-4x: the comparison is then of thread stalls, not of the loops).

On CUDA each timed part is preceded by an untimed warm-up (CUDA context, cuBLAS, imports) and
ends with ``torch.cuda.synchronize()``. ``--out FILE.json`` writes the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train import make_dataset

from otonom_schema import OfflineDataset
from otonom_trainer.config import TrainingConfig
from otonom_trainer.stacked import train_many
from otonom_trainer.train import BehaviorCloningTrainer, split_rows


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _config(args: argparse.Namespace, path: Path, out: Path, epochs: int) -> TrainingConfig:
    return TrainingConfig(
        dataset_path=str(path),
        output_dir=str(out),
        batch_size=args.batch,
        lr=1e-3,
        max_epochs=epochs,
        hidden_dim=args.hidden,
        num_layers=2,
        patience=0,
        device=args.device,
        progress=False,
        seed=0,
    )


def run_single(args: argparse.Namespace, path: Path, tmp: Path, seeds: list[int]) -> dict[str, Any]:
    """``BehaviorCloningTrainer.train`` per seed, one after another."""
    cfg = _config(args, path, tmp / "single", args.epochs)
    with redirect_stdout(io.StringIO()):  # warm-up: imports, CUDA context, plots
        BehaviorCloningTrainer(_config(args, path, tmp / "warm", 1)).train(export=False)
    trainers, samples, training = [], 0, 0.0
    _sync(args.device)
    t0 = time.perf_counter()
    for s in seeds:
        trainer = BehaviorCloningTrainer(
            cfg.replace(seed=s, output_dir=str(tmp / f"single_{s}")), out=io.StringIO()
        )
        metrics = trainer.train(export=False)
        samples += metrics.train_size * metrics.epochs_run
        training += metrics.elapsed_s
        trainers.append(trainer)
    _sync(args.device)
    seconds = time.perf_counter() - t0
    accs = [t.metrics.val_action_acc for t in trainers]
    return {"runs": len(seeds), "samples": samples, "seconds": seconds,
            "per_s": samples / seconds, "val_acc": accs, "trainers": trainers,
            "training_seconds": training, "training_per_s": samples / training}  # fmt: skip


def run_stacked(
    args: argparse.Namespace, path: Path, tmp: Path, seeds: list[int]
) -> dict[str, Any]:
    """``train_many`` over the seeds."""
    cfg = _config(args, path, tmp / "many", args.epochs)
    train_many(
        _config(args, path, tmp / "warm_many", 1), seeds[:2], export=False, out=io.StringIO()
    )
    _sync(args.device)
    t0 = time.perf_counter()
    members = train_many(cfg, seeds, export=False, out=io.StringIO())
    _sync(args.device)
    seconds = time.perf_counter() - t0
    samples = sum(m.metrics.train_size * m.metrics.epochs_run for m in members)
    accs = [m.metrics.val_action_acc for m in members]
    return {"n": len(seeds), "samples": samples, "seconds": seconds,
            "per_s": samples / seconds, "val_acc": accs, "members": members}  # fmt: skip


def _plain_epochs(
    ds: OfflineDataset, train_rows: np.ndarray, args: argparse.Namespace, epochs: int
) -> tuple[int, float, nn.Module]:
    device = torch.device(args.device)
    x = torch.from_numpy(np.ascontiguousarray(ds.states[train_rows])).to(device)
    y = torch.from_numpy(ds.actions[train_rows].astype(np.int64)).to(device)
    t = torch.from_numpy(ds.strengths[train_rows].astype(np.float32)).to(device)
    h = args.hidden
    torch.manual_seed(0)
    layers = [nn.Linear(x.shape[1], h), nn.ReLU(), nn.Dropout(0.1)]
    layers += [nn.Linear(h, h), nn.ReLU(), nn.Dropout(0.1), nn.Linear(h, 4)]
    net = nn.Sequential(*layers).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n, bs = x.shape[0], args.batch
    _sync(args.device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        for b in range(0, n, bs):
            idx = perm[b : b + bs]
            out = net(x[idx])
            trade = (y[idx] != 0).float()
            err = torch.sigmoid(out[:, 3]) - t[idx]
            loss = nn.functional.cross_entropy(out[:, :3], y[idx]) + (
                trade * err * err
            ).sum() / trade.sum().clamp_min(1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    _sync(args.device)
    return n * epochs, time.perf_counter() - t0, net


def run_plain(args: argparse.Namespace, ds: OfflineDataset) -> dict[str, Any]:
    """The plain torch loop (see the module docstring), after a one-epoch warm-up."""
    split = split_rows(ds.dates, 0.1, "time", 0)
    before = torch.get_num_threads()
    if args.device == "cpu":  # the trainer's setting for a net this small (see the docstring)
        torch.set_num_threads(1)
    try:
        _plain_epochs(ds, split.train, args, 1)
        samples, seconds, net = _plain_epochs(ds, split.train, args, args.epochs)
    finally:
        torch.set_num_threads(before)
    net.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(ds.states[split.val])).to(args.device)
        pred = net(x)[:, :3].argmax(1).cpu().numpy()
    acc = float((pred == ds.actions[split.val]).mean())
    return {"samples": samples, "seconds": seconds, "per_s": samples / seconds, "val_acc": [acc]}


def agreement(single: dict[str, Any], stacked: dict[str, Any]) -> list[dict[str, float]]:
    """Per seed both trained: the share of identical held-out actions and the accuracy gap."""
    rows = []
    for ref, member in zip(single["trainers"], stacked["members"], strict=False):
        x = torch.from_numpy(ref.val_states()).to(ref.model.state_dict()["trunk.0.weight"].device)
        with torch.no_grad():
            a = ref.model(x)[0].argmax(1)
            b = member.model.to(x.device)(x)[0].argmax(1)
        rows.append({
            "seed": member.seed,
            "identical": float((a == b).double().mean()),
            "acc_gap_points": 100 * abs(ref.metrics.val_action_acc - member.metrics.val_action_acc),
        })  # fmt: skip
    return rows


def _line(name: str, r: dict[str, Any], ref: float | None) -> str:
    acc = float(np.mean(r["val_acc"]))
    ratio = f"{r['per_s'] / ref:8.2f}x" if ref else ""
    return f"  {name:<44}{r['per_s']:>14,.0f}{r['seconds']:>10.2f}{acc:>9.3f}{ratio}"


def report(args: argparse.Namespace, results: dict[str, Any], seeds: list[int]) -> None:
    single, stacked, plain = (results.get(k) for k in ("single", "stacked", "plain"))
    print(f"\n{'learner':<46}{'samples/s':>14}{'seconds':>10}{'val acc':>9}   ratio")
    if plain:
        print(_line("plain torch loop (one model, no evaluation)", plain, None))
    if single:
        vs = "  vs plain" if plain else ""
        name = f"single-model path, {single['runs']} runs in turn"
        print(_line(name, single, plain["per_s"] if plain else None) + vs)
        fit = {**single, "per_s": single["training_per_s"], "seconds": single["training_seconds"]}
        name = "  same, training only (metrics.elapsed_s)"
        print(_line(name, fit, plain["per_s"] if plain else None) + vs)
    if stacked:
        name = f"stacked path (train_many), N = {stacked['n']}"
        ref = single["per_s"] if single else None
        print(_line(name, stacked, ref) + ("  vs single" if single else ""))
    if single and stacked:
        rows = agreement(single, stacked)
        results["agreement"] = rows
        worst = min(r["identical"] for r in rows)
        gap = max(r["acc_gap_points"] for r in rows)
        print(
            f"\nN = {len(seeds)} at once vs one by one: {stacked['per_s'] / single['per_s']:.2f}x "
            f"(GPU target >= 20x at N = 32); held-out actions identical >= {100 * worst:.2f} % "
            f"over {len(rows)} seeds, accuracy gap <= {gap:.2f} points (bar: 99.5 %, 0.2)"
        )
    if single and plain:
        print(
            f"single-model path / plain torch loop: {single['per_s'] / plain['per_s']:.2f}x whole "
            f"call, {single['training_per_s'] / plain['per_s']:.2f}x training (target >= 1)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    for flag, default, what in (
        ("--rows", 20_000, "dataset rows"),
        ("--n", 4, "policies trained at once"),
        ("--epochs", 2, "epochs per run"),
        ("--batch", 256, "batch size"),
        ("--hidden", 128, "hidden width"),
    ):
        parser.add_argument(flag, type=int, default=default, help=f"{what} (default {default})")
    parser.add_argument(
        "--sequential", type=int, help="time this many of the N single-model runs (default all N)"
    )
    parser.add_argument(
        "--parts", default="single,stacked,plain", help="comma-separated: single, stacked, plain"
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    seeds = [1000 + i for i in range(args.n)]
    tmp = Path(tempfile.mkdtemp(prefix="otonom-bench-stacked-"))
    ds = make_dataset(args.rows, tmp / "bench.npz")
    print(
        f"{len(ds)} rows, time split; {args.device}, batch {args.batch}, hidden {args.hidden}, "
        f"{args.epochs} epochs{f', N = {args.n}' if 'stacked' in parts else ''}, "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else "")
    )
    results: dict[str, Any] = {}
    if "plain" in parts:
        results["plain"] = run_plain(args, ds)
    if "single" in parts:
        results["single"] = run_single(args, tmp / "bench.npz", tmp, seeds[: args.sequential])
    if "stacked" in parts:
        results["stacked"] = run_stacked(args, tmp / "bench.npz", tmp, seeds)
    report(args, results, seeds)
    if args.out:
        plain = {
            k: {f: v for f, v in r.items() if f not in ("trainers", "members")}
            if isinstance(r, dict)
            else r
            for k, r in results.items()
        }
        args.out.write_text(json.dumps(plain, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
