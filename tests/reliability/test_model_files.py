"""Reliability: hostile and broken model files (issue 12, "Model files").

Seeded mutations of a real policy model (single-bit flips anywhere in the file, truncations,
byte-range overwrites) with the sha256 sidecar **stale** (the original's): ``load_rl_policy`` must
refuse every one with ``PolicyError``; never another exception, never a crash of the process (the
loop runs in a subprocess, so a segfault is a failed test; a generous timeout guards against a
hang). The mutants with the sidecar **regenerated** (10,000 of them, judged by their answers) are
test_model_mutations.py's.

Then: corrupt metadata (not UTF-8, not JSON, wrong types, missing keys), an oversize (sparse)
file refused by its size, an external-data model refused without reading the planted data file
in the working directory, and the CLIs (``otonom bench``, ``otonom-train evaluate``) meeting a
corrupt-metadata model: one ``error:`` line, no traceback.

Run alone: ``pytest tests/reliability/test_model_files.py -s`` prints the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import otonom_schema as s
from otonom_runtime import PolicyError
from otonom_runtime.policy import MAX_MODEL_BYTES, load_rl_policy, write_sha256_sidecar
from otonom_runtime.testing.models import make_policy_model
from otonom_schema.testing import random_history

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this file
from _models import mutate_bytes, valid_states, worker_env

SEED = 12
# (family, count): 500 mutated models, each with the original's (stale) sidecar
PLAN: list[tuple[str, int]] = [("bitflip", 250), ("truncate", 100), ("overwrite", 150)]
HANG_GUARD_S = 900  # a hang guard for the subprocess, not a time budget


def _run_case(model: Path, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    policy = load_rl_policy(model, threads=1)
    single = [policy.predict(x, return_probs=True) for x in states]
    actions, strengths, probs = policy.predict_batch(states)
    a1 = np.array([int(a) for a, _, _ in single])
    return (
        np.concatenate([a1, actions]),
        np.concatenate([[st for _, st, _ in single], strengths]),
        np.concatenate([np.stack([p for _, _, p in single]), probs]),
    )


def _worker(folder: Path) -> dict[str, Any]:
    """The mutation loop (run in a subprocess by the test): a JSON summary on stdout."""
    states = valid_states(100, SEED)
    original = folder / "original.onnx"
    make_policy_model(original, hidden=32, layers=2, seed=SEED)
    data = original.read_bytes()
    stale = (folder / "original.onnx.sha256").read_text(encoding="utf-8").split()[0]
    _run_case(original, states)  # the original loads and answers
    rng = np.random.default_rng(SEED)
    model = folder / "policy_best.onnx"
    summary: dict[str, Any] = {"bytes": len(data), "families": [], "unexpected": []}
    for family, count in PLAN:
        row = {"family": family, "sidecar": "stale", "tried": count, "refused": 0, "loaded": 0}
        for k in range(count):
            model.write_bytes(mutate_bytes(data, family, rng))
            (folder / "policy_best.onnx.sha256").write_text(
                f"{stale}  policy_best.onnx\n", encoding="utf-8"
            )
            try:
                _run_case(model, states)
            except PolicyError as exc:
                row["refused"] += 1
                if "sha256 mismatch" not in str(exc):
                    summary["unexpected"].append(
                        f"{family} #{k}: refused for another reason: {exc}"
                    )
                continue
            except BaseException as exc:  # what the test is about
                summary["unexpected"].append(
                    f"{family} #{k}: {type(exc).__name__}: {exc} {traceback.format_exc(limit=-3)}"
                )
                continue
            row["loaded"] += 1
        summary["families"].append(row)
    return summary


def test_mutated_models_with_a_stale_sidecar_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(tmp_path)],
        capture_output=True,
        text=True,
        env=worker_env(),
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert proc.returncode == 0, (
        f"the mutation loop died (rc {proc.returncode}): {proc.stderr[-3000:]}"
    )
    # nothing but the summary: a refused model prints nothing (no onnxruntime log or
    # "EP Error ... falling back" lines on a daemon's stdout/stderr)
    assert proc.stderr == ""
    assert len(proc.stdout.strip().splitlines()) == 1, proc.stdout[:3000]
    summary = json.loads(proc.stdout)
    print(f"\nmodel: {summary['bytes']} bytes; seed {SEED}")
    for row in summary["families"]:
        print(json.dumps(row))
    assert summary["unexpected"] == []
    rows = summary["families"]
    assert sum(r["tried"] for r in rows) == 500
    for r in rows:
        assert r["refused"] == r["tried"], r
        assert r["loaded"] == 0, r


# --- corrupt metadata ---------------------------------------------------------------------------


def _model_with_raw_metadata(path: Path, key: str, raw: bytes) -> None:
    """A valid model (with a regenerated sidecar) whose metadata value for ``key`` is ``raw``,
    any bytes: protobuf's python API refuses non-UTF-8 strings, so the model is serialized
    without that entry and the entry is appended as a raw ModelProto.metadata_props (field 14)."""
    import onnx

    make_policy_model(path, write_sidecar=False)
    proto = onnx.load_model(path)
    for n, prop in enumerate(proto.metadata_props):
        if prop.key == key:
            del proto.metadata_props[n]
            break
    k = key.encode()
    assert len(k) < 128
    assert len(raw) < 100
    entry = bytes([0x0A, len(k)]) + k + bytes([0x12, len(raw)]) + raw
    path.write_bytes(proto.SerializeToString() + bytes([(14 << 3) | 2, len(entry)]) + entry)
    write_sha256_sidecar(path)


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("otonom.metrics", b"\xff\xfe{not utf-8", "not valid UTF-8"),
        ("otonom.schema_version", b"\xc3\x28", "not valid UTF-8"),
        ("otonom.metrics", b"{not json", "not valid JSON"),
        ("otonom.feature_names", b'{"a": 1}', "expected a JSON list"),
        ("otonom.training_config", b"[1, 2]", "expected a JSON object"),
        ("otonom.metrics", b'{"val_action_acc": "high"}', "lacks numbers"),
    ],
)
def test_corrupt_metadata_is_a_policy_error_naming_the_file(
    tmp_path: Path, key: str, raw: bytes, expected: str
) -> None:
    model = tmp_path / "policy_best.onnx"
    _model_with_raw_metadata(model, key, raw)
    with pytest.raises(PolicyError, match=expected) as info:
        load_rl_policy(model)
    assert str(model) in str(info.value)


def test_deeply_nested_metadata_json_is_a_policy_error(tmp_path: Path) -> None:
    model = tmp_path / "policy_best.onnx"
    make_policy_model(model, metadata_overrides={"otonom.metrics": "[" * 200_000})
    with pytest.raises(PolicyError) as info:
        load_rl_policy(model)
    assert str(model) in str(info.value)


def test_missing_metadata_key_names_the_file(tmp_path: Path) -> None:
    model = tmp_path / "policy_best.onnx"
    make_policy_model(model, metadata_overrides={"otonom.feature_names": None})
    with pytest.raises(PolicyError, match="lacks required metadata") as info:
        load_rl_policy(model)
    assert str(model) in str(info.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe\x00\x01 binary", "expected 64 hex digits"),
        (b"abc123  policy_best.onnx\n", "expected 64 hex digits"),
        (b"g" * 64 + b"  policy_best.onnx\n", "expected 64 hex digits"),
        (b"0" * 10_000_000, "expected 64 hex digits"),
    ],
)
def test_bad_sidecar_is_a_policy_error(tmp_path: Path, content: bytes, expected: str) -> None:
    model = tmp_path / "policy_best.onnx"
    make_policy_model(model)
    (tmp_path / "policy_best.onnx.sha256").write_bytes(content)
    with pytest.raises(PolicyError, match=expected) as info:
        load_rl_policy(model)
    assert "policy_best.onnx.sha256" in str(info.value)


# --- size ---------------------------------------------------------------------------------------


def test_oversize_model_refused_by_its_size(tmp_path: Path) -> None:
    model = tmp_path / "policy_best.onnx"
    with model.open("wb") as f:
        f.truncate(2 * 2**30)  # sparse: 2 GiB that take no disk
    (tmp_path / "policy_best.onnx.sha256").write_text(
        f"{'0' * 64}  policy_best.onnx\n", encoding="utf-8"
    )
    with pytest.raises(PolicyError, match=rf"is {2 * 2**30} bytes; expected at most") as info:
        load_rl_policy(model)
    assert str(model) in str(info.value)
    assert str(MAX_MODEL_BYTES) in str(info.value)


def test_size_limit_is_a_keyword(tmp_path: Path) -> None:
    model = tmp_path / "policy_best.onnx"
    make_policy_model(model)
    size = model.stat().st_size
    with pytest.raises(PolicyError, match="refused by its size"):
        load_rl_policy(model, max_bytes=size - 1)
    assert load_rl_policy(model, max_bytes=size).sha256
    with pytest.raises(PolicyError, match="max_bytes"):
        load_rl_policy(model, max_bytes=0)


# --- external data ------------------------------------------------------------------------------


def test_external_data_model_refused_and_planted_file_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    plain = tmp_path / "plain.onnx"
    make_policy_model(plain, write_sidecar=False)
    proto = onnx.load_model(plain)
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / "policy_best.onnx"
    onnx.save_model(
        proto,
        model,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    write_sha256_sidecar(model)
    # the planted data file in the working directory (what onnxruntime would read from bytes)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    planted = cwd / "weights.bin"
    planted.write_bytes((folder / "weights.bin").read_bytes())
    (folder / "weights.bin").unlink()
    monkeypatch.chdir(cwd)
    with pytest.raises(PolicyError, match="external data is not supported") as info:
        load_rl_policy(model)
    assert str(model) in str(info.value)
    # never opened: replace the planted file by a FIFO, which blocks whoever opens it for
    # reading (no writer ever comes), and load in a subprocess (a hang guard, not a timing)
    planted.unlink()
    os.mkfifo(planted)
    code = (
        "import sys\n"
        "from otonom_runtime import PolicyError\n"
        "from otonom_runtime.policy import load_rl_policy\n"
        "try:\n"
        "    load_rl_policy(sys.argv[1])\n"
        "except PolicyError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model)],
        capture_output=True,
        text=True,
        env=worker_env(),
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "external data is not supported" in proc.stdout


def test_external_data_refused_inside_the_models_folder_too(tmp_path: Path) -> None:
    import onnx

    plain = tmp_path / "plain.onnx"
    make_policy_model(plain, write_sidecar=False)
    model = tmp_path / "policy_best.onnx"
    onnx.save_model(
        onnx.load_model(plain),
        model,
        save_as_external_data=True,
        location="w.bin",
        size_threshold=0,
    )
    write_sha256_sidecar(model)
    with pytest.raises(PolicyError, match="external data is not supported"):
        load_rl_policy(model)


def _external_tensor(tmp_path: Path, name: str) -> Any:
    import onnx
    from onnx import external_data_helper, numpy_helper

    tensor = numpy_helper.from_array(np.ones(4, np.float32), name)
    (tmp_path / f"{name}.bin").write_bytes(tensor.raw_data)
    external_data_helper.set_external_data(tensor, f"{name}.bin")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    return tensor


@pytest.mark.parametrize("where", ["constant node", "subgraph", "training info", "function"])
def test_external_data_anywhere_in_the_model_refused(tmp_path: Path, where: str) -> None:
    """One tensor somewhere other than the graph's initializers is external (the initializers
    stay inline): the scan looks into node attributes, subgraphs, training info, functions."""
    import onnx
    from onnx import helper

    plain = tmp_path / "plain.onnx"
    make_policy_model(plain, write_sidecar=False)
    proto = onnx.load_model(plain)
    tensor = _external_tensor(tmp_path, "c")
    constant = helper.make_node("Constant", [], ["c"], value=tensor)
    if where == "constant node":
        proto.graph.node.insert(0, constant)
    elif where == "subgraph":
        branch = helper.make_graph(
            [constant],
            "branch",
            [],
            [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [4])],
        )
        node = helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=branch)
        proto.graph.node.append(node)
    elif where == "training info":
        init = helper.make_graph([], "init", [], [], initializer=[tensor])
        proto.training_info.add().initialization.CopyFrom(init)
    else:
        proto.functions.append(helper.make_function("local", "f", [], ["c"], [constant], []))
    model = tmp_path / "policy_best.onnx"
    model.write_bytes(proto.SerializeToString())
    write_sha256_sidecar(model)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    with pytest.raises(PolicyError, match="external data is not supported"):
        load_rl_policy(model)


# --- the CLIs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cli", ["otonom", "otonom-train"])
def test_cli_with_corrupt_metadata_says_one_error_line(tmp_path: Path, cli: str) -> None:
    folder = tmp_path / "rl"
    folder.mkdir()
    model = folder / "policy_best.onnx"
    _model_with_raw_metadata(model, "otonom.metrics", b"\xff\xfe{")
    exe = Path(sys.executable).with_name(cli)
    if cli == "otonom":
        args = [str(exe), "bench", "--model", str(model)]
    else:
        dataset = tmp_path / "d.npz"
        _write_dataset(dataset)
        args = [str(exe), "evaluate", "--model", str(model), "--dataset", str(dataset)]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env=worker_env(),
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "not valid UTF-8" in errors[0]
    assert str(model) in errors[0]


def _write_dataset(path: Path) -> None:
    n = 100
    h = random_history(n, seed=4, symbol="DEMO")
    rng = np.random.default_rng(0)
    dataset = s.OfflineDataset(
        states=s.compute_states(h),
        actions=rng.integers(0, 3, n),
        strengths=rng.uniform(0, 1, n).astype(np.float32),
        symbols=np.full(n, "DEMO"),
        dates=h.dates,
        metadata={"source": "reliability test"},
    )
    s.save_dataset(dataset, path)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    print(json.dumps(_worker(Path(sys.argv[2]))))
