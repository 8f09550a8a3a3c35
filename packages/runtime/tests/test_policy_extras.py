"""Optional extra outputs (``expected_return``, ``risk_probs``, ``attention``): the contract
accepts the known ones and refuses unknown or malformed ones, ``predict`` / ``predict_batch``
are unchanged and ``predict_extras`` returns the heads, held to their contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import otonom_schema as s
from otonom_runtime._errors import PolicyError
from otonom_runtime.policy import EXTRA_OUTPUTS_KEY, OPTIONAL_OUTPUTS, RlPolicy, load_rl_policy
from otonom_runtime.testing.models import golden_states, make_policy_model, numpy_forward

ALL_EXTRAS = (("expected_return", 1), ("risk_probs", 3), ("attention", s.STATE_DIM))


@pytest.fixture(scope="module")
def extras_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("extras") / "policy_best.onnx"
    make_policy_model(path, hidden=16, seed=5, extra_outputs=ALL_EXTRAS)
    return path


def test_the_contract_names_the_optional_outputs() -> None:
    assert dict(ALL_EXTRAS) == OPTIONAL_OUTPUTS


def test_a_model_with_the_known_extra_outputs_loads_and_predicts_as_before(
    extras_model: Path, tmp_path: Path
) -> None:
    policy = load_rl_policy(extras_model)
    assert policy.extra_outputs == ("expected_return", "risk_probs", "attention")
    assert policy.get_metadata()["extra_outputs"] == list(policy.extra_outputs)
    # the same weights without extra outputs: predict and predict_batch give the same answers
    weights = make_policy_model(tmp_path / "plain.onnx", hidden=16, seed=5)
    x = golden_states(20, seed=9)
    want_probs, want_strength = numpy_forward(weights, x)
    actions, strengths, probs = policy.predict_batch(x)
    np.testing.assert_allclose(probs, want_probs, atol=1e-5)
    np.testing.assert_allclose(strengths, want_strength, atol=1e-5)
    for i in (0, 7):
        action, strength = policy.predict(x[i])
        assert int(action) == int(actions[i])
        assert strength == pytest.approx(strengths[i])
    assert load_rl_policy(tmp_path / "plain.onnx").extra_outputs == ()


def test_predict_extras_returns_the_heads(extras_model: Path) -> None:
    policy = load_rl_policy(extras_model)
    x = golden_states(33, seed=2)
    got = policy.predict_extras(x)
    assert list(got) == ["expected_return", "risk_probs", "attention"]
    session = ort.InferenceSession(extras_model.read_bytes(), providers=["CPUExecutionProvider"])
    want = session.run(list(got), {"state": x})
    for (name, width), ref in zip(ALL_EXTRAS, want, strict=True):
        assert got[name].shape == (33, width)
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], ref)
    np.testing.assert_allclose(got["risk_probs"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got["attention"].sum(axis=1), 1.0, atol=1e-5)
    empty = policy.predict_extras(np.empty((0, s.STATE_DIM), np.float32))
    assert {k: v.shape for k, v in empty.items()} == {k: (0, w) for k, w in ALL_EXTRAS}
    bad = x[:2].copy()
    bad[1, 0] = np.nan
    with pytest.raises(s.SchemaError):
        policy.predict_extras(bad)


def test_a_model_without_extra_outputs_predicts_no_extras(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "m.onnx", hidden=8)
    policy = load_rl_policy(tmp_path / "m.onnx")
    assert policy.predict_extras(golden_states(3)) == {}


@pytest.mark.parametrize(
    ("extras", "message"),
    [
        ((("value", 1),), r"outputs are \[.*'value' tensor\(float\) \['batch', 1\]\]"),
        ((("risk_probs", 4),), r"output 'risk_probs' has shape \['batch', 4\], not \[batch, 3\]"),
        ((("attention", 33),), r"output 'attention' has shape \['batch', 33\], not \[batch, 34\]"),
    ],
)
def test_unknown_or_malformed_extra_outputs_are_refused(
    tmp_path: Path, extras: tuple[tuple[str, int], ...], message: str
) -> None:
    make_policy_model(tmp_path / "m.onnx", hidden=8, extra_outputs=extras)
    with pytest.raises(PolicyError, match=message) as info:
        load_rl_policy(tmp_path / "m.onnx")
    assert "optionally 'expected_return' float32 [batch, 1]" in str(info.value)


@pytest.mark.parametrize(
    ("listed", "message"),
    [
        (None, r"otonom\.extra_outputs is None but the graph's extra outputs are \['risk_probs'\]"),
        ('["attention"]', r"is '\[\"attention\"\]' but the graph's extra outputs"),
        ("not json", r"is 'not json' but"),
    ],
)
def test_the_metadata_must_list_the_extra_outputs(
    tmp_path: Path, listed: str | None, message: str
) -> None:
    make_policy_model(
        tmp_path / "m.onnx",
        hidden=8,
        extra_outputs=(("risk_probs", 3),),
        metadata_overrides={EXTRA_OUTPUTS_KEY: listed},
    )
    with pytest.raises(PolicyError, match=message):
        load_rl_policy(tmp_path / "m.onnx")


def test_a_listed_extra_output_the_graph_lacks_is_refused(tmp_path: Path) -> None:
    make_policy_model(
        tmp_path / "m.onnx", hidden=8, metadata_overrides={EXTRA_OUTPUTS_KEY: '["attention"]'}
    )
    with pytest.raises(PolicyError, match=r"the graph's extra outputs are \[\]"):
        load_rl_policy(tmp_path / "m.onnx")


def test_extra_outputs_are_held_to_their_contract(tmp_path: Path) -> None:
    """A ``risk_probs`` head without its softmax (rows that are no distribution) and an
    ``expected_return`` of inf are refused by ``predict_extras``, naming the output and row."""
    make_policy_model(tmp_path / "m.onnx", hidden=8, extra_outputs=ALL_EXTRAS[:2])
    proto = onnx.load(str(tmp_path / "m.onnx"))
    for node in proto.graph.node:
        if node.output[0] == "risk_probs":
            node.op_type = "Identity"
            del node.attribute[:]
    data = proto.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    policy = RlPolicy(
        session,
        path=tmp_path / "m.onnx",
        sha256="0" * 64,
        metadata={},
        device="cpu",
        extra_outputs=("expected_return", "risk_probs"),
    )
    with pytest.raises(PolicyError, match=r"output contract of 'risk_probs' for row 0 of 4"):
        policy.predict_extras(golden_states(4))
    for node in proto.graph.node:
        if node.output[0] == "risk_probs":
            node.op_type = "Softmax"
        if node.output[0] == "expected_return":
            node.op_type = "Exp"  # exp of a large logit: inf
    for init in proto.graph.initializer:
        if init.name == "expected_return.bias":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array([1e4], np.float32), init.name))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    policy._session = session
    with pytest.raises(PolicyError, match=r"'expected_return' for row 0 of 2: \[inf\], expected"):
        policy.predict_extras(golden_states(2))
