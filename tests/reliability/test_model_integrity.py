"""Models answer within their contract or not at all (issue 12, model format 2).

A model is sealed at export: ``otonom.digest`` (sha256 of the file without its metadata) and
``otonom.golden`` (16 states away from the decision boundary and the outputs the export gave).
``load_rl_policy`` recomputes the digest before onnxruntime sees the bytes and re-runs the golden
states after; every prediction is held to the output contract. Tried here with real ONNX files,
a real SQLite store and the real ``otonom`` CLI in a subprocess:

* every bit of every weight byte flipped one at a time (sidecar regenerated): all refused by the
  digest, before a session is made;
* a weight changed and the digest recomputed (an attacker who knows the format): refused by the
  golden sample;
* the right weights with a wrong golden output: refused by the golden sample;
* format-1 models (no digest or golden sample): refused, naming the file and the fix;
* strengths of 7.8, negative or NaN and probabilities that do not sum to 1: ``PolicyError`` from
  ``predict`` and ``predict_batch`` (small and large batches) alike;
* a backtest with a model that passes its golden sample but breaks the contract elsewhere falls
  back, the run records why and ``otonom runs show`` says it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import otonom_runtime.serving.load as load_mod
from otonom_runtime import PolicyError, load_rl_policy
from otonom_runtime.backtest import run_backtest
from otonom_runtime.integrity import (
    DIGEST_KEY,
    GOLDEN_ATOL,
    GOLDEN_KEY,
    GOLDEN_MIN_MARGIN,
    GOLDEN_ROWS,
    GOLDEN_STRENGTH_RANGE,
    model_digest,
    scan_model,
    seal_model,
    with_metadata,
)
from otonom_runtime.policy import write_sha256_sidecar
from otonom_runtime.store import get_session, init_db
from otonom_runtime.strategy import parse_strategy
from otonom_runtime.synth import write_synthetic
from otonom_runtime.testing.models import (
    MlpWeights,
    golden_states,
    make_policy_model,
    open_unchecked,
    random_weights,
)

HANG_GUARD_S = 600


def _weight_spans(data: bytes) -> list[tuple[str, int, int]]:
    """(name, start, end) of each initializer's raw bytes inside the serialized model."""
    proto = onnx.load_from_string(data)
    spans = []
    for t in proto.graph.initializer:
        raw = t.raw_data
        start = data.find(raw)
        assert start >= 0, t.name
        assert data.find(raw, start + 1) < 0, t.name  # found once
        spans.append((t.name, start, start + len(raw)))
    return spans


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    write_sha256_sidecar(path)  # an attacker or a bad copy that regenerates the sidecar


# --- the digest ------------------------------------------------------------------------------


