"""`otonom bench`, run for real: a real ONNX model, a real SQLite store, a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from otonom_runtime.testing.models import make_policy_model


def _otonom(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_runtime", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bench_reports_latency_throughput_and_the_store_tick(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "model" / "policy_best.onnx")
    db = f"sqlite:///{tmp_path / 'store.db'}"
    synth = _otonom(
        "--database-url",
        db,
        "data",
        "synth",
        "--symbol",
        "DEMO-BTC",
        "--start",
        "2022-01-01",
        "--end",
        "2022-12-31",
        cwd=tmp_path,
    )
    assert synth.returncode == 0, synth.stderr
    out = _otonom(
        "--database-url",
        db,
        "bench",
        "--model",
        "model",
        "--symbol",
        "DEMO-BTC",
        "--quick",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "daemon tick: DEMO-BTC at 2022-12-31" in text
    for row in ("predict(RlState)", "bare ORT session.run", "build_state + predict", "4096 rows"):
        assert row in text, row
    p50 = float(text.split("predict(RlState)")[1].split()[0])
    assert p50 > 0


def test_bench_with_a_broken_model_is_a_one_line_error(tmp_path: Path) -> None:
    out = _otonom("bench", "--model", "nowhere.onnx", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith("error: ")
    assert "Traceback" not in out.stderr
