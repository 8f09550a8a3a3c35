"""In-place upgrades of older stores, one version at a time (1 -> 2 -> 3 -> 4 -> 5 -> 6 -> 7).

Each upgrade is resumable (every step skipped or repeated safely when ``init_db`` runs again)
and safe against a concurrent upgrade (whichever comes second finds the new version and
stops). ``init_db`` (``otonom_runtime.store.sessions``) runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, cast

from sqlalchemy import (
    Dialect,
    Double,
    Engine,
    Integer,
    String,
    Table,
    UniqueConstraint,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.types import TypeEngine

from otonom_runtime._errors import StoreError
from otonom_runtime._sources import SOURCE_MAX_LEN, SYNTHETIC_SOURCE, USER_SOURCE
from otonom_runtime.store import changelog
from otonom_runtime.store.engine import _read_version, _safe
from otonom_runtime.store.tables import (
    LIVE_ROWS,
    SIGNAL_FIELDS,
    STORE_VERSION,
    BacktestRun,
    DaemonState,
    Decision,
    MacroSentiment,
    NewsSentiment,
    RowChange,
    StoreMeta,
    Symbol,
)
from otonom_schema import ANALYSTS

__all__: list[str] = []


def _check_version(engine: Engine, version: int) -> None:
    if version in _UPGRADES:
        raise StoreError(
            f"database {_safe(engine.url)} has store version {version}; this otonom-runtime "
            f"reads store version {STORE_VERSION}: run any `otonom` command on it (or call "
            "otonom_runtime.store.init_db()) to upgrade it in place, nothing is lost"
        )
    if version != STORE_VERSION:
        raise StoreError(
            f"database {_safe(engine.url)} has store version {version}; this otonom-runtime "
            f"reads store version {STORE_VERSION} (upgrade otonom-runtime or use another "
            "database)"
        )


def _signal_from_json(dialect: Dialect, analyst: str, field: str) -> str:
    """SQL reading one signal field out of a version-1 ``signals`` JSON column, typed."""
    if dialect.name == "sqlite":
        return f"json_extract(signals, '$.{analyst}.{field}')"
    kind = "integer" if field == "action" else "double precision"  # PostgreSQL json
    return f"CAST(signals -> '{analyst}' ->> '{field}' AS {kind})"


def _upgrade_from_1(engine: Engine) -> None:
    """Store version 1 -> 2: each decision's ``signals`` JSON becomes the typed
    ``<analyst>_<field>`` columns (NULL where the JSON has no signal for that analyst; the
    backtester only ever wrote these four analysts), the JSON column is dropped (SQLite 3.35 or
    newer) and ``store_version`` becomes 2.

    Resumable: SQLite's driver commits each ``ALTER TABLE`` on its own, so a step that fails
    can leave earlier ones done; every step is skipped or repeated safely when ``init_db`` runs
    again (columns added only if missing, the copy repeated while ``signals`` exists). A
    concurrent upgrade is fine too: whichever comes second finds version 2 and stops.
    """
    _upgrade(engine, 1, _steps_from_1, _sqlite_hint)


def _steps_from_1(conn: Any) -> None:
    table = Decision.__tablename__
    present = {c["name"] for c in inspect(conn).get_columns(table)}
    for analyst in ANALYSTS:
        for field in SIGNAL_FIELDS:
            if f"{analyst}_{field}" in present:
                continue
            column_type: TypeEngine[Any] = Integer() if field == "action" else Double()
            kind = column_type.compile(conn.dialect)
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {analyst}_{field} {kind}"))
    if "signals" in present:
        assignments = ", ".join(
            f"{a}_{f} = {_signal_from_json(conn.dialect, a, f)}"
            for a in ANALYSTS
            for f in SIGNAL_FIELDS
        )
        conn.execute(text(f"UPDATE {table} SET {assignments}"))
        conn.execute(text(f"ALTER TABLE {table} DROP COLUMN signals"))


def _upgrade(
    engine: Engine,
    version: int,
    steps: Callable[[Any], None],
    hint: Callable[[Engine], str] | None = None,
) -> None:
    """The upgrade from store ``version`` to the next: ``steps`` (given the transaction's
    connection), then ``store_version`` written last, in one transaction; nothing when the store
    is not at ``version`` (a concurrent ``init_db`` upgraded it already). A driver error raises
    ``StoreError`` naming both versions (and ``hint``'s text), unless a concurrent ``init_db``
    upgraded the store meanwhile."""
    try:
        with engine.begin() as conn:
            if not _is_at(conn, version):
                return  # upgraded already (a concurrent init_db)
            steps(conn)
            _set_version(conn, version + 1)
    except sa_exc.DBAPIError as exc:
        if (_read_version(engine) or 0) > version:
            return  # upgraded by a concurrent init_db
        raise StoreError(
            f"cannot upgrade database {_safe(engine.url)} from store version {version} to "
            f"{version + 1}: {exc.orig}{hint(engine) if hint else ''}"
        ) from None


def _sqlite_hint(engine: Engine) -> str:
    """What the 1 -> 2 upgrade needs of SQLite (dropping a column), and what it has."""
    if engine.dialect.name != "sqlite":
        return ""
    import sqlite3

    return f" (dropping a column needs SQLite 3.35+; here {sqlite3.sqlite_version})"


def _is_at(conn: Any, version: int) -> bool:
    """Whether the store's ``store_version`` (read in ``conn``'s transaction) is ``version``."""
    stored = conn.execute(
        select(StoreMeta.value).where(StoreMeta.key == "store_version")
    ).scalar_one()
    return bool(stored == str(version))


def _set_version(conn: Any, version: int) -> None:
    conn.execute(
        text("UPDATE store_meta SET value = :v WHERE key = 'store_version'"),
        {"v": str(version)},
    )


def _upgrade_from_2(engine: Engine) -> None:
    """Store version 2 -> 3: ``news_sentiment`` and ``macro_sentiment`` get their ``source``
    column (labelled as ``MacroSentiment`` says), their unique constraints become
    (symbol_id, source, date) and (source, date), and ``store_version`` becomes 3.

    SQLite cannot change a table's constraints: each table is rebuilt (a ``<table>_v3`` copy in
    the new layout, the rows copied with their labels, the old table dropped, the copy renamed),
    giving exactly the layout of a fresh store. Resumable, as ``_upgrade_from_1``: SQLite's
    driver commits DDL on its own, so every state a failure can leave is recognised on the next
    ``init_db`` (a table that already has ``source`` is done; a copy beside the old table is
    dropped and made again; a copy without the old table holds every row and is renamed).
    PostgreSQL changes the tables in place (add the column, label, NOT NULL, swap the
    constraint) in one transaction.
    """
    _upgrade(engine, 2, _steps_from_2)


def _steps_from_2(conn: Any) -> None:
    labels = _v2_labels(conn)
    for table in (NewsSentiment.__table__, MacroSentiment.__table__):
        if conn.dialect.name == "sqlite":
            _rebuild_sqlite(conn, table, labels)
        else:
            _alter_in_place(conn, table, labels)


def _v2_labels(conn: Any) -> dict[str, Any]:
    """The bind values of the labelling rule (see ``MacroSentiment``): the macro rows' source
    and the two names a news row gets by its symbol's kind."""
    any_synthetic = conn.execute(
        select(func.count()).select_from(Symbol).where(Symbol.is_synthetic.is_(True))
    ).scalar_one()
    return {
        "macro": SYNTHETIC_SOURCE if any_synthetic else USER_SOURCE,
        "synthetic": SYNTHETIC_SOURCE,
        "user": USER_SOURCE,
    }


