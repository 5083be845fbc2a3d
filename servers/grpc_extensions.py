"""Triton's gRPC extensions our servers answer: `ModelConfig` and `ModelStatistics`.

KServe's v2 proto has neither; Triton's (`grpc_service.proto`, `model_config.proto` in
tritonclient) does, but it cannot be imported next to kserve: both register `inference.*`
protobufs (kserve/kserve#3099). The answers are a few fields of Triton's messages, written on
the wire directly (`servers/protocol/protowire.py`). Both requests have the layout of KServe's
`ModelReadyRequest` (name = 1, version = 2), which parses them.
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
from servers.protocol.protowire import bytes_field, int_field, packed_field
from servers.protocol.statistics_wire import encode_statistics_response
from servers.versions import check_version, model_statistics

__all__ = ["encode_model_config_response", "triton_extensions_service"]

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


def _tensor(tensor: dict[str, Any], dims_field: int) -> bytes:
    out = bytes_field(_TENSOR_NAME, tensor["name"].encode())
    out += int_field(_DATA_TYPE, _DATA_TYPES.get(tensor["data_type"], 0))
    out += packed_field(dims_field, tensor["dims"])
    if "reshape" in tensor:
        out += bytes_field(_RESHAPE, packed_field(1, tensor["reshape"]["shape"]))
    return out


def encode_model_config_response(config: dict[str, Any]) -> bytes:
    """Triton's `ModelConfigResponse` for a config from `derive_config`, serialized."""
    body = bytes_field(_NAME, config["name"].encode())
    if "platform" in config:
        body += bytes_field(_PLATFORM, config["platform"].encode())
    body += int_field(_MAX_BATCH, config["max_batch_size"])
    body += b"".join(bytes_field(_INPUT, _tensor(t, _INPUT_DIMS)) for t in config["input"])
    body += b"".join(bytes_field(_OUTPUT, _tensor(t, _OUTPUT_DIMS)) for t in config["output"])
    if "dynamic_batching" in config:
        body += bytes_field(_DYNAMIC_BATCHING, b"")
    if "backend" in config:
        body += bytes_field(_BACKEND, config["backend"].encode())
    return bytes_field(1, body)


def _name_and_version(request: bytes, what: str) -> tuple[str, str]:
    try:
        parsed = pb.ModelReadyRequest.FromString(request)
    except DecodeError:
        raise InvalidInput(f"malformed {what}") from None
    return parsed.name, parsed.version


async def _config_of(dataplane: DataPlane, request: bytes) -> bytes:
    name, version = _name_and_version(request, "ModelConfigRequest")
    check_version(dataplane, name, version)  # the model, and the version if one is named
    try:
        metadata = await dataplane.model_metadata(name)
    except KServeModelNotFound:
        raise ModelNotFound(f"model '{name}' not found on this server") from None
    model = dataplane.model_registry.get_model(name)
    return encode_model_config_response(derive_config(model, metadata))


async def _statistics_of(dataplane: DataPlane, request: bytes) -> bytes:
    name, version = _name_and_version(request, "ModelStatisticsRequest")
    return encode_statistics_response(model_statistics(dataplane, name, version))


Answer = Callable[[DataPlane, bytes], Awaitable[bytes]]


def _handler(dataplane: DataPlane, answer: Answer) -> grpc.RpcMethodHandler[bytes, bytes]:
    async def handle(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            return await answer(dataplane, request)
        except ModelServeError as exc:
            await context.abort(exc.grpc_code, exc.message)
            raise AssertionError("unreachable: context.abort raises") from exc

    return grpc.unary_unary_rpc_method_handler(handle)


def triton_extensions_service(dataplane: DataPlane) -> Callable[[aio.Server], None]:
    """Adds `ModelConfig` and `ModelStatistics` to a server that serves KServe's v2
    `GRPCInferenceService`: KServe's handler for the service knows neither and passes such a
    call on to the next handler, this one."""

    def add(server: aio.Server) -> None:
        methods = {
            "ModelConfig": _handler(dataplane, _config_of),
            "ModelStatistics": _handler(dataplane, _statistics_of),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))

    return add
