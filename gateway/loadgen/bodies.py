"""Request bodies for the Locust users and benchmarks, built once from a payload directory's
`<service>.<v1|v2|tfserving>.json` (the demo services' by default, see payloads.py).

The v2 binary tensor extension and v2 gRPC send the same tensors as the v2 JSON payload, as raw
little-endian bytes.

`<service>.tfserving.json` is a TF Serving `PredictRequest` in protobuf's JSON mapping
(`model_spec`, `inputs: {name: TensorProto}` with `dtype`, `tensor_shape` and one `*_val`
list), so `google.protobuf.json_format.Parse` reads it too. It is sent as the serialized
`PredictRequest` with each input's values as `tensor_content` (raw little-endian bytes), encoded
here by hand: importing `tensorflow_serving.apis` imports all of TensorFlow (~15 s, ~1 GB),
which a load generator should not carry.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.loadgen import DEMO_PAYLOADS
from gateway.loadgen.payloads import payload_path

__all__ = [
    "PREDICT_METHOD",
    "BinaryBody",
    "PredictPayload",
    "RawTensor",
    "binary_body",
    "encode_predict_request",
    "json_body",
    "parse_predict_payload",
    "raw_tensors",
    "tfserving_body",
    "tfserving_payload",
]

# v2 datatypes with a fixed-size little-endian encoding (BYTES: 4-byte length + bytes each).
_DTYPES = {
    "BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}


@dataclass(frozen=True)
class RawTensor:
    """One v2 input as raw bytes."""

    name: str
    datatype: str
    shape: list[int]
    raw: bytes


@dataclass(frozen=True)
class BinaryBody:
    """A v2 binary-extension request: the body and its JSON header's length."""

    body: bytes
    header_length: int


@functools.cache
def _payload(service: str, protocol: str, payloads: Path) -> Any:
    path = payload_path(service, protocol, payloads)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"payload {path}: {exc}") from exc


@functools.cache
def json_body(service: str, protocol: str, payloads: Path = DEMO_PAYLOADS) -> bytes:
    """The payload file for `protocol` (v1 or v2), as compact JSON bytes."""
    return json.dumps(_payload(service, protocol, payloads), separators=(",", ":")).encode()


@functools.cache
def raw_tensors(service: str, payloads: Path = DEMO_PAYLOADS) -> tuple[RawTensor, ...]:
    """The service's v2 payload, each input encoded as raw little-endian bytes."""
    doc = _payload(service, "v2", payloads)
    tensors = []
    for given in doc["inputs"]:
        datatype = given["datatype"]
        if datatype == "BYTES":  # JSON strings are the elements' bytes (UTF-8)
            raw = b"".join(
                struct.pack("<I", len(e)) + e for e in (str(v).encode() for v in given["data"])
            )
        elif datatype in _DTYPES:
            raw = np.asarray(given["data"], dtype=_DTYPES[datatype]).tobytes()
        else:
            raise ValueError(f"{service}.v2.json: {given['name']}: no raw encoding for {datatype}")
        tensors.append(RawTensor(given["name"], datatype, list(given["shape"]), raw))
    return tuple(tensors)


@functools.cache
def binary_body(service: str, payloads: Path = DEMO_PAYLOADS) -> BinaryBody:
    """JSON header with `binary_data_size` per input, followed by the inputs' raw bytes."""
    tensors = raw_tensors(service, payloads)
    header = {
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": t.shape,
             "parameters": {"binary_data_size": len(t.raw)}}
            for t in tensors
        ]
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return BinaryBody(encoded + b"".join(t.raw for t in tensors), len(encoded))


# --- TF Serving PredictRequest ----------------------------------------------------------------

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"

# tensorflow/core/framework/types.proto: DataType name -> (enum value, little-endian dtype,
# the TensorProto field holding its values in the JSON mapping).
_TF_TYPES: dict[str, tuple[int, str, str]] = {
    "DT_FLOAT": (1, "<f4", "float_val"),
    "DT_DOUBLE": (2, "<f8", "double_val"),
    "DT_INT32": (3, "<i4", "int_val"),
    "DT_UINT8": (4, "u1", "int_val"),
    "DT_INT16": (5, "<i2", "int_val"),
    "DT_INT8": (6, "i1", "int_val"),
    "DT_INT64": (9, "<i8", "int64_val"),
    "DT_BOOL": (10, "?", "bool_val"),
    "DT_UINT16": (17, "<u2", "int_val"),
    "DT_UINT32": (22, "<u4", "uint32_val"),
    "DT_UINT64": (23, "<u8", "uint64_val"),
}
# (numpy kind, itemsize) -> DataType enum value, whatever the array's byte order.
_TF_ENUM = {
    (np.dtype(dtype).kind, np.dtype(dtype).itemsize): value
    for value, dtype, _ in _TF_TYPES.values()
}
_PREDICT_KEYS = {"model_spec", "inputs", "output_filter"}
_MODEL_SPEC_KEYS = {"name", "signature_name"}
_TENSOR_KEYS = {"dtype", "tensor_shape"}


