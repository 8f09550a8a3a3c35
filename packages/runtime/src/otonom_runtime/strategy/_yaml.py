"""Reading a strategy file: its size and structure limits (the YAML event stream, before
anything is built), the line of every key, and how problems are reported with them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from otonom_runtime._errors import StrategyError
from otonom_runtime._text import counted
from otonom_runtime.config_rules import Problem
from otonom_runtime.config_rules import yaml_key_lines as key_lines

__all__ = ["error", "key_lines", "read_strategy_file", "structure_problem", "text"]

# structural limits of a strategy file (no clocks): checked before / while parsing
_MAX_FILE_BYTES: Final = 1 << 20  # 1 MiB, checked before reading
_MAX_DEPTH: Final = 32  # nested mappings/lists
_MAX_NODES: Final = 100_000  # scalars + collections in the file


def structure_problem(text: str) -> tuple[int, str] | None:
    """``(line, message)`` of the first structural limit ``text`` breaks, else None.

    Reads the YAML event stream (nothing is built or expanded): anchors and aliases are refused
    outright (so neither an alias bomb nor a recursive alias can be expressed), nesting deeper
    than ``_MAX_DEPTH`` and more than ``_MAX_NODES`` nodes are refused. YAML syntax errors are
    left to the caller (``yaml.YAMLError``).
    """
    import yaml

    depth = nodes = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        mark = event.start_mark
        line = mark.line + 1 if mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            return line, (
                f"YAML alias *{event.anchor} refused; expected a file without anchors (&) or "
                "aliases (*): write each value out"
            )
        if isinstance(event, yaml.NodeEvent):
            if event.anchor is not None:
                return line, (
                    f"YAML anchor &{event.anchor} refused; expected a file without anchors (&) "
                    "or aliases (*): write each value out"
                )
            nodes += 1
            if nodes > _MAX_NODES:
                return line, f"more than {_MAX_NODES} YAML nodes; expected a smaller file"
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                return line, (
                    f"YAML nested {depth} levels deep; expected at most {_MAX_DEPTH} levels"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _line_of(path: str, lines: Mapping[str, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path.rpartition(".")[0]
    return None


def text(problem: Problem, source: str, lines: Mapping[str, int]) -> str:
    """``FILE[:LINE]: key.path: what was received, what was expected``."""
    line = _line_of(problem.path, lines)
    where = f"{source}:{line}" if line else source
    parts = [part for part in (where, problem.path, problem.received()) if part]
    return ": ".join(parts)


def error(problems: list[Problem], source: str, lines: Mapping[str, int]) -> StrategyError:
    """One ``StrategyError`` listing every problem, each on its line."""
    n = len(problems)
    head = f"invalid strategy {source} ({counted(n, 'problem')}):"
    texts = [text(p, source, lines) for p in problems]
    return StrategyError("\n  ".join([head, *texts]), texts)


def _one(source: str, message: str) -> StrategyError:
    return StrategyError(f"invalid strategy {source} (1 problem):\n  {message}", [message])


def read_strategy_file(
    path: str | os.PathLike[str],
) -> tuple[bytes, Any, dict[str, int], list[Problem]]:
    """``(the file's bytes, the YAML data, the line of each key path, duplicate-key problems)``.

    Raises ``StrategyError`` for an unreadable file, one over 1 MiB (checked before reading and
    while reading), a structural limit broken (``structure_problem``) or a YAML syntax error.
    """
    import yaml

    p = Path(path)
    source = str(p)
    try:
        size = p.stat().st_size
        if size > _MAX_FILE_BYTES:
            message = (
                f"the file is {size} bytes; expected a strategy file of at most "
                f"{_MAX_FILE_BYTES} bytes (1 MiB)"
            )
            raise error([Problem("", message)], source, {})
        with p.open("rb") as f:  # bounded: a device or a growing file cannot be read whole
            raw = f.read(_MAX_FILE_BYTES + 1)
        content = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        message = f"cannot read the file ({reason}); expected a UTF-8 YAML file"
        raise error([Problem("", message)], source, {}) from None
    if len(raw) > _MAX_FILE_BYTES:  # grew between stat and read, or not a regular file
        message = f"the file is over {_MAX_FILE_BYTES} bytes; expected at most that"
        raise error([Problem("", message)], source, {})
    problems: list[Problem] = []
    try:
        refused = structure_problem(content)
        if refused is not None:
            raise _one(source, f"{source}:{refused[0]}: {refused[1]}")
        data = yaml.safe_load(content)
        lines = key_lines(content, problems)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise _one(source, f"{where}: YAML syntax error: {what}; expected valid YAML") from None
    return raw, data, lines, problems
