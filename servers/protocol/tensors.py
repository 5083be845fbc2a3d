"""Open Inference Protocol (v2) tensors to and from numpy, strict about shape and datatype.

One place decides what a valid tensor is, whatever transport brought it: REST JSON (`data`,
row-major, flat or nested), the REST binary tensor extension and gRPC `raw_input_contents`
(little-endian bytes; BYTES as 4-byte length-prefixed elements), or gRPC typed `contents`.
FP16 travels as IEEE half; BF16 has no numpy dtype, so it decodes to float32 and encodes by
rounding float32 to its upper 16 bits (what Triton clients send).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servers.errors import InvalidInput

__all__ = [
    "DATATYPES",
    "Datatype",
    "datatype_of",
    "decode_tensor",
    "deserialize_bytes",
    "serialize_bytes",
    "tensor_to_json_data",
    "tensor_to_raw",
]


@dataclass(frozen=True)
class Datatype:
    """A v2 datatype: its numpy dtype in memory and its size on the wire (0: variable)."""

    name: str
    dtype: np.dtype[Any]
    wire_size: int

    @property
    def kind(self) -> str:
        return self.dtype.kind


def _dt(name: str, dtype: Any, size: int) -> tuple[str, Datatype]:
    return name, Datatype(name, np.dtype(dtype), size)


DATATYPES: dict[str, Datatype] = dict(
    [
        _dt("BOOL", np.bool_, 1),
        _dt("UINT8", np.uint8, 1),
        _dt("UINT16", np.uint16, 2),
        _dt("UINT32", np.uint32, 4),
        _dt("UINT64", np.uint64, 8),
        _dt("INT8", np.int8, 1),
        _dt("INT16", np.int16, 2),
        _dt("INT32", np.int32, 4),
        _dt("INT64", np.int64, 8),
        _dt("FP16", np.float16, 2),
        _dt("FP32", np.float32, 4),
        _dt("FP64", np.float64, 8),
        _dt("BF16", np.float32, 2),  # held as float32 in memory
        _dt("BYTES", np.object_, 0),
    ]
)

_BY_DTYPE: dict[np.dtype[Any], str] = {
    d.dtype: d.name for d in DATATYPES.values() if d.name not in ("BF16",)
}


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype name for a numpy array (strings and bytes are BYTES)."""
    if array.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _BY_DTYPE[array.dtype]
    except KeyError:
        raise InvalidInput(f"numpy dtype {array.dtype} has no v2 datatype") from None


def lookup_datatype(name: Any, tensor: str) -> Datatype:
    """The Datatype called `name`, or a 400 naming the tensor."""
    if not isinstance(name, str) or name.upper() not in DATATYPES:
        raise InvalidInput(
            f"tensor '{tensor}': unknown datatype {name!r}; expected one of " + ", ".join(DATATYPES)
        )
    return DATATYPES[name.upper()]


