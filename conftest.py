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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules marked ``long`` (``pytestmark = pytest.mark.long``: minutes of subprocess
    runs, the guide's and README's walkthroughs first among them) go first, the rest keep their
    order. ``dev.py test`` runs with ``--dist loadfile --no-loadscope-reorder``, so the workers
    take whole modules in this order: started first, the longest one no longer finishes alone
    while the other worker idles (xdist's own order, most tests first, started the guide's
    ~5-minute module last)."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)  # stable
