"""Fixtures shared by the reliability families: fresh engines around every test, and one real
PostgreSQL server for the whole session (started by ``otonom_runtime.testing.postgres`` unless
``OTONOM_TEST_POSTGRES_URL`` names one; skipped without one, failed when ``CI=true``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from otonom_runtime.store import dispose_engines
from otonom_runtime.testing.postgres import PostgresUnavailableError, postgres_server


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    dispose_engines()
    yield
    dispose_engines()


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