def _label_sql(table: Any, alias: str) -> str:
    """The SQL expression of a version-2 row's source (``_v2_labels`` binds)."""
    if table.name == MacroSentiment.__tablename__:
        return ":macro"
    return (
        f"(SELECT CASE WHEN s.is_synthetic THEN :synthetic ELSE :user END "
        f"FROM {Symbol.__tablename__} s WHERE s.id = {alias}.symbol_id)"
    )


def _rebuild_sqlite(conn: Any, table: Any, labels: dict[str, Any]) -> None:
    """One table of ``_upgrade_from_2`` on SQLite (each step skipped or repeated safely)."""
    from sqlalchemy.schema import CreateTable

    name, copy = table.name, f"{table.name}_v3"
    tables = set(inspect(conn).get_table_names())
    if name not in tables:  # stopped after the drop: the copy holds every row
        conn.execute(text(f"ALTER TABLE {copy} RENAME TO {name}"))
        return
    if "source" in {c["name"] for c in inspect(conn).get_columns(name)}:
        conn.execute(text(f"DROP TABLE IF EXISTS {copy}"))
        return
    conn.execute(text(f"DROP TABLE IF EXISTS {copy}"))
    ddl = str(CreateTable(table).compile(dialect=conn.dialect))
    head = f"CREATE TABLE {name} "
    assert ddl.strip().startswith(head), ddl
    conn.execute(text(ddl.strip().replace(head, f"CREATE TABLE {copy} ", 1)))
    old = [c.name for c in table.columns if c.name != "source"]
    conn.execute(
        text(
            f"INSERT INTO {copy} ({', '.join(old)}, source) "
            f"SELECT {', '.join('o.' + c for c in old)}, {_label_sql(table, 'o')} FROM {name} o"
        ),
        labels,
    )
    conn.execute(text(f"DROP TABLE {name}"))
    conn.execute(text(f"ALTER TABLE {copy} RENAME TO {name}"))


