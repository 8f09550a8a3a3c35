"""bench/suite_cpu.py, for real: a pytest run with the plugin records each test's own CPU and
its children's, and the report sums and ranks them; a bad recording is a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "suite_cpu.py"

TESTS = """
import subprocess, sys

def test_spends_in_a_child():
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)

def test_spends_here():
    assert sum(i * i for i in range(3_000_000)) > 0
"""


def test_the_plugin_records_own_and_child_cpu_and_the_report_ranks_them(tmp_path: Path) -> None:
    (tmp_path / "test_tiny.py").write_text(TESTS, encoding="utf-8")
    out = tmp_path / "cpu.jsonl"
    env = {**os.environ, "SUITE_CPU_OUT": str(out), "PYTHONPATH": str(SCRIPT.parent)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "suite_cpu", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*cmd, "test_tiny.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:]
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    child, here = (
        rows["test_tiny.py::test_spends_in_a_child"],
        rows["test_tiny.py::test_spends_here"],
    )
    assert child["children"] > 0.05
    assert child["children"] > here["children"]
    assert here["self"] > 0.05
    assert here["children"] == 0.0
    assert child["wall"] >= child["self"]
    assert here["wall"] > 0

    report = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--before", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    total = sum(r["self"] + r["children"] for r in rows.values())
    lines = report.stdout.splitlines()
    assert lines[0].startswith(f"2 tests: {total:.0f} s CPU (")
    assert any(line.endswith("      2  test_tiny.py") for line in lines)  # the file, 2 tests
    assert "2 tests in both: " in report.stdout
    assert "(+0 s)" in report.stdout


def test_a_missing_or_malformed_recording_is_one_line(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none.jsonl")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2
    assert f"no recording at {tmp_path / 'none.jsonl'}" in missing.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "self": 1, "children": 0, "wall": 1}\n{"id": "b"}\n')
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {bad}:2: not a suite_cpu row")
    assert "Traceback" not in done.stderr
