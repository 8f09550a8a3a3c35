"""The store a command uses: ``require_store`` for commands that only read it (a missing
SQLite file is an error, not a new empty store), ``open_store`` for those that write (tables
created; a SQLite store the failing call created is removed again: ``removed_on_failure``,
which ``otonom-train``'s commands that create a store use too)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from otonom_runtime._errors import StoreError

__all__ = ["open_store", "removed_on_failure", "require_store"]


def _missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite file URL when it does not exist yet, else None."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from otonom_runtime.store.engine import _sqlite_file

    try:
        file = _sqlite_file(make_url(url))
    except ArgumentError:  # opening the store reports an unreadable URL
        return None
    return None if file is None or file.exists() else file.absolute()


def require_store(database_url: str | None) -> str:
    """The URL of the store (``database_url`` or the default), refused with a ``StoreError``
    when it is a SQLite file that does not exist: for commands that only read the store,
    which would otherwise create the file and its folder before failing."""
    from otonom_runtime.store import default_database_url

    url = database_url or default_database_url()
    file = _missing_sqlite_file(url)
    if file is not None:
        raise StoreError(
            f"there is no store at {file}; create one with `otonom data synth ...` or "
            "`otonom data import-csv ...`, or give --database-url"
        )
    return url


@contextlib.contextmanager
def removed_on_failure(url: str) -> Iterator[None]:
    """Run the block; when it raises, a SQLite store at ``url`` that did not exist when it
    started is removed again (its file, journal files and the folders made for it), so a
    failed command leaves no store it created behind. Other URLs, and a store that existed
    before, are left as the block left them."""
    from otonom_runtime.store import dispose_engines

    file = _missing_sqlite_file(url)
    folders = [] if file is None else [p for p in file.parents if not p.exists()]
    try:
        yield
    except BaseException:
        if file is not None:
            dispose_engines()
            for suffix in ("", "-wal", "-shm", "-journal"):
                file.with_name(file.name + suffix).unlink(missing_ok=True)
            for folder in folders:  # innermost first
                with contextlib.suppress(OSError):  # not empty: something else lives there
                    folder.rmdir()
        raise


@contextlib.contextmanager
def open_store(args: argparse.Namespace) -> Iterator[str]:
    """The database URL of this call, the store initialised (tables created if missing).

    When the command fails inside the block, a SQLite store that this call created is removed
    again (``removed_on_failure``): a failed command writes nothing.
    """
    from otonom_runtime.store import default_database_url, init_db

    url: str = args.database_url or default_database_url()
    with removed_on_failure(url):
        init_db(url)
        yield url