def _alter_in_place(conn: Any, table: Any, labels: dict[str, Any]) -> None:
    """One table of ``_upgrade_from_2`` on other databases (ALTER TABLE; steps guarded)."""
    name = table.name
    info = inspect(conn)
    if "source" not in {c["name"] for c in info.get_columns(name)}:
        kind = String(SOURCE_MAX_LEN).compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {name} ADD COLUMN source {kind}"))
    conn.execute(
        text(f"UPDATE {name} SET source = {_label_sql(table, name)} WHERE source IS NULL"),
        labels,
    )
    conn.execute(text(f"ALTER TABLE {name} ALTER COLUMN source SET NOT NULL"))
    wanted = next(c for c in table.constraints if isinstance(c, UniqueConstraint))
    wanted_name = str(wanted.name)
    columns = [c.name for c in wanted.columns]
    for unique in info.get_unique_constraints(name):
        if unique["name"] != wanted_name:  # the version-2 UNIQUE(date) / (symbol_id, date)
            conn.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {unique['name']}"))
    if wanted_name not in {u["name"] for u in info.get_unique_constraints(name)}:
        conn.execute(
            text(f"ALTER TABLE {name} ADD CONSTRAINT {wanted_name} UNIQUE ({', '.join(columns)})")
        )


_V4_RUN_COLUMNS: Final = ("host", "pid", "process_start", "heartbeat_at")
"""The columns store version 4 added to ``backtest_runs``, in the order the upgrade adds them."""


def _upgrade_from_3(engine: Engine) -> None:
    """Store version 3 -> 4: ``backtest_runs`` gets ``host``, ``pid``, ``process_start`` and
    ``heartbeat_at`` (NULL on the stored runs) and ``store_version`` becomes 4.

    Resumable: each column is added only if missing and the version is written last, so an
    upgrade stopped half way (SQLite's driver commits each ``ALTER TABLE`` on its own) is
    finished by the next ``init_db``; PostgreSQL does it in one transaction. A concurrent
    upgrade is fine too: whichever comes second finds version 4 and stops.
    """
    _upgrade(engine, 3, _steps_from_3)


def _steps_from_3(conn: Any) -> None:
    table = BacktestRun.__tablename__
    present = {c["name"] for c in inspect(conn).get_columns(table)}
    for name in _V4_RUN_COLUMNS:
        if name not in present:
            kind = BacktestRun.__table__.c[name].type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))


def _upgrade_from_4(engine: Engine) -> None:
    """Store version 4 -> 5: ``decisions`` gets ``live_strategy`` (NULL on the stored
    decisions: every one is a backtest's) and the unique index ``ix_decisions_live`` over the
    live rows (in store version 6's order, ``_live_key``), the ``daemon_state`` table is created
    (``DaemonState``: the daemon's heartbeat and model state), and ``store_version`` becomes 5.

    Resumable, as ``_upgrade_from_3``: the column is added only if missing, the index only if
    missing (``CREATE UNIQUE INDEX IF NOT EXISTS``, the same statement on SQLite and
    PostgreSQL), the table only if missing, the version written last. A concurrent upgrade is
    fine too: whichever comes second finds version 5 and stops.
    """
    _upgrade(engine, 4, _steps_from_4)


