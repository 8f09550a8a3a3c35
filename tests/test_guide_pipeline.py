"""The training CLI's bad input, as a user meets it: a real subprocess.

The guide's Steps 1-3 themselves run end to end, block by block as the guide prints them, in
tests/test_guide_doc.py (``test_every_snippet_runs_in_order``, which also checks every file
Step 2 leaves)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_train_cli_errors_are_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "train", "--dataset", "missing.npz"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: ")
    assert "missing.npz" in out.stderr
    assert "Traceback" not in out.stderr
