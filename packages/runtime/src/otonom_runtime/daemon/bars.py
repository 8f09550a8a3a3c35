"""Where new bars come from when the daemon pulls them itself (``BarSource``).

Bars reach the daemon through the store: another process imports them (``otonom data
import-csv``), or the daemon pulls them before each tick from a ``BarSource``. ``CsvFolderBars``
is a folder of one CSV file per symbol (``<SYMBOL>.csv``, any layout the CSV importer reads),
imported through ``importers.import_ohlcv_csv`` under its rules: the whole file checked first,
new dates inserted, identical bars left alone, a file whose bar differs from the stored one
refused (nothing of it written). A file unchanged since the last pull (same size and
modification time) is not read again; a refused file is logged (once: it is read again when it
changes), with the ``import-csv --replace`` command that overwrites the stored bars when that is
what it needs, and the tick goes on with what the store holds.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session

from otonom_runtime._errors import DaemonError, DataImportError
from otonom_runtime.importers import REPLACE_HINT, ImportReport, import_ohlcv_csv

__all__ = ["BarSource", "CsvFolderBars"]

log = logging.getLogger("otonom_runtime.daemon")


class BarSource(Protocol):
    """What the daemon needs of a source of bars."""

    def pull(self, session: Session, symbols: Sequence[str]) -> list[ImportReport]:
        """Import the new bars of ``symbols`` into the store (committed); a report per file
        imported."""
        ...


class CsvFolderBars:
    """``<folder>/<SYMBOL>.csv`` per symbol, imported before each tick (see the module
    docstring). ``DaemonError`` when ``folder`` is not a folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DaemonError(f"bars folder {self.folder} is not a folder; expected a folder "
                              "of <SYMBOL>.csv files")  # fmt: skip
        self._seen: dict[Path, tuple[int, int]] = {}

    def pull(self, session: Session, symbols: Sequence[str]) -> list[ImportReport]:
        reports = []
        for symbol in symbols:
            path = self.folder / f"{symbol}.csv"
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            key = (stat.st_size, stat.st_mtime_ns)
            if self._seen.get(path) == key:
                continue
            try:
                report = import_ohlcv_csv(session, path, symbol)
                session.commit()
            except DataImportError as exc:
                session.rollback()
                self._seen[path] = key  # logged once: read again when the file changes
                log.warning("bars of %s not imported: %s", symbol, _reason(exc, path, symbol))
                continue
            self._seen[path] = key
            reports.append(report)
        return reports


def _reason(exc: DataImportError, path: Path, symbol: str) -> str:
    """The importer's message, its ``--replace`` hint (a flag the daemon does not have) turned
    into the command that overwrites the stored bars."""
    text = str(exc)
    if not text.endswith(REPLACE_HINT):
        return text
    return (
        f"{text.removesuffix(REPLACE_HINT)}; the daemon never overwrites stored bars: correct "
        f"the file, or overwrite them with `otonom data import-csv {shlex.quote(str(path))} "
        f"--symbol {shlex.quote(symbol)} --replace`"
    )
