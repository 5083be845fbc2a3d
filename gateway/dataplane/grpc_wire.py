"""Reading the few fields the gateway routes by, from serialized protobuf requests.

The wire format is walked by hand, so the gateway imports neither TensorFlow's nor Triton's
protos, and never parses a tensor: v2 requests carry the model name in field 1 (`name` /
`model_name`), TF Serving's in field 1 (`name`) of field 1 (`model_spec`), MultiInference in
its first task's `model_spec`. As protobuf parsers do, the last occurrence of a field wins.
"""

from __future__ import annotations

from collections.abc import Iterator

from servers.errors import InvalidInput

__all__ = ["read_bool", "read_model_name", "read_model_spec", "read_strings"]


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """`(field, wire type, start, end)` of each field in `data[start:end]`, in wire order.

    For a length-delimited field (wire type 2) start..end is its payload; nothing is decoded
    or copied, so walking a large `ModelInferRequest` costs a few steps per field.
    """
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value_end = _varint(data, pos, end)[1]
        elif wire == 1:
            value_end = pos + 8
        elif wire == 5:
            value_end = pos + 4
        elif wire == 2:
            size, pos = _varint(data, pos, end)
            value_end = pos + size
        else:
            raise InvalidInput(f"malformed request: unsupported wire type {wire}")
        if value_end > end:
            raise InvalidInput("malformed request: truncated field")
        yield field, wire, pos, value_end
        pos = value_end


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise InvalidInput("malformed request: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _text(data: bytes, start: int, end: int) -> str:
    try:
        return data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("malformed request: a string field is not UTF-8") from None


def read_strings(message: bytes, fields: tuple[int, ...]) -> dict[int, str]:
    """The string `fields` present in a serialized message (the last occurrence of each)."""
    found: dict[int, tuple[int, int]] = {}
    for field, wire, start, end in _fields(message, 0, len(message)):
        if wire == 2 and field in fields:
            found[field] = (start, end)
    return {field: _text(message, *span) for field, span in found.items()}


def read_bool(message: bytes, field_number: int) -> bool:
    """A bool (varint) field of a serialized message; false when absent."""
    value = False
    for field, wire, start, _end in _fields(message, 0, len(message)):
        if field == field_number and wire == 0:
            value = _varint(message, start, len(message))[0] != 0
    return value


def read_model_name(message: bytes) -> str:
    """Field 1 (`name` / `model_name`, a string) of a serialized v2 model request.

    As protobuf parsers do, the last occurrence wins, so the gateway routes by the name the
    backend will read.
    """
    found: tuple[int, int] | None = None
    for field, wire, start, end in _fields(message, 0, len(message)):
        if field == 1 and wire == 2:
            found = (start, end)
    if found is None:
        raise InvalidInput("request names no model")
    return _text(message, *found)


def read_model_spec(message: bytes, first_task: bool = False) -> tuple[str, int | None]:
    """The model name and version (None: the latest) of a serialized TF Serving request.

    `model_spec` is field 1 of Predict, GetModelMetadata, Classify and Regress requests; with
    `first_task` (MultiInference) it is field 1 of the first of the `tasks` (field 1).
    Occurrences of a message field merge, as protobuf parsers do: the last name wins, and a
    `version_label` (field 4) after a `version` (field 2, an Int64Value) replaces it.
    """
    outer: list[tuple[int, int]] = []
    for field, wire, start, end in _fields(message, 0, len(message)):
        if field == 1 and wire == 2:
            outer.append((start, end))
            if first_task:
                break
    if first_task:
        if not outer:
            raise InvalidInput("Expected at least one task")
        task_start, task_end = outer[0]
        outer = [
            (start, end)
            for field, wire, start, end in _fields(message, task_start, task_end)
            if field == 1 and wire == 2
        ]
    if not outer:
        raise InvalidInput("Missing ModelSpec")
    name: tuple[int, int] | None = None
    version: int | None = None
    for spec_start, spec_end in outer:
        for field, wire, start, end in _fields(message, spec_start, spec_end):
            if field == 1 and wire == 2:
                name = (start, end)
            elif field == 2 and wire == 2:
                version = version or 0  # present but empty: version 0
                for inner, inner_wire, value_start, _ in _fields(message, start, end):
                    if inner == 1 and inner_wire == 0:
                        value = _varint(message, value_start, end)[0]
                        version = value - (1 << 64) if value >= 1 << 63 else value
            elif field == 4 and wire == 2:
                version = None
    return ("" if name is None else _text(message, *name)), version
