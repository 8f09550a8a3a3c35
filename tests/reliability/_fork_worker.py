"""The fork checks of ``test_threads_fork.py`` (run by file path in a subprocess, so that a
deadlock in a forked child ends in the test's subprocess timeout instead of a hung test run).

``python _fork_worker.py policy MODEL STATES_NPY OUT_NPZ``: load the policy, predict every state
(single and batches) in the parent, ``os.fork``; the child predicts them all again and writes
its results to ``OUT_NPZ.child.npz``, the parent (after the fork, while the child runs) to
``OUT_NPZ.parent.npz``, and the results before the fork to ``OUT_NPZ``.

``python _fork_worker.py store URL OUT_JSON``: the parent reads the store (a pooled connection
stays open), forks; the child reads and writes through ``get_session`` and disposes its
engines (as a worker does on exit); then the parent reads again. ``OUT_JSON`` gets the
connections' identities (the driver connection's ``id()`` and, on PostgreSQL, the server's
backend pid) seen by the parent before and after, and by the child, and what each read.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

BATCH_SIZES = (1, 7, 64, 65, 1000)


def _predict_all(policy: Any, states: np.ndarray) -> dict[str, np.ndarray]:
    single = [policy.predict(s, return_probs=True) for s in states]
    out = {
        "single_actions": np.array([int(a) for a, _, _ in single], dtype=np.int64),
        "single_strengths": np.array([s for _, s, _ in single], dtype=np.float64),
        "single_probs": np.stack([p for _, _, p in single]),
    }
    for size in BATCH_SIZES:
        parts = [policy.predict_batch(states[i : i + size]) for i in range(0, len(states), size)]
        out[f"batch{size}_actions"] = np.concatenate([p[0] for p in parts])
        out[f"batch{size}_strengths"] = np.concatenate([p[1] for p in parts])
        out[f"batch{size}_probs"] = np.concatenate([p[2] for p in parts])
    return out


def _policy(model: str, states_file: str, out: str) -> int:
    from otonom_runtime.policy import load_rl_policy

    policy = load_rl_policy(model)
    states = np.load(states_file)
    np.savez(out, **_predict_all(policy, states))  # the pool's threads run before the fork
    pid = os.fork()
    if pid == 0:
        try:
            np.savez(out + ".child.npz", **_predict_all(policy, states))
        finally:
            os._exit(0)
    np.savez(out + ".parent.npz", **_predict_all(policy, states))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _identity(session: Any) -> dict[str, Any]:
    conn = session.connection()
    out: dict[str, Any] = {"dbapi_id": id(conn.connection.dbapi_connection)}
    if conn.dialect.name == "postgresql":
        out["backend_pid"] = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    out["symbols"] = conn.execute(text("SELECT count(*) FROM symbols")).scalar_one()
    return out


def _store(url: str, out_json: str) -> int:
    from otonom_runtime.store import dispose_engines, get_or_create_symbol, get_session, init_db

    init_db(url)
    with get_session(url) as session:
        before = _identity(session)
        # held for the whole run: in the child the inherited connection object stays alive,
        # so a new one cannot take its address (``id``); without this the child's fresh
        # connection sometimes got the freed object's address and looked like the parent's
        inherited = session.connection().connection.dbapi_connection
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            with get_session(url) as session:
                get_or_create_symbol(session, "FORKED", source="test")
            with get_session(url) as session:
                child = _identity(session)
            dispose_engines()  # a worker's clean exit
            os.write(write, json.dumps(child).encode())
            code = 0
        except BaseException as exc:
            os.write(write, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert id(inherited) == before["dbapi_id"]
    with os.fdopen(read, "rb") as pipe:
        child_seen = json.loads(pipe.read() or b"{}")
    try:
        with get_session(url) as session:
            after: dict[str, Any] = _identity(session)
    except Exception as exc:
        after = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    Path(out_json).write_text(
        json.dumps(
            {
                "before": before,
                "child": child_seen,
                "after": after,
                "child_exit": os.waitstatus_to_exitcode(status),
            }
        ),
        encoding="utf-8",
    )
    return 0


def main(argv: list[str]) -> int:
    if argv[0] == "policy":
        return _policy(*argv[1:])
    return _store(*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
