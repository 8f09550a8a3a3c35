"""The daemon's state row (``DaemonState``): written by ``otonom daemon`` after every tick and
while it waits, read by ``otonom status``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from otonom_runtime.store.tables import DaemonState

__all__ = ["read_daemon_states", "write_daemon_state"]


def write_daemon_state(session: Session, strategy: str, values: Mapping[str, Any]) -> None:
    """Set ``values`` (``DaemonState`` columns) on the row of ``strategy``, made if missing,
    and commit. Two daemons of one strategy share the row (the newest write wins); a row
    another process made first between the read and the insert is updated instead."""
    for attempt in range(2):
        row = session.get(DaemonState, strategy)
        if row is None:
            row = DaemonState(strategy=strategy)
            session.add(row)
        for key, value in values.items():
            setattr(row, key, value)
        try:
            session.commit()
            return
        except IntegrityError:
            session.rollback()
            if attempt:
                raise


def read_daemon_states(session: Session, strategy: str | None = None) -> list[DaemonState]:
    """The daemon state rows, by strategy name (only ``strategy``'s when given)."""
    query = select(DaemonState).order_by(DaemonState.strategy)
    if strategy is not None:
        query = query.where(DaemonState.strategy == strategy)
    return list(session.execute(query).scalars())
