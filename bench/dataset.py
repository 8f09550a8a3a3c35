"""Offline dataset throughput: rows per second, against the naive per-row builder in the same run.

Usage::

    .venv/bin/python bench/dataset.py [--symbols 10] [--years 10] [--sample 2000] [--out FILE.json]

A SQLite store in a temporary folder gets the synthetic market (``--symbols`` symbols x
``--years`` years, seed 7) and one backtest of the baseline strategy over all of it after 180
days of warm-up (untimed). Then, timed:

* ``OfflineDatasetGenerator.generate_dataset`` over every symbol and the whole range (queries,
  features, row picking; the best of ``--repeats`` runs, each on a fresh generator), and of
  that run the time inside its SQL reads (the driver running the queries and returning the
  rows as Python tuples, before any numpy);
* for the breakdown, ``compute_states`` alone on the same bars, news, macro and portfolios (data
  already in memory): the feature maths inside the figure above;
* the peer: the naive path, ``RlStateBuilder.build_state`` once per row with the decision's
  portfolio, on ``--sample`` rows spread over all symbols and dates, extrapolated to rows/s.
  Its states are checked equal to the dataset's rows.

A row is one decision (one symbol on one day). Target: >= 200k rows/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

import otonom_schema as s
from otonom_runtime.backtest import run_backtest
from otonom_runtime.builder import RlStateBuilder
from otonom_runtime.store import (
    SYNTHETIC_SOURCE,
    Decision,
    Symbol,
    dispose_engines,
    get_session,
    init_db,
    load_history,
    load_macro,
    load_news,
)
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import write_synthetic
from otonom_trainer.dataset import OfflineDatasetGenerator

ROOT = Path(__file__).resolve().parents[1]


def _time_reads(gen: OfflineDatasetGenerator) -> list[float]:
    """Make ``gen`` add the seconds spent in its SQL reads (the driver executing each query
    and returning its rows as Python tuples) to the returned one-element list."""
    spent = [0.0]
    fetch = gen._fetch

    def timed(*args: Any) -> list[Any]:
        t0 = time.perf_counter()
        try:
            return fetch(*args)
        finally:
            spent[0] += time.perf_counter() - t0

    gen._fetch = timed  # type: ignore[method-assign]
    return spent


def main(argv: list[str] | None = None) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="otonom-bench-ds-"))
    try:
        return _bench(argv, tmp)
    finally:
        dispose_engines()
        shutil.rmtree(tmp, ignore_errors=True)


def _bench(argv: list[str] | None, tmp: Path) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--sample", type=int, default=2000, help="rows for the naive path")
    parser.add_argument("--repeats", type=int, default=3, help="timed generate_dataset runs")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)

    url = f"sqlite:///{tmp / 'store.db'}"
    init_db(url)
    symbols = [f"DEMO-{i:02d}" for i in range(args.symbols)]
    first = dt.date(2024 - args.years, 1, 1)
    start, end = first + dt.timedelta(days=180), dt.date(2023, 12, 31)
    with get_session(url) as session:
        write_synthetic(session, symbols, first, end, 7)
    with get_session(url) as session:
        strategy = load_strategy(ROOT / "strategies" / "baseline_v1.yaml")
        run_id = run_backtest(session, strategy, symbols, start, end).run_id

    results: dict[str, Any] = {}
    with get_session(url) as session:
        best, best_reads = float("inf"), 0.0
        for _ in range(args.repeats):
            gen = OfflineDatasetGenerator(session)
            reads = _time_reads(gen)
            t0 = time.perf_counter()
            ds = gen.generate_dataset(symbols, start, end)
            took = time.perf_counter() - t0
            if took < best:
                best, best_reads = took, reads[0]
        rows = len(ds)
        results["generate_dataset (vectorised)"] = {
            "rows": rows,
            "seconds": best,
            "per_s": rows / best,
        }
        results["  of which SQL reads (driver rows)"] = {
            "rows": rows,
            "seconds": best_reads,
            "per_s": rows / best_reads,
        }

        # breakdown: the feature maths alone, on data already in memory
        macro = load_macro(session, source=SYNTHETIC_SOURCE, end=end)  # the demo symbols
        inputs = []
        for name in symbols:
            history = load_history(session, name, end=end)
            mask = ds.symbols == name
            portfolio = np.repeat(ds.states[mask][:1, s.PORTFOLIO_COLUMNS], len(history), axis=0)
            inputs.append((history, portfolio.astype(np.float64), load_news(session, name)))
        t0 = time.perf_counter()
        for history, portfolio, news in inputs:
            s.compute_states(history, portfolio, news=news, macro=macro)
        maths = time.perf_counter() - t0
        results["  of which compute_states (in memory)"] = {
            "rows": rows,
            "seconds": maths,
            "per_s": rows / maths,
        }

        # the peer: build_state once per row on a sample spread over symbols and dates
        picks = np.linspace(0, rows - 1, min(args.sample, rows), dtype=np.int64)
        wanted = {(str(ds.symbols[i]), ds.dates[i].item()): int(i) for i in picks}
        decisions = session.execute(
            select(Symbol.name, Decision)
            .join(Symbol, Decision.symbol_id == Symbol.id)
            .where(Decision.run_id == run_id)
        ).all()
        sample = [(name, d) for name, d in decisions if (name, d.date) in wanted]
        builder = RlStateBuilder(session)
        mismatches = 0
        t0 = time.perf_counter()
        for name, d in sample:
            state = builder.build_state(
                name,
                d.date,
                current_position=d.position,
                leverage=d.leverage,
                cash=d.cash_fraction * d.equity,
                portfolio_equity=d.equity,
                days_since_last_trade=d.days_since_last_trade,
            ).to_array()
            mismatches += not np.array_equal(state, ds.states[wanted[(name, d.date)]])
        naive = time.perf_counter() - t0
        results["build_state per row (naive, peer)"] = {
            "rows": len(sample),
            "seconds": naive,
            "per_s": len(sample) / naive,
            "mismatches": mismatches,
        }

    print(
        f"machine: {platform.machine()}, python {platform.python_version()}, "
        f"{args.symbols} symbols x {args.years} years ({start} .. {end}), SQLite, "
        f"{rows} decision rows"
    )
    peer = results["build_state per row (naive, peer)"]["per_s"]
    print(f"\n{'subject':<40}{'rows':>9}{'seconds':>10}{'rows/s':>13}  vs peer")
    for name, r in results.items():
        ratio = r["per_s"] / peer
        print(f"  {name:<38}{r['rows']:>9}{r['seconds']:>10.3f}{r['per_s']:>13,.0f}  {ratio:6.1f}")
    vectorised = results["generate_dataset (vectorised)"]["per_s"]
    print(f"\nnaive states equal to the dataset rows: {len(sample) - mismatches}/{len(sample)}")
    print("\ntargets")
    ok = vectorised >= 2e5
    print(f"  {'MET   ' if ok else 'MISSED'} generate_dataset >= 200k rows/s ({vectorised:,.0f})")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
