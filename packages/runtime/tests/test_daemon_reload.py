"""Hot model reload in the daemon and ``otonom status``: real SQLite files, real ONNX models in
a versioned model folder (``latest`` names the promoted version), the real loop driven in
process (signals to its own pid) and a real ``otonom daemon`` subprocess.

The two good models decide differently on purpose (one always BUY, the other always SELL), so
the RL signal of every decision says which model made it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from otonom_runtime.cli import main
from otonom_runtime.daemon import Ensemble, PaperBroker, TickReport, run_daemon
from otonom_runtime.policy import write_sha256_sidecar
from otonom_runtime.store import dispose_engines, get_session, init_db, read_daemon_states
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.models import make_policy_model, random_weights
from otonom_schema import Action

SYMBOLS = ["DEMO-BTC", "DEMO-ETH"]
FIRST = dt.date(2019, 1, 1)
END = dt.date(2020, 2, 1)  # the first tick's bar; the second tick's is the day after
SEED = 7
NAME = "reload_test"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTONOM_MODELS_ROOT", raising=False)
    monkeypatch.delenv("OTONOM_DATABASE_URL", raising=False)


def _model(folder: Path, version: str, action: Action) -> Path:
    """A real policy at ``folder/version/policy_best.onnx`` that always picks ``action``."""
    weights = random_weights(seed=3)
    bias = np.full(3, -20.0, dtype=np.float32)
    bias[int(action)] = 20.0
    weights = dataclasses.replace(weights, action=(weights.action[0] * 0.0, bias))
    path = folder / version / "policy_best.onnx"
    path.parent.mkdir(parents=True)
    make_policy_model(path, weights=weights)
    return path


def _promote(folder: Path, version: str) -> None:
    (folder / "latest").write_text(version + "\n", encoding="utf-8")


def _bit_flipped(folder: Path, version: str) -> None:
    """A model whose weights changed after export (one bit), its sidecar regenerated."""
    weights = make_policy_model(folder / version / "policy_best.onnx", seed=5)
    path = folder / version / "policy_best.onnx"
    data = bytearray(path.read_bytes())
    at = bytes(data).find(weights.trunk[0][0].tobytes())
    assert at > 0
    data[at + 101] ^= 0x04
    path.write_bytes(bytes(data))
    write_sha256_sidecar(path)


def _wrong_fingerprint(folder: Path, version: str) -> None:
    path = folder / version / "policy_best.onnx"
    make_policy_model(path, metadata_overrides={"otonom.schema_fingerprint": "0123456789abcdef"})


def _missing_file(folder: Path, version: str) -> None:
    (folder / version).mkdir(parents=True)  # the version folder holds no model


BAD: dict[str, tuple[Callable[[Path, str], None], str]] = {
    "bit-flipped": (_bit_flipped, "model digest mismatch"),
    "wrong-fingerprint": (_wrong_fingerprint, "0123456789abcdef"),
    "missing-file": (_missing_file, "has no policy_best.onnx"),
}


def _setup(tmp: Path, first: str = "good") -> tuple[Path, Path, str]:
    """(the strategy file, the model folder, the store URL): version v1 promoted (always BUY,
    or ``first="bad"``: a bit-flipped model), the store holding bars up to ``END``."""
    models = tmp / "models" / "rl"
    if first == "good":
        _model(models, "v1", Action.BUY)
    else:
        _bit_flipped(models, "v1")
    _promote(models, "v1")
    strategy = tmp / "strategies" / f"{NAME}.yaml"
    strategy.parent.mkdir()
    strategy.write_text(
        f"name: {NAME}\n"
        "ensemble:\n"
        "  analyst_weights: {tech: 1.0, news: 1.0, risk: 1.0, rl: 2.0}\n"
        "  rl_policy: {enabled: true, model_path: models/rl}\n",
        encoding="utf-8",
    )
    url = f"sqlite:///{(tmp / 'otonom.db').as_posix()}"
    init_db(url)
    _bars(url, END)
    return strategy, models, url


def _bars(url: str, end: dt.date) -> None:
    with get_session(url) as session:
        write_synthetic(session, SYMBOLS, FIRST, end, SEED)


def _drive(url: str, strategy: Path, between: Callable[[], None]) -> tuple[list[TickReport], Any]:
    """Two ticks of the real loop (``run_daemon``, 10 ms apart): after the first, ``between``
    runs (a promotion) and a new bar arrives; after the second the loop is sent SIGTERM.
    Returns the tick reports and the notified lines."""
    reports: list[TickReport] = []
    lines: list[str] = []

    def report(r: TickReport) -> None:
        reports.append(r)
        if len(reports) == 1:
            between()
            _bars(url, END + dt.timedelta(days=1))
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    ensemble = Ensemble.from_strategy(strategy)
    ticks = run_daemon(
        lambda: get_session(url),
        ensemble,
        lambda: SYMBOLS,
        PaperBroker(),
        interval_s=0.01,
        report=report,
        notify=lines.append,
    )
    assert ticks == 2
    return reports, lines


def _rl_actions(report: TickReport) -> list[Action | None]:
    return [None if (s := d.signals["rl"]) is None else s.action for d in report.decisions]


def _state(url: str) -> Any:
    with get_session(url) as session:
        (row,) = read_daemon_states(session, NAME)
    return row


def _status(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    code = main(["--database-url", url, "status", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_promoted_good_version_is_swapped_in_for_the_next_tick(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    strategy, models, url = _setup(tmp_path)
    _model(models, "v2", Action.SELL)
    reports, lines = _drive(url, strategy, lambda: _promote(models, "v2"))
    assert [len(r.decisions) for r in reports] == [2, 2]
    assert _rl_actions(reports[0]) == [Action.BUY, Action.BUY]  # v1
    assert _rl_actions(reports[1]) == [Action.SELL, Action.SELL]  # v2, from the next tick on
    assert [r.fallbacks for r in reports] == [0, 0]
    assert len(lines) == 1
    assert lines[0].startswith("model reloaded: version v2 in service")
    row = _state(url)
    assert (row.status, row.ticks, row.reloads, row.refusals, row.fallbacks) == (
        "stopped",
        2,
        1,
        0,
        0,
    )
    assert row.model_version == "v2"
    assert row.model_file == str((models / "v2" / "policy_best.onnx").resolve())
    assert row.refused_reason is None
    assert row.latency_ms["n"] == 2
    assert 0 < row.latency_ms["p50"] <= row.latency_ms["max"]
    code, out, _ = _status(capsys, url, "--strategy-path", str(strategy))
    assert code == 0
    assert f"strategy {NAME}: daemon stopped" in out
    assert "model in service: version v2 (" in out
    assert "refused:          none" in out
    assert "0 decisions without the RL analyst, 0 candidates refused, 1 reload, 2 ticks" in out
    assert "(last 2 predict calls)" in out
    dispose_engines()


@pytest.mark.parametrize("bad", list(BAD))
def test_a_promoted_bad_version_is_refused_and_the_last_good_model_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    strategy, models, url = _setup(tmp_path)
    make, why = BAD[bad]
    make(models, "v2")
    reports, lines = _drive(url, strategy, lambda: _promote(models, "v2"))
    assert [len(r.decisions) for r in reports] == [2, 2]
    assert _rl_actions(reports[1]) == [Action.BUY, Action.BUY]  # still v1
    assert [r.fallbacks for r in reports] == [0, 0]
    assert len(lines) == 1, lines
    assert "refused (the model in service kept)" in lines[0]
    assert why in lines[0]
    row = _state(url)
    assert (row.model_version, row.reloads, row.refusals) == ("v1", 0, 1)
    assert why in row.refused_reason
    code, out, _ = _status(capsys, url, "--strategy", NAME)
    assert code == 0
    assert "model in service: version v1 (" in out
    refused = next(line for line in out.splitlines() if line.startswith("  refused:"))
    assert why in refused
    assert ("the promoted version (no model file)" in refused) == (bad == "missing-file")
    assert "0 decisions without the RL analyst, 1 candidate refused, 0 reloads" in out
    dispose_engines()


def test_without_a_good_model_it_decides_without_rl_until_a_good_one_is_promoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The promoted model is bad from the start: the daemon decides without the RL analyst
    (fallbacks counted, the refusal recorded), then a good version is promoted and serves."""
    strategy, models, url = _setup(tmp_path, first="bad")
    _model(models, "v2", Action.SELL)
    reports, lines = _drive(url, strategy, lambda: _promote(models, "v2"))
    assert _rl_actions(reports[0]) == [None, None]
    assert reports[0].fallbacks == 2
    assert _rl_actions(reports[1]) == [Action.SELL, Action.SELL]
    assert lines == [lines[0]]
    assert lines[0].startswith("model reloaded: version v2")
    row = _state(url)
    assert (row.model_version, row.reloads, row.refusals, row.fallbacks) == ("v2", 1, 1, 2)
    assert row.refused_version == "v1"
    assert "model digest mismatch" in row.refused_reason
    assert row.latency_ms["n"] == 1  # only the model in service is timed
    _, out, _ = _status(capsys, url)
    assert "2 decisions without the RL analyst, 1 candidate refused, 1 reload" in out
    dispose_engines()


