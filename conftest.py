"""Every test records its training runs in its own trials ledger (``otonom_trainer.trials``),
never in the checkout's ``data/trials.jsonl``; subprocesses inherit the variable."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_trials_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "trials.jsonl"
    monkeypatch.setenv("OTONOM_TRIALS_LEDGER", str(path))
    return path
