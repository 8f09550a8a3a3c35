"""Model versioning: version folders, the ``latest`` pointer, and the runtime following it."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from otonom_runtime.policy import load_rl_policy, resolve_model_path
from otonom_runtime.testing.models import make_policy_model
from otonom_trainer.registry import (
    RegistryError,
    latest_version,
    list_versions,
    new_version_dir,
    promote,
    replacement_note,
    trained_period,
    trained_symbols,
    version_name,
)

WHEN = dt.datetime(2026, 12, 1, 6, 15, 0, tzinfo=dt.timezone.utc)


def _model(folder: Path) -> None:
    make_policy_model(folder / "policy_best.onnx", hidden=8)


def test_version_name_is_utc_and_sortable() -> None:
    assert version_name(WHEN) == "20261201T061500Z"
    plus3 = dt.timezone(dt.timedelta(hours=3))
    assert version_name(WHEN.astimezone(plus3)) == "20261201T061500Z"
    assert re.fullmatch(r"\d{8}T\d{6}Z", version_name())
    with pytest.raises(RegistryError, match="no timezone"):
        version_name(dt.datetime(2026, 12, 1))


def test_new_version_dir_never_reuses_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "models" / "rl_bc"
    first = new_version_dir(root, WHEN)
    second = new_version_dir(root, WHEN)
    assert first.name == "20261201T061500Z"
    assert second.name == "20261201T061500Z-2"
    assert first.is_dir()
    assert second.is_dir()


def test_promote_moves_latest_and_the_runtime_follows_it(tmp_path: Path) -> None:
    root = tmp_path / "rl_bc"
    old = new_version_dir(root, WHEN)
    new = new_version_dir(root, WHEN + dt.timedelta(days=1))
    _model(old)
    _model(new)
    assert latest_version(root) is None
    assert [p.name for p in list_versions(root)] == [old.name, new.name]

    pointer = promote(old)
    assert pointer == root / "latest"
    assert pointer.read_text() == old.name + "\n"
    assert latest_version(root) == old
    assert resolve_model_path(root) == old / "policy_best.onnx"

    promote(new)
    assert latest_version(root) == new
    assert load_rl_policy(root).path == new / "policy_best.onnx"
    assert not list(root.glob(".latest*"))  # no temporary file left behind


def test_promote_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    empty = new_version_dir(tmp_path / "rl_bc", WHEN)
    with pytest.raises(RegistryError, match=r"holds no policy_best\.onnx"):
        promote(empty)
    assert not (tmp_path / "rl_bc" / "latest").exists()


def test_latest_version_rejects_a_bad_pointer(tmp_path: Path) -> None:
    root = tmp_path / "rl_bc"
    root.mkdir()
    (root / "latest").write_text("../elsewhere\n")
    with pytest.raises(RegistryError, match="expected the name of a version folder"):
        latest_version(root)
    (root / "latest").write_text("20990101T000000Z\n")  # names nothing
    with pytest.raises(RegistryError, match="20990101T000000Z"):
        latest_version(root)


def test_list_versions_ignores_other_folders_and_unfinished_versions(tmp_path: Path) -> None:
    root = tmp_path / "rl_bc"
    done = new_version_dir(root, WHEN)
    _model(done)
    new_version_dir(root, WHEN + dt.timedelta(hours=1))  # training still running: no model
    (root / "notes").mkdir()
    assert list_versions(root) == [done]
    assert list_versions(tmp_path / "missing") == []


def test_current_version_is_latest_else_default(tmp_path: Path) -> None:
    """The runtime's rule (``resolve_version_dir``): promotion writes only ``latest``; the
    shipped ``default`` serves while nothing is promoted and is never rewritten."""
    from otonom_trainer.registry import current_version

    root = tmp_path / "rl_bc"
    shipped = new_version_dir(root, WHEN)
    trained = new_version_dir(root, WHEN + dt.timedelta(days=1))
    _model(shipped)
    _model(trained)
    assert current_version(root) is None
    (root / "default").write_text(shipped.name + "\n")
    assert current_version(root) == shipped
    assert latest_version(root) is None
    promote(trained)
    assert current_version(root) == trained
    assert (root / "default").read_text() == shipped.name + "\n"
    (root / "default").write_text("../x\n")
    (root / "latest").unlink()
    with pytest.raises(RegistryError, match="default"):
        current_version(root)


def _trained_on(folder: Path, symbols: list[str] | None) -> None:
    """A version with a model and (unless None) a metadata.json naming its training symbols."""
    _model(folder)
    if symbols is not None:
        record = {"dataset": {"metadata": {"symbols": symbols}}}
        (folder / "metadata.json").write_text(json.dumps(record))


def test_a_promotion_that_replaces_a_model_of_other_symbols_is_noted(tmp_path: Path) -> None:
    root = tmp_path / "rl_bc"
    real = new_version_dir(root, WHEN)
    demo = new_version_dir(root, WHEN + dt.timedelta(days=1))
    again = new_version_dir(root, WHEN + dt.timedelta(days=2))
    _trained_on(real, ["BTC-USD", "ETH-USD"])
    _trained_on(demo, ["DEMO-BTC"])
    _trained_on(again, ["ETH-USD", "BTC-USD"])
    assert trained_symbols(real) == ("BTC-USD", "ETH-USD")
    assert replacement_note(real) is None  # nothing in service yet
    promote(real)
    assert replacement_note(real) is None  # itself
    assert replacement_note(again) is None  # the same symbols, in another order
    assert replacement_note(demo) == (
        f"{demo.name} (trained on DEMO-BTC) replaces {real.name} (trained on BTC-USD, "
        f"ETH-USD) in service under {root}: a strategy whose model_path names that folder now "
        "serves it for the symbols it decides"
    )
    unknown = new_version_dir(root, WHEN + dt.timedelta(days=3))
    _trained_on(unknown, None)
    assert trained_symbols(unknown) == ()
    assert replacement_note(unknown) is None  # its symbols unknown: nothing to compare
    (unknown / "metadata.json").write_text("{not json")
    assert trained_symbols(unknown) == ()


def test_trained_period_reads_the_datasets_dates(tmp_path: Path) -> None:
    assert trained_period(tmp_path) == (None, None)  # no metadata.json
    record = {"dataset": {"metadata": {"start_date": "2021-01-04", "end_date": "not a date"}}}
    (tmp_path / "metadata.json").write_text(json.dumps(record))
    assert trained_period(tmp_path) == (dt.date(2021, 1, 4), None)
