"""Where the test suite's CPU goes: a pytest plugin, and its report.

The suite must stay under 12 minutes on CI's 2 cores, and most of its time is not in the
pytest workers but in the processes the tests start (the CLIs, torchrun, PostgreSQL): each
`otonom-train` process pays torch's import, each `otonom` one SQLAlchemy's. Wall clocks on a
shared machine drift; CPU seconds per test, the test's own and its children's, are the steadier
measure of what a change to a test or a command costs.

Record (every test appends one JSON line to FILE: its node id, the worker's own CPU seconds,
the CPU seconds of the child processes it waited for, and its wall seconds):

    SUITE_CPU_OUT=/tmp/cpu.jsonl PYTHONPATH=bench python3 dev.py test -p suite_cpu

Report (the suite's totals, then the files and tests that cost the most):

    python3 bench/suite_cpu.py /tmp/cpu.jsonl [--top 25]
    python3 bench/suite_cpu.py /tmp/cpu.jsonl --before /tmp/cpu_before.jsonl   # the changes

A child's CPU is counted when it is reaped (``subprocess.run`` waits for it), so a server a
session fixture starts is counted at the test that stops it. The file is appended to (the
workers share it): remove it before a run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OUT_VARIABLE = "SUITE_CPU_OUT"


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


try:
    import pytest
except ImportError:  # the report needs no pytest
    pass
else:

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item: Any, nextitem: Any) -> Iterator[None]:
        del nextitem
        out = os.environ.get(OUT_VARIABLE)
        own0, children0 = _cpu()
        start = time.perf_counter()
        yield
        if not out:
            return
        own1, children1 = _cpu()
        row = {
            "id": item.nodeid,
            "self": round(own1 - own0, 3),
            "children": round(children1 - children0, 3),
            "wall": round(time.perf_counter() - start, 3),
        }
        with Path(out).open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def read(path: Path) -> dict[str, dict[str, float]]:
    """The rows of a recording, by test id (a test recorded twice keeps its last row)."""
    rows: dict[str, dict[str, float]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            rows[row["id"]] = {k: float(row[k]) for k in ("self", "children", "wall")}
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"error: {path}:{n}: not a suite_cpu row ({exc})") from None
    if not rows:
        raise SystemExit(f"error: {path} has no rows; expected a recording (see --help)")
    return rows


def _cpu_s(row: dict[str, float]) -> float:
    """A test's CPU seconds: its own and its children's."""
    return row["self"] + row["children"]


def report(rows: dict[str, dict[str, float]], top: int) -> list[str]:
    """The totals, then the ``top`` files and tests by CPU seconds (own + children)."""
    cpu = {k: _cpu_s(r) for k, r in rows.items()}
    own = sum(r["self"] for r in rows.values())
    children = sum(r["children"] for r in rows.values())
    wall = sum(r["wall"] for r in rows.values())
    lines = [
        f"{len(rows)} tests: {own + children:.0f} s CPU ({own:.0f} s in the pytest workers, "
        f"{children:.0f} s in the processes they started); {wall:.0f} s of test wall time",
        "",
        f"{'CPU s':>8} {'tests':>6}  file",
    ]
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for k, c in cpu.items():
        entry = files[k.split("::")[0]]
        entry[0] += c
        entry[1] += 1
    for name, (c, n) in sorted(files.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"{c:8.1f} {int(n):6d}  {name}")
    lines += ["", f"{'CPU s':>8} {'wall s':>7}  test"]
    for k, c in sorted(cpu.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{c:8.1f} {rows[k]['wall']:7.1f}  {k}")
    return lines


def compare(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], top: int
) -> list[str]:
    """The CPU seconds before and after, and the tests that changed most."""
    both = sorted(set(before) & set(after))
    b, a = sum(_cpu_s(before[k]) for k in both), sum(_cpu_s(after[k]) for k in both)
    lines = [f"{len(both)} tests in both: {b:.0f} s CPU before, {a:.0f} s after ({a - b:+.0f} s)"]
    deltas = sorted((_cpu_s(after[k]) - _cpu_s(before[k]), k) for k in both)
    lines += [f"{d:+8.1f}  {k}" for d, k in deltas[:top]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Report a suite_cpu recording (how to record one: this file's docstring)."
    )
    parser.add_argument("recording", type=Path, help="the JSON-lines file SUITE_CPU_OUT named")
    parser.add_argument("--top", type=int, default=25, help="rows per table (default 25)")
    parser.add_argument("--before", type=Path, help="an earlier recording to compare with")
    args = parser.parse_args(argv)
    for path in (args.recording, args.before):
        if path is not None and not path.is_file():
            parser.error(f"no recording at {path}")
    rows = read(args.recording)
    lines = report(rows, args.top)
    if args.before is not None:
        lines += ["", *compare(read(args.before), rows, args.top)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
