"""The ONNX Runtime policy: every loading check, predict parity, validation, threads."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

import otonom_schema as s
from otonom_runtime._errors import ModelSchemaMismatchError, PolicyError
from otonom_runtime.policy import (
    REQUIRED_METADATA,
    RlPolicy,
    load_rl_policy,
    resolve_model_path,
    write_sha256_sidecar,
)
from otonom_runtime.testing.models import MlpWeights, make_policy_model, numpy_forward
from otonom_schema.testing import random_history

F32 = npt.NDArray[np.float32]


# --- fixtures --------------------------------------------------------------------------------


def random_states(n: int, seed: int = 0) -> F32:
    """``n`` valid states: every feature uniform inside its range, a random regime one-hot."""
    rng = np.random.default_rng(seed)
    low = np.array([f.low for f in s.FEATURES])
    high = np.array([f.high for f in s.FEATURES])
    x = rng.uniform(low, high, size=(n, s.STATE_DIM))
    regime = slice(s.feature_index("regime_low_vol"), s.feature_index("regime_high_vol") + 1)
    x[:, regime] = np.eye(3)[rng.integers(0, 3, size=n)]
    return s.validate_states(x)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MlpWeights]:
    path = tmp_path_factory.mktemp("model") / "policy_best.onnx"
    weights = make_policy_model(path, hidden=32, layers=2, seed=3)
    return path, weights


@pytest.fixture(scope="module")
def policy(model: tuple[Path, MlpWeights]) -> RlPolicy:
    return load_rl_policy(model[0])


@pytest.fixture(scope="module")
def weights(model: tuple[Path, MlpWeights]) -> MlpWeights:
    return model[1]


# --- paths -----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"does not exist; expected a \.onnx file"):
        load_rl_policy(tmp_path / "nope.onnx")


def test_folder_uses_policy_best_onnx(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "policy_best.onnx")
    assert load_rl_policy(tmp_path).path == tmp_path / "policy_best.onnx"


def test_folder_without_model_lists_its_contents(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "old").mkdir()
    with pytest.raises(PolicyError, match=r"has no policy_best\.onnx; it holds: notes\.txt, old/"):
        load_rl_policy(tmp_path)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="it is empty"):
        load_rl_policy(tmp_path)


def test_latest_pointer_is_followed(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "20260101T000000Z" / "policy_best.onnx", seed=2)
    (tmp_path / "latest").write_text("20260101T000000Z\n")
    policy = load_rl_policy(tmp_path)
    assert policy.path == tmp_path / "20260101T000000Z" / "policy_best.onnx"


def test_a_folders_own_model_wins_over_its_latest_pointer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`otonom-train train --output models/rl_bc` into a versioned folder: the model just
    trained there is what the folder stands for, with a warning naming both."""
    make_policy_model(tmp_path / "20260101T000000Z" / "policy_best.onnx", seed=2)
    (tmp_path / "latest").write_text("20260101T000000Z\n")
    make_policy_model(tmp_path / "policy_best.onnx", seed=1)
    with caplog.at_level("WARNING", logger="otonom_runtime.policy"):
        policy = load_rl_policy(tmp_path)
    assert policy.path == tmp_path / "policy_best.onnx"
    assert "promoted version is used once" in caplog.text
    assert load_rl_policy(tmp_path / "policy_best.pt").path == tmp_path / "policy_best.onnx"


@pytest.mark.parametrize("target", ["missing", "../elsewhere", "/abs", ""])
def test_bad_latest_pointer(tmp_path: Path, target: str) -> None:
    (tmp_path / "latest").write_text(target)
    with pytest.raises(PolicyError, match="latest"):
        load_rl_policy(tmp_path)


def test_latest_subfolder_without_model(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "latest").write_text("v1")
    with pytest.raises(PolicyError, match=r"v1 \(followed .*latest\) has no policy_best\.onnx"):
        load_rl_policy(tmp_path)


