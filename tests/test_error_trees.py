"""One error tree per package: every exception class a package defines (outside its
``testing`` helpers) is under the package's base, keeps a builtin base for callers that caught
builtins before the tree existed, and is drawn in the tree of the package's ``_errors``
docstring. Found by walking every submodule, so a new error class outside the tree fails here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

BUILTIN_BASES = (ValueError, RuntimeError, KeyError, TypeError, OSError, LookupError)

PACKAGES = {
    "otonom_schema": ("otonom_schema._errors", "SchemaError"),
    "otonom_runtime": ("otonom_runtime._errors", "OtonomRuntimeError"),
    "otonom_trainer": ("otonom_trainer._errors", "OtonomTrainerError"),
}


def _modules(package: str) -> list[ModuleType]:
    root = importlib.import_module(package)
    found = [root]
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        name = info.name
        if name.endswith("__main__") or ".testing" in name:
            continue
        found.append(importlib.import_module(name))
    return found


def defined_errors(package: str) -> list[type[BaseException]]:
    """The exception classes defined (not just imported) in ``package``'s modules."""
    classes: dict[str, type[BaseException]] = {}
    for module in _modules(package):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                if obj.__name__.startswith("_"):
                    continue  # private control flow (e.g. a parser's internal signal)
                classes[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(classes.values())


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_error_class_is_in_its_package_tree(package: str) -> None:
    errors_module, base_name = PACKAGES[package]
    errors = importlib.import_module(errors_module)
    base = getattr(errors, base_name)
    drawn = errors.__doc__ or ""
    classes = defined_errors(package)
    assert base in classes
    problems = []
    for cls in classes:
        if not issubclass(cls, base):
            problems.append(f"{cls.__module__}.{cls.__name__} is not under {base_name}")
        if cls is not base and not issubclass(cls, BUILTIN_BASES):
            problems.append(f"{cls.__module__}.{cls.__name__} has no builtin base")
        if cls.__name__ not in drawn:
            problems.append(f"{cls.__module__}.{cls.__name__} is not drawn in {errors_module}")
    assert problems == []


def test_the_walk_finds_a_class_outside_the_tree(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pkg = tmp_path / "demo_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_errors.py").write_text('"""DemoError"""\nclass DemoError(ValueError): ...\n')
    (pkg / "mod.py").write_text("class StrayError(RuntimeError): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = {c.__name__ for c in defined_errors("demo_pkg")}
    assert names == {"DemoError", "StrayError"}
