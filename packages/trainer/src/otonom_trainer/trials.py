"""The trials ledger: every training run, tuning trial and fine-tuning run records itself.

The deflated Sharpe ratio (``otonom_trainer.stats.deflated_sharpe_ratio``) needs the number of
configurations tried before a result was picked; typed in by hand it is forgotten or flattered.
So each model that finishes training appends one JSON line here, automatically:

- ``BehaviorCloningTrainer.train`` (``otonom-train train``, every ``tune`` trial, the pipeline,
  the walk-forward's and the comparison's models), as its run files are written
  (``training.outputs.write_run_files``, rank 0 only under torchrun): ``kind`` ``train``;
- ``otonom_trainer.rl.finetune.finetune`` (``otonom-train finetune``): ``kind`` ``finetune``.

A run that fails records nothing. The line is written with one ``os.write`` on a file opened
``O_APPEND`` (a line of a few hundred bytes: the kernel appends it whole, so parallel trials,
xdist workers or torchrun ranks never interleave), and fsynced. ``count_trials`` reads the
count; the comparison (``otonom-train compare``) and the gate (``otonom-train check``) take it
as the trial count of their deflated Sharpe.

Where: ``$OTONOM_TRIALS_LEDGER`` when set (``off`` switches recording off), else
``data/trials.jsonl`` under the working directory (beside the default store
``data/otonom.db``). Each line: ``{"time": ISO UTC, "kind": ..., "pid": ..., "output":
folder}`` plus what the caller adds (a training run: ``run_id``, ``dataset_path``, ``model``,
``seed``, ``awr_beta``). A model trained inside ``otonom-train compare`` names the staging
folder (``.NAME.partial/...``) that becomes ``NAME`` when the comparison succeeds; a tuning
trial's folder is a temporary one, gone after the trial.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any, Final

from otonom_trainer._errors import OtonomTrainerError

__all__ = [
    "LEDGER_ENV",
    "TrialsError",
    "count_trials",
    "ledger_path",
    "read_trials",
    "record_trial",
]

LEDGER_ENV: Final = "OTONOM_TRIALS_LEDGER"
_DEFAULT: Final = Path("data") / "trials.jsonl"
_OFF: Final = "off"


class TrialsError(OtonomTrainerError, ValueError):
    """The trials ledger cannot be read (a line that is not a JSON object)."""


def ledger_path() -> Path | None:
    """The ledger file (module docstring); None when ``$OTONOM_TRIALS_LEDGER`` is ``off``."""
    value = os.environ.get(LEDGER_ENV, "").strip()
    if value.lower() == _OFF:
        return None
    return Path(value) if value else _DEFAULT


def record_trial(kind: str, **fields: Any) -> Path | None:
    """Append one line for a finished run of ``kind`` (with ``fields``, JSON values) to the
    ledger; returns its path (None when recording is off). Folders are created."""
    path = ledger_path()
    if path is None:
        return None
    line = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "pid": os.getpid(),
        **fields,
    }
    data = (json.dumps(line, default=str, separators=(",", ":")) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_trials(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The ledger's lines (``path``, default ``ledger_path()``), oldest first; [] when there
    is no ledger. ``TrialsError`` names the file and line of a malformed entry."""
    where = ledger_path() if path is None else Path(path)
    if where is None or not where.exists():
        return []
    out: list[dict[str, Any]] = []
    for number, text in enumerate(where.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrialsError(
                f"{where}:{number}: not JSON ({exc.msg}); expected one JSON object per line"
            ) from None
        if not isinstance(item, dict):
            raise TrialsError(f"{where}:{number}: got {type(item).__name__}; expected an object")
        out.append(item)
    return out


def count_trials(path: str | os.PathLike[str] | None = None, *, at_least: int = 1) -> int:
    """The number of runs in the ledger, at least ``at_least`` (a deflated Sharpe needs >= 1:
    the run being judged counts even when recording was off)."""
    return max(len(read_trials(path)), at_least)
