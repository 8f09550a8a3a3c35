"""Each package's public names are exactly its ``__all__`` (httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import types

import pytest


@pytest.mark.parametrize("name", ["otonom_schema", "otonom_runtime", "otonom_trainer"])
def test_all_matches_public_names(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(module.__all__) == public
    assert len(module.__all__) == len(set(module.__all__))
    assert module.__version__


@pytest.mark.parametrize("name", ["otonom_schema", "otonom_runtime", "otonom_trainer"])
def test_packages_are_typed(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    from pathlib import Path

    assert (Path(module.__file__).parent / "py.typed").is_file()
