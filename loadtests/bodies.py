"""Request bodies for the Locust users, built once from `loadtests/payloads/<service>.<v1|v2>.json`.

The v2 binary tensor extension and v2 gRPC send the same tensors as the v2 JSON payload, as raw
little-endian bytes.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.loadtest import payload_path

__all__ = ["BinaryBody", "RawTensor", "binary_body", "json_body", "raw_tensors"]

# v2 datatypes with a fixed-size little-endian encoding (BYTES has none: not supported here).
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
def _payload(service: str, protocol: str) -> Any:
    path = payload_path(service, protocol)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"payload {path}: {exc}") from exc


@functools.cache
def json_body(service: str, protocol: str) -> bytes:
    """The payload file for `protocol` (v1 or v2), as compact JSON bytes."""
    return json.dumps(_payload(service, protocol), separators=(",", ":")).encode()


@functools.cache
def raw_tensors(service: str) -> tuple[RawTensor, ...]:
    """The service's v2 payload, each input encoded as raw little-endian bytes."""
    doc = _payload(service, "v2")
    tensors = []
    for given in doc["inputs"]:
        datatype = given["datatype"]
        if datatype not in _DTYPES:
            raise ValueError(f"{service}.v2.json: {given['name']}: no raw encoding for {datatype}")
        array = np.asarray(given["data"], dtype=_DTYPES[datatype]).reshape(given["shape"])
        tensors.append(RawTensor(given["name"], datatype, list(given["shape"]), array.tobytes()))
    return tuple(tensors)


@functools.cache
def binary_body(service: str) -> BinaryBody:
    """JSON header with `binary_data_size` per input, followed by the inputs' raw bytes."""
    tensors = raw_tensors(service)
    header = {
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": t.shape,
             "parameters": {"binary_data_size": len(t.raw)}}
            for t in tensors
        ]
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return BinaryBody(encoded + b"".join(t.raw for t in tensors), len(encoded))
