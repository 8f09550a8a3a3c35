"""Shared fixtures of the runtime tests: SQLite stores in tmp_path and a real PostgreSQL server."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from otonom_runtime.store import Bar, dispose_engines, get_or_create_symbol, init_db
from otonom_runtime.testing.postgres import PostgresUnavailableError, postgres_server

AddBars = Callable[..., list[dt.date]]


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    """Every test starts and ends without cached engines (no connection outlives its test)."""
    dispose_engines()
    yield
    dispose_engines()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The URL of an initialised SQLite store in a fresh file."""
    url = f"sqlite:///{(tmp_path / 'store' / 'otonom.db').as_posix()}"
    init_db(url)
    return url


def _add_bars(
    session: Session,
    name: str,
    start: dt.date,
    n: int,
    *,
    step_days: int = 1,
    price: float = 100.0,
) -> list[dt.date]:
    """Write ``n`` simple bars of ``name`` (created if missing), every ``step_days`` days.

    Bar i has close ``price + i``, open ``price + i - 0.5``, high close+1, low open-1, volume
    ``1000 + i``. Returns the dates.
    """
    symbol, _ = get_or_create_symbol(session, name, source="test")
    days = [start + dt.timedelta(days=i * step_days) for i in range(n)]
    session.execute(
        insert(Bar),
        [
            {
                "symbol_id": symbol.id,
                "date": d,
                "open": price + i - 0.5,
                "high": price + i + 1.0,
                "low": price + i - 1.5,
                "close": price + i,
                "volume": 1000.0 + i,
            }
            for i, d in enumerate(days)
        ],
    )
    return days


@pytest.fixture
def add_bars() -> AddBars:
    """``add_bars(session, name, start, n, step_days=1, price=100.0) -> dates``."""
    return _add_bars


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session; skips without one, fails when ``CI=true``."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server())
        except PostgresUnavailableError as exc:
            if os.environ.get("CI", "").strip().lower() == "true":
                pytest.fail(f"CI=true needs a real PostgreSQL server: {exc}")
            pytest.skip(f"no PostgreSQL server: {exc}")
        yield url
        dispose_engines()
