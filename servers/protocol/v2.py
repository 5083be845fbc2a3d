"""Open Inference Protocol (v2) requests and responses: REST bodies and KServe's objects.

REST bodies (JSON, or JSON followed by binary tensors when `Inference-Header-Content-Length`
is set, as `tritonclient.http` sends by default) are checked for structure here and turned into
KServe `InferRequest`s without decoding tensor data; `decode_inputs` then decodes every input
strictly, the same way for REST and gRPC requests.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from kserve.protocol.infer_type import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

from servers.errors import InvalidInput
from servers.protocol.tensors import decode_tensor, tensor_to_json_data, tensor_to_raw

__all__ = [
    "HEADER_LENGTH",
    "decode_inputs",
    "encode_rest_response",
    "make_response",
    "parse_rest_request",
    "split_rest_body",
]

HEADER_LENGTH = "inference-header-content-length"


def _load_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc


def split_rest_body(body: bytes, header_length: str | bytes | None) -> tuple[bytes, bytes]:
    """A v2 REST body's JSON part and its binary part (`header_length`: the
    `Inference-Header-Content-Length` value, None when the body is all JSON); InvalidInput
    when the length is not one of this body."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} is not an integer: {header_length!r}") from None
    if length < 0 or length > len(body):
        raise InvalidInput(f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes")
    return body[:length], body[length:]


def _parameters(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: parameters must be an object")
    return value


def _parse_input(item: Any, index: int, binary: memoryview, offset: int) -> tuple[InferInput, int]:
    if not isinstance(item, dict):
        raise InvalidInput(f"inputs[{index}] must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}] needs a string 'name'")
    for key in ("datatype", "shape"):
        if key not in item:
            raise InvalidInput(f"input '{name}' needs '{key}'")
    if not isinstance(item["datatype"], str):
        raise InvalidInput(f"input '{name}': datatype must be a string")
    params = _parameters(item.get("parameters"), f"input '{name}'")
    infer_input = InferInput(name, item["shape"], item["datatype"], parameters=params)
    size = params.get("binary_data_size") if params else None
    if size is not None:
        if "data" in item:
            raise InvalidInput(f"input '{name}' has both 'data' and binary_data_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise InvalidInput(f"input '{name}': binary_data_size {size} runs past the body")
        infer_input._raw_data = bytes(binary[offset : offset + size])
        return infer_input, offset + size
    if "data" not in item:
        raise InvalidInput(f"input '{name}' has no 'data'")
    if item["data"] is None:
        raise InvalidInput(f"input '{name}': data is null")
    infer_input._data = item["data"]
    return infer_input, offset


def _parse_outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInput("outputs must be a list")
    outputs = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{index}] needs a string 'name'")
        params = _parameters(item.get("parameters"), f"output '{item['name']}'")
        outputs.append(RequestedOutput(item["name"], parameters=params or {}))
    return outputs or None


def parse_rest_request(body: bytes, header_length: str | None, model_name: str) -> InferRequest:
    """A KServe InferRequest from a v2 REST body, checking structure (not tensor data)."""
    json_bytes, binary = split_rest_body(body, header_length)
    doc = _load_json(json_bytes)
    if not isinstance(doc, dict):
        raise InvalidInput(f"request must be a JSON object, got {type(doc).__name__}")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidInput("request needs 'inputs', a list of tensors")
    if not inputs:
        raise InvalidInput("'inputs' is empty")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    view, offset, parsed = memoryview(binary), 0, []
    for index, item in enumerate(inputs):
        infer_input, offset = _parse_input(item, index, view, offset)
        parsed.append(infer_input)
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes after the last binary input")
    return InferRequest(
        model_name=model_name,
        infer_inputs=parsed,
        request_id=request_id,
        parameters=_parameters(doc.get("parameters"), "request"),
        request_outputs=_parse_outputs(doc.get("outputs")),
    )


def decode_inputs(request: InferRequest) -> dict[str, np.ndarray]:
    """Every input of a request (REST or gRPC) as a validated numpy array, by name."""
    arrays: dict[str, np.ndarray] = {}
    for infer_input in request.inputs:
        name = infer_input.name
        if name in arrays:
            raise InvalidInput(f"input '{name}' appears twice")
        raw = infer_input._raw_data
        data = None if raw is not None else infer_input._data
        if raw is None and request.from_grpc and not data:
            raise InvalidInput(f"input '{name}' has no contents")
        arrays[name] = decode_tensor(name, infer_input.datatype, infer_input.shape, data, raw)
    return arrays


def make_response(
    request: InferRequest, model_name: str, outputs: Mapping[str, tuple[np.ndarray, str]]
) -> InferResponse:
    """A KServe InferResponse answering `request`: same id (or a new one), raw when asked.

    Raw gRPC outputs when the request used raw inputs: `tritonclient.grpc` reads only
    `raw_output_contents`, so typed contents would reach Triton users as empty arrays.
    """
    infer_outputs = []
    for name, (array, datatype) in outputs.items():
        out = InferOutput(name, list(array.shape), datatype)
        out._data = array
        infer_outputs.append(out)
    response = InferResponse(
        response_id=request.id or str(uuid.uuid4()),
        model_name=model_name,
        infer_outputs=infer_outputs,
        from_grpc=request.from_grpc,
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )
    if request.from_grpc:
        _prepare_grpc(response)
    return response


def _prepare_grpc(response: InferResponse) -> None:
    # KServe's to_grpc only handles typed contents for list data; give it raw bytes instead when
    # the client sent raw inputs, and lists otherwise.
    for out in response.outputs:
        array = out._data
        if not isinstance(array, np.ndarray):
            continue
        if response._use_binary_outputs or out.datatype in ("FP16", "BF16"):
            out._raw_data = tensor_to_raw(array, out.datatype)
            out._data = None
        else:
            flat = array.ravel().tolist()
            out._data = flat if out.datatype != "BYTES" else [bytes(v) for v in flat]


def _wants_binary(request: InferRequest, name: str) -> bool:
    default = (
        bool(request.parameters.get("binary_data_output", False))
        if isinstance(request.parameters, dict)
        else False
    )
    for requested in request.request_outputs or []:
        if requested.name == name and requested.parameters:
            return bool(requested.parameters.get("binary_data", default))
    return default


# JSON has no NaN or infinities (RFC 8259), and orjson writes them as null, which the spec's
# tensor_data does not allow (a model's probabilities overflow to NaN for inputs such as 1e308):
# they go out as these strings, which the spec allows and numpy (so tritonclient and KServe's
# `as_numpy`) and JavaScript's Number() read back as the same floats.
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _json_data(array: np.ndarray, datatype: str) -> list[Any]:
    """A tensor's v2 JSON `data`, with non-finite floats spelt as strings."""
    data = tensor_to_json_data(array, datatype)
    if array.dtype.kind != "f" or bool(np.isfinite(array).all()):
        return data
    return [v if math.isfinite(v) else _NON_FINITE[repr(v)] for v in data]


def encode_rest_response(
    response: InferResponse | Mapping[str, Any], request: InferRequest | None
) -> tuple[bytes, dict[str, str]]:
    """A v2 REST response body (JSON, or JSON + binary outputs) and its extra headers."""
    if not isinstance(response, InferResponse):
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY), {}
    wanted = {r.name for r in (request.request_outputs or [])} if request else set()
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out in response.outputs:
        if wanted and out.name not in wanted:
            continue
        array = out._data if isinstance(out._data, np.ndarray) else out.as_numpy()
        doc: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if request is not None and _wants_binary(request, out.name):
            blob = tensor_to_raw(array, out.datatype)
            doc["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            doc["data"] = _json_data(array, out.datatype)
        tensors.append(doc)
    missing = wanted - {t["name"] for t in tensors}
    if missing:
        raise InvalidInput(f"unknown output(s) requested: {', '.join(sorted(missing))}")
    body: dict[str, Any] = {
        "id": response.id or str(uuid.uuid4()),
        "model_name": response.model_name,
        "outputs": tensors,
    }
    if response.model_version:
        body["model_version"] = response.model_version
    header = orjson.dumps(body)
    if not blobs:
        return header, {}
    return header + b"".join(blobs), {HEADER_LENGTH: str(len(header))}