def test_pt_path_loads_the_sibling_onnx(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "policy_best.onnx")
    (tmp_path / "policy_best.pt").write_bytes(b"torch checkpoint, never read")
    assert load_rl_policy(tmp_path / "policy_best.pt").path == tmp_path / "policy_best.onnx"


def test_pt_path_without_onnx(tmp_path: Path) -> None:
    (tmp_path / "policy_best.pt").write_bytes(b"torch checkpoint")
    with pytest.raises(PolicyError, match=r"never loads PyTorch checkpoints.*policy_best\.onnx"):
        load_rl_policy(tmp_path / "policy_best.pt")


def test_resolve_model_path_reads_nothing(tmp_path: Path) -> None:
    (tmp_path / "policy_best.onnx").write_bytes(b"not even a model")
    assert resolve_model_path(tmp_path) == tmp_path / "policy_best.onnx"


# --- sidecar ---------------------------------------------------------------------------------


def test_missing_sidecar_says_how_to_make_one(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "m.onnx", write_sidecar=False)
    with pytest.raises(
        PolicyError, match=r"no sha256 sidecar.*sha256sum m\.onnx > m\.onnx\.sha256"
    ):
        load_rl_policy(tmp_path / "m.onnx")


def test_sha256_mismatch(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "m.onnx")
    (tmp_path / "m.onnx.sha256").write_text(f"{'ab' * 32}  m.onnx\n")
    with pytest.raises(PolicyError, match=f"sha256 mismatch.*says {'ab' * 32}"):
        load_rl_policy(tmp_path / "m.onnx")


def test_malformed_sidecar(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "m.onnx")
    (tmp_path / "m.onnx.sha256").write_text("hello\n")
    with pytest.raises(PolicyError, match="expected 64 hex digits"):
        load_rl_policy(tmp_path / "m.onnx")


def test_sidecar_is_sha256sum_format(tmp_path: Path) -> None:
    import hashlib

    make_policy_model(tmp_path / "m.onnx")
    digest = hashlib.sha256((tmp_path / "m.onnx").read_bytes()).hexdigest()
    assert (tmp_path / "m.onnx.sha256").read_text() == f"{digest}  m.onnx\n"
    assert load_rl_policy(tmp_path / "m.onnx").sha256 == digest


def test_garbage_with_correct_sidecar(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"\x00garbage, not a protobuf\xff" * 10)
    write_sha256_sidecar(tmp_path / "m.onnx")
    # refused before onnxruntime sees it: the external-data scan parses the protobuf first
    with pytest.raises(PolicyError, match=r"is not a valid ONNX model: its protobuf encoding"):
        load_rl_policy(tmp_path / "m.onnx")