def check_shape(shape: Any, tensor: str) -> tuple[int, ...]:
    """A shape as a tuple of non-negative ints, or a 400."""
    if not isinstance(shape, Sequence) or isinstance(shape, str | bytes):
        raise InvalidInput(f"tensor '{tensor}': shape must be a list of integers, got {shape!r}")
    dims: list[int] = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer):
            raise InvalidInput(f"tensor '{tensor}': shape {list(shape)!r} has a non-integer")
        if dim < 0:
            raise InvalidInput(f"tensor '{tensor}': shape {list(shape)!r} has a negative dimension")
        dims.append(int(dim))
    return tuple(dims)


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES elements as 4-byte little-endian length + bytes, row-major."""
    parts: list[bytes] = []
    for item in array.ravel(order="C"):
        raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes(raw: bytes, tensor: str) -> list[bytes]:
    """Split length-prefixed BYTES elements; a 400 when the lengths run past the end."""
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"tensor '{tensor}': truncated BYTES length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(f"tensor '{tensor}': BYTES element runs past the end of the data")
        items.append(raw[offset : offset + length])
        offset += length
    return items


def _bf16_to_float32(raw: bytes) -> np.ndarray:
    halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
    return (halves << 16).view(np.float32)


def _float32_to_bf16(array: np.ndarray) -> bytes:
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    # Round to nearest even on the dropped 16 bits; NaN keeps a quiet NaN.
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    rounded = np.where(np.isnan(array.ravel()).reshape(bits.shape), 0x7FC0, rounded)
    return rounded.astype("<u2").tobytes()


def _from_raw(dt: Datatype, raw: bytes, count: int, tensor: str) -> np.ndarray:
    if dt.name == "BYTES":
        items = deserialize_bytes(raw, tensor)
        if len(items) != count:
            raise InvalidInput(
                f"tensor '{tensor}': shape needs {count} BYTES elements, data has {len(items)}"
            )
        out = np.empty(count, dtype=np.object_)
        out[:] = items
        return out
    expected = count * dt.wire_size
    if len(raw) != expected:
        raise InvalidInput(
            f"tensor '{tensor}': shape needs {expected} bytes of {dt.name}, data has {len(raw)}"
        )
    if dt.name == "BF16":
        return _bf16_to_float32(raw)
    return np.frombuffer(raw, dtype=dt.dtype.newbyteorder("<")).astype(dt.dtype, copy=False)


def _flatten(data: Any, tensor: str, dt: Datatype) -> np.ndarray:
    if not isinstance(data, list | tuple | np.ndarray):
        raise InvalidInput(f"tensor '{tensor}': data must be a list, got {type(data).__name__}")
    # BYTES as objects: numpy's fixed-width strings drop trailing NULs and stringify numbers.
    as_objects = dt.name == "BYTES"
    try:
        array = np.asarray(data, dtype=np.object_ if as_objects else None)
        if dt.name == "UINT64" and array.dtype.kind == "f":
            # numpy promotes a mix of int64 and uint64-only integers to float64 (inexact).
            exact = np.asarray(data, dtype=np.object_)
            if all(type(v) is int for v in exact.flat):
                array = exact
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"tensor '{tensor}': data is ragged or not rectangular ({exc})") from exc
    flat = array.ravel()
    if flat.dtype.kind in "iuf" and not isinstance(data, np.ndarray) and _holds_bool(data):
        # numpy silently turns true/false among numbers into 1/0.
        raise InvalidInput(f"tensor '{tensor}': {dt.name} data contains booleans")
    return flat


def _holds_bool(data: Any) -> bool:
    stack = [data]
    while stack:
        item = stack.pop()
        if type(item) is bool:
            return True
        if isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _check_values(dt: Datatype, flat: np.ndarray, tensor: str) -> np.ndarray:
    kind = flat.dtype.kind
    if flat.size == 0:
        return flat.astype(dt.dtype)
    if dt.name == "BYTES":
        if kind == "U":
            return np.array([s.encode("utf-8") for s in flat], dtype=np.object_)
        if kind == "O" and all(isinstance(v, bytes | str) for v in flat):
            return np.array(
                [v.encode("utf-8") if isinstance(v, str) else v for v in flat], dtype=np.object_
            )
        if any(isinstance(v, list | tuple) for v in flat):
            raise InvalidInput(f"tensor '{tensor}': data is ragged or not rectangular")
        raise InvalidInput(f"tensor '{tensor}': BYTES data must be strings")
    if kind == "O":
        if any(v is None for v in flat):
            raise InvalidInput(f"tensor '{tensor}': data contains null")
        if dt.name == "UINT64" and all(type(v) is int for v in flat):
            if min(flat) < 0 or max(flat) > np.iinfo(np.uint64).max:
                raise InvalidInput(f"tensor '{tensor}': value out of range for UINT64")
            return flat.astype(np.uint64)
        raise InvalidInput(f"tensor '{tensor}': data mixes types or holds integers too large")
    if kind in ("U", "S"):
        raise InvalidInput(f"tensor '{tensor}': {dt.name} data contains strings")
    if dt.name == "BOOL":
        if kind != "b":
            raise InvalidInput(f"tensor '{tensor}': BOOL data must be true/false")
        return flat
    if kind == "b":
        raise InvalidInput(f"tensor '{tensor}': {dt.name} data contains booleans")
    if dt.kind in ("i", "u"):
        if kind == "f":
            raise InvalidInput(f"tensor '{tensor}': {dt.name} data contains non-integers")
        info = np.iinfo(dt.dtype)
        low, high = int(flat.min()), int(flat.max())
        if low < info.min or high > info.max:
            raise InvalidInput(
                f"tensor '{tensor}': value out of range for {dt.name} [{info.min}, {info.max}]"
            )
        return flat.astype(dt.dtype)
    # Floating point: integers and floats accepted; finite values must stay finite.
    limit = float(np.finfo(np.float32 if dt.name == "BF16" else dt.dtype).max)
    as_float = flat.astype(np.float64)
    finite = np.isfinite(as_float)
    if np.any(np.abs(as_float[finite]) > limit):
        raise InvalidInput(f"tensor '{tensor}': value overflows {dt.name}")
    return as_float.astype(dt.dtype)


def decode_tensor(
    name: str,
    datatype: Any,
    shape: Any,
    data: Any = None,
    raw: bytes | None = None,
) -> np.ndarray:
    """A validated numpy array from a v2 tensor given as JSON/typed `data` or `raw` bytes."""
    dt = lookup_datatype(datatype, name)
    dims = check_shape(shape, name)
    count = math.prod(dims)
    if raw is not None:
        flat = _from_raw(dt, raw, count, name)
    elif data is None:
        raise InvalidInput(f"tensor '{name}': no data")
    else:
        flat = _check_values(dt, _flatten(data, name, dt), name)
        if flat.size != count:
            raise InvalidInput(
                f"tensor '{name}': shape {list(dims)} needs {count} values, data has {flat.size}"
            )
    return flat.reshape(dims)


def tensor_to_json_data(array: np.ndarray, datatype: str) -> list[Any]:
    """Row-major flat `data` for a v2 JSON tensor (BYTES as UTF-8 strings)."""
    flat = array.ravel(order="C")
    if datatype == "BYTES":
        out: list[Any] = []
        for item in flat:
            if isinstance(item, bytes):
                try:
                    out.append(item.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise InvalidInput(
                        "BYTES output is not UTF-8: ask for binary_data outputs"
                    ) from exc
            else:
                out.append(str(item))
        return out
    if datatype in ("FP16", "BF16"):
        return flat.astype(np.float32).tolist()
    return flat.tolist()


def tensor_to_raw(array: np.ndarray, datatype: str) -> bytes:
    """Little-endian bytes of a tensor for raw/binary transport."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    if datatype == "BF16":
        return _float32_to_bf16(array)
    dt = DATATYPES[datatype]
    return np.ascontiguousarray(array, dtype=dt.dtype.newbyteorder("<")).tobytes()
