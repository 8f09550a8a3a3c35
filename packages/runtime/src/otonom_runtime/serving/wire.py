"""A minimal protobuf wire-format reader (the runtime does not depend on the ``onnx`` package):
the varint and field walk that ``otonom_runtime.integrity`` uses for the digest and the
metadata, and the scan that refuses ONNX external data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

from otonom_runtime._errors import PolicyError

__all__ = [
    "METADATA_FIELD",
    "Malformed",
    "encode_varint",
    "fields",
    "refuse_external_data",
    "split_metadata",
    "varint",
]

# A minimal protobuf wire-format walk over the fields of onnx.proto that can hold a TensorProto
# (the runtime does not depend on the onnx package): ModelProto.graph (7), .training_info (20)
# and .functions (25); TrainingInfoProto.initialization (1), .algorithm (2); GraphProto.node
# (1), .initializer (5), .sparse_initializer (15); FunctionProto.node (7), .attribute_proto (11);
# NodeProto.attribute (5); AttributeProto.t (5), .g (6), .tensors (10), .graphs (11),
# .sparse_tensor (22), .sparse_tensors (23); SparseTensorProto.values (1), .indices (2);
# TensorProto.external_data (13), .data_location (14, EXTERNAL = 1).

_MODEL, _TRAINING, _GRAPH, _FUNCTION, _NODE, _ATTRIBUTE, _SPARSE, _TENSOR = range(8)
_SUBMESSAGES: Final[dict[int, dict[int, int]]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {},
}
_MAX_DEPTH: Final = 64
METADATA_FIELD: Final = 14
"""``ModelProto.metadata_props``."""
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


class Malformed(PolicyError):
    """Bytes that are not a well-formed protobuf message (caught by the callers, which know the
    file, and raised again as a ``PolicyError`` naming it)."""


def varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise Malformed(f"a truncated or overlong varint at byte {i}")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _skip(buf: bytes, i: int, end: int, wire: int) -> tuple[int, int]:
    """``(payload start, index after the field)`` of a field of wire type 0 (varint), 1 (8
    bytes), 2 (length-delimited: the payload starts after its length) or 5 (4 bytes) whose
    value starts at ``i``; any other wire type is malformed here."""
    if wire == 0:
        return i, varint(buf, i, end)[1]
    if wire == 1:
        return i, i + 8
    if wire == 5:
        return i, i + 4
    if wire == 2:
        n, payload = varint(buf, i, end)
        return payload, payload + n
    raise Malformed(f"wire type {wire} at byte {i}")


def fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """``(field, wire, field_start, payload_start, field_end)`` for each field of one message
    in ``buf[start:end]`` (groups are refused: ONNX has none)."""
    i = start
    while i < end:
        begin = i
        key, i = varint(buf, i, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise Malformed(f"field number 0 at byte {begin}")
        payload, i = _skip(buf, i, end, wire)
        if i > end:
            raise Malformed(f"field {field} at byte {begin} runs past the end (byte {end})")
        yield field, wire, begin, payload, i


def _entry(buf: bytes, start: int, end: int) -> tuple[bytes, bytes]:
    """A ``StringStringEntryProto``'s raw key and value (the last of each wins, as in
    protobuf)."""
    key = value = b""
    for field, wire, _, payload, stop in fields(buf, start, end):
        if wire == 2 and field == _ENTRY_KEY:
            key = buf[payload:stop]
        elif wire == 2 and field == _ENTRY_VALUE:
            value = buf[payload:stop]
    return key, value


def split_metadata(
    data: bytes,
) -> tuple[list[tuple[int, memoryview]], list[tuple[bytes, bytes]], int | None]:
    """The top-level fields of a ``ModelProto`` but its metadata (``(field number, raw bytes)``
    in order, as views of ``data``: no copy of a large graph), its metadata entries (raw key,
    raw value) in order, and the index among the former where the first metadata field stood
    (None: there was none)."""
    view = memoryview(data)
    rest: list[tuple[int, memoryview]] = []
    entries: list[tuple[bytes, bytes]] = []
    where: int | None = None
    for field, wire, begin, payload, stop in fields(data, 0, len(data)):
        if field == METADATA_FIELD and wire == 2:
            if where is None:
                where = len(rest)
            entries.append(_entry(data, payload, stop))
        else:
            rest.append((field, view[begin:stop]))
    return rest, entries, where


def _skip_group(buf: bytes, i: int, end: int, group: int, depth: int) -> int:
    """The index after the end-group tag of the group ``group`` that starts at ``i``."""
    if depth > _MAX_DEPTH:
        raise Malformed(f"messages nested deeper than {_MAX_DEPTH}")
    while i < end:
        key, i = varint(buf, i, end)
        field, wire = key >> 3, key & 7
        if wire == 3:
            i = _skip_group(buf, i, end, field, depth + 1)
        elif wire == 4 and field == group:
            return i
        else:
            _, i = _skip(buf, i, end, wire)
    raise Malformed(f"a group without its end (field {group})")


def _has_external_data(buf: bytes, start: int, end: int, kind: int, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        raise Malformed(f"messages nested deeper than {_MAX_DEPTH}")
    subs = _SUBMESSAGES[kind]
    i = start
    while i < end:
        key, i = varint(buf, i, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i, end)
            if kind == _TENSOR and field == 14 and value == 1:
                return True
        elif wire == 2:
            n, i = varint(buf, i, end)
            if i + n > end:
                raise Malformed(f"a field of {n} bytes runs past its message at byte {i}")
            if kind == _TENSOR and field == 13:
                return True
            sub = subs.get(field)
            if sub is not None and _has_external_data(buf, i, i + n, sub, depth + 1):
                return True
            i += n
        elif wire == 3:  # a group (none in onnx.proto, but protobuf skips unknown ones)
            i = _skip_group(buf, i, end, field, depth + 1)
        else:  # 1 and 5; an end-group without its start and 6, 7 (which do not exist) raise
            _, i = _skip(buf, i, end, wire)
    if i != end:
        raise Malformed(f"a field runs past its message (byte {end})")
    return False


def refuse_external_data(data: bytes, model: Path) -> None:
    """Refuse a model whose tensors keep their data in other files (ONNX external data).

    onnxruntime would read such data relative to the working directory (the model is loaded
    from its bytes), and the sidecar's sha256 does not cover it; the trainer never makes one.
    """
    try:
        external = _has_external_data(data, 0, len(data), _MODEL, 0)
    except Malformed as exc:
        raise PolicyError(
            f"{model} is not a valid ONNX model: its protobuf encoding is malformed ({exc})"
        ) from None
    if external:
        raise PolicyError(
            f"{model} keeps tensor data in external files (ONNX external data); expected a "
            "self-contained model: external data is not supported (it would be read from "
            "outside the file the sha256 sidecar covers, and the trainer never makes it). "
            "Re-save it with all tensors inside the .onnx file (onnx.save_model(model, path, "
            "save_as_external_data=False))"
        )