# --- signature -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_name": "x"}, r"inputs are \['x' tensor\(float\) \['batch', 34\]\]"),
        ({"input_dim": 33}, r"input 'state' has shape \['batch', 33\], not \[batch, 34\]"),
        ({"batch_dim": 1}, r"input 'state' has a fixed batch size 1"),
        ({"elem_type": "float64"}, r"input 'state' has element type tensor\(double\)"),
        ({"output_names": ("probs", "strength")}, r"outputs are \['probs'"),
        ({"action_dim": 4}, r"output 'action_probs' has shape \['batch', 4\], not \[batch, 3\]"),
    ],
)
def test_wrong_signature(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    make_policy_model(tmp_path / "m.onnx", **kwargs)
    with pytest.raises(PolicyError, match=message) as info:
        load_rl_policy(tmp_path / "m.onnx")
    assert "expected one input 'state' float32 [batch, 34]" in str(info.value)


# --- metadata and schema ---------------------------------------------------------------------


@pytest.mark.parametrize("key", REQUIRED_METADATA[1:])
def test_missing_metadata_key(tmp_path: Path, key: str) -> None:
    make_policy_model(tmp_path / "m.onnx", metadata_overrides={key: None})
    with pytest.raises(PolicyError, match=f"lacks required metadata \\['{key}'\\]"):
        load_rl_policy(tmp_path / "m.onnx")


def test_other_model_format(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "m.onnx", metadata_overrides={"otonom.model_format": "3"})
    with pytest.raises(
        PolicyError, match=r"otonom\.model_format '3'; this runtime reads format '2'"
    ):
        load_rl_policy(tmp_path / "m.onnx")


def test_no_metadata_at_all(tmp_path: Path) -> None:
    make_policy_model(
        tmp_path / "m.onnx", metadata_overrides=dict.fromkeys(REQUIRED_METADATA, None)
    )
    # without otonom.model_format it is a format-1 model: refused as such, before anything else
    with pytest.raises(PolicyError, match=r"m\.onnx is model format 1 .*re-export it"):
        load_rl_policy(tmp_path / "m.onnx")


def test_only_the_seal_in_the_metadata(tmp_path: Path) -> None:
    seal = ("otonom.model_format", "otonom.digest", "otonom.golden")
    gone = {k: None for k in REQUIRED_METADATA if k not in seal}
    make_policy_model(tmp_path / "m.onnx", metadata_overrides=gone)
    with pytest.raises(PolicyError, match=r"found keys \['otonom\.digest', 'otonom\.golden'"):
        load_rl_policy(tmp_path / "m.onnx")


def test_metadata_json_must_parse(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "m.onnx", metadata_overrides={"otonom.metrics": "{oops"})
    with pytest.raises(PolicyError, match=r"otonom\.metrics = '\{oops' is not valid JSON"):
        load_rl_policy(tmp_path / "m.onnx")


def test_metrics_must_hold_the_required_numbers(tmp_path: Path) -> None:
    metrics = json.dumps({"val_action_acc": 0.5, "train_action_acc": "high"})
    make_policy_model(tmp_path / "m.onnx", metadata_overrides={"otonom.metrics": metrics})
    with pytest.raises(PolicyError, match=r"lacks numbers for \['train_action_acc', 'best_val"):
        load_rl_policy(tmp_path / "m.onnx")


def test_schema_fingerprint_mismatch_names_both(tmp_path: Path) -> None:
    make_policy_model(
        tmp_path / "m.onnx",
        metadata_overrides={
            "otonom.schema_version": "0.9.0",
            "otonom.schema_fingerprint": "0123456789abcdef",
        },
    )
    with pytest.raises(ModelSchemaMismatchError) as info:
        load_rl_policy(tmp_path / "m.onnx")
    text = str(info.value)
    for part in ("0.9.0", "0123456789abcdef", s.SCHEMA_VERSION, s.schema_fingerprint()):
        assert part in text
    assert isinstance(info.value, s.SchemaMismatchError)
    assert isinstance(info.value, PolicyError)


def test_feature_name_mismatch(tmp_path: Path) -> None:
    names = list(s.FEATURE_NAMES)
    names[21], names[22] = names[22], names[21]
    make_policy_model(
        tmp_path / "m.onnx", metadata_overrides={"otonom.feature_names": json.dumps(names)}
    )
    with pytest.raises(ModelSchemaMismatchError, match="differ first at index 21") as info:
        load_rl_policy(tmp_path / "m.onnx")
    assert s.schema_fingerprint() in str(info.value)


def test_feature_count_mismatch(tmp_path: Path) -> None:
    names = json.dumps([*s.FEATURE_NAMES, "extra"])
    make_policy_model(tmp_path / "m.onnx", metadata_overrides={"otonom.feature_names": names})
    with pytest.raises(ModelSchemaMismatchError, match="model has 35 features, the schema 34"):
        load_rl_policy(tmp_path / "m.onnx")


def test_get_metadata(policy: RlPolicy, model: tuple[Path, MlpWeights]) -> None:
    meta = policy.get_metadata()
    assert meta["val_action_acc"] == pytest.approx(0.8125)
    assert meta["metrics"]["best_epoch"] == 17
    assert meta["feature_names"] == list(s.FEATURE_NAMES)
    assert meta["schema_fingerprint"] == s.schema_fingerprint()
    assert meta["training_config"]["hidden"] == 32
    assert meta["path"] == str(model[0])
    assert meta["sha256"] == policy.sha256
    assert meta["providers"] == ["CPUExecutionProvider"]
    meta["metrics"]["best_epoch"] = -1  # a copy: the policy's own metadata is untouched
    assert policy.get_metadata()["metrics"]["best_epoch"] == 17


# --- device ----------------------------------------------------------------------------------


def test_cuda_without_cuda_provider(model: tuple[Path, MlpWeights]) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(PolicyError, match=r"device='cuda' but onnxruntime .* no CUDAExecution"):
        load_rl_policy(model[0], device="cuda")


def test_auto_falls_back_to_cpu(model: tuple[Path, MlpWeights]) -> None:
    policy = load_rl_policy(model[0], device="auto")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert ("CUDAExecutionProvider" in policy.providers) == has_cuda
    assert "CPUExecutionProvider" in policy.providers


def test_unknown_device(model: tuple[Path, MlpWeights]) -> None:
    with pytest.raises(PolicyError, match=r"device='tpu'; expected one of \('cpu', 'cuda'"):
        load_rl_policy(model[0], device="tpu")


# --- predict ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 256, 1500])
def test_predict_batch_matches_numpy(policy: RlPolicy, weights: MlpWeights, n: int) -> None:
    x = random_states(n, seed=n)
    actions, strengths, probs = policy.predict_batch(x)
    ref_probs, ref_strength = numpy_forward(weights, x)
    assert actions.dtype == np.int64
    assert actions.shape == (n,)
    assert strengths.dtype == np.float32
    assert strengths.shape == (n,)
    assert probs.dtype == np.float32
    assert probs.shape == (n, 3)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-5)
    np.testing.assert_allclose(strengths, ref_strength, atol=1e-5)
    np.testing.assert_array_equal(actions, probs.argmax(axis=1))


