"""Run liveness: who runs a backtest (``ProcessIdentity``), its heartbeat (``RunHeartbeat``)
and the marking of interrupted runs ``failed`` (``fail_interrupted_runs``)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from sqlalchemy import Dialect, Engine, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from otonom_runtime._errors import StoreError
from otonom_runtime.store.engine import _resolve, _safe, _sqlite_file
from otonom_runtime.store.tables import BacktestRun, _utcnow

__all__ = [
    "HEARTBEAT_INTERVAL_S",
    "HEARTBEAT_STALE_S",
    "ProcessIdentity",
    "RunHeartbeat",
    "fail_interrupted_runs",
    "list_runs",
    "this_process",
]

log = logging.getLogger("otonom_runtime.store")

HEARTBEAT_INTERVAL_S: Final = 30.0
"""Seconds between two heartbeats of a running backtest (``RunHeartbeat``)."""
HEARTBEAT_STALE_S: Final = 900.0
"""A running run whose last heartbeat is older than this many seconds is taken as interrupted
when its process cannot be checked (another host, or an unknown pid) (``fail_interrupted_runs``)."""


class ProcessIdentity(NamedTuple):
    """Who runs a backtest: ``host`` (``socket.gethostname()``), ``pid``, and ``start``: the
    process's start time as ``"<boot id>:<pid namespace>:<start ticks>"`` (Linux ``/proc``;
    None elsewhere). Two processes with equal ``start`` prefixes (boot id and pid namespace)
    see the same pids, so one can tell whether the other's pid is still that process."""

    host: str
    pid: int
    start: str | None


_GONE: Final = "gone"


