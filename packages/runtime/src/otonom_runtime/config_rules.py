"""The one validation engine of every config dataclass (strategy files, training, pipeline,
walk-forward, gate).

A config is a frozen dataclass whose fields declare their rule in their metadata::

    @dataclass(frozen=True)
    class Thing(Validated):
        size: int = field(default=3, metadata=rule(ge=1))
        name: str = field(default="x", metadata=rule(nonempty=True))

        _error_class = ThingError   # raised with "size: got 0; expected a value >= 1"

Beyond its rule every field is checked against its annotation (``bool``, ``int`` (not bool),
``float`` (finite; an int becomes a float), ``str``, ``X | None``, ``int | str`` (exact type,
the rule's choices say which values), ``tuple[X, ...]`` (a list or tuple, each item checked,
kept as a tuple), a nested config section, or any other class by ``isinstance``). Rules that
span fields are ``CrossCheck``s in the class attribute ``__cross_checks__``. ``__post_init__``
checks every field once, normalises (ints for float fields become floats, lists tuples,
``os.PathLike`` paths str where ``rule(path=True)``), then runs the cross checks and hands every
``Problem`` to ``_invalid``, which returns the exception to raise (by default
``_error_class(first problem)``): each family keeps its own
error class and wording (strategy files: ``FILE:LINE: key.path: received ..., expected ...``;
the trainer: ``field: got ...; expected ...``). ``convert`` builds a config from a mapping
(unknown keys, wrong types and nested sections all reported at once, each with its key path);
``yaml_key_lines`` gives each key path's line in a YAML file, for ``file:line`` in messages.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

__all__ = [
    "DERIVED_META",
    "NO_RULE",
    "CrossCheck",
    "FieldSpec",
    "Problem",
    "Rule",
    "Validated",
    "check_value",
    "convert",
    "field_specs",
    "rule",
    "show",
    "to_plain",
    "yaml_key_lines",
]

_RULE: Final = "otonom.rule"
_DERIVED: Final = "otonom.derived"
_T = TypeVar("_T")


def _num(x: object) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Rule:
    """The allowed values of one field beyond its type: bounds, a set of choices, non-empty,
    or a named test (``test`` and the values it allows, ``described``).

    ``described`` (when given) replaces the generated wording of what is expected.
    ``text_numbers``: a float field also takes numeric text (YAML 1.1 reads ``1e-3`` as text);
    ``path``: a str field also takes an ``os.PathLike`` (kept as str).
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[object, ...] | None = None
    nonempty: bool = False
    test: Callable[[Any], bool] | None = None
    described: str = ""
    text_numbers: bool = False
    path: bool = False

    def expected(self) -> str:
        if self.described:
            return self.described
        if self.choices is not None:
            return "one of " + ", ".join(_num(c) for c in self.choices)
        if self.nonempty:
            return "non-empty text"
        lo = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}"
        hi = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})"
        has_lo = self.ge is not None or self.gt is not None
        has_hi = self.le is not None or self.lt is not None
        if has_lo and has_hi:
            return f"a value in {lo}, {hi}"
        for bound, sign in ((self.ge, ">="), (self.gt, ">"), (self.le, "<=")):
            if bound is not None:
                return f"a value {sign} {_num(bound)}"
        return f"a value < {_num(self.lt)}"

    def allows(self, v: Any) -> bool:
        if self.choices is not None and v not in self.choices:
            return False
        if self.nonempty and not str(v).strip():
            return False
        if self.test is not None and not self.test(v):
            return False
        return (
            (self.ge is None or v >= self.ge)
            and (self.gt is None or v > self.gt)
            and (self.le is None or v <= self.le)
            and (self.lt is None or v < self.lt)
        )

    @property
    def empty(self) -> bool:
        return self == Rule()


