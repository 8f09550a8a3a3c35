"""A throwaway PostgreSQL server for tests (needs the PostgreSQL server binaries and psycopg).

::

    from otonom_runtime.testing.postgres import postgres_server

    with postgres_server() as url:          # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        init_db(url)
        other = new_database(url)           # a fresh, empty database on the same server

If ``$OTONOM_TEST_POSTGRES_URL`` is set, that server is used as is (``postgresql://`` URLs get
the ``+psycopg`` driver) and nothing is started. Otherwise ``initdb`` and ``pg_ctl`` are looked
up on PATH, then in ``pg_config --bindir``, then in ``/usr/lib/postgresql/*/bin`` (newest
first); a cluster with trust authentication is made in a temporary folder and started on a free
loopback port (no durability: fsync off), then stopped (``pg_ctl stop -m immediate``) and
deleted on exit. PostgreSQL refuses to run as root, so under root the commands run as the
``postgres`` OS user (``runuser``, else ``su``), which owns the temporary folder.

``PostgresUnavailableError`` says why no server could be had (no binaries, no ``postgres``
user under root, the server did not start: the message holds the end of its log).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "TEST_URL_ENV",
    "PostgresUnavailableError",
    "find_postgres_bindir",
    "new_database",
    "postgres_for_tests",
    "postgres_server",
]

TEST_URL_ENV: Final = "OTONOM_TEST_POSTGRES_URL"
_SERVER_OPTIONS: Final = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
)


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server can be had on this machine (the message says why)."""


def _has_tools(folder: Path) -> bool:
    return (folder / "initdb").is_file() and (folder / "pg_ctl").is_file()


def find_postgres_bindir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``; ``PostgresUnavailableError`` if none."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        folder = Path(initdb).resolve().parent
        if _has_tools(folder):
            return folder
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            folder = Path(out.stdout.strip())
            if _has_tools(folder):
                return folder

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in path.parent.name.split(".") if p.isdigit())

    debian = Path("/usr/lib/postgresql")
    for candidate in sorted(debian.glob("*/bin"), key=version, reverse=True):
        if _has_tools(candidate):
            return candidate
    raise PostgresUnavailableError(
        "no PostgreSQL server binaries (initdb, pg_ctl) on PATH, in `pg_config --bindir` or in "
        "/usr/lib/postgresql/*/bin; install the server (Debian: apt-get install postgresql) "
        f"or set {TEST_URL_ENV}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_user(cmd: Sequence[str], user: str | None) -> list[str]:
    if user is None:
        return list(cmd)
    runuser = shutil.which("runuser")
    if runuser is not None:
        return [runuser, "-u", user, "--", *cmd]
    return ["su", user, "-s", "/bin/sh", "-c", shlex.join(cmd)]


def _run(cmd: Sequence[str], user: str | None, what: str, timeout: float) -> None:
    try:
        subprocess.run(
            _as_user(cmd, user),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip()[-2000:]
        raise PostgresUnavailableError(f"{what} failed (exit {exc.returncode}): {detail}") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostgresUnavailableError(f"{what} failed: {exc}") from None


def _normalise(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@contextlib.contextmanager
def postgres_server(*, timeout: float = 60.0) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a PostgreSQL server (see the module doc); ``timeout`` in s."""
    env = os.environ.get(TEST_URL_ENV, "").strip()
    if env:
        yield _normalise(env)
        return
    bindir = find_postgres_bindir()
    user: str | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailableError(
                "running as root and there is no `postgres` OS user to run the server as "
                "(PostgreSQL refuses to run as root)"
            ) from None
        user = owner.pw_name
    root = Path(tempfile.mkdtemp(prefix="otonom-pg-"))
    data = root / "data"
    log = root / "server.log"
    started = False
    try:
        if user is not None:
            owner = pwd.getpwnam(user)
            os.chown(root, owner.pw_uid, owner.pw_gid)
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user,
            "initdb",
            timeout,
        )
        port = _free_port()
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 {_SERVER_OPTIONS}"
        try:
            _run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ],
                user,
                "pg_ctl start",
                timeout + 10,
            )
        except PostgresUnavailableError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailableError(f"{exc}\nserver log:\n{tail}") from None
        started = True
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            with contextlib.suppress(PostgresUnavailableError):
                _run(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                    user,
                    "pg_ctl stop",
                    timeout,
                )
        shutil.rmtree(root, ignore_errors=True)


def new_database(server_url: str, prefix: str = "t") -> str:
    """A fresh, empty database on the server ``server_url`` names (``PREFIX_<12 hex>``); returns
    its URL. Tests that need a store of their own on a shared server use it."""
    import uuid

    from sqlalchemy import create_engine, make_url, text

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_for_tests() -> Iterator[str]:
    """``postgres_server()`` for a pytest test or fixture: without a server the test is
    skipped, and failed when ``CI=true`` (CI must run the PostgreSQL tests)."""
    import pytest

    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server())
        except PostgresUnavailableError as exc:
            if os.environ.get("CI", "").strip().lower() == "true":
                pytest.fail(f"CI=true needs a real PostgreSQL server: {exc}")
            pytest.skip(f"no PostgreSQL server: {exc}")
        yield url