def _machine() -> str | None:
    """``"<boot id>:<pid namespace inode>"`` of this process (Linux), None when unreadable."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = str(Path("/proc/self/ns/pid").readlink())  # "pid:[4026531836]"
    except (OSError, UnicodeDecodeError):
        return None
    return f"{boot}:{namespace.removeprefix('pid:[').removesuffix(']')}"


def _start_ticks(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks after boot); ``_GONE`` when
    there is no such process or it is a zombie (dead, not yet reaped); None when unreadable."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return _GONE
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # the name in (...) may hold blanks
    if len(fields) < 20:
        return None
    if fields[0] in (b"Z", b"X"):
        return _GONE
    return fields[19].decode("ascii", "replace")


def this_process() -> ProcessIdentity:
    """The ``ProcessIdentity`` of the calling process: its start token read once per pid (a
    fork has another pid; three ``/proc`` reads cost a daemon's tick 2-6 ms, each tick), the
    host name anew."""
    pid = os.getpid()
    return ProcessIdentity(socket.gethostname(), pid, _start_token(pid))


@functools.lru_cache(maxsize=1)
def _start_token(pid: int) -> str | None:
    """``ProcessIdentity.process_start`` of process ``pid`` (this one's: ``this_process``;
    one entry: a forked child's pid is never its parent's, so a child reads its own)."""
    machine = _machine()
    ticks = _start_ticks(pid) if machine is not None else None
    return f"{machine}:{ticks}" if machine is not None and ticks not in (None, _GONE) else None


def _as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite gives stored times back without a zone: they are UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def _db_now(conn: Any) -> dt.datetime:
    """Now, by the clock every process of the store shares: the server's for PostgreSQL and
    other servers, this machine's for SQLite (a local file)."""
    if conn.dialect.name == "sqlite":
        return _utcnow()
    return _as_utc(conn.execute(select(func.now())).scalar_one())


def _heartbeat_value(dialect: Dialect) -> Any:
    """The value a heartbeat writes: ``_db_now`` as SQL (the server's clock) or a bind."""
    return _utcnow() if dialect.name == "sqlite" else func.now()


@dataclass(frozen=True)
class _Running:
    id: int
    host: str | None
    pid: int | None
    process_start: str | None
    heartbeat_at: dt.datetime | None
    created_at: dt.datetime


def _process_gone(run: _Running, me: ProcessIdentity) -> str | None:
    """Why ``run``'s process is provably gone; "" when it provably lives; None when this
    process cannot tell (another host, another pid namespace or boot, no /proc)."""
    if run.host != me.host or run.pid is None:
        return None
    who = f"process {run.pid} on {run.host}"
    if run.process_start is not None and me.start is not None:
        machine, _, ticks = run.process_start.rpartition(":")
        if machine != me.start.rpartition(":")[0]:
            return None  # another boot or pid namespace under the same host name
        now = _start_ticks(run.pid)
        if now == _GONE:
            return f"its {who} is gone"
        if now is None:
            return None
        if now != ticks:
            return f"its {who} is gone (pid {run.pid} now belongs to a later process)"
        return ""
    if run.process_start is None and me.start is None and os.name == "posix":
        try:
            os.kill(run.pid, 0)  # signal 0: is there such a pid (no start time to compare)
        except ProcessLookupError:
            return f"its {who} is gone"
        except OSError:
            return None
    return None


def _interrupted(
    run: _Running, me: ProcessIdentity, now: dt.datetime, stale_s: float
) -> str | None:
    """Why ``run`` is interrupted, None when it may still be running."""
    last = _as_utc(run.heartbeat_at or run.created_at)
    seen = f"last heartbeat {last.strftime('%Y-%m-%d %H:%M:%S UTC')}"
    gone = _process_gone(run, me)
    if gone == "":
        return None  # the very process is alive: running, however long since its heartbeat
    if gone is not None:
        return f"interrupted: {gone} ({seen})"
    age = (now - last).total_seconds()
    if age > stale_s:
        who = "" if run.pid is None else f" from process {run.pid} on {run.host}"
        return (
            f"interrupted: no heartbeat for {age:.0f} s{who} ({seen}; stale after {stale_s:.0f} s)"
        )
    return None


def fail_interrupted_runs(
    url_or_engine: str | Engine | None = None, *, stale_after_s: float = HEARTBEAT_STALE_S
) -> list[int]:
    """Mark ``failed`` every ``running`` backtest run whose process is gone; returns their ids.

    A run is interrupted when its process is provably gone (same host, boot and pid namespace,
    and the pid is dead, a zombie, or now another process: its start time differs) or, when
    this process cannot check that (a run of another host, on a PostgreSQL store shared by
    several hosts; a run stored before version 4), when its heartbeat (else its
    ``created_at``) is older than ``stale_after_s`` by the store's clock. A run whose process
    provably lives is never marked, however old its heartbeat. The run gets ``error`` =
    ``"interrupted: ..."`` (why, and its last heartbeat) and ``finished_at`` = now.

    Safe to run concurrently (``init_db`` runs it on every opening): each run is marked by one
    conditional UPDATE (still ``running``, heartbeat unchanged since it was judged), so a run
    is marked once and a heartbeat that comes in between keeps it running. Raises
    ``StoreError`` when the store cannot be read or written.
    """
    engine = _resolve(url_or_engine)
    table = BacktestRun
    me = this_process()
    marked: list[int] = []
    try:
        with engine.connect() as conn:
            now = _db_now(conn)
            runs = [
                _Running(*row)
                for row in conn.execute(
                    select(
                        table.id,
                        table.host,
                        table.pid,
                        table.process_start,
                        table.heartbeat_at,
                        table.created_at,
                    ).where(table.status == "running")
                ).all()
            ]
        verdicts = [(run, _interrupted(run, me, now, stale_after_s)) for run in runs]
        for run, reason in verdicts:
            if reason is None:
                continue
            beat = (
                table.heartbeat_at.is_(None)
                if run.heartbeat_at is None
                else table.heartbeat_at == run.heartbeat_at
            )
            with engine.begin() as conn:
                done = conn.execute(
                    update(table)
                    .where(table.id == run.id, table.status == "running", beat)
                    .values(
                        status="failed",
                        finished_at=_heartbeat_value(conn.dialect),
                        error=reason[:2000],
                    )
                )
            if done.rowcount == 1:
                marked.append(run.id)
                log.warning("backtest run %d marked failed: %s", run.id, reason)
    except sa_exc.DBAPIError as exc:
        raise StoreError(
            f"cannot mark the interrupted runs of {_safe(engine.url)} failed: {exc.orig}"
        ) from None
    return marked


class RunHeartbeat:
    """Keeps a running run's ``heartbeat_at`` fresh while it runs.

    ``start()`` writes one heartbeat at once, then a daemon thread writes one every
    ``interval_s`` (one small UPDATE on its own pooled connection, only while the run is still
    ``running``); ``stop()`` ends the thread (waits for it). Also a context manager. A
    heartbeat that fails (the store busy beyond its timeout, the server gone) is logged and
    tried again at the next interval: it never fails the run. ``engine`` None (a session bound
    to a connection) or an in-memory SQLite store (no other process can see it): no thread.
    """

    def __init__(
        self, engine: Engine | None, run_id: int, *, interval_s: float = HEARTBEAT_INTERVAL_S
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s is {interval_s}; expected seconds > 0")
        self.run_id = run_id
        self.interval_s = interval_s
        self.beats = 0
        self._engine = engine
        if (
            engine is not None
            and engine.dialect.name == "sqlite"
            and _sqlite_file(engine.url) is None
        ):
            self._engine = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_session(cls, session: Session, run_id: int) -> RunHeartbeat:
        """The heartbeat of ``run_id`` on the engine ``session`` is bound to (none when it is
        bound to a connection)."""
        bind = session.get_bind()
        return cls(bind if isinstance(bind, Engine) else None, run_id)

    def beat(self) -> bool:
        """Write one heartbeat now; True when the run was still ``running`` (and updated)."""
        if self._engine is None:
            return False
        table = BacktestRun
        with self._engine.begin() as conn:
            done = conn.execute(
                update(table)
                .where(table.id == self.run_id, table.status == "running")
                .values(heartbeat_at=_heartbeat_value(conn.dialect))
            )
        self.beats += 1
        return bool(done.rowcount)

    def _beat_quietly(self) -> None:
        try:
            self.beat()
        except Exception as exc:  # a heartbeat never fails the run
            log.warning(
                "heartbeat of backtest run %d failed (tried again later): %s", self.run_id, exc
            )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat_quietly()

    def start(self) -> RunHeartbeat:
        """The first heartbeat now, then one every ``interval_s`` (idempotent)."""
        if self._engine is None or self._thread is not None:
            return self
        self._beat_quietly()
        self._thread = threading.Thread(
            target=self._loop, name=f"otonom-heartbeat-run-{self.run_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """No more heartbeats (waits for the thread to end)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> RunHeartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def list_runs(session: Session) -> list[BacktestRun]:
    """Every stored backtest run, newest (highest id) first (``otonom runs list``)."""
    return list(session.execute(select(BacktestRun).order_by(BacktestRun.id.desc())).scalars())
