"""Hostile paths: a strategy's model path means one thing, whatever the working directory.

A strategy's ``ensemble.rl_policy.model_path`` resolves against the models root
(``$OTONOM_MODELS_ROOT``, else the nearest folder holding ``models/`` from the strategy file),
never the caller's working directory, and the model must stay inside that root after symlinks
are resolved and be a regular ``.onnx`` file. Each CLI case runs the real ``python -m
otonom_runtime`` in a subprocess from another directory, on a copy of the project's shipped
``strategies/`` and ``models/`` (the default model) in a temporary project; ``timeout=`` only
guards against a hang (nothing is timed).

Which tests fail on the code before this change (measured by running this file with the
previous ``otonom_runtime`` on ``PYTHONPATH``; see docs/reliability.md "Hostile paths"):
every test marked ``# OLD: fails`` below. The rest (a missing folder, a FIFO, a dangling
symlink, ``load_rl_policy``'s own rules, the external-data refusal) held before and still do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from otonom_runtime import PolicyError, StrategyError, load_strategy
from otonom_runtime.policy import load_rl_policy, write_sha256_sidecar
from otonom_runtime.testing.models import make_policy_model

ROOT = Path(__file__).resolve().parents[2]
GUARD_S = 120  # a hang guard for each subprocess, not a time budget
RL_YAML = "ensemble:\n  rl_policy:\n    enabled: true\n    model_path: {}\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _otonom(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "OTONOM_MODELS_ROOT"}
    return subprocess.run(
        [sys.executable, "-m", "otonom_runtime", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        check=False,
    )


def _model_line(out: subprocess.CompletedProcess[str]) -> str:
    """The model file ``strategy check`` reports (exit 0 expected)."""
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = [x for x in out.stdout.splitlines() if x.strip().startswith("rl policy:")]
    return line.split(" model ", 1)[1].split(" (model_path", 1)[0]


def _refused(out: subprocess.CompletedProcess[str], strategy: Path, *needles: str) -> str:
    """``strategy check`` refused ``strategy``: exit 1, one error naming FILE:LINE and the key."""
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert lines[0] == f"error: invalid strategy {strategy} (1 problem):", lines
    assert lines[1].startswith(f"  {strategy}:4: ensemble.rl_policy.model_path: received "), lines
    for needle in needles:
        assert needle in lines[1], (needle, lines[1])
    return lines[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's strategies/ and its shipped default model (models/rl_bc with
    its ``default`` pointer and the version folder it names)."""
    proj = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "strategies", proj / "strategies")
    shipped = ROOT / "models" / "rl_bc"
    version = (shipped / "default").read_text(encoding="utf-8").strip()
    (proj / "models" / "rl_bc").mkdir(parents=True)
    shutil.copyfile(shipped / "default", proj / "models" / "rl_bc" / "default")
    shutil.copytree(shipped / version, proj / "models" / "rl_bc" / version)
    return proj


@pytest.fixture(scope="module")
def real_model(project: Path) -> Path:
    version = (project / "models" / "rl_bc" / "default").read_text(encoding="utf-8").strip()
    return project / "models" / "rl_bc" / version / "policy_best.onnx"


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid model outside the project (what an escape would reach)."""
    folder = tmp_path_factory.mktemp("elsewhere")
    make_policy_model(folder / "policy_best.onnx", seed=99)
    return folder


def _plant(cwd: Path) -> Path:
    """A valid model planted as ``models/rl_bc`` in the caller's working directory."""
    planted = cwd / "models" / "rl_bc" / "policy_best.onnx"
    make_policy_model(planted, seed=7)
    return planted


