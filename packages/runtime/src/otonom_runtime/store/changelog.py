"""The store's change log (``row_changes``, store version 7): which symbols' bars or news, and
which macro sources, a writer changed in place or deleted, whoever the writer is (and which
symbols' own rows: a name or kind changed).

A daemon's tick reads what is new by row id (``store.ticks.new_rows``): an ``UPDATE`` that
keeps a row's id, or a ``DELETE``, adds no id, so a running daemon would go on deciding on
values the store no longer holds. Triggers on ``bars``, ``news_sentiment``,
``macro_sentiment`` and ``symbols`` (a name or kind) write a ``RowChange`` for each such
change (``kind``, and the symbol id or the source it touched), an id of its own: the tick
reads the changes after the last it has seen, by that id (``store.ticks.changed_keys``), and
reads the symbols (or macro sources) named there whole again. So an edit by the importers, by
another tool's SQL or by hand is seen by the next tick.

* SQLite: row triggers, ``AFTER UPDATE`` (only when a column's value changed: an upsert that
  rewrites a row as it was logs nothing) and ``AFTER DELETE``: one change a row.
* PostgreSQL: statement triggers over the transition tables (``REFERENCING OLD TABLE``,
  PostgreSQL 10+): one change a statement and symbol (or source), the rows whose values did
  not change left out. The change's id is taken when the writer writes and seen when it
  commits, as a row's: the tick's fence for writers in progress covers it
  (``daemon.seen``).

Inserts are not logged (they add ids of their own). Nothing prunes the log: it holds one row
a change (SQLite: a row a changed row; ``synth --replace`` of a symbol logs each bar it
deletes); ``DELETE FROM row_changes`` empties it safely at any time (its ids are never reused,
``RowChange``). SQLite gives a table's ids again once its newest rows are deleted (no
``AUTOINCREMENT`` on the data tables): a row inserted after may take an id a tick has read up
to. Its delete trigger logs, for a row deleted above every id left, the largest id left
(``row_id``: the table may give the ids above it again), and the tick reads that table on from
there (``daemon.seen``).
Nothing here runs at import time:
``install_sql`` gives the statements, run by ``init_db`` on a new store (with its tables) and
by the in-place upgrade from store version 6 (``migrations``).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Connection

__all__: list[str] = []

_KINDS: Final = {
    # kind: (table, its value columns, the key columns logged: (symbol_id, source) as SQL of
    # the changed row ``r``; a typed NULL where the kind has none: PostgreSQL types a bare
    # NULL of a SELECT DISTINCT as text)
    "bars": (
        "bars",
        ("symbol_id", "date", "open", "high", "low", "close", "volume"),
        ("{r}.symbol_id", "CAST(NULL AS TEXT)"),
    ),
    "news": ("news_sentiment", ("symbol_id", "source", "date", "score"),
             ("{r}.symbol_id", "{r}.source")),
    "macro": ("macro_sentiment", ("source", "date", "score"),
              ("CAST(NULL AS INTEGER)", "{r}.source")),
    # a symbol's own row: its name or kind (which sentiment source it reads); added or
    # deleted symbols change the tick's marks already
    "symbols": ("symbols", ("name", "is_synthetic"), ("{r}.id", "CAST(NULL AS TEXT)")),
}  # fmt: skip
"""What each kind of change logs: its table, the columns whose change it logs, and the key."""

TABLES: Final = tuple(table for table, _, _ in _KINDS.values())
"""The tables whose changes are logged."""
TRIGGER_NAMES: Final = tuple(f"tr_{table}_{op}" for table in TABLES for op in ("update", "delete"))
"""The triggers of a store of version 7 (the same names on SQLite and PostgreSQL; on PostgreSQL
each table's trigger function is ``otonom_log_<table>``)."""


def _logged(kind: str, row: str, row_id: str = "CAST(NULL AS INTEGER)") -> str:
    """The change's values for the changed row ``row`` (an alias): kind, symbol id, source,
    ``row_id`` (SQL)."""
    symbol_id, source = (k.format(r=row) for k in _KINDS[kind][2])
    return f"'{kind}', {symbol_id}, {source}, {row_id}"


_LOG: Final = "INSERT INTO row_changes (kind, symbol_id, source, row_id)"


def _keys(kind: str) -> list[str]:
    """The columns of ``kind``'s table that its changes are logged by (a symbol: its id)."""
    return [c for c in ("symbol_id", "source") if c in _KINDS[kind][1]] or ["id"]


def _sqlite(kind: str) -> list[str]:
    """The two row triggers of ``kind`` on SQLite (``IF NOT EXISTS``: resumable). An update
    logs the row's key before it and, when the key itself changed, after it too."""
    table, columns, _ = _KINDS[kind]
    changed = " OR ".join(f"old.{c} IS NOT new.{c}" for c in columns)
    moved = " OR ".join(f"old.{c} IS NOT new.{c}" for c in _keys(kind))
    # a row deleted above every id left (AFTER DELETE): the largest id left, above which the
    # table may give ids again (a multi-row delete logs it with its last row, at the least)
    left = f"(SELECT coalesce(max(id), 0) FROM {table})"
    reused = f"CASE WHEN old.id > {left} THEN {left} END"
    return [
        f"CREATE TRIGGER IF NOT EXISTS tr_{table}_update AFTER UPDATE ON {table} "
        f"WHEN {changed} BEGIN {_LOG} VALUES ({_logged(kind, 'old')}); "
        f"{_LOG} SELECT {_logged(kind, 'new')} WHERE {moved}; END",
        f"CREATE TRIGGER IF NOT EXISTS tr_{table}_delete AFTER DELETE ON {table} "
        f"BEGIN {_LOG} VALUES ({_logged(kind, 'old', reused)}); END",
    ]


def _postgresql(kind: str) -> list[str]:
    """The trigger function and two statement triggers of ``kind`` on PostgreSQL (the
    function replaced and each trigger dropped if present, then made: resumable, and in one
    transaction with the rest of an upgrade). An update logs the keys of the rows whose
    values (or id) changed, before and after."""
    table, columns, _ = _KINDS[kind]
    keys = _keys(kind)
    old = ", ".join(f"o.{c}" for c in columns)
    new = ", ".join(f"n.{c}" for c in columns)
    differ = f"({old}) IS DISTINCT FROM ({new})"
    log = f"{_LOG} SELECT DISTINCT {_logged(kind, 'k')} FROM ("
    function = f"otonom_log_{table}"
    return [
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN "
        "IF TG_OP = 'DELETE' THEN "
        f"{log}SELECT {', '.join(keys)} FROM old_rows) k; "
        "ELSE "
        f"{log}SELECT {', '.join('o.' + c for c in keys)} FROM old_rows o "
        f"LEFT JOIN new_rows n ON n.id = o.id WHERE n.id IS NULL OR {differ} "
        f"UNION SELECT {', '.join('n.' + c for c in keys)} FROM new_rows n "
        f"LEFT JOIN old_rows o ON o.id = n.id WHERE o.id IS NULL OR {differ}) k; "
        "END IF; "
        "RETURN NULL; "
        "END $$",
        f"DROP TRIGGER IF EXISTS tr_{table}_update ON {table}",
        f"CREATE TRIGGER tr_{table}_update AFTER UPDATE ON {table} "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        f"DROP TRIGGER IF EXISTS tr_{table}_delete ON {table}",
        f"CREATE TRIGGER tr_{table}_delete AFTER DELETE ON {table} "
        f"REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ]


def install_sql(dialect: str) -> list[str]:
    """The statements that put the change log's triggers on a store of ``dialect`` (its
    name; ``[]`` for another backend: nothing logged there, as before store version 7), run
    in one transaction. On PostgreSQL a transaction-scoped advisory lock first: two processes
    initialising one new store at once take turns (``CREATE OR REPLACE FUNCTION`` run
    concurrently can fail). No statement holds a bind parameter (``text()`` may run them)."""
    if dialect == "sqlite":
        return [sql for kind in _KINDS for sql in _sqlite(kind)]
    if dialect == "postgresql":
        lock = f"SELECT pg_advisory_xact_lock({_LOCK})"
        return [lock, *(sql for kind in _KINDS for sql in _postgresql(kind))]
    return []


def install(conn: Connection) -> None:
    """Put the change log's triggers on the store of ``conn`` (its table made already), in
    ``conn``'s transaction (``install_sql``)."""
    for sql in install_sql(conn.dialect.name):
        conn.exec_driver_sql(sql)


_LOCK: Final = 0x6F746F6E6F6D  # "otonom": the advisory lock of ``install_sql``