@dataclass(frozen=True)
class PredictPayload:
    """A TF Serving PredictRequest read from `<service>.tfserving.json`."""

    model_name: str
    signature_name: str
    inputs: Mapping[str, np.ndarray]
    output_filter: tuple[str, ...] = ()


def _tensor(service: str, name: str, doc: Any) -> np.ndarray:
    where = f"{service}.tfserving.json: inputs.{name}"
    if not isinstance(doc, dict) or not isinstance(doc.get("dtype"), str):
        raise ValueError(f"{where}: needs a TensorProto object with a dtype name")
    if doc["dtype"] not in _TF_TYPES:
        raise ValueError(f"{where}: unsupported dtype {doc['dtype']!r}")
    _, dtype, field = _TF_TYPES[doc["dtype"]]
    unknown = set(doc) - _TENSOR_KEYS - {field}
    if unknown:
        raise ValueError(f"{where}: unsupported field(s) {', '.join(sorted(unknown))}")
    try:
        shape = [int(d["size"]) for d in doc.get("tensor_shape", {}).get("dim", [])]
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: tensor_shape must be {{'dim': [{{'size': N}}, ...]}}") from None
    values = doc.get(field)
    if not isinstance(values, list) or len(values) != math.prod(shape):
        raise ValueError(f"{where}: {field} must list {math.prod(shape)} values for shape {shape}")
    return np.asarray(values, dtype=dtype).reshape(shape)


@functools.cache
def tfserving_payload(service: str, payloads: Path = DEMO_PAYLOADS) -> PredictPayload:
    """`<service>.tfserving.json`, checked (see parse_predict_payload)."""
    return parse_predict_payload(service, _payload(service, "tfserving", payloads))


def parse_predict_payload(service: str, doc: Any) -> PredictPayload:
    """A PredictRequest in protobuf's JSON mapping; `model_spec.name` must be the service (or
    absent), every input a TensorProto with `dtype`, `tensor_shape` and its `*_val` list."""
    where = f"{service}.tfserving.json"
    if not isinstance(doc, dict) or set(doc) - _PREDICT_KEYS:
        raise ValueError(f"{where}: a PredictRequest has only {', '.join(sorted(_PREDICT_KEYS))}")
    spec = doc.get("model_spec", {})
    if not isinstance(spec, dict) or set(spec) - _MODEL_SPEC_KEYS:
        raise ValueError(f"{where}: model_spec takes {', '.join(sorted(_MODEL_SPEC_KEYS))}")
    if spec.get("name", service) != service:
        raise ValueError(f"{where}: model_spec.name is {spec['name']!r}, not {service!r}")
    inputs = doc.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        raise ValueError(f"{where}: inputs must map input names to tensors")
    output_filter = doc.get("output_filter", [])
    if not isinstance(output_filter, list) or not all(isinstance(o, str) for o in output_filter):
        raise ValueError(f"{where}: output_filter must be a list of output names")
    return PredictPayload(
        model_name=service,
        signature_name=str(spec.get("signature_name", "")),
        inputs={name: _tensor(service, name, tensor) for name, tensor in inputs.items()},
        output_filter=tuple(output_filter),
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _bytes_field(number: int, payload: bytes, keep_empty: bool = False) -> bytes:
    if not payload and not keep_empty:
        return b""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _tensor_proto(array: np.ndarray) -> bytes:
    """A TensorProto: dtype (1), tensor_shape (2: dim (2) {size (1)}), tensor_content (4)."""
    enum = _TF_ENUM.get((array.dtype.kind, array.dtype.itemsize))
    if enum is None:
        raise ValueError(f"no TF Serving tensor_content encoding for {array.dtype}")
    shape = b"".join(_bytes_field(2, _varint_field(1, d), keep_empty=True) for d in array.shape)
    content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return _varint_field(1, enum) + _bytes_field(2, shape) + _bytes_field(4, content)


def encode_predict_request(
    model_name: str,
    inputs: Mapping[str, np.ndarray],
    signature_name: str = "",
    output_filter: Sequence[str] = (),
) -> bytes:
    """A serialized `tensorflow.serving.PredictRequest`, inputs as `tensor_content`.

    Fields in field-number order, one map entry per input (sorted by name), default values
    left out, as protobuf writes them: with one input, byte for byte what
    `PredictRequest.SerializeToString()` gives (map order is the serializer's own choice).
    """
    spec = _bytes_field(1, model_name.encode()) + _bytes_field(3, signature_name.encode())
    entries = b"".join(
        _bytes_field(2, _bytes_field(1, name.encode()) + _bytes_field(2, _tensor_proto(array),
                                                                      keep_empty=True))
        for name, array in sorted(inputs.items())
    )
    filters = b"".join(_bytes_field(3, name.encode(), keep_empty=True) for name in output_filter)
    return _bytes_field(1, spec, keep_empty=True) + entries + filters


@functools.cache
def tfserving_body(service: str, payloads: Path = DEMO_PAYLOADS) -> bytes:
    """`<service>.tfserving.json` as a serialized PredictRequest (see encode_predict_request)."""
    payload = tfserving_payload(service, payloads)
    return encode_predict_request(
        payload.model_name, payload.inputs, payload.signature_name, payload.output_filter
    )