def test_digest_ignores_the_metadata_and_nothing_else(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    make_policy_model(model)
    data = model.read_bytes()
    scan = scan_model(data, model)
    assert scan.digest == scan.metadata[DIGEST_KEY] == model_digest(data)
    # metadata changes (added, changed, removed keys) leave it as it is
    other = with_metadata(data, {"note": "x", "otonom.created_at": "2030-01-01T00:00:00Z"})
    assert other != data
    assert model_digest(other) == scan.digest
    assert model_digest(with_metadata(data, {GOLDEN_KEY: None})) == scan.digest
    # onnx's own re-serialization gives the same bytes (the seal writes where protobuf does)
    assert onnx.load_model_from_string(data).SerializeToString() == data
    # one byte anywhere else changes it
    name, start, _ = _weight_spans(data)[0]
    flipped = bytearray(data)
    flipped[start] ^= 1
    assert model_digest(bytes(flipped)) != scan.digest, name


def test_every_weight_bit_flip_is_refused_by_the_digest_before_a_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each of the 8 bits of each of 1,500 weight bytes spread over every initializer flipped
    alone, the sidecar regenerated: all refused by the digest, and onnxruntime never sees them
    (a session would fail this test)."""
    model = tmp_path / "policy_best.onnx"
    make_policy_model(model, hidden=16, layers=2)
    data = model.read_bytes()
    spans = _weight_spans(data)
    positions = sorted(
        {int(p) for name, a, b in spans for p in np.linspace(a, b - 1, min(b - a, 150))}
    )
    assert len(positions) >= 500

    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("a session was made for a model whose digest does not match")

    monkeypatch.setattr(load_mod, "make_session", no_session)
    tried = refused = 0
    for pos in positions:
        for bit in range(8):
            mutated = bytearray(data)
            mutated[pos] ^= 1 << bit
            _write(model, bytes(mutated))
            tried += 1
            with pytest.raises(PolicyError, match="model digest mismatch") as info:
                load_rl_policy(model)
            assert str(model) in str(info.value)
            refused += 1
    print(f"\nweight bit flips, sidecar regenerated: {refused} of {tried} refused by the digest")
    assert refused == tried >= 4000


def _flip_sign(data: bytes, name: str) -> bytes:
    """A copy with the sign of the first float of the initializer ``name`` flipped."""
    _, start, _ = next(s for s in _weight_spans(data) if s[0] == name)
    out = bytearray(data)
    out[start + 3] ^= 0x80  # little-endian float32: the top bit of byte 3 is the sign
    return bytes(out)


def test_changed_weights_with_a_recomputed_digest_fail_the_golden_sample(tmp_path: Path) -> None:
    """The sign of one bias of each head flipped, the digest recomputed and the sidecar
    regenerated (someone who knows the format): the golden sample catches it."""
    model = tmp_path / "policy_best.onnx"
    make_policy_model(model)
    data = model.read_bytes()
    for name in ("action.bias", "strength.bias"):
        mutated = _flip_sign(data, name)
        mutated = with_metadata(mutated, {DIGEST_KEY: model_digest(mutated)})
        _write(model, mutated)
        with pytest.raises(PolicyError, match=r"fails its golden sample") as info:
            load_rl_policy(model)
        assert str(info.value).startswith(str(model)), name


@pytest.mark.parametrize(("offset", "refused"), [(10.0, True), (-10.0, True), (0.5, False)])
def test_a_wrong_golden_output_is_refused(tmp_path: Path, offset: float, refused: bool) -> None:
    """The model re-sealed with one golden strength off by ``offset`` x GOLDEN_ATOL (the
    outputs stored are a float64 numpy forward of the same weights: a second implementation,
    as another CPU or CUDA would be)."""
    model = tmp_path / "policy_best.onnx"
    weights = make_policy_model(model, seal=False)
    states = golden_states()
    from otonom_runtime.testing.models import numpy_forward

    probs, strength = numpy_forward(weights, states)
    golden = seal_model(model.read_bytes(), states)
    picked = json.loads(scan_model(golden).metadata[GOLDEN_KEY])
    # the same golden rows with the first strength moved
    rows = [int(np.flatnonzero((states == np.float32(r)).all(axis=1))[0]) for r in picked["states"]]
    strength = strength.copy()
    strength[rows[0]] += offset * GOLDEN_ATOL
    keep = np.zeros(len(states), bool)
    keep[rows] = True
    seal_model(model, states[keep], outputs=(probs[keep], strength[keep]))
    if not refused:
        load_rl_policy(model)
        return
    with pytest.raises(
        PolicyError, match=r"fails its golden sample \(predict_batch, row 0 of 16\)"
    ):
        load_rl_policy(model)
    # and the right outputs pass
    seal_model(model, states[keep])
    load_rl_policy(model)


def test_golden_rows_are_away_from_the_decision_boundary(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    make_policy_model(model)
    golden = json.loads(scan_model(model.read_bytes()).metadata[GOLDEN_KEY])
    probs = np.array(golden["probs"])
    strength = np.array(golden["strength"])
    assert probs.shape == (GOLDEN_ROWS, 3)
    top2 = np.sort(probs, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] >= GOLDEN_MIN_MARGIN).all()
    lo, hi = GOLDEN_STRENGTH_RANGE
    assert ((strength >= lo) & (strength <= hi)).all()
    assert len(set(probs.argmax(axis=1).tolist())) == 3  # every action the model gives


# --- format 1, corrupt metadata ---------------------------------------------------------------


def test_a_format_1_model_is_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    model = tmp_path / "rl" / "policy_best.onnx"
    make_policy_model(model, seal=False)
    with pytest.raises(PolicyError) as info:
        load_rl_policy(model)
    message = str(info.value)
    assert message.startswith(f"{model} is model format 1")
    assert "otonom-train export --checkpoint" in message
    assert "Regenerating the default model" in message


def test_a_repeated_metadata_key_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "policy_best.onnx"
    make_policy_model(model)
    data = model.read_bytes()
    entry = b"\x0a\x0dotonom.digest\x12\x40" + b"0" * 64
    _write(model, data + bytes([(14 << 3) | 2, len(entry)]) + entry)
    with pytest.raises(PolicyError, match=r"policy_best\.onnx: .*'otonom\.digest' twice"):
        load_rl_policy(model)


def test_non_utf8_metadata_is_a_policy_error_naming_the_file(tmp_path: Path) -> None:
    model = tmp_path / "policy_best.onnx"
    make_policy_model(model)
    entry = b"\x0a\x04note\x12\x03\xff\xfe{"
    _write(model, model.read_bytes() + bytes([(14 << 3) | 2, len(entry)]) + entry)
    with pytest.raises(PolicyError, match="not valid UTF-8") as info:
        load_rl_policy(model)
    assert str(info.value).startswith(str(model))


# --- the output contract ----------------------------------------------------------------------


def _const_strength(value: float) -> MlpWeights:
    """Weights whose strength logit is ``value`` for every state."""
    w = random_weights(seed=3)
    return MlpWeights(
        w.trunk, w.action, (np.zeros_like(w.strength[0]), np.full(1, value, np.float32))
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"weights": _const_strength(7.8), "strength_op": "Identity"}, r"strength 7\.8"),
        ({"weights": _const_strength(-0.25), "strength_op": "Identity"}, r"strength -0\.25"),
        ({"weights": _const_strength(-1.0), "strength_op": "Sqrt"}, r"strength nan"),
        ({"probs_op": "Sigmoid"}, r"action_probs .* summing to"),
        ({"probs_op": "Identity"}, r"action_probs"),
    ],
    ids=["strength-7.8", "strength-negative", "strength-nan", "probs-sigmoid", "probs-logits"],
)
def test_contract_violations_raise_in_predict_and_predict_batch(
    tmp_path: Path, kwargs: dict[str, object], expected: str
) -> None:
    model = tmp_path / "broken.onnx"
    make_policy_model(model, seal=False, **kwargs)  # type: ignore[arg-type]
    policy = open_unchecked(model)
    states = golden_states(100)
    with pytest.raises(PolicyError, match=f"broke the output contract for the state: {expected}"):
        policy.predict(states[0])
    for n in (1, 7, 100):  # pre-bound small batches and the plain run
        with pytest.raises(PolicyError, match=f"row 0 of {n}: {expected}"):
            policy.predict_batch(states[:n])
    with pytest.raises(PolicyError, match=f"row 0 of 5000: {expected}"):  # run in chunks
        policy.predict_batch(np.resize(states, (5000, states.shape[1])))
    # and such a model cannot be sealed (no state gives outputs within the contract)...
    if "Sigmoid" not in str(kwargs.get("probs_op")):
        with pytest.raises(ValueError, match="no golden sample can be built"):
            seal_model(model, states)


def test_predict_and_predict_batch_agree_on_nan_producing_states(tmp_path: Path) -> None:
    """A sealed model whose strength is sqrt(logit): NaN for some valid states. Both entry
    points raise for exactly those states, and agree on the others."""
    model = tmp_path / "policy_best.onnx"
    make_policy_model(model, strength_op="Sqrt")
    policy = load_rl_policy(model)  # its golden states are fine
    states = golden_states(300, seed=5)
    single_ok = []
    for x in states:
        try:
            single_ok.append(policy.predict(x))
        except PolicyError:
            single_ok.append(None)
    bad = [i for i, r in enumerate(single_ok) if r is None]
    good = [i for i, r in enumerate(single_ok) if r is not None]
    assert bad, len(good)
    assert good, len(bad)
    for i in bad:
        with pytest.raises(PolicyError, match=r"strength (nan|\d)"):
            policy.predict_batch(states[i : i + 1])
    actions, strengths, _ = policy.predict_batch(states[good])
    answers = [r for r in single_ok if r is not None]
    assert [int(a) for a, _ in answers] == actions.tolist()
    np.testing.assert_allclose([st for _, st in answers], strengths, rtol=0, atol=1e-6)
    print(f"\nsqrt strength: {len(bad)} of {len(states)} states raise in both, {len(good)} agree")
    # a batch holding one bad row raises, naming that row
    with pytest.raises(PolicyError, match=r"row 1 of 2: strength"):
        policy.predict_batch(states[[good[0], bad[0]]])


# --- a backtest with a broken model -------------------------------------------------------------


def test_a_backtest_with_a_contract_breaking_model_falls_back_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{(tmp_path / 'otonom.db').as_posix()}"
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, ["DEMO-BTC"], dt.date(2019, 1, 1), dt.date(2021, 12, 31), 7)
    model = tmp_path / "models" / "rl" / "policy_best.onnx"
    make_policy_model(model, strength_op="Identity")  # sealed; raw strengths elsewhere
    load_rl_policy(model)  # passes its golden sample
    # a relative model path, from the project folder that holds models/
    monkeypatch.chdir(tmp_path)
    rl = {"enabled": True, "model_path": "models/rl/policy_best.onnx"}
    cfg = parse_strategy({"ensemble": {"rl_policy": rl}})
    with get_session(url) as session:
        report = run_backtest(
            session, cfg, ["DEMO-BTC"], dt.date(2020, 1, 1), dt.date(2020, 12, 31)
        )
    assert report.fallbacks > 0
    assert report.fallback_reason is not None
    assert "broke the output contract" in report.fallback_reason
    assert "RL analyst fell back" in report.summary()
    env = {**os.environ, "OTONOM_DATABASE_URL": url, "PYTHONWARNINGS": "error"}
    proc = subprocess.run(
        [sys.executable, "-m", "otonom_runtime", "runs", "show", str(report.run_id)],
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG_GUARD_S,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RL fell back: ")]
    assert len(lines) == 1, proc.stdout
    assert "DEMO-BTC: PolicyError: " in lines[0]
    assert "broke the output contract" in lines[0]
    print(f"\n{report.fallbacks} fallbacks of {report.bar_decisions} decisions; {lines[0][:160]}")


# --- the CLIs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["format-1", "digest"])
@pytest.mark.parametrize("cli", ["otonom", "otonom-train"])
def test_clis_refuse_an_unverifiable_model_in_one_error_line(
    tmp_path: Path, cli: str, case: str
) -> None:
    import otonom_schema as s
    from otonom_schema.testing import random_history

    model = tmp_path / "rl" / "policy_best.onnx"
    if case == "format-1":
        make_policy_model(model, seal=False)
        expected = "is model format 1"
    else:
        make_policy_model(model)
        data = model.read_bytes()
        _write(model, _flip_sign(data, "trunk0.weight"))
        expected = "model digest mismatch"
    exe = Path(sys.executable).with_name(cli)
    if cli == "otonom":
        args = [str(exe), "bench", "--model", str(model)]
    else:
        n = 100
        h = random_history(n, seed=4, symbol="DEMO")
        rng = np.random.default_rng(0)
        dataset = tmp_path / "d.npz"
        s.save_dataset(
            s.OfflineDataset(
                states=s.compute_states(h),
                actions=rng.integers(0, 3, n),
                strengths=rng.uniform(0, 1, n).astype(np.float32),
                symbols=np.full(n, "DEMO"),
                dates=h.dates,
                metadata={"source": "integrity test"},
            ),
            dataset,
        )
        args = [str(exe), "evaluate", "--model", str(model), "--dataset", str(dataset)]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        timeout=HANG_GUARD_S,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert expected in errors[0]
    assert str(model) in errors[0]
