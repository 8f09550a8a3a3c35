"""bench/daemon.py --quick, run for real (a subprocess) at 20 symbols: every subject has its
row, both ratios of issue 16 are printed with MET or MISSED, and the per-symbol way's RL
actions equal the tick's (the two ways decide the same states)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_prints_both_ratios_and_the_cold_tick(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "daemon.py"), "--symbols", "20", "--quick"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for row in ("cold first tick", "steady tick", "per-symbol build_state + predict", "floor"):
        assert f"  {row}" in out, out
    assert re.search(r"(MET   |MISSED) per-symbol / steady +\d+\.\d\d \(>= 50\)", out), out
    assert re.search(r"(MET   |MISSED) steady / floor +\d+\.\d\d \(<= 1\.5\)", out), out
    assert "RL signal on 40 of 40 calls" in out, out
    assert list(tmp_path.iterdir()) == []  # the store goes to a temporary folder