def _strategy(folder: Path, model_path: str, name: str = "s.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(RL_YAML.format(json.dumps(model_path)), encoding="utf-8")
    return path


# --- the shipped strategy from any directory ---------------------------------------------------


@pytest.mark.parametrize("where", ["filesystem root", "empty folder", "strategies", "models"])
def test_shipped_rl_strategy_checks_from_any_directory(
    project: Path, real_model: Path, tmp_path: Path, where: str
) -> None:
    # OLD: fails from each (the old code found models/rl_bc only from the project root)
    cwd = {
        "filesystem root": Path("/"),
        "empty folder": tmp_path,
        "strategies": project / "strategies",
        "models": project / "models",
    }[where]
    out = _otonom("strategy", "check", str(project / "strategies" / "ensemble_rl_v1.yaml"), cwd=cwd)
    assert _model_line(out) == str(real_model)


def test_a_relative_strategy_path_from_a_subfolder(project: Path, real_model: Path) -> None:
    # OLD: fails (models/rl_bc was not found from strategies/)
    out = _otonom("strategy", "check", "ensemble_rl_v1.yaml", cwd=project / "strategies")
    assert _model_line(out) == str(real_model)


def test_the_guides_policy_best_pt_spelling_from_anywhere(
    project: Path, real_model: Path, tmp_path: Path
) -> None:
    # OLD: fails (looked up in the working directory, then beside the file)
    path = _strategy(project / "strategies" / "guide", "models/rl_bc/policy_best.pt")
    assert _model_line(_otonom("strategy", "check", str(path), cwd=tmp_path)) == str(real_model)


# --- a models/ planted beside the caller --------------------------------------------------------


def test_models_planted_beside_the_caller_are_not_served_by_check(
    project: Path, real_model: Path, tmp_path: Path
) -> None:
    # OLD: fails (the planted model is reported)
    planted = _plant(tmp_path)
    out = _otonom(
        "strategy", "check", str(project / "strategies" / "ensemble_rl_v1.yaml"), cwd=tmp_path
    )
    assert _model_line(out) == str(real_model)
    assert str(planted) not in out.stdout + out.stderr


def test_backtest_beside_a_planted_model_serves_and_records_the_real_one(
    project: Path, real_model: Path, tmp_path: Path
) -> None:
    # OLD: fails (the planted model is served; the run records no model file nor hash)
    planted = _plant(tmp_path)
    assert _sha256(planted) != _sha256(real_model)
    env = {"OTONOM_DATABASE_URL": f"sqlite:///{tmp_path / 'store' / 'otonom.db'}"}
    synth = _otonom(
        "data", "synth", "--symbol", "DEMO-BTC", "--start", "2020-01-01", "--end", "2020-12-31",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert synth.returncode == 0, synth.stderr
    strategy = project / "strategies" / "ensemble_rl_v1.yaml"
    run = _otonom(
        "backtest", "--strategy-path", str(strategy), "--symbol", "DEMO-BTC",
        "--start-date", "2020-06-01", "--end-date", "2020-08-31", "--plot", "none", "--quiet",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "RL fallbacks" in run.stdout
    assert "RL analyst fell back" not in run.stdout
    record = json.loads(_otonom("runs", "show", "1", "--json", cwd=tmp_path, env=env).stdout)
    assert record["params"]["rl_model_file"] == str(real_model)
    assert record["params"]["rl_model_sha256"] == _sha256(real_model)
    assert record["metrics"]["fallbacks"] == 0
    shown = _otonom("runs", "show", "1", cwd=tmp_path, env=env).stdout.splitlines()
    (line,) = [x for x in shown if x.startswith("RL model")]
    assert line.split(None, 2)[2] == f"{real_model} (sha256 {_sha256(real_model)[:12]}...)"
    # the same run with the RL analyst off records no model
    off = _otonom(
        "backtest", "--strategy-path", str(strategy), "--symbol", "DEMO-BTC", "--no-rl",
        "--start-date", "2020-06-01", "--end-date", "2020-08-31", "--plot", "none", "--quiet",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert off.returncode == 0, off.stderr
    record = json.loads(_otonom("runs", "show", "2", "--json", cwd=tmp_path, env=env).stdout)
    assert record["params"]["rl_model_file"] is None
    assert record["params"]["rl_model_sha256"] is None
    assert not any(
        x.startswith("RL model")
        for x in _otonom("runs", "show", "2", cwd=tmp_path, env=env).stdout.splitlines()
    )
    # a model inside the root that does not load: the run falls back and says which file
    broken = project / "models" / "broken" / "policy_best.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"not an onnx model")
    write_sha256_sidecar(broken)
    bad = _strategy(project / "strategies" / "broken", "models/broken")
    fell = _otonom(
        "backtest", "--strategy-path", str(bad), "--symbol", "DEMO-BTC",
        "--start-date", "2020-06-01", "--end-date", "2020-08-31", "--plot", "none", "--quiet",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert fell.returncode == 0, fell.stderr
    shown = _otonom("runs", "show", "3", cwd=tmp_path, env=env).stdout.splitlines()
    (line,) = [x for x in shown if x.startswith("RL model")]
    assert line.split(None, 2)[2] == f"{broken} (not loaded: the run fell back)"


# --- escapes ------------------------------------------------------------------------------------


def test_etc_passwd_is_not_a_model(project: Path, tmp_path: Path) -> None:
    # OLD: fails (`strategy check` printed "ok" with /etc/passwd as the model)
    path = _strategy(project / "strategies" / "passwd", "/etc/passwd")
    out = _otonom("strategy", "check", str(path), cwd=tmp_path)
    _refused(out, path, "/etc/passwd is outside the models root", f"models root {project} ")


def test_dot_dot_escape_is_refused(project: Path) -> None:
    # OLD: fails (resolved against the working directory, / here: /etc/passwd was the model)
    escape = "../" * 40 + "etc/passwd"
    path = _strategy(project / "strategies" / "dotdot", escape)
    out = _otonom("strategy", "check", str(path), cwd=Path("/"))
    _refused(out, path, "(that is /etc/passwd) is outside the models root")


def test_absolute_path_outside_the_root_is_refused(project: Path, elsewhere: Path) -> None:
    # OLD: fails (any absolute path was served)
    path = _strategy(project / "strategies" / "abs", str(elsewhere / "policy_best.onnx"))
    out = _otonom("strategy", "check", str(path), cwd=elsewhere)
    _refused(out, path, "is outside the models root", "OTONOM_MODELS_ROOT=")


def test_absolute_path_inside_the_root_is_served(project: Path, real_model: Path) -> None:
    path = _strategy(project / "strategies" / "absin", str(real_model))
    assert _model_line(_otonom("strategy", "check", str(path), cwd=Path("/"))) == str(real_model)


@pytest.mark.parametrize("kind", ["file", "folder", "pointer"])
def test_symlink_escapes_are_refused(
    project: Path, elsewhere: Path, tmp_path: Path, kind: str
) -> None:
    # OLD: fails (from the project root, the symlink was followed out of the project)
    links = project / "models" / f"links_{kind}"
    links.mkdir()
    if kind == "file":  # models/links_file/evil.onnx -> a model elsewhere
        (links / "evil.onnx").symlink_to(elsewhere / "policy_best.onnx")
        model_path = f"models/links_{kind}/evil.onnx"
    elif kind == "folder":  # models/links_folder/rl -> a folder elsewhere
        (links / "rl").symlink_to(elsewhere, target_is_directory=True)
        model_path = f"models/links_{kind}/rl"
    else:  # models/links_pointer/latest names v1, and v1 -> a folder elsewhere
        (links / "latest").write_text("v1\n", encoding="utf-8")
        (links / "v1").symlink_to(elsewhere, target_is_directory=True)
        model_path = f"models/links_{kind}"
    path = _strategy(project / "strategies" / f"link_{kind}", model_path)
    out = _otonom("strategy", "check", str(path), cwd=project)
    _refused(out, path, f"(that is {elsewhere}", "is outside the models root")


def test_a_symlinked_models_folder_needs_the_env_var(elsewhere: Path, tmp_path: Path) -> None:
    """The breaking case: a project whose ``models/`` is a symlink to a folder outside it is
    refused; ``OTONOM_MODELS_ROOT`` naming the folder that really holds ``models/`` serves it."""
    # OLD: fails (the symlinked models/ was served without a word)
    big = tmp_path / "big"
    shutil.copytree(elsewhere, big / "models" / "rl_bc")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "models").symlink_to(big / "models", target_is_directory=True)
    path = _strategy(proj / "strategies", "models/rl_bc")
    out = _otonom("strategy", "check", str(path), cwd=proj)
    _refused(out, path, f"(that is {big / 'models' / 'rl_bc'}) is outside the models root")
    out = _otonom("strategy", "check", str(path), cwd=proj, env={"OTONOM_MODELS_ROOT": str(big)})
    assert _model_line(out) == str(big / "models" / "rl_bc" / "policy_best.onnx")


# --- not a model file ---------------------------------------------------------------------------


def test_a_file_that_is_not_onnx_is_refused(project: Path, tmp_path: Path) -> None:
    # OLD: fails (any regular file was "the model")
    notes = project / "models" / "notes.txt"
    notes.write_text("not a model\n", encoding="utf-8")
    path = _strategy(project / "strategies" / "txt", "models/notes.txt")
    _refused(_otonom("strategy", "check", str(path), cwd=project), path, "is not a .onnx file")


def test_a_folder_without_a_model_is_refused(project: Path, tmp_path: Path) -> None:
    # held before (refused then too, in other words)
    (project / "models" / "empty").mkdir()
    path = _strategy(project / "strategies" / "empty", "models/empty")
    _refused(_otonom("strategy", "check", str(path), cwd=tmp_path), path, "has no policy_best.onnx")


def test_a_fifo_is_refused_without_hanging(project: Path, tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes (none does): the check must not
    open it. The subprocess timeout is the hang guard."""
    # held before (refused then too, in other words)
    fifo = project / "models" / "pipe.onnx"
    os.mkfifo(fifo)
    path = _strategy(project / "strategies" / "fifo", "models/pipe.onnx")
    _refused(_otonom("strategy", "check", str(path), cwd=tmp_path), path, "not a regular file")


def test_a_dangling_or_looping_symlink_is_refused(project: Path, tmp_path: Path) -> None:
    # held before (refused then too, in other words)
    (project / "models" / "dangling.onnx").symlink_to(project / "models" / "gone.onnx")
    (project / "models" / "loop.onnx").symlink_to(project / "models" / "loop.onnx")
    for name in ("dangling", "loop"):
        path = _strategy(project / "strategies" / name, f"models/{name}.onnx")
        _refused(_otonom("strategy", "check", str(path), cwd=tmp_path), path, "models root")


def test_a_binary_pointer_is_refused(project: Path, tmp_path: Path) -> None:
    # OLD: fails (an "unexpected" UnicodeDecodeError naming no file)
    folder = project / "models" / "binary_pointer"
    folder.mkdir()
    (folder / "latest").write_bytes(b"\xff\xfe\x00garbage")
    path = _strategy(project / "strategies" / "binary_pointer", "models/binary_pointer")
    out = _otonom("strategy", "check", str(path), cwd=project)
    _refused(out, path, f"{folder}: its pointer file cannot be read (", "decode byte 0xff")


# --- the root -----------------------------------------------------------------------------------


def test_the_env_var_sets_the_root(project: Path, real_model: Path, tmp_path: Path) -> None:
    # OLD: fails (no such variable: models/rl_bc was looked up in the working directory)
    loose = _strategy(tmp_path / "loose", "models/rl_bc")  # no models/ anywhere up from it
    env = {"OTONOM_MODELS_ROOT": str(project)}
    assert _model_line(_otonom("strategy", "check", str(loose), cwd=tmp_path, env=env)) == str(
        real_model
    )
    for bad, said in (
        ("relative/root", "is a relative path"),
        (str(tmp_path / "no"), "not a folder"),
    ):
        out = _otonom(
            "strategy", "check", str(loose), cwd=tmp_path, env={"OTONOM_MODELS_ROOT": bad}
        )
        _refused(out, loose, f"OTONOM_MODELS_ROOT={bad!r}", said)


def test_a_world_writable_folder_is_never_the_root(elsewhere: Path, tmp_path: Path) -> None:
    """A ``models/`` planted in a folder anyone may write to (like /tmp) above the strategy is
    not the root: the climb stops below it (the strategy's own folder is the root then)."""
    # new rule (the old code looked in the working directory and beside the file only)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    shutil.copytree(elsewhere, shared / "models" / "rl_bc")
    path = _strategy(shared / "mine", "models/rl_bc")
    out = _otonom("strategy", "check", str(path), cwd=tmp_path)
    _refused(out, path, f"models root {shared / 'mine'} (the strategy's folder")
    shared.chmod(0o755)  # an ordinary folder is climbed: its models/ is the root's
    out = _otonom("strategy", "check", str(path), cwd=tmp_path)
    assert _model_line(out) == str(shared / "models" / "rl_bc" / "policy_best.onnx")


def test_models_root_api(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # OLD: fails (the API is new)
    from otonom_runtime.strategy import MODELS_ROOT_ENV, models_root, resolve_strategy_model

    monkeypatch.delenv(MODELS_ROOT_ENV, raising=False)
    assert models_root(project / "strategies") == project
    assert models_root(tmp_path) == tmp_path  # no models/ up from it
    monkeypatch.chdir(tmp_path)
    _plant(tmp_path)  # in the working directory: not where the strategy's root is
    found = resolve_strategy_model("models/rl_bc", project / "strategies")
    assert found.is_relative_to(project / "models" / "rl_bc")
    monkeypatch.setenv(MODELS_ROOT_ENV, str(project))
    assert models_root(tmp_path) == project
    with pytest.raises(StrategyError, match="outside the models root"):
        resolve_strategy_model("/etc/passwd", tmp_path)


def test_load_rl_policy_keeps_ordinary_path_rules(
    project: Path, real_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Called directly, ``load_rl_policy`` reads the path it is given, relative to the working
    directory, like ``open`` (it is not a strategy)."""
    # held before, and must still
    monkeypatch.chdir(project)
    assert load_rl_policy("models/rl_bc").path.resolve() == real_model
    cfg = load_strategy(project / "strategies" / "ensemble_rl_v1.yaml")
    assert cfg.ensemble.rl_policy.model_file == real_model


def test_a_later_chdir_changes_nothing(
    project: Path, real_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A strategy loaded by a relative path, its RL analyst switched on later (``--use-rl``
    style, ``with_rl(True)``) from another directory with a planted ``models/``."""
    # OLD: fails (the planted model was served)
    monkeypatch.chdir(project / "strategies")
    cfg = load_strategy("baseline_v1.yaml")  # RL off; model_path models/rl_bc/policy_best.pt
    monkeypatch.chdir(tmp_path)
    _plant(tmp_path)
    assert cfg.with_rl(True).ensemble.rl_policy.model_file == real_model


# --- external data: weights from the working directory -------------------------------------------


def test_external_data_planted_in_the_working_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old load path (``onnxruntime.InferenceSession(model_bytes)``, which the runtime used
    before external data was refused) reads a model's external data relative to the working
    directory: a planted file there changes the answers, though the sidecar's hash verifies.
    ``load_rl_policy`` refuses the model instead."""
    # held before (external data refused since the model-files work); the old load path is
    # rebuilt here to show what the refusal prevents
    import onnx
    import onnxruntime as ort

    from otonom_schema import compute_states, validate_states
    from otonom_schema.testing import random_history

    plain = tmp_path / "plain.onnx"
    make_policy_model(plain, write_sidecar=False, seed=3)
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / "policy_best.onnx"
    onnx.save_model(
        onnx.load_model(plain), model, save_as_external_data=True,
        all_tensors_to_one_file=True, location="weights.bin", size_threshold=1024,
    )  # fmt: skip
    write_sha256_sidecar(model)
    weights = (folder / "weights.bin").read_bytes()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    states = np.ascontiguousarray(
        validate_states(compute_states(random_history(300, seed=3))[-100:])
    )
    monkeypatch.chdir(cwd)

    def old_load_actions(planted: bytes) -> np.ndarray:
        (cwd / "weights.bin").write_bytes(planted)
        options = ort.SessionOptions()  # as the old _make_session made it
        options.log_severity_level = 3
        session = ort.InferenceSession(
            model.read_bytes(), sess_options=options, providers=["CPUExecutionProvider"]
        )
        probs = session.run(["action_probs"], {"state": states})[0]
        return np.asarray(probs).argmax(axis=1)

    honest = old_load_actions(weights)
    rng = np.random.default_rng(12)
    hostile = np.frombuffer(weights, np.float32) * rng.normal(1.0, 3.0, len(weights) // 4)
    changed = int((old_load_actions(hostile.astype(np.float32).tobytes()) != honest).sum())
    print(f"\nexternal data planted in the working directory: {changed} of 100 actions changed")
    assert changed > 0  # the old path served whatever the working directory held
    with pytest.raises(PolicyError, match="external data is not supported"):
        load_rl_policy(model)