@pytest.mark.parametrize("n", [40, 1024, 3000])
def test_the_batch_argmax_is_numpys_first_maximum_on_ties(n: int) -> None:
    """``predict_batch``'s actions are ``argmax`` of the probabilities, the first maximum on a
    tie, below and from the row count where it compares columns instead (``_WHERE_ROWS``):
    rows with every pattern of ties among the three columns, and random rows."""
    from otonom_runtime.serving import rl_policy

    rng = np.random.default_rng(n)
    probs = rng.random((n, 3), dtype=np.float32)
    for k, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        probs[k::4, j] = probs[k::4, i]  # two columns tied (at the top or below the third)
    probs[3::4] = probs[3::4, :1]  # all three equal
    actions = rl_policy._argmax3(probs)
    assert actions.dtype == np.int64
    np.testing.assert_array_equal(actions, probs.argmax(axis=1))
    assert set(actions.tolist()) == {0, 1, 2}
    assert (n >= rl_policy._WHERE_ROWS) == (n >= 1024)


def test_predict_matches_numpy_row_by_row(policy: RlPolicy, weights: MlpWeights) -> None:
    x = random_states(64, seed=11)
    ref_probs, ref_strength = numpy_forward(weights, x)
    seen = set()
    for row, p_ref, s_ref in zip(x, ref_probs, ref_strength, strict=True):
        action, strength, probs = policy.predict(row, return_probs=True)
        np.testing.assert_allclose(probs, p_ref, atol=1e-5)
        assert strength == pytest.approx(float(s_ref), abs=1e-5)
        assert action == _argmax_action(probs)
        seen.add(action)
    assert len(seen) > 1  # the random model does not answer one action to everything


