"""numpy <-> TensorProto, checked against TensorFlow's own `make_tensor_proto` / `make_ndarray`."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

from servers.errors import InvalidInput
from servers.tensorflow.tensor_proto import (
    MAX_BROADCAST_BYTES,
    dtype_enum,
    from_tensor_proto,
    numpy_dtype,
    tensor_shape,
    to_tensor_proto,
)

tf = pytest.importorskip("tensorflow")
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402

NUMERIC = [
    np.float32, np.float64, np.float16, ml_dtypes.bfloat16,
    np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.bool_, np.complex64, np.complex128,
]
ENUMS = {
    np.float32: types_pb2.DT_FLOAT, np.float64: types_pb2.DT_DOUBLE,
    np.float16: types_pb2.DT_HALF, ml_dtypes.bfloat16: types_pb2.DT_BFLOAT16,
    np.int8: types_pb2.DT_INT8, np.int16: types_pb2.DT_INT16, np.int32: types_pb2.DT_INT32,
    np.int64: types_pb2.DT_INT64, np.uint8: types_pb2.DT_UINT8,
    np.uint16: types_pb2.DT_UINT16, np.uint32: types_pb2.DT_UINT32,
    np.uint64: types_pb2.DT_UINT64, np.bool_: types_pb2.DT_BOOL,
    np.complex64: types_pb2.DT_COMPLEX64, np.complex128: types_pb2.DT_COMPLEX128,
}
SHAPES = [(2, 3), (), (0, 4), (1, 1, 5)]


def sample(dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(7)
    values = rng.normal(scale=50, size=shape)
    if np.dtype(dtype).kind == "c":
        values = values + 1j * rng.normal(scale=50, size=shape)
    if np.dtype(dtype).kind == "b":
        return values > 0
    if np.dtype(dtype).kind == "u":
        values = np.abs(values)
    return np.asarray(values).astype(dtype)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("typed", [False, True], ids=["content", "typed"])
@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_numeric_round_trip_agrees_with_tensorflow(
    dtype: Any, typed: bool, shape: tuple[int, ...]
) -> None:
    array = sample(dtype, shape)
    proto = to_tensor_proto(array, typed_fields=typed)
    assert proto.dtype == ENUMS[dtype]
    assert [d.size for d in proto.tensor_shape.dim] == list(shape)
    assert bool(proto.tensor_content) == (not typed and array.size > 0)
    assert_same(from_tensor_proto(proto), array)
    assert_same(tf.make_ndarray(proto), array)  # TensorFlow reads what we write
    assert_same(from_tensor_proto(tf.make_tensor_proto(array)), array)  # and we read TF's


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_encoding_is_byte_identical_to_make_tensor_proto(dtype: Any) -> None:
    # TF writes arrays as tensor_content (typed fields for a few dtypes) and scalars typed.
    for array in (sample(dtype, (2, 3)), sample(dtype, ())):
        theirs = tf.make_tensor_proto(array).SerializeToString()
        ours = {to_tensor_proto(array, typed_fields=t).SerializeToString() for t in (False, True)}
        assert theirs in ours


def test_strings_round_trip_as_bytes() -> None:
    array = np.array([[b"a", b"\xff\x00"], [b"", "é".encode()]], dtype=object)
    proto = to_tensor_proto(array)
    assert proto.dtype == types_pb2.DT_STRING
    assert list(proto.string_val) == [b"a", b"\xff\x00", b"", "é".encode()]
    assert proto.SerializeToString() == tf.make_tensor_proto(array).SerializeToString()
    assert_same(from_tensor_proto(proto), array)
    assert_same(tf.make_ndarray(proto).astype(object), array)
    assert_same(from_tensor_proto(tf.make_tensor_proto(array)), array)


@pytest.mark.parametrize(
    "array",
    [np.array(["ab", "é"]), np.array([b"ab", b"c"]), np.array(["x", b"y"], dtype=object)],
    ids=["unicode", "bytes", "mixed-object"],
)
def test_str_and_fixed_width_arrays_encode_as_utf8(array: np.ndarray) -> None:
    decoded = from_tensor_proto(to_tensor_proto(array))
    assert decoded.dtype == object
    assert decoded.tolist() == [v.encode() if isinstance(v, str) else bytes(v) for v in array]


def test_string_tensor_content_is_decoded() -> None:
    # TensorFlow's C++ AsProtoTensorContent for strings: varint lengths, then the bytes.
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    proto.tensor_shape.dim.add(size=3)
    proto.tensor_content = bytes([2, 0, 200, 1]) + b"ab" + b"x" * 200
    assert from_tensor_proto(proto).tolist() == [b"ab", b"", b"x" * 200]
    proto.tensor_content = proto.tensor_content[:-1]
    with pytest.raises(InvalidInput, match="does not match its shape"):
        from_tensor_proto(proto)


def test_non_string_objects_are_refused() -> None:
    with pytest.raises(InvalidInput, match="holds a int"):
        to_tensor_proto(np.array([1, b"x"], dtype=object))


def test_big_endian_arrays_are_written_little_endian() -> None:
    array = np.arange(6, dtype=">i4").reshape(2, 3)
    proto = to_tensor_proto(array)
    assert proto.tensor_content == np.arange(6, dtype="<i4").tobytes()
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)


def typed(dtype: int, shape: list[int], **fields: Any) -> Any:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


@pytest.mark.parametrize(
    ("proto", "expected"),
    [
        (typed(types_pb2.DT_FLOAT, [2], float_val=[1.5, -2]), np.array([1.5, -2], np.float32)),
        (typed(types_pb2.DT_DOUBLE, [1], double_val=[0.1]), np.array([0.1])),
        (typed(types_pb2.DT_INT32, [2], int_val=[-3, 7]), np.array([-3, 7], np.int32)),
        (typed(types_pb2.DT_INT8, [2], int_val=[-128, 127]), np.array([-128, 127], np.int8)),
        (typed(types_pb2.DT_UINT8, [2], int_val=[0, 255]), np.array([0, 255], np.uint8)),
        (typed(types_pb2.DT_INT16, [1], int_val=[-300]), np.array([-300], np.int16)),
        (typed(types_pb2.DT_UINT16, [1], int_val=[65535]), np.array([65535], np.uint16)),
        (typed(types_pb2.DT_INT64, [1], int64_val=[-(2**62)]), np.array([-(2**62)])),
        (typed(types_pb2.DT_UINT32, [1], uint32_val=[2**32 - 1]), np.array([2**32 - 1], "u4")),
        (typed(types_pb2.DT_UINT64, [1], uint64_val=[2**64 - 1]), np.array([2**64 - 1], "u8")),
        (typed(types_pb2.DT_BOOL, [2], bool_val=[True, False]), np.array([True, False])),
        (typed(types_pb2.DT_HALF, [1], half_val=[0x3C00]), np.array([1.0], np.float16)),
        (typed(types_pb2.DT_BFLOAT16, [1], half_val=[0x3F80]),
         np.array([1.0], ml_dtypes.bfloat16)),
        (typed(types_pb2.DT_COMPLEX64, [1], scomplex_val=[1, 2]), np.array([1 + 2j], "c8")),
        (typed(types_pb2.DT_COMPLEX128, [1], dcomplex_val=[3, -4]), np.array([3 - 4j])),
        (typed(types_pb2.DT_STRING, [2], string_val=[b"a", b"b"]),
         np.array([b"a", b"b"], dtype=object)),
        (typed(types_pb2.DT_FLOAT, [], float_val=[4]), np.array(4, np.float32)),
    ],
    ids=lambda v: types_pb2.DataType.Name(v.dtype) if isinstance(v, tensor_pb2.TensorProto) else "",
)
def test_typed_fields_decode_like_make_ndarray(proto: Any, expected: np.ndarray) -> None:
    assert_same(from_tensor_proto(proto), expected)
    theirs = tf.make_ndarray(proto)
    assert_same(from_tensor_proto(proto), theirs.astype(object) if theirs.dtype.kind == "S"
                else theirs)


@pytest.mark.parametrize(
    "proto",
    [
        typed(types_pb2.DT_FLOAT, [2, 3], float_val=[0.5]),
        typed(types_pb2.DT_INT64, [4], int64_val=[-1]),
        typed(types_pb2.DT_BOOL, [2, 2], bool_val=[True]),
        typed(types_pb2.DT_HALF, [3], half_val=[0x3C00]),
        typed(types_pb2.DT_COMPLEX64, [2], scomplex_val=[1, 1]),
        typed(types_pb2.DT_STRING, [3], string_val=[b"same"]),
    ],
    ids=lambda p: types_pb2.DataType.Name(p.dtype),
)
def test_a_single_value_broadcasts_to_the_shape(proto: Any) -> None:
    ours, theirs = from_tensor_proto(proto), tf.make_ndarray(proto)
    if theirs.dtype.kind == "S":
        theirs = theirs.astype(object)
    assert_same(ours, theirs)
    assert len(set(ours.ravel().tolist())) == 1


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        (typed(types_pb2.DT_FLOAT, [3], float_val=[1, 2]), r"holds 3 value\(s\), .* carries 2"),
        (typed(types_pb2.DT_FLOAT, [1], float_val=[1, 2]), r"holds 1 value\(s\), .* carries 2"),
        (typed(types_pb2.DT_INT32, [2]), r"holds 2 value\(s\), .* carries 0"),
        (typed(types_pb2.DT_STRING, [3], string_val=[b"a", b"b"]), "carries 2"),
        (typed(types_pb2.DT_FLOAT, [2], tensor_content=b"\x00" * 7), "has 7 bytes, .* needs 8"),
        (typed(types_pb2.DT_FLOAT, [2], int_val=[1, 2]), "carries its values in int_val"),
        (typed(types_pb2.DT_INT8, [1], int_val=[300]), "out of range"),
        (typed(types_pb2.DT_UINT8, [1], int_val=[-1]), "out of range"),
        (typed(types_pb2.DT_HALF, [1], half_val=[0x10000]), "not 16 bits"),
        (typed(types_pb2.DT_COMPLEX64, [1], scomplex_val=[1, 2, 3]), "odd number"),
        (typed(types_pb2.DT_INVALID, [1]), "has no dtype"),
        (typed(types_pb2.DT_RESOURCE, [1]), "DT_RESOURCE is not supported"),
        (typed(types_pb2.DT_QINT8, [1], int_val=[1]), "DT_QINT8 is not supported"),
        (typed(types_pb2.DT_FLOAT, [-1], float_val=[1]), "negative dimension"),
        (typed(types_pb2.DT_FLOAT, [4096, 4096, 4096], float_val=[1]),
         f"larger than the {MAX_BROADCAST_BYTES} bytes"),
    ],
)
def test_malformed_tensors_are_invalid_input(proto: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        from_tensor_proto(proto, "x")


def test_unknown_rank_is_refused() -> None:
    proto = typed(types_pb2.DT_FLOAT, [], float_val=[1])
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidInput, match="unknown rank"):
        from_tensor_proto(proto, "x")


def test_errors_name_the_tensor() -> None:
    with pytest.raises(InvalidInput, match="tensor 'images' \\(DT_FLOAT\\)"):
        from_tensor_proto(typed(types_pb2.DT_FLOAT, [2], float_val=[1, 2, 3]), "images")


def test_nonzero_bool_bytes_are_true() -> None:
    proto = typed(types_pb2.DT_BOOL, [3], tensor_content=bytes([0, 1, 7]))
    assert from_tensor_proto(proto).tolist() == [False, True, True]


@pytest.mark.parametrize("dtype", [*NUMERIC, object], ids=lambda d: np.dtype(d).name)
def test_dtype_enums_agree_with_tensorflow(dtype: Any) -> None:
    enum = dtype_enum(np.dtype(dtype))
    theirs = tf.string if dtype is object else tf.as_dtype(np.dtype(dtype))
    assert enum == theirs.as_datatype_enum
    assert numpy_dtype(enum) == np.dtype(dtype)


def test_unsupported_numpy_dtypes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="no TensorFlow dtype"):
        dtype_enum(np.dtype("datetime64[s]"))


def test_tensor_shape_marks_unknown_dims_and_rank() -> None:
    assert [d.size for d in tensor_shape((None, 8, 8)).dim] == [-1, 8, 8]
    assert tensor_shape(None).unknown_rank
    assert tensor_shape(()).dim == []
    assert tf.TensorShape(tensor_shape((None, 3))).as_list() == [None, 3]
