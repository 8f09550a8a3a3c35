"""Room sizes: no module over 600 lines and no function over 80 in packages/*/src, unless its
docstring says why (contains ``Long because``) or it is listed in ``ALLOWED`` (empty since
the splits of issue 13), at most at its length when it was listed.

A function's length is its lines from ``def`` to its last line, its docstring left out (a
long docstring is documentation, not a long function); nested functions and methods count on
their own (``Class.method``, ``outer.inner``). A module's length is all its lines.

``ALLOWED`` may only shrink: an entry that grew fails, and an entry no longer needed (the module
or function was split, shrunk under the limit or removed) is reported as a warning, which the
test configuration (``filterwarnings = error``) turns into a failure: delete it then.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MARKER = "Long because"

# allowed offenders (``path`` or ``path::qualified name`` -> the length allowed): only shrinks.
ALLOWED: dict[str, int] = {}  # every room is within the limits (issue 13)


def _docstring_lines(node: ast.AST) -> tuple[str, int]:
    """The docstring of a module or function and how many lines it spans ("", 0: none)."""
    body = getattr(node, "body", [])
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        assert first.end_lineno is not None
        return first.value.value, first.end_lineno - first.lineno + 1
    return "", 0


def sizes(root: Path) -> dict[str, tuple[int, bool]]:
    """``{key: (length, explained)}`` for every module and function over its limit under
    ``root/packages/*/src`` (``explained``: its docstring holds ``MARKER``)."""
    found: dict[str, tuple[int, bool]] = {}
    for path in sorted(root.glob("packages/*/src/**/*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, rel)
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found[rel] = (lines, MARKER in _docstring_lines(tree)[0])

        def walk(node: ast.AST, prefix: str, rel: str = rel) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = prefix + child.name
                    doc, doc_lines = _docstring_lines(child)
                    assert child.end_lineno is not None
                    length = child.end_lineno - child.lineno + 1 - doc_lines
                    if length > MAX_FUNCTION_LINES:
                        found[f"{rel}::{name}"] = (length, MARKER in doc)
                    walk(child, name + ".")
                elif isinstance(child, ast.ClassDef):
                    walk(child, prefix + child.name + ".")
                else:
                    walk(child, prefix)

        walk(tree, "")
    return found


def stale_entries(root: Path, allowed: dict[str, int]) -> list[str]:
    """The entries of ``allowed`` that nothing under ``root`` needs any more."""
    needed = {key for key, (_, explained) in sizes(root).items() if not explained}
    return sorted(set(allowed) - needed)


def size_problems(root: Path, allowed: dict[str, int]) -> list[str]:
    """What breaks the size rules under ``root``, one line each."""
    problems = []
    found = sizes(root)
    for key, (length, explained) in sorted(found.items()):
        limit = MAX_FUNCTION_LINES if "::" in key else MAX_MODULE_LINES
        what = "function" if "::" in key else "module"
        if explained:
            continue
        if key not in allowed:
            problems.append(
                f"{key}: {what} of {length} lines, over {limit}; split it, or say why in its "
                f"docstring ({MARKER!r} ...)"
            )
        elif length > allowed[key]:
            problems.append(
                f"{key}: {what} of {length} lines grew past its allowed {allowed[key]} "
                "(ALLOWED only shrinks)"
            )
    return problems


def test_no_module_or_function_is_over_its_size_unexplained() -> None:
    assert size_problems(ROOT, ALLOWED) == []
    for key in stale_entries(ROOT, ALLOWED):
        warnings.warn(f"ALLOWED[{key!r}] is no longer needed: delete it", stacklevel=1)


def test_the_size_rules_fail_where_they_should(tmp_path: Path) -> None:
    """A temporary tree: a long module, a long function, a long method, an explained long
    function, a function at the limit once its docstring is left out, an allowed module that
    grew and a stale allowance (reported apart)."""
    src = tmp_path / "packages" / "demo" / "src" / "demo"
    src.mkdir(parents=True)
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    at_limit = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    method = body.replace("    ", "        ")
    (src / "funcs.py").write_text(
        f'def long():\n    """A docstring\n    of two lines."""\n{body}\n\n'
        f'def explained():\n    """Long because it is a table."""\n{body}\n\n'
        f"class C:\n    def method(self):\n{method}\n\n"
        f'def at_limit():\n    """Three\n    docstring\n    lines."""\n{at_limit}\n'
    )
    (src / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (src / "grew.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 5))
    (src / "long_ok.py").write_text('"""Long because: a table."""\n' + "x = 1\n" * 700)
    allowed = {"packages/demo/src/demo/grew.py": 603, "packages/demo/src/demo/gone.py": 900}
    problems = size_problems(tmp_path, allowed)
    demo = "packages/demo/src/demo/"
    assert problems == [
        f"{demo}big.py: module of 601 lines, over 600; split it, or say why in its docstring "
        "('Long because' ...)",
        f"{demo}funcs.py::C.method: function of 81 lines, over 80; split it, or say why in "
        "its docstring ('Long because' ...)",
        f"{demo}funcs.py::long: function of 81 lines, over 80; split it, or say why in its "
        "docstring ('Long because' ...)",
        f"{demo}grew.py: module of 605 lines grew past its allowed 603 (ALLOWED only shrinks)",
    ]
    assert stale_entries(tmp_path, allowed) == [f"{demo}gone.py"]