def rule(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[object, ...] | None = None,
    nonempty: bool = False,
    test: Callable[[Any], bool] | None = None,
    described: str = "",
    text_numbers: bool = False,
    path: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """The metadata of a dataclass field whose values obey this rule (``extra``: more
    metadata, such as a command-line flag and its help)."""
    made = Rule(ge, gt, le, lt, choices, nonempty, test, described, text_numbers, path)
    return {_RULE: made, **extra}


NO_RULE: Final = {_RULE: Rule()}
DERIVED_META: Final = {_DERIVED: True}
"""Metadata of a field that is not read from a mapping nor written by ``to_plain`` (set by a
loader); such fields are also left out of checks."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the field's path and either the value with what was expected (a field
    problem) or a whole ``message`` (a cross check, an unknown key)."""

    path: str
    message: str = ""
    value: Any = None
    expected: str = ""

    def received(self) -> str:
        """``"received <value>, expected <what>"`` (strategy files' wording) or the message."""
        if self.message:
            return self.message
        return f"received {show(self.value)}, expected {self.expected}"

    def got(self) -> str:
        """``"path: got <repr>; expected <what>"`` (the trainer's wording) or the message."""
        if self.message:
            return f"{self.path}: {self.message}" if self.path else self.message
        return f"{self.path}: got {self.value!r}; expected {self.expected}"


@dataclass(frozen=True)
class CrossCheck:
    """A rule on several fields of one config: ``passes(values)`` or ``message(values)``
    (what is wrong; what is expected), reported at ``path`` (relative to the config)."""

    passes: Callable[[Mapping[str, Any]], bool]
    message: Callable[[Mapping[str, Any]], str]
    path: str = ""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: Any
    rule: Rule
    default: Any


_SPECS: dict[type, tuple[FieldSpec, ...]] = {}  # filled on first use of each class


def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """The checked fields of a config class (derived ones left out), types resolved."""
    if cls not in _SPECS:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            if f.metadata.get(_DERIVED):
                continue
            factory: Any = f.default_factory
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif factory is not dataclasses.MISSING:
                default = factory()
            else:
                default = dataclasses.MISSING
            out.append(FieldSpec(f.name, hints[f.name], f.metadata.get(_RULE, Rule()), default))
        _SPECS[cls] = tuple(out)
    return _SPECS[cls]


def section_type(tp: object) -> type | None:
    """``tp`` when it is a nested config section (a dataclass), else None."""
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def show(value: object) -> str:
    """A value as a strategy message shows it (``null``, ``text 'x'``, ``a mapping``...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, numbers.Number):
        return _num(value)
    return f"{value!r} ({type(value).__name__})"


def _is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_WHAT: Final[dict[Any, str]] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "text",
}


def _check_type(value: Any, tp: Any, rule: Rule) -> tuple[Any, str | None]:
    """``(converted, None)`` when ``value`` is of type ``tp``, else ``(value, expected)``."""
    if tp is bool:
        return value, None if isinstance(value, bool) else _WHAT[bool]
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value), None
        return value, _WHAT[int]
    if tp is float:
        if rule.text_numbers and isinstance(value, str) and _is_float_text(value):
            value = float(value)
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            hint = ""
            if isinstance(value, str) and _is_float_text(value):
                hint = " (YAML reads 1e-3 as text: write 1.0e-3)"
            return value, _WHAT[float] + hint
        value = float(value)
        return value, None if math.isfinite(value) else "a finite number"
    if tp is str and rule.path and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if typing.get_origin(tp) is tuple:
        return _check_tuple(value, tp, rule)
    if tp in _WHAT:
        return value, None if isinstance(value, tp) else _WHAT[tp]
    module = getattr(tp, "__module__", "builtins")
    name = getattr(tp, "__qualname__", str(tp))
    name = name if module == "builtins" else f"{module}.{name}"
    return value, None if isinstance(value, tp) else f"a {name}"


def _check_tuple(value: Any, tp: Any, rule: Rule) -> tuple[Any, str | None]:
    """``tuple[X, ...]``: a list or tuple (not text), each item of type X."""
    args = typing.get_args(tp)
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
        return value, "a list"
    if len(args) == 2 and args[1] is Ellipsis:
        items = [_check_type(v, args[0], Rule()) for v in value]
    elif len(args) == len(value):
        items = [_check_type(v, a, Rule()) for v, a in zip(value, args, strict=True)]
    else:
        return value, f"a list of {len(args)}"
    if any(bad is not None for _, bad in items):
        return value, "a list of " + ", ".join(str(bad) for _, bad in items if bad)
    return tuple(v for v, _ in items), None


def check_value(value: Any, tp: Any, rule: Rule) -> tuple[Any, str | None]:
    """``(converted value, None)``, or ``(value, what was expected)`` when ``value`` breaks the
    field's type ``tp`` or its ``rule``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) > 1:  # ``int | str``: the exact type must be one of them, the rule's
            # choices say which values (bool is not an int here)
            if type(value) in options and rule.allows(value):
                return value, None
            return value, rule.expected()
        if value is None:
            return None, None
        converted, bad = _check_type(value, options[0], rule)
        if bad is not None:
            return value, f"{bad} or null"
        value = converted
    else:
        value, bad = _check_type(value, tp, rule)
        if bad is not None:
            return value, rule.described if rule.described and "YAML" not in bad else bad
    if not rule.empty and not rule.allows(value):
        return value, rule.expected()
    return value, None


def _field_problems(obj: object, name: str) -> tuple[list[Problem], dict[str, Any]]:
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for f in field_specs(type(obj)):
        value = getattr(obj, f.name)
        path = f"{name}.{f.name}" if name else f.name
        section = section_type(f.type)
        if section is not None:
            if not isinstance(value, section):
                problems.append(Problem(path, value=value, expected=f"a {section.__name__}"))
            values[f.name] = value
            continue
        converted, expected = check_value(value, f.type, f.rule)
        if expected is not None:
            problems.append(Problem(path, value=value, expected=expected))
        elif converted is not value:
            object.__setattr__(obj, f.name, converted)
        values[f.name] = converted
    return problems, values


def cross_problems(cls: type, values: Mapping[str, Any], path: str) -> list[Problem]:
    """The problems of ``cls``'s cross checks on ``values`` (its fields by name)."""
    checks: tuple[CrossCheck, ...] = getattr(cls, "__cross_checks__", ())
    return [
        Problem(_join(path, c.path) if c.path else path, c.message(values))
        for c in checks
        if not c.passes(values)
    ]


class Validated:
    """Base of the config dataclasses: ``__post_init__`` checks and normalises every field,
    then the cross checks (``__cross_checks__``), and raises ``self._invalid(problems)``.

    ``_path_prefix`` names the config in the problems' paths (e.g. the strategy's section
    class name); empty by default (the trainer's field names stand alone).
    """

    __cross_checks__: ClassVar[tuple[CrossCheck, ...]] = ()
    _path_prefix: ClassVar[bool] = False
    _error_class: ClassVar[type[Exception]] = ValueError

    def __post_init__(self) -> None:
        name = type(self).__name__ if self._path_prefix else ""
        problems, values = _field_problems(self, name)
        if not problems:
            problems = cross_problems(type(self), values, name)
        if problems:
            raise self._invalid(problems)

    def _invalid(self, problems: list[Problem]) -> Exception:
        """The exception for ``problems`` (at least one): by default ``_error_class`` with the
        first problem in the trainer's wording (``field: got ...; expected ...``)."""
        return type(self)._error_class(problems[0].got())


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _unknown_keys(raw: Mapping[Any, Any], names: list[str], path: str) -> list[Problem]:
    out = []
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append(
                Problem(_join(path, key), f"unknown key; expected one of {', '.join(names)}{hint}")
            )
    return out


def convert(cls: type[_T], raw: object, path: str, problems: list[Problem]) -> _T | None:
    """``cls`` built from ``raw`` (a mapping; None = all defaults for a nested section), or
    None after adding every problem found to ``problems`` (paths are key paths: ``a.b.c``)."""
    spec = field_specs(cls)
    names = [f.name for f in spec]
    if raw is None and path:  # an empty section: all defaults
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append(
            Problem(path, f"received {show(raw)}, expected a mapping (keys: {', '.join(names)})")
            if path
            else Problem("", f"the top level is {show(raw)}; expected a mapping")
        )
        return None
    unknown = _unknown_keys(raw, names, path)
    problems.extend(unknown)
    ok = not unknown
    values: dict[str, Any] = {}
    for f in spec:
        if f.name not in raw:
            values[f.name] = f.default
            continue
        sub = _join(path, f.name)
        section = section_type(f.type)
        if section is not None:
            child = convert(section, raw[f.name], sub, problems)
            ok = ok and child is not None
            values[f.name] = child
            continue
        converted, expected = check_value(raw[f.name], f.type, f.rule)
        if expected is not None:
            ok = False
            problems.append(Problem(sub, value=raw[f.name], expected=expected))
        values[f.name] = converted
    if not ok:
        return None
    cross = cross_problems(cls, values, path)
    if cross:
        problems.extend(cross)
        return None
    return cls(**values)


def to_plain(obj: object) -> object:
    """A config as plain data: nested mappings of its checked fields (derived ones left out)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in field_specs(type(obj))}
    return obj


def yaml_key_lines(text: str, problems: list[Problem]) -> dict[str, int]:
    """The 1-based line of every key path (``a.b.c``) in the YAML ``text``, so that a problem
    can name its ``file:line``; each duplicate key is added to ``problems``. Raises
    ``yaml.YAMLError`` for text that is not YAML."""
    import yaml

    lines: dict[str, int] = {}

    def walk(node: yaml.Node, path: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            sub = f"{path}.{key_node.value}" if path else str(key_node.value)
            line = key_node.start_mark.line + 1
            if sub in lines:
                problems.append(
                    Problem(
                        sub,
                        f"duplicate key (also on line {lines[sub]}); expected each key once",
                    )
                )
            lines[sub] = line
            walk(value_node, sub)

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, "")
    return lines