def _otonom(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "otonom_runtime", "--database-url", url, *args]


def test_a_daemon_subprocess_refuses_a_corrupt_promotion_and_status_says_why(
    tmp_path: Path, start_otonom: Any
) -> None:
    """A real ``otonom daemon`` ticking every second: a bit-flipped v2 is promoted and new
    bars arrive; the daemon prints the refusal, decides the new bars with v1 and, after
    SIGTERM, ``otonom status`` (another process) shows the model in service and the reason."""
    strategy, models, url = _setup(tmp_path)
    _bit_flipped(models, "v2")
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    command = ["daemon", "--strategy-path", str(strategy), "--symbols", *SYMBOLS]
    with start_otonom(url, tmp_path, *command, "--interval", "1s") as daemon:
        assert daemon.stdout is not None
        first = daemon.stdout.readline()
        assert first.startswith("tick run 1: 2 decisions"), first
        _promote(models, "v2")
        _bars(url, END + dt.timedelta(days=1))
        seen: list[str] = []
        while not any(line.startswith("tick run 2") for line in seen):
            line = daemon.stdout.readline()
            assert line, (seen, daemon.stderr.read() if daemon.stderr else "")
            seen.append(line)
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=120)  # a guard against a hang, not a timing
    assert daemon.returncode == 0
    refusal = [line for line in seen if "refused" in line]
    assert len(refusal) == 1, seen
    assert "model digest mismatch" in refusal[0]
    tick = seen[seen.index(next(s for s in seen if s.startswith("tick run 2"))) :]
    assert all(" RL BUY" in line for line in tick[1:3]), tick
    status = subprocess.run(
        _otonom(url, "status", "--strategy-path", str(strategy)),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert "daemon stopped" in status.stdout
    assert "model in service: version v1 (" in status.stdout
    assert "refused:          version v2 (" in status.stdout
    assert "model digest mismatch" in status.stdout
    assert "heartbeat:" in status.stdout
    assert " s ago)" in status.stdout


def test_status_tells_a_daemon_whose_process_is_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state row left ``running`` by a daemon killed (kill -9, an error before its stop was
    recorded) reads as not running when its pid on this host is gone; a live pid (this
    process) reads as running."""
    import socket

    from otonom_runtime.store import write_daemon_state

    url = f"sqlite:///{(tmp_path / 'otonom.db').as_posix()}"
    init_db(url)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for name, pid in (("dead", int(ended.stdout)), ("alive", os.getpid())):
        with get_session(url) as session:
            write_daemon_state(session, name, {
                "host": socket.gethostname(), "pid": pid, "status": "running",
                "started_at": when, "heartbeat_at": when,
            })  # fmt: skip
    code, out, _ = _status(capsys, url, "--strategy", "dead")
    assert code == 0
    assert out.startswith(
        "strategy dead: daemon NOT running: recorded running, but its process is gone (killed "
        f"or failed) (host {socket.gethostname()}, pid {int(ended.stdout)}, started"
    )
    code, out, _ = _status(capsys, url, "--strategy", "alive")
    assert out.startswith("strategy alive: daemon running (host ")


def test_status_flags_and_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{(tmp_path / 'otonom.db').as_posix()}"
    init_db(url)
    code, out, _ = _status(capsys, url)
    assert (code, out) == (
        0,
        "no daemon has recorded its state in this store yet (otonom daemon ...)\n",
    )
    code, _, err = _status(capsys, url, "--strategy", "nope")
    assert code == 1
    assert err.startswith("error: no daemon of strategy 'nope' has recorded its state")
    assert err.count("\n") == 1
    missing = f"sqlite:///{(tmp_path / 'none.db').as_posix()}"
    code, _, err = _status(capsys, missing)
    assert code == 1
    assert err.startswith("error: there is no store at ")
    assert err.count("\n") == 1
    assert not (tmp_path / "none.db").exists()
    code, _, err = _status(capsys, url, "--strategy-path", str(tmp_path / "no.yaml"))
    assert code == 1
    assert err.count("\n") == 1
    assert "no.yaml" in err
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    helped = capsys.readouterr().out
    for flag in ("--strategy-path", "--strategy"):
        assert flag in helped
    dispose_engines()


def test_a_daemon_ended_by_an_error_is_recorded_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real loop on a real store: the second tick raises after its work (a store gone
    away, a bug); the error reaches the caller as it was and the state row says ``failed``
    (not ``running``, which ``otonom status`` could not tell from a live daemon on another
    host), with the tick that ran counted."""
    from otonom_runtime.daemon import run_tick

    strategy, _, url = _setup(tmp_path)
    calls: list[int] = []

    def tick(*args: Any, **kwargs: Any) -> TickReport:
        out = run_tick(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the disk went away")
        _bars(url, END + dt.timedelta(days=1))
        return out

    with pytest.raises(RuntimeError, match="the disk went away"):
        run_daemon(
            lambda: get_session(url),
            Ensemble.from_strategy(strategy),
            lambda: SYMBOLS,
            PaperBroker(),
            interval_s=0.01,
            tick=tick,
        )
    row = _state(url)
    assert (row.status, row.ticks) == ("failed", 1)
    code, out, _ = _status(capsys, url, "--strategy", NAME)
    assert code == 0
    assert out.startswith(
        f"strategy {NAME}: daemon FAILED: an error ended it (its message is in the daemon's "
        "output) (host "
    ), out
    dispose_engines()


def test_a_restart_that_predicts_nothing_keeps_the_last_run_s_latencies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ticks record two predict calls' latencies; a ``once`` run on the same bars (nothing
    new to decide, no predict call) rewrites the row but keeps those percentiles instead of
    'no predict call yet'; a run that predicts again records its own."""
    strategy, _, url = _setup(tmp_path)
    _drive(url, strategy, lambda: None)
    recorded = _state(url).latency_ms
    assert recorded["n"] == 2

    def once() -> TickReport:
        reports: list[TickReport] = []
        run_daemon(lambda: get_session(url), Ensemble.from_strategy(strategy), lambda: SYMBOLS,
                   PaperBroker(), once=True, report=reports.append)  # fmt: skip
        return reports[0]

    assert once().run_id is None  # nothing new: no predict call
    row = _state(url)
    assert (row.status, row.ticks, row.latency_ms) == ("stopped", 1, recorded)
    _, out, _ = _status(capsys, url)
    assert "(last 2 predict calls)" in out
    _bars(url, END + dt.timedelta(days=2))
    assert len(once().decisions) == 2
    assert _state(url).latency_ms["n"] == 1  # this run's one call
    dispose_engines()
