"""`otonom backtest`, `otonom runs list/show`: real CLI runs in a subprocess on a SQLite file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _otonom(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_runtime", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_backtest_then_runs(tmp_path: Path) -> None:
    synth = _otonom(
        "data",
        "synth",
        "--symbol",
        "DEMO-BTC",
        "--symbol",
        "DEMO-ETH",
        "--start",
        "2020-01-01",
        "--end",
        "2021-12-31",
        cwd=tmp_path,
    )
    assert synth.returncode == 0, synth.stderr
    out = _otonom(
        "backtest",
        "--strategy-path",
        str(ROOT / "strategies" / "baseline_v1.yaml"),
        "--symbol",
        "DEMO-BTC",
        "--symbol",
        "DEMO-ETH",
        "--start-date",
        "2020-06-01",
        "--end-date",
        "2021-12-31",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "Action distribution:" in out.stdout
    assert "Sharpe" in out.stdout
    assert "run id: 1" in out.stdout
    png = tmp_path / "reports" / "backtest_run_1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "backtest: 100%" in out.stderr  # the progress bar

    listed = _otonom("runs", "list", cwd=tmp_path)
    assert listed.returncode == 0
    assert "baseline_v1" in listed.stdout
    assert "complete" in listed.stdout
    header, _, row = listed.stdout.splitlines()
    assert "made by" in header
    assert (
        row.split()[8] == "user"
    )  # (the dates take 3 cells) a run of `otonom backtest`: not internal, no footnote
    shown = _otonom("runs", "show", "1", cwd=tmp_path)
    assert shown.returncode == 0
    assert "made by     user\n" in shown.stdout
    assert "{" not in shown.stdout  # tables, not JSON
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["run", "1"]
    for key in ("strategy", "status", "dates", "symbols", "created", "finished"):
        assert any(line.startswith(key) for line in lines), key
    assert any(line.split() == ["status", "complete"] for line in lines)
    assert any(line.split()[:3] == ["metric", "portfolio", "DEMO-BTC"] for line in lines)
    assert any(line.startswith("Sharpe") for line in lines)
    record = json.loads(_otonom("runs", "show", "1", "--json", cwd=tmp_path).stdout)
    assert (record["id"], record["status"]) == (1, "complete")
    counts = record["metrics"]["action_counts"]
    for symbol in ("DEMO-BTC", "DEMO-ETH", "all"):
        c = counts[symbol]
        row = next(line.split() for line in lines if line.startswith(symbol + " "))
        assert row[1::2] == [str(c["HOLD"]), str(c["BUY"]), str(c["SELL"]), str(sum(c.values()))]
    missing = _otonom("runs", "show", "99", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no backtest run with id 99"


def test_backtest_errors_are_one_line(tmp_path: Path) -> None:
    out = _otonom(
        "backtest",
        "--strategy-path",
        str(ROOT / "strategies" / "baseline_v1.yaml"),
        "--symbol",
        "NOPE",
        "--start-date",
        "2020-01-01",
        "--end-date",
        "2020-02-01",
        "--plot",
        "none",
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: unknown symbol 'NOPE'")
    assert "Traceback" not in out.stderr