def _argmax_action(probs: F32) -> s.Action:
    return s.Action(int(np.argmax(probs)))


def test_predict_return_types(policy: RlPolicy) -> None:
    state = s.RlState.from_array(random_states(1)[0])
    action, strength = policy.predict(state)
    assert type(action) is s.Action
    assert type(strength) is float
    assert 0.0 <= strength <= 1.0
    action2, strength2, probs = policy.predict(state, return_probs=True)
    assert (action2, strength2) == (action, strength)
    assert action2.name in {"HOLD", "BUY", "SELL"}
    assert probs.shape == (3,)
    assert probs.dtype == np.float32
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)
    assert probs[action2] == probs.max()


def test_rlstate_and_array_agree(policy: RlPolicy) -> None:
    x = s.compute_states(random_history(300, seed=5))[-50:]
    for row in x:
        state = s.RlState.from_array(row)
        a = policy.predict(state, return_probs=True)
        b = policy.predict(row, return_probs=True)
        c = policy.predict(row.tolist(), return_probs=True)
        assert a[:2] == b[:2] == c[:2]
        np.testing.assert_array_equal(a[2], b[2])
        np.testing.assert_array_equal(a[2], c[2])


def test_returned_probs_are_not_reused_buffers(policy: RlPolicy) -> None:
    x = random_states(2, seed=8)
    first = policy.predict(x[0], return_probs=True)[2]
    kept = first.copy()
    policy.predict(x[1], return_probs=True)
    np.testing.assert_array_equal(first, kept)
    _a1, _s1, p1 = policy.predict_batch(x)
    p1_kept = p1.copy()
    policy.predict_batch(x[::-1])
    np.testing.assert_array_equal(p1, p1_kept)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("nan", "is nan; expected a finite number"),
        ("inf", "is inf; expected a finite number"),
        ("short", r"shape \(33,\); expected \(34,\)"),
        ("row", r"shape \(1, 34\); expected \(34,\)"),
        ("range", "outside its range"),
    ],
)
def test_predict_rejects_bad_states(policy: RlPolicy, bad: str, message: str) -> None:
    x = random_states(1)[0].astype(np.float64)
    state: object = {
        "nan": np.where(np.arange(34) == 3, np.nan, x),
        "inf": np.where(np.arange(34) == 3, np.inf, x),
        "short": x[:33],
        "row": x[None, :],
        "range": np.where(np.arange(34) == 20, 2.0, x),  # rsi lies in [0, 1]
    }[bad]
    with pytest.raises(s.SchemaError, match=message):
        policy.predict(state)


def test_predict_batch_rejects_bad_states(policy: RlPolicy) -> None:
    x = random_states(5)
    x[3, 0] = np.nan
    with pytest.raises(s.SchemaError, match="row 3: "):
        policy.predict_batch(x)
    with pytest.raises(s.SchemaError, match=r"shape \(34,\); expected \(N, 34\)"):
        policy.predict_batch(x[0])


def test_predict_batch_empty(policy: RlPolicy) -> None:
    actions, strengths, probs = policy.predict_batch(np.empty((0, s.STATE_DIM), np.float32))
    assert actions.shape == (0,)
    assert actions.dtype == np.int64
    assert strengths.shape == (0,)
    assert strengths.dtype == np.float32
    assert probs.shape == (0, 3)
    assert probs.dtype == np.float32


def test_predict_agrees_with_predict_batch(policy: RlPolicy) -> None:
    x = random_states(32, seed=4)
    actions, strengths, probs = policy.predict_batch(x)
    for i, row in enumerate(x):
        action, strength, p = policy.predict(row, return_probs=True)
        assert action == actions[i]
        assert strength == pytest.approx(float(strengths[i]), abs=1e-6)
        np.testing.assert_allclose(p, probs[i], atol=1e-6)


