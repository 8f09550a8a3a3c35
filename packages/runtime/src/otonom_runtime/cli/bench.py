"""``otonom bench``: a model's predict latency and throughput on this machine."""

from __future__ import annotations

import argparse

from otonom_schema import parse_iso_date

__all__ = ["add_bench_commands"]


def _cmd_bench(args: argparse.Namespace) -> int:
    from otonom_runtime.bench import format_report, run_bench

    url = None
    if args.symbol is not None:
        from otonom_runtime.store import default_database_url

        url = args.database_url or default_database_url()
    calls, rounds, budget = (500, 2, 0.2) if args.quick else (2000, 3, 0.6)
    result = run_bench(
        args.model,
        database_url=url,
        symbol=args.symbol,
        day=args.date,
        calls=calls,
        rounds=rounds,
        budget_s=budget,
    )
    print(format_report(result))
    return 0


def add_bench_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "bench",
        help="measure predict latency and throughput of a model on this machine",
        description=(
            "Measure a policy's single-state predict latency (p50/p99/mean), predict_batch "
            "throughput at 1, 256 and 4096 rows and, with --symbol, a daemon tick "
            "(build_state from the store + predict), each against a bare ONNX Runtime "
            "session.run of the same model measured in the same run. The full benchmark with "
            "numpy and torch peers is bench/latency.py in the repository (docs/benchmarks.md)."
        ),
    )
    p.add_argument("--model", required=True, help="a .onnx file, a model folder or policy_best.pt")
    p.add_argument("--symbol", help="also time build_state + predict for this symbol's store data")
    p.add_argument("--date", type=parse_iso_date, help="the tick's date (default: the newest bar)")
    p.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    p.set_defaults(handler=_cmd_bench)
