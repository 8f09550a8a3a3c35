"""Opening the store: ``init_db`` (create or upgrade, then fail interrupted runs) and
``get_session`` (a session on an initialised store)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from otonom_runtime._errors import StoreError
from otonom_runtime.store import changelog
from otonom_runtime.store.engine import (
    _NOT_INITIALISED_HINT,
    _is_initialised,
    _mark_initialised,
    _read_version,
    _resolve,
    _safe,
    _sessionmaker,
)
from otonom_runtime.store.migrations import _UPGRADES, _check_version
from otonom_runtime.store.runs import fail_interrupted_runs
from otonom_runtime.store.tables import STORE_VERSION, Base, StoreMeta

__all__ = ["get_session", "init_db"]

log = logging.getLogger("otonom_runtime.store")


def init_db(url_or_engine: str | Engine | None = None) -> Engine:
    """Create every table and the ``store_version`` row; idempotent. Returns the engine.

    An older store is upgraded in place first, one version at a time (1 -> 2: see
    ``Decision``; 2 -> 3: see ``MacroSentiment``; 3 -> 4: see ``BacktestRun``; 4 -> 5: see
    ``Decision.live_strategy``; 5 -> 6: see ``Decision``; 6 -> 7: see ``RowChange``; nothing
    is lost). A new store gets the change log's triggers (``store.changelog``). Then
    ``fail_interrupted_runs`` marks the runs whose process is gone ``failed``.
    Raises ``StoreError`` when the database cannot be opened or was made by another store
    version.
    """
    engine = _resolve(url_or_engine)
    version = _read_version(engine)
    while version is not None and version in _UPGRADES:
        _UPGRADES[version](engine)
        version += 1
    if version is not None:
        _check_version(engine, version)
    try:
        Base.metadata.create_all(engine)
        if version is None:  # a new store: its change log's triggers, then its version
            with engine.begin() as conn:
                changelog.install(conn)
            with Session(engine) as session, session.begin():
                if session.get(StoreMeta, "store_version") is None:
                    session.add(StoreMeta(key="store_version", value=str(STORE_VERSION)))
    except sa_exc.IntegrityError:
        pass  # a concurrent init_db wrote the row first
    except sa_exc.DBAPIError as exc:
        raise StoreError(f"cannot initialise database {_safe(engine.url)}: {exc.orig}") from None
    _mark_initialised(engine)
    try:
        fail_interrupted_runs(engine)
    except StoreError as exc:  # e.g. locked beyond busy_timeout: the next opening retries
        log.warning("%s", exc)
    return engine


def _ensure_initialised(engine: Engine) -> None:
    if _is_initialised(engine):
        return
    version = _read_version(engine)
    if version is None:
        raise StoreError(
            f"the store at {_safe(engine.url)} is not initialised; {_NOT_INITIALISED_HINT}"
        )
    _check_version(engine, version)
    _mark_initialised(engine)


@contextmanager
def get_session(url: str | Engine | None = None) -> Iterator[Session]:
    """A session on the store: commits when the block succeeds, rolls back if it raises.

    ``url``: a database URL, an engine, or None for ``default_database_url()``. Raises
    ``StoreError`` when the store cannot be opened or was never initialised (``init_db``).
    Objects stay readable after the block (``expire_on_commit=False``).
    """
    engine = _resolve(url)
    _ensure_initialised(engine)
    session = _sessionmaker(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
