"""gRPC `inference.GRPCInferenceService/ModelConfig` for our servers, encoded by hand.

KServe's v2 proto has no `ModelConfig`; Triton's (`grpc_service.proto`, `model_config.proto`
in tritonclient) does, but it cannot be imported next to kserve: both register `inference.*`
protobufs (kserve/kserve#3099). The answer is a few fields of Triton's `ModelConfigResponse`,
so it is written on the wire directly, field numbers from Triton's protos. The request has the
layout of KServe's `ModelReadyRequest` (name = 1, version = 2), which parses it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from kserve.errors import ModelNotFound as KServeModelNotFound
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from servers.errors import InvalidInput, ModelNotFound, ModelServeError
from servers.model_config import derive_config
from servers.versions import check_version

__all__ = ["encode_model_config_response", "model_config_service"]

SERVICE = "inference.GRPCInferenceService"

# Triton's `inference.DataType` (model_config.proto).
_DATA_TYPES = {
    "TYPE_BOOL": 1, "TYPE_UINT8": 2, "TYPE_UINT16": 3, "TYPE_UINT32": 4, "TYPE_UINT64": 5,
    "TYPE_INT8": 6, "TYPE_INT16": 7, "TYPE_INT32": 8, "TYPE_INT64": 9, "TYPE_FP16": 10,
    "TYPE_FP32": 11, "TYPE_FP64": 12, "TYPE_STRING": 13, "TYPE_BF16": 14,
}
# Field numbers: ModelConfig, then ModelInput / ModelOutput (where dims differ).
_NAME, _PLATFORM, _MAX_BATCH, _INPUT, _OUTPUT, _DYNAMIC_BATCHING, _BACKEND = 1, 2, 4, 5, 6, 11, 17
_TENSOR_NAME, _DATA_TYPE, _INPUT_DIMS, _OUTPUT_DIMS, _RESHAPE = 1, 2, 4, 3, 5


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value) if value else b""


def _packed(field: int, values: list[int]) -> bytes:
    return _bytes(field, b"".join(_varint(v) for v in values)) if values else b""


def _tensor(tensor: dict[str, Any], dims_field: int) -> bytes:
    out = _bytes(_TENSOR_NAME, tensor["name"].encode())
    out += _int(_DATA_TYPE, _DATA_TYPES.get(tensor["data_type"], 0))
    out += _packed(dims_field, tensor["dims"])
    if "reshape" in tensor:
        out += _bytes(_RESHAPE, _packed(1, tensor["reshape"]["shape"]))
    return out


def encode_model_config_response(config: dict[str, Any]) -> bytes:
    """Triton's `ModelConfigResponse` for a config from `derive_config`, serialized."""
    body = _bytes(_NAME, config["name"].encode())
    if "platform" in config:
        body += _bytes(_PLATFORM, config["platform"].encode())
    body += _int(_MAX_BATCH, config["max_batch_size"])
    body += b"".join(_bytes(_INPUT, _tensor(t, _INPUT_DIMS)) for t in config["input"])
    body += b"".join(_bytes(_OUTPUT, _tensor(t, _OUTPUT_DIMS)) for t in config["output"])
    if "dynamic_batching" in config:
        body += _bytes(_DYNAMIC_BATCHING, b"")
    if "backend" in config:
        body += _bytes(_BACKEND, config["backend"].encode())
    return _bytes(1, body)


async def _config_of(dataplane: DataPlane, request: bytes) -> bytes:
    try:
        parsed = pb.ModelReadyRequest.FromString(request)
    except DecodeError:
        raise InvalidInput("malformed ModelConfigRequest") from None
    name = parsed.name
    check_version(dataplane, name, parsed.version)  # the model, and the version if one is named
    try:
        metadata = await dataplane.model_metadata(name)
    except KServeModelNotFound:
        raise ModelNotFound(f"model '{name}' not found on this server") from None
    model = dataplane.model_registry.get_model(name)
    return encode_model_config_response(derive_config(model, metadata))


def model_config_service(dataplane: DataPlane) -> Callable[[aio.Server], None]:
    """Adds `ModelConfig` to a server that serves KServe's v2 `GRPCInferenceService`.

    KServe's handler for the service knows no `ModelConfig` and passes the call on to the next
    handler: this one.
    """

    async def model_config(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            return await _config_of(dataplane, request)
        except ModelServeError as exc:
            await context.abort(exc.grpc_code, exc.message)
            raise AssertionError("unreachable: context.abort raises") from exc

    handler: Callable[..., Awaitable[bytes]] = model_config

    def add(server: aio.Server) -> None:
        methods = {"ModelConfig": grpc.unary_unary_rpc_method_handler(handler)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))

    return add
