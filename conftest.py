"""Every test records its training runs in its own trials ledger (``otonom_trainer.trials``),
never in the checkout's ``data/trials.jsonl``; subprocesses inherit the variable."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_trials_ledger(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    # beside tmp_path, not in it: tests that list their tmp_path see only their own files
    path = tmp_path_factory.mktemp("ledger") / "trials.jsonl"
    monkeypatch.setenv("OTONOM_TRIALS_LEDGER", str(path))
    return path
