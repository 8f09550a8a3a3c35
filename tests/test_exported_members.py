"""Each package's public names are exactly its ``__all__`` (httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

PACKAGES = ["otonom_schema", "otonom_runtime", "otonom_trainer"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_matches_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert len(module.__all__) == len(exported)
    for attr in module.__all__:
        assert getattr(module, attr) is not None, attr  # lazy names resolve too
    public = {
        attr
        for attr in dir(module)
        if not attr.startswith("_") and not isinstance(getattr(module, attr), types.ModuleType)
    }
    assert public == exported
    assert module.__version__


def test_runtime_names_resolve_to_their_defining_modules() -> None:
    import otonom_runtime
    from otonom_runtime import builder, policy, store

    assert otonom_runtime.get_session is store.get_session
    assert otonom_runtime.load_rl_policy is policy.load_rl_policy
    assert otonom_runtime.RlStateBuilder is builder.RlStateBuilder
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        otonom_runtime.nope  # noqa: B018


def test_runtime_import_is_lazy() -> None:
    code = "import sys, otonom_runtime; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", PACKAGES)
def test_packages_are_typed(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert (Path(module.__file__).parent / "py.typed").is_file()


def test_trainer_lazy_names_match_all() -> None:
    import otonom_trainer

    assert set(otonom_trainer._LAZY) == set(otonom_trainer.__all__)
