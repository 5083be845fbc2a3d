"""v2 tensors to and from numpy: round trips for every datatype, and strictness on bad input."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from servers.errors import InvalidInput
from servers.protocol.tensors import (
    DATATYPES,
    datatype_of,
    decode_tensor,
    deserialize_bytes,
    serialize_bytes,
    tensor_to_json_data,
    tensor_to_raw,
)

# Derandomized: the same examples every run, so a failure here is never a flake.
FAST = settings(max_examples=30, deadline=None, derandomize=True, database=None)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)

FIXED_WIDTH = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
FLOATS = ("FP16", "FP32", "FP64", "BF16")
BF16_MAX = float(np.array([0x7F7F0000], dtype=np.uint32).view(np.float32)[0])


def test_every_datatype_is_covered_here() -> None:
    assert set(DATATYPES) == {*FIXED_WIDTH, "BF16", "BYTES"}


def _bytes_arrays(elements: st.SearchStrategy[bytes]) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(dtype=np.object_, shape=SHAPES, elements=elements)


def _bf16_exact_arrays() -> st.SearchStrategy[np.ndarray]:
    # Every bf16 value (NaNs included) is the upper half of a float32.
    halves = hnp.arrays(dtype=np.uint16, shape=SHAPES)
    return halves.map(lambda h: (h.astype(np.uint32) << 16).view(np.float32))


def _same(decoded: np.ndarray, expected: np.ndarray) -> None:
    assert decoded.shape == expected.shape
    assert decoded.dtype == expected.dtype
    if expected.dtype.kind == "f":
        np.testing.assert_array_equal(decoded, expected)  # NaN == NaN here
    else:
        assert decoded.tolist() == expected.tolist()


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(FIXED_WIDTH))
@FAST
@given(data=st.data())
def test_fixed_width_tensors_round_trip_bit_exact_through_raw_bytes(
    datatype: str, data: st.DataObject
) -> None:
    array = data.draw(hnp.arrays(dtype=FIXED_WIDTH[datatype], shape=SHAPES))
    raw = tensor_to_raw(array, datatype)
    assert len(raw) == array.size * DATATYPES[datatype].wire_size
    decoded = decode_tensor("t", datatype, list(array.shape), raw=raw)
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    assert decoded.tobytes() == array.tobytes()  # NaN payloads and -0.0 included


@pytest.mark.parametrize("datatype", list(FIXED_WIDTH))
@FAST
@given(data=st.data())
def test_fixed_width_tensors_round_trip_through_json_data(
    datatype: str, data: st.DataObject
) -> None:
    array = data.draw(hnp.arrays(dtype=FIXED_WIDTH[datatype], shape=SHAPES))
    json_data = tensor_to_json_data(array, datatype)
    assert isinstance(json_data, list)
    _same(decode_tensor("t", datatype, list(array.shape), data=json_data), array)


@pytest.mark.parametrize("datatype", list(FIXED_WIDTH))
@FAST
@given(data=st.data())
def test_nested_json_data_is_read_row_major(datatype: str, data: st.DataObject) -> None:
    array = data.draw(hnp.arrays(dtype=FIXED_WIDTH[datatype], shape=SHAPES))
    nested = array.astype(np.float32).tolist() if datatype == "FP16" else array.tolist()
    if array.ndim == 0:
        nested = [nested]
    _same(decode_tensor("t", datatype, list(array.shape), data=nested), array)


@FAST
@given(array=_bytes_arrays(st.binary(max_size=12)))
def test_bytes_tensors_round_trip_through_raw_bytes(array: np.ndarray) -> None:
    decoded = decode_tensor("t", "BYTES", list(array.shape), raw=tensor_to_raw(array, "BYTES"))
    assert decoded.shape == array.shape
    assert decoded.dtype == np.object_
    assert decoded.tolist() == array.tolist()


@FAST
@given(array=_bytes_arrays(st.text(max_size=8).map(str.encode)))
def test_utf8_bytes_tensors_round_trip_through_json_data(array: np.ndarray) -> None:
    json_data = tensor_to_json_data(array, "BYTES")
    assert all(isinstance(item, str) for item in json_data)
    decoded = decode_tensor("t", "BYTES", list(array.shape), data=json_data)
    assert decoded.shape == array.shape
    assert decoded.tolist() == array.tolist()


def test_bytes_json_data_keeps_trailing_nul_characters() -> None:
    decoded = decode_tensor("t", "BYTES", [2], data=["a\x00", "\x00"])
    assert decoded.tolist() == [b"a\x00", b"\x00"]


def test_bytes_json_data_accepts_bytes_as_grpc_typed_contents_carry_them() -> None:
    decoded = decode_tensor("t", "BYTES", [2, 1], data=[[b"\xff\x00"], [b""]])
    assert decoded.tolist() == [[b"\xff\x00"], [b""]]


def test_bytes_from_numpy_strings_encode_as_utf8() -> None:
    raw = tensor_to_raw(np.array(["é", "ab"]), "BYTES")
    assert raw == struct.pack("<I", 2) + "é".encode() + struct.pack("<I", 2) + b"ab"


def test_non_utf8_bytes_cannot_go_out_as_json() -> None:
    with pytest.raises(InvalidInput, match="binary_data"):
        tensor_to_json_data(np.array([b"\xff"], dtype=np.object_), "BYTES")


@FAST
@given(array=_bf16_exact_arrays())
def test_bf16_representable_values_round_trip_exactly_through_raw(array: np.ndarray) -> None:
    decoded = decode_tensor("t", "BF16", list(array.shape), raw=tensor_to_raw(array, "BF16"))
    assert decoded.dtype == np.float32
    nan = np.isnan(array)
    np.testing.assert_array_equal(np.isnan(decoded), nan)
    assert decoded[~nan].tobytes() == array[~nan].tobytes()


@FAST
@given(
    array=hnp.arrays(
        dtype=np.float32,
        shape=SHAPES,
        elements=st.floats(-BF16_MAX, BF16_MAX, width=32),
    )
)
def test_bf16_other_values_round_to_within_bf16_precision(array: np.ndarray) -> None:
    raw = tensor_to_raw(array, "BF16")
    assert len(raw) == 2 * array.size
    decoded = decode_tensor("t", "BF16", list(array.shape), raw=raw).astype(np.float64)
    exact = array.astype(np.float64)
    # Relative 2**-8 for normal numbers; subnormals are off by at most half a bf16 ulp.
    tolerance = np.maximum(np.abs(exact) * 2.0**-8, 2.0**-134)
    assert np.all(np.abs(decoded - exact) <= tolerance)


@FAST
@given(
    array=hnp.arrays(dtype=np.float32, shape=SHAPES, elements=st.floats(width=32, allow_nan=False))
)
def test_bf16_json_data_carries_float32_values_unchanged(array: np.ndarray) -> None:
    json_data = tensor_to_json_data(array, "BF16")
    _same(decode_tensor("t", "BF16", list(array.shape), data=json_data), array)


@pytest.mark.parametrize(
    ("float32_bits", "bf16_bits"),
    [
        (0x3F800000, 0x3F80),  # 1.0
        (0x3F808000, 0x3F80),  # halfway, ties to even (down)
        (0x3F818000, 0x3F82),  # halfway, ties to even (up)
        (0x3F808001, 0x3F81),  # just above halfway
        (0x80000000, 0x8000),  # -0.0
        (0x7F800000, 0x7F80),  # +inf
        (0xFF800000, 0xFF80),  # -inf
        (0x7F7FFFFF, 0x7F80),  # float32 max rounds past bf16 max to inf
        (0x7FC00001, 0x7FC0),  # NaN stays a quiet NaN
        (0xFFFFFFFF, 0x7FC0),  # negative NaN with a full payload
    ],
)
def test_bf16_encoding_rounds_to_nearest_even(float32_bits: int, bf16_bits: int) -> None:
    array = np.array([float32_bits], dtype=np.uint32).view(np.float32)
    assert tensor_to_raw(array, "BF16") == struct.pack("<H", bf16_bits)


@pytest.mark.parametrize("datatype", FLOATS)
@pytest.mark.parametrize("transport", ["raw", "json"])
def test_nan_and_infinities_survive_every_float_transport(datatype: str, transport: str) -> None:
    array = np.array([np.nan, np.inf, -np.inf, -0.0, 1.5], dtype=FIXED_WIDTH.get(datatype))
    if transport == "raw":
        decoded = decode_tensor("t", datatype, [5], raw=tensor_to_raw(array, datatype))
    else:
        decoded = decode_tensor("t", datatype, [5], data=tensor_to_json_data(array, datatype))
    np.testing.assert_array_equal(decoded, array)
    assert np.signbit(decoded[3])


@pytest.mark.parametrize(
    ("datatype", "raw", "expected"),
    [
        ("INT32", b"\x01\x00\x00\x00\xff\xff\xff\xff", [1, -1]),
        ("UINT16", b"\x01\x02\x00\x80", [0x0201, 0x8000]),
        ("FP16", b"\x00\x3c\x00\xc0", [1.0, -2.0]),
        ("FP64", struct.pack("<2d", 0.5, -3.0), [0.5, -3.0]),
        ("BF16", b"\x80\x3f\x40\xc0", [1.0, -3.0]),
        ("BOOL", b"\x01\x00", [True, False]),
    ],
)
def test_raw_bytes_are_little_endian(datatype: str, raw: bytes, expected: list[Any]) -> None:
    assert decode_tensor("t", datatype, [2], raw=raw).tolist() == expected


def test_nested_data_fills_the_shape_in_row_major_order() -> None:
    decoded = decode_tensor("t", "INT32", [2, 3], data=[[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(decoded, np.arange(1, 7, dtype=np.int32).reshape(2, 3))


def test_flat_data_is_reshaped_row_major() -> None:
    decoded = decode_tensor("t", "FP32", [2, 2], data=[1, 2, 3, 4])
    assert decoded.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert decoded.dtype == np.float32


def test_integers_are_accepted_as_float_tensor_data() -> None:
    assert decode_tensor("t", "FP64", [2], data=[1, 2**53]).tolist() == [1.0, 2.0**53]


def test_uint64_json_data_keeps_values_above_int64_exact() -> None:
    values = [0, 2**63, 2**64 - 1]
    decoded = decode_tensor("t", "UINT64", [3], data=values)
    assert decoded.dtype == np.uint64
    assert decoded.tolist() == values


@pytest.mark.parametrize("shape", [[0], [2, 0], [0, 3, 4]])
@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_zero_size_tensors_decode_from_empty_data_and_raw(shape: list[int], datatype: str) -> None:
    from_data = decode_tensor("t", datatype, shape, data=[])
    from_raw = decode_tensor("t", datatype, shape, raw=b"")
    assert from_data.shape == from_raw.shape == tuple(shape)
    assert from_data.dtype == from_raw.dtype == DATATYPES[datatype].dtype


@FAST
@given(items=st.lists(st.binary(max_size=300), max_size=6))
def test_serialized_bytes_split_back_into_the_same_elements(items: list[bytes]) -> None:
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    assert deserialize_bytes(serialize_bytes(array), "t") == items


@pytest.mark.parametrize(
    ("array", "datatype"),
    [
        (np.zeros(1, np.bool_), "BOOL"),
        (np.zeros(1, np.uint8), "UINT8"),
        (np.zeros(1, np.uint64), "UINT64"),
        (np.zeros(1, np.int16), "INT16"),
        (np.zeros(1, np.int64), "INT64"),
        (np.zeros(1, np.float16), "FP16"),
        (np.zeros(1, np.float32), "FP32"),
        (np.zeros(1, np.float64), "FP64"),
        (np.array(["a"]), "BYTES"),
        (np.array([b"a"]), "BYTES"),
        (np.array([b"a"], dtype=np.object_), "BYTES"),
    ],
)
def test_datatype_of_names_numpy_dtypes(array: np.ndarray, datatype: str) -> None:
    assert datatype_of(array) == datatype


def test_datatype_of_refuses_dtypes_without_a_v2_datatype() -> None:
    with pytest.raises(InvalidInput, match="complex128"):
        datatype_of(np.zeros(1, np.complex128))


# --- strictness ----------------------------------------------------------------------------

BAD_TENSORS: list[Any] = [
    pytest.param("FP8", [1], [1.0], None, id="unknown-datatype"),
    pytest.param(32, [1], [1.0], None, id="datatype-not-a-string"),
    pytest.param("FP32", "1", [1.0], None, id="shape-a-string"),
    pytest.param("FP32", 1, [1.0], None, id="shape-an-int"),
    pytest.param("FP32", None, [1.0], None, id="shape-null"),
    pytest.param("FP32", {"d": 1}, [1.0], None, id="shape-an-object"),
    pytest.param("FP32", [-1], [1.0], None, id="negative-dim"),
    pytest.param("FP32", [1.0], [1.0], None, id="float-dim"),
    pytest.param("FP32", ["1"], [1.0], None, id="string-dim"),
    pytest.param("FP32", [True], [1.0], None, id="boolean-dim"),
    pytest.param("FP32", [3], [1.0, 2.0], None, id="fewer-values-than-shape"),
    pytest.param("FP32", [1], [1.0, 2.0], None, id="more-values-than-shape"),
    pytest.param("FP32", [2, 2], [[1.0, 2.0], [3.0]], None, id="ragged-nested"),
    pytest.param("BYTES", [3], [["a", "b"], ["c"]], None, id="ragged-nested-bytes"),
    pytest.param("FP32", [1], None, None, id="no-data"),
    pytest.param("FP32", [1], 1.0, None, id="data-a-scalar"),
    pytest.param("FP32", [1], "1.0", None, id="data-a-string"),
    pytest.param("FP32", [1], {"v": 1.0}, None, id="data-an-object"),
    pytest.param("FP32", [1], ["1.0"], None, id="string-in-float"),
    pytest.param("INT64", [2], [1, "2"], None, id="string-among-ints"),
    pytest.param("FP32", [2], [1.0, None], None, id="null-among-floats"),
    pytest.param("INT32", [1], [None], None, id="null-alone"),
    pytest.param("BYTES", [2], ["a", None], None, id="null-in-bytes"),
    pytest.param("INT32", [2], [True, False], None, id="booleans-in-int"),
    pytest.param("FP32", [1], [True], None, id="boolean-in-float"),
    pytest.param(
        "INT32",
        [2],
        [1, True],
        None,
        id="boolean-among-ints",
    ),
    pytest.param("BOOL", [2], [0, 1], None, id="ints-in-bool"),
    pytest.param("INT32", [1], [1.5], None, id="float-in-int"),
    pytest.param("INT32", [2], [1, 2.0], None, id="integral-float-among-ints"),
    pytest.param("UINT64", [2], [1.5, 2**64 - 1], None, id="float-among-uint64"),
    pytest.param("INT8", [1], [128], None, id="int8-too-big"),
    pytest.param("INT8", [1], [-129], None, id="int8-too-small"),
    pytest.param("UINT8", [1], [256], None, id="uint8-too-big"),
    pytest.param("UINT8", [1], [-1], None, id="uint8-negative"),
    pytest.param("UINT64", [1], [-1], None, id="uint64-negative"),
    pytest.param("UINT64", [2], [-1, 2**64 - 1], None, id="uint64-negative-among-huge"),
    pytest.param("UINT64", [1], [2**64], None, id="uint64-too-big"),
    pytest.param("INT64", [1], [2**63], None, id="int64-too-big"),
    pytest.param("INT64", [1], [2**70], None, id="int-beyond-64-bits"),
    pytest.param("FP16", [1], [70000.0], None, id="fp16-overflow"),
    pytest.param("FP32", [1], [1e40], None, id="fp32-overflow"),
    pytest.param("FP32", [2], [1.0, -1e40], None, id="fp32-negative-overflow"),
    pytest.param("BF16", [1], [1e39], None, id="bf16-overflow"),
    pytest.param("BYTES", [2], [1, 2], None, id="numbers-in-bytes"),
    pytest.param("BYTES", [2], ["a", 1], None, id="number-among-strings"),
    pytest.param("INT32", [2], None, b"\x00" * 7, id="raw-too-short"),
    pytest.param("INT32", [2], None, b"\x00" * 9, id="raw-too-long"),
    pytest.param("FP64", [1], None, b"\x00" * 4, id="raw-fp64-half"),
    pytest.param("BF16", [2], None, b"\x00" * 2, id="raw-bf16-short"),
    pytest.param("FP32", [0], None, b"\x00" * 4, id="raw-for-zero-size"),
    pytest.param("BYTES", [1], None, b"\x01\x00", id="truncated-bytes-prefix"),
    pytest.param("BYTES", [1], None, b"\x05\x00\x00\x00ab", id="bytes-element-past-end"),
    pytest.param("BYTES", [2], None, b"\x01\x00\x00\x00a", id="fewer-bytes-elements"),
    pytest.param("BYTES", [1], None, b"\x00\x00\x00\x00" * 2, id="more-bytes-elements"),
]


@pytest.mark.parametrize(("datatype", "shape", "data", "raw"), BAD_TENSORS)
def test_bad_tensors_are_refused_naming_the_tensor(
    datatype: Any, shape: Any, data: Any, raw: bytes | None
) -> None:
    with pytest.raises(InvalidInput, match="'weights'") as caught:
        decode_tensor("weights", datatype, shape, data=data, raw=raw)
    assert caught.value.http_status == 400


def test_truncated_bytes_prefix_is_reported_as_such() -> None:
    with pytest.raises(InvalidInput, match="truncated BYTES length prefix"):
        deserialize_bytes(b"\x01\x00\x00\x00a\x02", "t")
