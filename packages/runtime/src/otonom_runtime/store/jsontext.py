"""The JSON text of the store's JSON columns (every engine's ``json_serializer``): exactly
``json.dumps``' text, made faster for a value that holds a ``SharedValues`` (a dict of many
entries whose values are a few objects shared between them: a daemon tick's run row maps each
of its thousands of symbols to one of two sources dicts), each distinct value encoded once."""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

__all__ = ["SharedValues", "dumps"]


class SharedValues(dict[str, Any]):
    """A dict with ``str`` keys whose values are a few objects shared by many keys (by
    identity, not changed while it is written): ``dumps`` encodes each of them once. Anywhere
    else it is a plain dict (``json.dumps`` gives the same text)."""

    __slots__ = ()


def dumps(value: Any) -> str:
    """``json.dumps(value)``, the same text; a dict (``str`` keys) holding ``SharedValues``
    among its values is written entry by entry, each ``SharedValues`` with its distinct values
    encoded once (5,000 symbols' sources: ~1 ms against ~6 ms)."""
    if (
        type(value) is dict
        and any(type(v) is SharedValues for v in value.values())
        and all(type(k) is str for k in value)
    ):
        return _joined(value.items(), _value)
    return json.dumps(value)


def _value(value: Any) -> str:
    if type(value) is not SharedValues or not all(type(k) is str for k in value):
        return json.dumps(value)
    memo: dict[int, str] = {}

    def once(item: Any) -> str:
        text = memo.get(id(item))
        if text is None:
            text = memo[id(item)] = json.dumps(item)
        return text

    return _joined(value.items(), once)


def _joined(items: Any, encode: Any) -> str:
    """A JSON object of ``items`` (``str`` keys), each value written by ``encode``, with
    ``json.dumps``' separators."""
    return "{" + ", ".join([f"{encode_basestring_ascii(k)}: {encode(v)}" for k, v in items]) + "}"
