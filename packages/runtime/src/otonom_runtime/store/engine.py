"""Engines and their connections: URLs, the SQLite pragmas, the engine cache and the fork hook.

One engine per URL, made on first use (``get_engine``); SQLite files get WAL mode,
``synchronous=NORMAL``, ``busy_timeout=5000`` and foreign keys on every connection. A forked
child gets new, empty pools for the cached engines (``_after_fork_in_child``). Also the
bookkeeping of which engines were found initialised, and their session makers.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from otonom_runtime._errors import StoreError
from otonom_runtime.store.jsontext import dumps
from otonom_runtime.store.tables import StoreMeta

__all__ = ["DATABASE_URL_ENV", "default_database_url", "dispose_engines", "get_engine"]

DATABASE_URL_ENV: Final = "OTONOM_DATABASE_URL"
_DEFAULT_SQLITE: Final = Path("data") / "otonom.db"
_NOT_INITIALISED_HINT: Final = (
    "run `otonom data synth ...` or `otonom data import-csv ...` (or call "
    "otonom_runtime.store.init_db()) first"
)


# --- engines and sessions --------------------------------------------------------------------

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: weakref.WeakKeyDictionary[Engine, sessionmaker[Session]] = (
    weakref.WeakKeyDictionary()
)
_initialised: weakref.WeakSet[Engine] = weakref.WeakSet()
_fork_hook: list[bool] = []  # the after-fork hook is registered (once, by the first engine)


def _after_fork_in_child() -> None:
    """In a forked child: new, empty pools for the cached engines, so the child opens its own
    connections and never uses (nor closes, on dispose or exit) the parent's pooled ones,
    which share their sockets and file handles with the parent (SQLAlchemy's
    ``dispose(close=False)`` recipe). The lock is made anew: another thread of the parent may
    have held it at the fork."""
    global _lock
    _lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)


def default_database_url() -> str:
    """``$OTONOM_DATABASE_URL`` if set and non-empty, else the SQLite file ``./data/otonom.db``.

    The SQLite path is made absolute against the current working directory at call time.
    """
    env = os.environ.get(DATABASE_URL_ENV, "").strip()
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / _DEFAULT_SQLITE).as_posix()}"


def _safe(url: URL | str) -> str:
    """A URL for messages, password hidden."""
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except sa_exc.ArgumentError:
            return url
        return parsed.render_as_string(hide_password=True)
    return url.render_as_string(hide_password=True)


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite file URL, None for other backends and in-memory SQLite."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: ``default_database_url()``), made once per URL.

    For a SQLite file the parent folders are created and every connection gets WAL mode,
    ``synchronous=NORMAL``, ``busy_timeout=5000`` and ``foreign_keys=ON``. Raises
    ``StoreError`` for a URL that cannot be read or whose driver is not installed.
    """
    text = default_database_url() if url is None else url
    with _lock:
        engine = _engines.get(text)
        if engine is not None:
            return engine
        try:
            parsed = make_url(text)
        except sa_exc.ArgumentError as exc:
            raise StoreError(
                f"cannot read database URL {text!r} ({exc}); expected e.g. "
                "sqlite:///data/otonom.db or postgresql+psycopg://user@host:5432/otonom"
            ) from None
        file = _sqlite_file(parsed)
        if file is not None:
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder of SQLite database {str(file)!r}: {exc}"
                ) from None
        try:
            engine = create_engine(parsed, json_serializer=dumps)
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
            hint = " (install otonom-runtime[postgres])" if "postgres" in text else ""
            raise StoreError(
                f"cannot open database {_safe(parsed)}: {exc}{hint}; expected a SQLAlchemy "
                "URL with an installed driver"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _on_sqlite_connect)
        if not _fork_hook and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook.append(True)
        _engines[text] = engine
        return engine


def dispose_engines() -> None:
    """Close and forget every cached engine (tests). A forked child needs no call: it gets
    new pools of its own at the fork, and the parent's connections stay the parent's."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _sessionmakers.clear()
        _initialised.clear()


def _resolve(url_or_engine: str | Engine | None) -> Engine:
    if isinstance(url_or_engine, Engine):
        return url_or_engine
    return get_engine(url_or_engine)


def _read_version(engine: Engine) -> int | None:
    """The stored ``store_version``, None when the store has no ``store_meta`` row/table."""
    file = _sqlite_file(engine.url)
    if file is not None and not file.exists():
        return None
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(StoreMeta.__tablename__):
                return None
            value = conn.execute(
                select(StoreMeta.value).where(StoreMeta.key == "store_version")
            ).scalar_one_or_none()
    except sa_exc.DBAPIError as exc:
        raise StoreError(f"cannot open database {_safe(engine.url)}: {exc.orig}") from None
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise StoreError(
            f"database {_safe(engine.url)} has store_version {value!r}; expected an integer"
        ) from None


def _is_initialised(engine: Engine) -> bool:
    """Whether ``engine``'s store was found initialised (by ``init_db`` or a version check)."""
    return engine in _initialised


def _mark_initialised(engine: Engine) -> None:
    with _lock:
        _initialised.add(engine)


def _sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """The session maker of ``engine`` (made once; ``expire_on_commit=False``)."""
    with _lock:
        maker = _sessionmakers.get(engine)
        if maker is None:
            maker = sessionmaker(bind=engine, expire_on_commit=False)
            _sessionmakers[engine] = maker
        return maker
