"""Offline dataset throughput: rows per second, against the naive per-row builder in the same run.

Usage::

    .venv/bin/python bench/dataset.py [--symbols 10] [--years 10] [--sample 2000] \
        [--repeats 3] [--clock wall|cpu] [--out FILE.json]

A SQLite store in a temporary folder gets the synthetic market (``--symbols`` symbols x
``--years`` years, seed 7) and one backtest of the baseline strategy over all of it after 180
days of warm-up (untimed). Then, timed:

* ``OfflineDatasetGenerator.generate_dataset`` over every symbol and the whole range (queries,
  features, row picking; the best of ``--repeats`` runs, each on a fresh generator);
* the SQL-read floor: the reads that dataset needs, with the SQL of commit 4251276 (frozen in
  ``FLOOR_SQL``: per symbol its decisions, its bars from ``LOOKBACK - 1`` bars before the first
  decision and its news from ``SENTIMENT_MAX_AGE_DAYS`` before it, then the macro series), run
  by the ``sqlite3`` driver alone on its own connection and fetched as its tuples, the cyclic
  garbage collector off (the driver's best case; best of ``--repeats``, interleaved with the
  runs above). The ratio ``generate_dataset / floor`` (rows/s over rows/s) is printed;
* for the breakdown, ``compute_states`` alone on the same bars, news, macro and portfolios (data
  already in memory): the feature maths inside the figure above;
* the peer: the naive path, ``RlStateBuilder.build_state`` once per row with the decision's
  portfolio, on ``--sample`` rows spread over all symbols and dates, extrapolated to rows/s.
  Its states are checked equal to the dataset's rows.

A row is one decision (one symbol on one day). Target: generate_dataset >= 0.7x the SQL-read
floor (issue 13; the absolute 200k rows/s target is withdrawn).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _clock import add_clock_option, chosen_clock
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
CLOCK = time.perf_counter  # what each subject is timed by (--clock)

# The floor's SQL, verbatim as otonom_trainer.dataset read it at commit 4251276 (the bench's
# floor must not change to flatter the ratio). The store then had no sentiment sources; the
# bench store holds only the demo's ("synthetic"), so these read the same rows.
FLOOR_SQL = {
    "decisions": """
    SELECT d.date, d.action, d.strength, d.position, d.leverage, d.cash_fraction,
           d.days_since_last_trade
    FROM decisions d JOIN symbols s ON d.symbol_id = s.id
    WHERE d.run_id = :run_id AND s.name = :symbol AND d.date >= :start AND d.date <= :end
    ORDER BY d.date
    """,
    "bars": """
    SELECT b.date, b.open, b.high, b.low, b.close, b.volume
    FROM bars b JOIN symbols s ON b.symbol_id = s.id
    WHERE s.name = :symbol AND b.date <= :end AND b.date >= COALESCE(
        (SELECT MIN(w.date) FROM (
            SELECT p.date FROM bars p JOIN symbols ps ON p.symbol_id = ps.id
            WHERE ps.name = :symbol AND p.date < :first
            ORDER BY p.date DESC LIMIT :back
        ) w),
        :first)
    ORDER BY b.date
    """,
    "news": """
    SELECT n.date, n.score
    FROM news_sentiment n JOIN symbols s ON n.symbol_id = s.id
    WHERE s.name = :symbol AND n.date >= :start AND n.date <= :end
    ORDER BY n.date
    """,
    "macro": """
    SELECT m.date, m.score
    FROM macro_sentiment m
    WHERE m.date >= :start AND m.date <= :end
    ORDER BY m.date
    """,
}


def floor_reads(
    db: Path, run_id: int, spans: dict[str, tuple[dt.date, dt.date]], start: dt.date, end: dt.date
) -> tuple[float, int]:
    """Seconds for the ``FLOOR_SQL`` reads of a dataset whose rows for each symbol are dated
    ``spans[symbol]`` (first, last), by the ``sqlite3`` driver alone (``fetchall``), the cyclic
    garbage collector off; and the number of rows read."""
    age = dt.timedelta(days=int(s.MATHS_PARAMS["SENTIMENT_MAX_AGE_DAYS"]))
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        was_on = gc.isenabled()
        gc.disable()
        try:
            t0 = CLOCK()
            n = 0
            for name, (first, last) in spans.items():
                days = {"symbol": name, "start": start.isoformat(), "end": end.isoformat()}
                n += len(
                    conn.execute(FLOOR_SQL["decisions"], {"run_id": run_id, **days}).fetchall()
                )
                bars = {"first": first.isoformat(), "end": last.isoformat(), "back": s.LOOKBACK - 1}
                n += len(conn.execute(FLOOR_SQL["bars"], {"symbol": name, **bars}).fetchall())
                news = {"start": (first - age).isoformat(), "end": last.isoformat()}
                n += len(conn.execute(FLOOR_SQL["news"], {"symbol": name, **news}).fetchall())
            lo = min(f for f, _ in spans.values()) - age
            hi = max(last for _, last in spans.values())
            macro = {"start": lo.isoformat(), "end": hi.isoformat()}
            n += len(conn.execute(FLOOR_SQL["macro"], macro).fetchall())
            took = CLOCK() - t0
        finally:
            if was_on:
                gc.enable()
    finally:
        conn.close()
    return took, n


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
    add_clock_option(parser)
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = chosen_clock(args)

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
        best, floor, floor_rows = float("inf"), float("inf"), 0
        for _ in range(args.repeats):
            gen = OfflineDatasetGenerator(session)
            t0 = CLOCK()
            ds = gen.generate_dataset(symbols, start, end)
            best = min(best, CLOCK() - t0)
            spans = {
                name: (
                    ds.dates[ds.symbols == name][0].item(),
                    ds.dates[ds.symbols == name][-1].item(),
                )
                for name in symbols
            }
            took, floor_rows = floor_reads(tmp / "store.db", run_id, spans, start, end)
            floor = min(floor, took)
        rows = len(ds)
        results["generate_dataset (vectorised)"] = {
            "rows": rows,
            "seconds": best,
            "per_s": rows / best,
        }
        results["  SQL-read floor (driver alone)"] = {
            "rows": rows,
            "seconds": floor,
            "per_s": rows / floor,
            "rows_read": floor_rows,
        }

        # breakdown: the feature maths alone, on data already in memory
        macro = load_macro(session, source=SYNTHETIC_SOURCE, end=end)  # the demo symbols
        inputs = []
        for name in symbols:
            history = load_history(session, name, end=end)
            mask = ds.symbols == name
            portfolio = np.repeat(ds.states[mask][:1, s.PORTFOLIO_COLUMNS], len(history), axis=0)
            inputs.append((history, portfolio.astype(np.float64), load_news(session, name)))
        t0 = CLOCK()
        for history, portfolio, news in inputs:
            s.compute_states(history, portfolio, news=news, macro=macro)
        maths = CLOCK() - t0
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
        t0 = CLOCK()
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
        naive = CLOCK() - t0
        results["build_state per row (naive, peer)"] = {
            "rows": len(sample),
            "seconds": naive,
            "per_s": len(sample) / naive,
            "mismatches": mismatches,
        }

    print(
        f"machine: {platform.machine()}, python {platform.python_version()}, "
        f"{args.symbols} symbols x {args.years} years ({start} .. {end}), SQLite, "
        f"{rows} decision rows, {args.clock} clock"
    )
    peer = results["build_state per row (naive, peer)"]["per_s"]
    print(f"\n{'subject':<40}{'rows':>9}{'seconds':>10}{'rows/s':>13}  vs peer")
    for name, r in results.items():
        ratio = r["per_s"] / peer
        print(f"  {name:<38}{r['rows']:>9}{r['seconds']:>10.3f}{r['per_s']:>13,.0f}  {ratio:6.1f}")
    vectorised = results["generate_dataset (vectorised)"]["per_s"]
    print(f"\nnaive states equal to the dataset rows: {len(sample) - mismatches}/{len(sample)}")
    ratio = vectorised / results["  SQL-read floor (driver alone)"]["per_s"]
    results["ratio_vs_floor"] = ratio
    print(f"SQL-read floor: {floor_rows} rows read by the driver in {floor * 1e3:.1f} ms")
    print("\ntargets")
    ok = ratio >= 0.7
    verdict = "MET   " if ok else "MISSED"
    print(f"  {verdict} generate_dataset >= 0.7x the SQL-read floor ({ratio:.2f}x)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