def test_concurrent_predict_matches_sequential(policy: RlPolicy) -> None:
    n_threads, calls = 8, 300
    states = [random_states(calls, seed=100 + t) for t in range(n_threads)]
    expected = [[policy.predict(row, return_probs=True) for row in x] for x in states]
    results: list[list[tuple[object, ...]]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        try:
            barrier.wait()
            for row in states[t]:
                results[t].append(policy.predict(row, return_probs=True))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for t in range(n_threads):
        assert len(results[t]) == calls
        for got, want in zip(results[t], expected[t], strict=True):
            assert got[:2] == want[:2]
            np.testing.assert_array_equal(got[2], want[2])


def test_repr_and_attributes(policy: RlPolicy, model: tuple[Path, MlpWeights]) -> None:
    assert policy.path == model[0]
    assert policy.device == "cpu"
    assert "policy_best.onnx" in repr(policy)
    assert s.SCHEMA_VERSION in repr(policy)


def test_small_batches_run_pre_bound_and_agree_with_large_ones(policy: RlPolicy) -> None:
    """Batches up to 64 states go through a cached I/O binding per size; the answers are
    those of the plain session call (the backtester relies on a row's answer not depending on
    its batch), and every call returns fresh arrays."""
    x = random_states(100, seed=9)
    actions, strengths, probs = policy.predict_batch(x)  # > 64 rows: InferenceSession.run
    for n in (1, 2, 10, 64):
        for _ in range(2):  # the second call reuses the binding
            a, st, p = policy.predict_batch(x[:n])
            np.testing.assert_array_equal(a, actions[:n])
            np.testing.assert_array_equal(st, strengths[:n])
            np.testing.assert_array_equal(p, probs[:n])
    kept = p.copy(), st.copy()
    policy.predict_batch(x[::-1][:64])
    np.testing.assert_array_equal(p, kept[0])
    np.testing.assert_array_equal(st, kept[1])


def test_threads_option(model: tuple[Path, MlpWeights], policy: RlPolicy) -> None:
    one = load_rl_policy(model[0], threads=1)
    x = random_states(20, seed=10)
    for a, b in zip(one.predict_batch(x), policy.predict_batch(x), strict=True):
        np.testing.assert_array_equal(a, b)
    for bad in (0, -1, 1.5):
        with pytest.raises(PolicyError, match=r"threads=.*; expected an integer >= 1, or None"):
            load_rl_policy(model[0], threads=bad)  # type: ignore[arg-type]


def test_the_sessions_threads_stop_spinning_when_a_run_returns(
    model: tuple[Path, MlpWeights],
) -> None:
    """A daemon idles between ticks: after a large batch (a run split over the worker
    threads) the process uses next to no CPU while it sleeps (onnxruntime's default, spinning
    left on, burns about 10 ms of a core after every run), and the session says why."""
    import time

    policy = load_rl_policy(model[0], threads=2)
    session = policy._session
    options = session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    x = random_states(4096, seed=3)
    idle = []
    for _ in range(3):
        policy.predict_batch(x)
        c0 = time.process_time()
        time.sleep(0.1)
        idle.append(time.process_time() - c0)
    assert min(idle) < 0.003, idle


def test_the_bound_run_falls_back_to_the_public_wrapper_with_the_same_outputs(
    tmp_path: Path,
) -> None:
    """``Slot.run`` calls onnxruntime's C++ session directly (one Python frame less on the
    single-state hot path); a session without those private handles gets the public
    ``run_with_iobinding`` wrapper, with the same outputs."""
    import functools

    from otonom_runtime.serving.session import Slot

    make_policy_model(tmp_path / "policy_best.onnx")
    session = load_rl_policy(tmp_path)._session

    class PublicOnly:  # the session's public surface, without ``_sess``
        def io_binding(self) -> object:
            return session.io_binding()

        def run_with_iobinding(self, binding: object, run_options: object = None) -> None:
            session.run_with_iobinding(binding, run_options)

    direct, public = Slot(session), Slot(PublicOnly())
    assert isinstance(direct.run, functools.partial)
    assert direct.run.func.__self__ is session._sess  # the C++ method, bound
    assert isinstance(public.run, functools.partial)
    assert public.run.func.__name__ == "run_with_iobinding"
    assert public.run.func.__self__.__class__ is PublicOnly
    for slot in (direct, public):  # run options made once for the slot, not once a run
        assert type(slot.run.args[-1]).__name__ == "RunOptions"
    x = np.zeros(34, dtype=np.float32)
    x[29] = 1.0  # regime_normal
    for slot in (direct, public):
        slot.row[:] = x
        slot.run()
    assert direct.out.tolist() == public.out.tolist()
    assert public.out.sum() > 0.0


def test_large_batches_are_the_sessions_answers_in_fresh_arrays(policy: RlPolicy) -> None:
    """Batches over 64 states: the answers are the plain ``InferenceSession.run``'s, bit for
    bit, and a later call (another size) leaves earlier results alone."""
    x = random_states(300, seed=10)
    expected = policy._session.run(None, {"state": x})
    _a, strengths, probs = policy.predict_batch(x)
    np.testing.assert_array_equal(probs, expected[0])
    np.testing.assert_array_equal(strengths, expected[1].reshape(-1))
    kept = probs.copy(), strengths.copy()
    other = policy.predict_batch(x[::-1][:200])
    np.testing.assert_array_equal(other[2], expected[0][::-1][:200])
    np.testing.assert_array_equal(probs, kept[0])
    np.testing.assert_array_equal(strengths, kept[1])
    assert not np.shares_memory(probs, other[2])


@pytest.mark.parametrize("n", [4096, 5000, 20481])
def test_large_batches_run_in_chunks_give_the_whole_runs_answers(
    policy: RlPolicy, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From ``2 * CHUNK_ROWS`` states the model runs in chunks bound in place
    (``session.run_chunked``, the last chunk shorter): the outputs equal one
    ``InferenceSession.run`` of the whole batch bit for bit, in fresh arrays; an array that is
    not C-contiguous float32 (outside ``predict_valid_batch``'s contract) takes the plain run
    and gets the same answers."""
    from otonom_runtime.serving import rl_policy, session

    calls: list[int] = []
    chunked = session.run_chunked

    def spy(sess: Any, x: Any, rows: int = session.CHUNK_ROWS) -> Any:
        calls.append(x.shape[0])
        return chunked(sess, x, rows)

    monkeypatch.setattr(rl_policy, "run_chunked", spy)
    policy = load_rl_policy(policy.path)
    policy._plan.fix(None)  # the pool's session for every size, no trial (test_policy_plan.py)
    x = random_states(n, seed=n)
    expected = policy._session.run(None, {"state": x})
    actions, strengths, probs = policy.predict_batch(x)
    assert calls == [n]
    np.testing.assert_array_equal(probs, expected[0])
    np.testing.assert_array_equal(strengths, expected[1].reshape(-1))
    np.testing.assert_array_equal(actions, expected[0].argmax(axis=1))
    assert probs.flags.owndata
    assert probs.flags.writeable
    again = policy.predict_batch(x[::-1].copy())
    np.testing.assert_array_equal(again[2], expected[0][::-1])
    assert not np.shares_memory(probs, again[2])
    strided = np.asfortranarray(x)  # valid states, not C-contiguous: the plain run
    for got, want in zip(
        policy.predict_valid_batch(strided), (actions, strengths, probs), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    assert calls == [n, n]
    small = policy.predict_batch(x[: 2 * session.CHUNK_ROWS - 1])
    assert calls == [n, n]  # below 2 * CHUNK_ROWS: one run
    np.testing.assert_array_equal(small[2], expected[0][: 2 * session.CHUNK_ROWS - 1])


def test_predict_valid_batch_equals_predict_batch(policy: RlPolicy) -> None:
    """``predict_valid_batch`` on what ``validate_states`` returns gives exactly what
    ``predict_batch`` gives (every batch size the bound path and the plain run serve)."""
    for n in (1, 10, 64, 65, 300):
        x = random_states(n, seed=n)
        for got, want in zip(policy.predict_valid_batch(x), policy.predict_batch(x), strict=True):
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype


def test_predict_bound_equals_predict_valid_batch(policy: RlPolicy) -> None:
    """States written into ``bound_batch(n)``'s input: ``predict_bound`` gives per row the
    action, strength and top probability ``predict_valid_batch`` gives, as exact Python
    numbers, flat; the slot is the one ``predict_valid_batch`` runs that size through."""
    for n in (1, 2, 10, 64):
        x = random_states(n, seed=20 + n)
        slot = policy.bound_batch(n)
        assert slot is not None
        assert slot.state.shape == (n, s.STATE_DIM)
        slot.state[:] = x
        got = policy.predict_bound(slot)
        actions, strengths, probs = policy.predict_valid_batch(x)
        assert policy.bound_batch(n) is slot
        assert got is not None
        assert got[0::3] == actions.tolist()
        assert got[1::3] == strengths.tolist()
        assert got[2::3] == probs.max(axis=1).tolist()
        assert all(type(a) is int for a in got[0::3])
        assert all(type(st) is float for st in got[1::3])
    assert policy.bound_batch(0) is None
    assert policy.bound_batch(65) is None


def test_predict_bound_accepts_only_outputs_the_contract_accepts(
    policy: RlPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs written into the slot instead of the model's (NaN, inf, a negative or a
    too-large probability or strength, sums at and around the contract's bounds):
    ``predict_bound`` returns rows only where ``predict_valid_batch`` accepts the same
    outputs, and then its numbers; it refuses (None) every output that breaks the contract,
    and accepts every one within it by more than 1e-6 on the sum with probabilities <= 1."""
    from otonom_runtime.integrity import PROBS_SUM_ATOL

    n = 3
    slot = policy.bound_batch(n)
    assert slot is not None
    rng = np.random.default_rng(4)
    outputs: list[list[float]] = []
    monkeypatch.setattr(slot, "run", lambda: slot.out.__setitem__(slice(None), outputs[-1]))
    odd = [np.nan, np.inf, -np.inf, -1e-9, 1.0 + 1e-6, 2.0]
    sums = [1.0 - PROBS_SUM_ATOL, 1.0 + PROBS_SUM_ATOL, 1.0 - 2e-6, 1.0, 1.0 + 2e-6]
    accepted = refused = 0
    for trial in range(3000):
        p = rng.dirichlet(np.ones(3), n) * rng.choice(sums + [1.0] * 5, (n, 1))
        st = rng.random(n)
        if trial % 4 == 0:
            where = rng.integers(0, 4 * n)
            flat = np.concatenate([p.ravel(), st])
            flat[where] = odd[trial % len(odd)]
            p, st = flat[: 3 * n].reshape(n, 3), flat[3 * n :]
        outputs.append(np.concatenate([p.ravel(), st]).astype(np.float32).tolist())
        got = policy.predict_bound(slot)
        try:
            want = policy.predict_valid_batch(slot.state)
        except PolicyError:
            assert got is None
            refused += 1
            continue
        out = np.array(outputs[-1], dtype=np.float64)
        clear = (out <= 1.0).all() and (
            np.abs(out[: 3 * n].reshape(n, 3).sum(axis=1) - 1.0) < PROBS_SUM_ATOL - 1e-6
        ).all()
        if got is None:
            assert not clear, outputs[-1]
            continue
        accepted += 1
        a, st32, probs = want
        expected = zip(a.tolist(), st32.tolist(), probs.max(axis=1).tolist(), strict=True)
        assert got == [number for row in expected for number in row]
    assert accepted > 1000
    assert refused > 300