def _steps_from_4(conn: Any) -> None:
    table = Decision.__tablename__
    present = {c["name"] for c in inspect(conn).get_columns(table)}
    if "live_strategy" not in present:
        kind = Decision.__table__.c["live_strategy"].type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN live_strategy {kind}"))
    conn.execute(text(_live_key()))  # in store version 6's order (no 5 -> 6 work)
    conn.execute(text(_create_if_missing(_DAEMON_STATE, conn.dialect)))


def _upgrade_from_5(engine: Engine) -> None:
    """Store version 5 -> 6: the live decisions' unique key ``ix_decisions_live`` is built
    again ordered (live_strategy, date, symbol_id) (``tables.Decision``: a tick's rows go in at
    its end instead of on a page a symbol), and ``store_version`` becomes 6.

    Resumable: the key is dropped if present and created if missing (``DROP INDEX IF EXISTS``
    then ``CREATE UNIQUE INDEX IF NOT EXISTS``: SQLite commits each on its own, so an upgrade
    cut between them finds no key and creates it; PostgreSQL runs the whole upgrade in one
    transaction), the version written last. A concurrent upgrade is fine too: whichever comes
    second finds version 6 and stops.
    """
    _upgrade(engine, 5, _steps_from_5)


def _steps_from_5(conn: Any) -> None:
    conn.execute(text(f"DROP INDEX IF EXISTS {_V5_INDEX}"))
    conn.execute(text(_live_key()))


def _upgrade_from_6(engine: Engine) -> None:
    """Store version 6 -> 7: the ``row_changes`` table (``RowChange``) is created with the
    triggers that fill it (``store.changelog``: an update or delete of bars, news or macro
    rows logged, whoever the writer), and ``store_version`` becomes 7. Nothing changed before
    the upgrade is logged (a daemon of this version reads every symbol whole when it
    starts).

    Resumable: the table is created if missing, each trigger made if missing (SQLite: ``IF
    NOT EXISTS``; SQLite commits each statement on its own) or dropped and made again
    (PostgreSQL, the whole upgrade in one transaction), the version written last. A
    concurrent upgrade is fine too: whichever comes second finds version 7 and stops.
    """
    _upgrade(engine, 6, _steps_from_6)


def _steps_from_6(conn: Any) -> None:
    conn.execute(text(_create_if_missing(_ROW_CHANGES, conn.dialect)))
    for sql in changelog.install_sql(conn.dialect.name):
        conn.execute(text(sql))


def _live_key() -> str:
    """``CREATE UNIQUE INDEX IF NOT EXISTS`` of the live decisions' key, as a fresh store has
    it (the same statement on SQLite and PostgreSQL)."""
    index = next(i for i in _DECISIONS.indexes if i.name == _V5_INDEX)
    columns = ", ".join(c.name for c in index.columns)
    return (
        f"CREATE UNIQUE INDEX IF NOT EXISTS {_V5_INDEX} ON {_DECISIONS.name} ({columns}) "
        f"WHERE {_V5_INDEX_WHERE}"
    )


def _create_if_missing(table: Table, dialect: Dialect) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of ``table`` (its layout in a fresh store)."""
    from sqlalchemy.schema import CreateTable

    return str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).strip()


_DAEMON_STATE: Final = cast("Table", DaemonState.__table__)
_DECISIONS: Final = cast("Table", Decision.__table__)
_ROW_CHANGES: Final = cast("Table", RowChange.__table__)
_V5_INDEX: Final = "ix_decisions_live"
"""The unique index store version 5 added to ``decisions`` (the live decisions' key)."""
_V5_INDEX_WHERE: Final = LIVE_ROWS
"""Its predicate: partial, over live rows only (``tables.Decision``)."""

_UPGRADES: Final = {
    1: _upgrade_from_1,
    2: _upgrade_from_2,
    3: _upgrade_from_3,
    4: _upgrade_from_4,
    5: _upgrade_from_5,
    6: _upgrade_from_6,
}
"""The in-place upgrade from each older store version to the next one."""
