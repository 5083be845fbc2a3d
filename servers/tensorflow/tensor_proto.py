"""numpy arrays to and from TensorFlow's `TensorProto`, the tensors of TF Serving's gRPC API.

Written by hand because `tf.make_tensor_proto` / `tf.make_ndarray` cost tens of microseconds
of Python per tensor. Encoding writes numeric data as little-endian `tensor_content` (what
`tf.make_tensor_proto` does for arrays), or, with `typed_fields=True`, in the typed `*_val`
fields (what TF Serving answers Predict with, and what clients reading `.float_val` expect).
Strings always travel in `string_val`, as numpy object arrays of `bytes`.

Decoding accepts `tensor_content` and every typed field, with TensorFlow's rule that a single
value fills the whole shape. It is stricter than TensorFlow elsewhere: TF pads a short value
list with its last value and ignores extra ones, here any other count is a 400, since it is
almost always a client bug.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

from tensorflow.core.framework import (  # noqa: E402
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)

from servers.errors import InvalidInput  # noqa: E402

__all__ = [
    "MAX_BROADCAST_BYTES",
    "dtype_enum",
    "dtype_name",
    "from_tensor_proto",
    "numpy_dtype",
    "tensor_shape",
    "to_tensor_proto",
]

# A single typed value fills the whole shape; beyond this many bytes the request is refused,
# so a few bytes on the wire cannot make the server allocate gigabytes.
MAX_BROADCAST_BYTES = 64 * 1024 * 1024

try:  # bfloat16 has no numpy dtype of its own; TensorFlow's comes from ml_dtypes
    import ml_dtypes

    _BFLOAT16: np.dtype[Any] | None = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a TensorFlow dependency
    _BFLOAT16 = None


@dataclass(frozen=True)
class _Kind:
    """One TensorFlow dtype: its numpy dtype and the typed field that carries its values."""

    enum: int
    dtype: np.dtype[Any]
    field: str


def _kinds() -> list[_Kind]:
    kinds = [
        _Kind(types_pb2.DT_FLOAT, np.dtype(np.float32), "float_val"),
        _Kind(types_pb2.DT_DOUBLE, np.dtype(np.float64), "double_val"),
        _Kind(types_pb2.DT_INT32, np.dtype(np.int32), "int_val"),
        _Kind(types_pb2.DT_UINT8, np.dtype(np.uint8), "int_val"),
        _Kind(types_pb2.DT_INT16, np.dtype(np.int16), "int_val"),
        _Kind(types_pb2.DT_INT8, np.dtype(np.int8), "int_val"),
        _Kind(types_pb2.DT_UINT16, np.dtype(np.uint16), "int_val"),
        _Kind(types_pb2.DT_INT64, np.dtype(np.int64), "int64_val"),
        _Kind(types_pb2.DT_UINT32, np.dtype(np.uint32), "uint32_val"),
        _Kind(types_pb2.DT_UINT64, np.dtype(np.uint64), "uint64_val"),
        _Kind(types_pb2.DT_BOOL, np.dtype(np.bool_), "bool_val"),
        _Kind(types_pb2.DT_HALF, np.dtype(np.float16), "half_val"),
        _Kind(types_pb2.DT_COMPLEX64, np.dtype(np.complex64), "scomplex_val"),
        _Kind(types_pb2.DT_COMPLEX128, np.dtype(np.complex128), "dcomplex_val"),
        _Kind(types_pb2.DT_STRING, np.dtype(np.object_), "string_val"),
    ]
    if _BFLOAT16 is not None:
        kinds.append(_Kind(types_pb2.DT_BFLOAT16, _BFLOAT16, "half_val"))
    return kinds


_BY_ENUM: dict[int, _Kind] = {k.enum: k for k in _kinds()}
_BY_DTYPE: dict[np.dtype[Any], _Kind] = {k.dtype: k for k in _BY_ENUM.values()}
_TYPED_FIELDS = sorted({k.field for k in _BY_ENUM.values()})


def dtype_name(enum: int) -> str:
    """`DT_FLOAT` for 1, and so on (the enum's number when TensorFlow has no name for it)."""
    try:
        return str(types_pb2.DataType.Name(enum))
    except ValueError:
        return str(enum)


def numpy_dtype(enum: int) -> np.dtype[Any]:
    """The numpy dtype of a TensorFlow `DataType` (object for DT_STRING), or a 400."""
    kind = _BY_ENUM.get(enum)
    if kind is None:
        raise InvalidInput(f"dtype {dtype_name(enum)} is not supported")
    return kind.dtype


def dtype_enum(dtype: np.dtype[Any]) -> int:
    """The TensorFlow `DataType` of a numpy dtype (str, bytes and object arrays: DT_STRING)."""
    if dtype.kind in "OSU":
        return int(types_pb2.DT_STRING)
    # A big-endian dtype maps like its native twin; the encoder converts the bytes.
    kind = _BY_DTYPE.get(dtype if dtype.byteorder in "=|" else dtype.newbyteorder("="))
    if kind is None:
        raise InvalidInput(f"numpy dtype {dtype} has no TensorFlow dtype")
    return kind.enum


def tensor_shape(
    shape: tuple[int | None, ...] | None,
    out: tensor_shape_pb2.TensorShapeProto | None = None,
) -> tensor_shape_pb2.TensorShapeProto:
    """A `TensorShapeProto`: None is an unknown rank, a None dimension is -1 (any size)."""
    proto = tensor_shape_pb2.TensorShapeProto() if out is None else out
    if shape is None:
        proto.unknown_rank = True
        return proto
    for size in shape:
        proto.dim.add(size=-1 if size is None else int(size))
    return proto


# -- encoding ------------------------------------------------------------------------------


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise InvalidInput(f"a string tensor holds a {type(value).__name__}, not bytes or str")


def to_tensor_proto(
    array: np.ndarray,
    typed_fields: bool = False,
    out: tensor_pb2.TensorProto | None = None,
) -> tensor_pb2.TensorProto:
    """`array` as a TensorProto (written into `out` when given, e.g. a request's map entry).

    Numbers go to `tensor_content` (little-endian) unless `typed_fields`; strings (numpy
    object, bytes or str arrays) to `string_val`, str elements as UTF-8.
    """
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto() if out is None else out
    enum = dtype_enum(array.dtype)
    proto.dtype = enum
    proto.tensor_shape.SetInParent()  # present even for a scalar, as TensorFlow writes it
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if enum == types_pb2.DT_STRING:
        proto.string_val.extend([_as_bytes(v) for v in array.ravel().tolist()])
        return proto
    kind = _BY_ENUM[enum]
    if not typed_fields:
        little = array.astype(kind.dtype.newbyteorder("<"), copy=False)
        proto.tensor_content = np.ascontiguousarray(little).tobytes()
        return proto
    flat = array.ravel()
    if kind.field == "half_val":  # the 16-bit patterns, one per int32
        values: list[Any] = flat.view(np.uint16).tolist()
    elif kind.field == "scomplex_val":  # (real, imaginary) pairs
        values = flat.view(np.float32).tolist()
    elif kind.field == "dcomplex_val":
        values = flat.view(np.float64).tolist()
    else:
        values = flat.tolist()
    getattr(proto, kind.field).extend(values)
    return proto


# -- decoding ------------------------------------------------------------------------------


def _shape_of(proto: tensor_pb2.TensorProto, name: str) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise InvalidInput(f"tensor '{name}' has an unknown rank: a tensor needs a shape")
    dims = tuple(int(d.size) for d in shape.dim)
    if any(d < 0 for d in dims):
        raise InvalidInput(f"tensor '{name}' has a negative dimension in shape {list(dims)}")
    return dims


def _decode_string_list(content: bytes, count: int, name: str) -> list[bytes]:
    """TensorFlow's string `tensor_content`: `count` varint lengths, then the bytes."""
    lengths, pos = [], 0
    for _ in range(count):
        result = shift = 0
        while True:
            if pos >= len(content) or shift > 35:
                raise InvalidInput(f"tensor '{name}': malformed string tensor_content")
            byte = content[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        lengths.append(result)
    if pos + sum(lengths) != len(content):
        raise InvalidInput(f"tensor '{name}': string tensor_content does not match its shape")
    values = []
    for length in lengths:
        values.append(content[pos : pos + length])
        pos += length
    return values


def _check_count(got: int, count: int, shape: tuple[int, ...], itemsize: int, where: str) -> None:
    if got == count or (got == 0 and count == 0):
        return
    if got == 1 and count > 1:
        if count * itemsize > MAX_BROADCAST_BYTES:
            raise InvalidInput(
                f"{where}: one value would fill shape {list(shape)} ({count} elements), larger "
                f"than the {MAX_BROADCAST_BYTES} bytes a tensor may be broadcast to"
            )
        return
    raise InvalidInput(
        f"{where}: shape {list(shape)} holds {count} value(s), the tensor carries {got}"
    )


def _other_field(proto: tensor_pb2.TensorProto, expected: str) -> str | None:
    """A typed field other than `expected` that holds values (a dtype/field mix-up)."""
    for field in _TYPED_FIELDS:
        if field != expected and len(getattr(proto, field)):
            return field
    return None


def _filled(values: np.ndarray, count: int, shape: tuple[int, ...]) -> np.ndarray:
    if values.size == 1 and count != 1:
        return np.full(shape, values[0], dtype=values.dtype)
    return values.reshape(shape)


def from_tensor_proto(proto: tensor_pb2.TensorProto, name: str = "tensor") -> np.ndarray:
    """The array a TensorProto holds (DT_STRING: an object array of bytes), or a 400 naming
    `name` when the proto is malformed, of an unsupported dtype, or its size mismatches."""
    kind = _BY_ENUM.get(proto.dtype)
    if kind is None:
        if proto.dtype == types_pb2.DT_INVALID:
            raise InvalidInput(f"tensor '{name}' has no dtype")
        raise InvalidInput(f"tensor '{name}': dtype {dtype_name(proto.dtype)} is not supported")
    shape = _shape_of(proto, name)
    count = math.prod(shape)
    where = f"tensor '{name}' ({dtype_name(kind.enum)})"
    content = proto.tensor_content

    if kind.enum == types_pb2.DT_STRING:
        strings = _decode_string_list(content, count, name) if content else list(proto.string_val)
        _check_count(len(strings), count, shape, 8, where)
        array = np.empty(count, dtype=np.object_)
        if len(strings) == 1:
            array.fill(strings[0])
        else:
            array[:] = strings
        return array.reshape(shape)

    if content:
        itemsize = kind.dtype.itemsize
        if len(content) != count * itemsize:
            raise InvalidInput(
                f"{where}: tensor_content has {len(content)} bytes, shape {list(shape)} needs "
                f"{count * itemsize}"
            )
        if kind.enum == types_pb2.DT_BOOL:  # any non-zero byte is true, as in TensorFlow
            return (np.frombuffer(content, dtype=np.uint8) != 0).reshape(shape)
        flat = np.frombuffer(content, dtype=kind.dtype.newbyteorder("<"))
        return flat.astype(kind.dtype, copy=False).reshape(shape)

    raw = getattr(proto, kind.field)
    pairs = kind.field in ("scomplex_val", "dcomplex_val")
    got = len(raw) // 2 if pairs else len(raw)
    if pairs and len(raw) % 2:
        raise InvalidInput(f"{where}: {kind.field} holds an odd number of floats")
    if got == 0 and count > 0:
        other = _other_field(proto, kind.field)
        if other is not None:
            raise InvalidInput(
                f"{where} carries its values in {other}; expected {kind.field} or tensor_content"
            )
    _check_count(got, count, shape, kind.dtype.itemsize, where)
    return _filled(_typed_values(raw, kind, where), count, shape)


def _typed_values(raw: Any, kind: _Kind, where: str) -> np.ndarray:
    """The values of a typed field as a flat array of the kind's dtype, range-checked."""
    if kind.field == "half_val":
        bits = np.fromiter(raw, dtype=np.int64, count=len(raw))
        if bits.size and (bits.min() < 0 or bits.max() > 0xFFFF):
            raise InvalidInput(f"{where}: half_val holds a value that is not 16 bits")
        return bits.astype(np.uint16).view(kind.dtype)
    if kind.field == "scomplex_val":
        return np.fromiter(raw, dtype=np.float32, count=len(raw)).view(np.complex64)
    if kind.field == "dcomplex_val":
        return np.fromiter(raw, dtype=np.float64, count=len(raw)).view(np.complex128)
    if kind.field == "int_val" and kind.dtype != np.int32:
        # int_val is int32 on the wire for every small integer type: check the range.
        wide = np.fromiter(raw, dtype=np.int64, count=len(raw))
        info = np.iinfo(kind.dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInput(f"{where}: int_val holds a value out of range for the dtype")
        return wide.astype(kind.dtype)
    return np.fromiter(raw, dtype=kind.dtype, count=len(raw))
