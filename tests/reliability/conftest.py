"""Fixtures shared by the reliability families: fresh engines around every test, and one real
PostgreSQL server for the whole session (started by ``otonom_runtime.testing.postgres`` unless
``OTONOM_TEST_POSTGRES_URL`` names one; skipped without one, failed when ``CI=true``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otonom_runtime.store import dispose_engines
from otonom_runtime.testing.postgres import postgres_for_tests


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    dispose_engines()
    yield
    dispose_engines()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session; skips without one, fails when ``CI=true``."""
    with postgres_for_tests() as url:
        yield url
        dispose_engines()
