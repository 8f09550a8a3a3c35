"""Which model a folder stands for (its own model > ``latest`` > ``default``), and the refusal of
an ONNX export that is not from the training run recorded beside it (``metadata.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otonom_runtime._errors import PolicyError
from otonom_runtime.policy import (
    RUN_ID_KEY,
    load_rl_policy,
    resolve_model_path,
    resolve_version_dir,
)
from otonom_runtime.testing.models import default_metadata, make_policy_model

V1, V2 = "20260101T000000Z", "20260201T000000Z"
RUN_A, RUN_B = "a" * 32, "b" * 32


def _versions(root: Path) -> None:
    make_policy_model(root / V1 / "policy_best.onnx", hidden=8, seed=1)
    make_policy_model(root / V2 / "policy_best.onnx", hidden=8, seed=2)


# --- pointers ------------------------------------------------------------------------------------


def test_default_pointer_is_followed_while_nothing_is_promoted(tmp_path: Path) -> None:
    _versions(tmp_path)
    assert resolve_version_dir(tmp_path) is None
    (tmp_path / "default").write_text(V1 + "\n")
    assert resolve_version_dir(tmp_path) == tmp_path / V1
    assert load_rl_policy(tmp_path).path == tmp_path / V1 / "policy_best.onnx"
    # the guide's checkpoint path in a versioned folder
    assert load_rl_policy(tmp_path / "policy_best.pt").path == tmp_path / V1 / "policy_best.onnx"


def test_latest_wins_over_default(tmp_path: Path) -> None:
    _versions(tmp_path)
    (tmp_path / "default").write_text(V1 + "\n")
    (tmp_path / "latest").write_text(V2 + "\n")
    assert resolve_version_dir(tmp_path) == tmp_path / V2
    assert resolve_model_path(tmp_path) == tmp_path / V2 / "policy_best.onnx"
    assert load_rl_policy(tmp_path / "policy_best.pt").path == tmp_path / V2 / "policy_best.onnx"
    (tmp_path / "latest").unlink()  # back to the shipped default
    assert load_rl_policy(tmp_path).path == tmp_path / V1 / "policy_best.onnx"


def test_a_folders_own_model_wins_over_both_pointers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _versions(tmp_path)
    (tmp_path / "default").write_text(V1 + "\n")
    make_policy_model(tmp_path / "policy_best.onnx", hidden=8, seed=3)
    with caplog.at_level("WARNING", logger="otonom_runtime.policy"):
        assert load_rl_policy(tmp_path).path == tmp_path / "policy_best.onnx"
    assert "'default' pointer" in caplog.text


@pytest.mark.parametrize("target", ["missing", "../elsewhere", ""])
def test_bad_default_pointer_is_named(tmp_path: Path, target: str) -> None:
    (tmp_path / "default").write_text(target)
    with pytest.raises(PolicyError, match=r"default"):
        load_rl_policy(tmp_path)
    with pytest.raises(PolicyError, match=r"default"):
        resolve_version_dir(tmp_path)


def test_checkpoint_path_error_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"train a model first") as info:
        load_rl_policy(tmp_path / "policy_best.pt")
    assert "otonom-train export" not in str(info.value)  # there is no checkpoint to export
    (tmp_path / "policy_best.pt").write_bytes(b"checkpoint")
    with pytest.raises(PolicyError, match=r"otonom-train export --checkpoint"):
        load_rl_policy(tmp_path / "policy_best.pt")


def test_a_folder_of_unpromoted_versions_says_how_to_serve_one(tmp_path: Path) -> None:
    """The gate refused every version (no ``latest``) and nothing ships a ``default``: the
    error names the newest version and the two ways on, not "train a model first"."""
    for name in ("20261201T000000Z", "20261206T050511Z"):
        make_policy_model(tmp_path / name / "policy_best.onnx", hidden=8)
    (tmp_path / "notes").mkdir()  # a sub-folder without a model is no version
    for path in (tmp_path / "policy_best.pt", tmp_path):
        with pytest.raises(PolicyError) as info:
            load_rl_policy(path)
        message = str(info.value)
        assert "train a model first" not in message
        assert f"{tmp_path} holds 2 trained versions (newest 20261206T050511Z)" in message
        assert "none is promoted (no 'latest' file" in message
        assert f"otonom-train check {tmp_path / '20261206T050511Z'} " in message
    # the version's folder itself serves
    assert load_rl_policy(tmp_path / "20261206T050511Z").path.parent.name == "20261206T050511Z"


# --- the training run beside the model -----------------------------------------------------------


def _record(folder: Path, run_id: str | None, metrics: dict[str, Any] | None = None) -> None:
    """A trainer-style metadata.json (only the keys the runtime reads)."""
    record: dict[str, Any] = {"format": "otonom-rl/training-run"}
    if run_id is not None:
        record["run_id"] = run_id
    if metrics is None:
        metrics = json.loads(default_metadata()["otonom.metrics"])
    record["metrics"] = metrics
    (folder / "metadata.json").write_text(json.dumps(record, indent=2))


def _model(folder: Path, run_id: str | None) -> Path:
    path = folder / "policy_best.onnx"
    make_policy_model(path, hidden=8, metadata_overrides={RUN_ID_KEY: run_id})
    return path


def test_the_same_run_id_loads(tmp_path: Path) -> None:
    model = _model(tmp_path, RUN_A)
    _record(tmp_path, RUN_A)
    policy = load_rl_policy(tmp_path)
    assert policy.path == model
    assert policy.get_metadata()["training_run_id"] == RUN_A


@pytest.mark.parametrize(("model_id", "record_id"), [(RUN_A, RUN_B), (None, RUN_B), (RUN_A, None)])
def test_an_export_of_another_run_is_refused(
    tmp_path: Path, model_id: str | None, record_id: str | None
) -> None:
    model = _model(tmp_path, model_id)
    _record(tmp_path, record_id)
    for path in (tmp_path, tmp_path / "policy_best.pt", model):
        with pytest.raises(PolicyError, match=r"is not the export of the training run") as info:
            load_rl_policy(path)
        text = str(info.value)
        assert (model_id or "(none: an older export)") in text
        assert (record_id or "(none: an older run)") in text
        assert "stale" in text
        assert "retrain into" in text  # no checkpoint here: nothing to re-export


def test_the_refusal_names_the_reexport_command_when_the_checkpoint_is_there(
    tmp_path: Path,
) -> None:
    _model(tmp_path, RUN_A)
    _record(tmp_path, RUN_B)
    (tmp_path / "policy_best.pt").write_bytes(b"checkpoint")
    with pytest.raises(PolicyError, match=r"`otonom-train export --checkpoint .*policy_best\.pt`"):
        load_rl_policy(tmp_path / "policy_best.pt")


def test_models_from_before_run_ids_compare_their_metrics(tmp_path: Path) -> None:
    """The shipped default predates run ids: with none on either side the model loads when
    its metrics are the record's, and is refused when they are not (a stale export)."""
    _model(tmp_path, None)
    _record(tmp_path, None)
    assert load_rl_policy(tmp_path).path == tmp_path / "policy_best.onnx"
    metrics = json.loads(default_metadata()["otonom.metrics"])
    _record(tmp_path, None, metrics | {"val_action_acc": 0.123})
    with pytest.raises(PolicyError, match=r"metrics differ \(val_action_acc: model .*0\.123"):
        load_rl_policy(tmp_path)


def test_no_record_or_a_foreign_one_is_not_compared(tmp_path: Path) -> None:
    _model(tmp_path, RUN_A)
    assert load_rl_policy(tmp_path).path == tmp_path / "policy_best.onnx"  # no metadata.json
    (tmp_path / "metadata.json").write_text(json.dumps({"run_id": RUN_B}))  # not the trainer's
    assert load_rl_policy(tmp_path).path == tmp_path / "policy_best.onnx"
