"""`InferenceServicer`: KServe's v2 gRPC servicer, answering for model versions.

KServe's ignores `version` (ModelReady for any version answers true, ModelInfer for any
version runs the model) and its ModelMetadata lists none. Ours checks the name and version
first (`servers/versions.py`: NOT_FOUND naming the versions served, with no traceback logged
as KServe's own ModelNotFound does) and lists the versions; the rest is KServe's.

With a payload logger (`servers.payload_logger`), each ModelInfer request and successful
response is logged as well, as the protobuf's JSON form (`application/json`), under the
`x-request-id` of the call's metadata (made when missing and sent back in the initial metadata).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict
from grpc import ServicerContext
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.servicer import InferenceServicer as KServeInferenceServicer

from servers.payload_logger import (
    REQUEST_ID_HEADER,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    LogEvent,
    PayloadLogger,
    now_rfc3339,
)
from servers.versions import check_version, model_metadata, model_ready

__all__ = ["InferenceServicer"]


def _as_json(message: Any) -> bytes:
    return orjson.dumps(MessageToDict(message, preserving_proto_field_name=True))


class InferenceServicer(KServeInferenceServicer):
    """KServe's servicer with versioned ModelMetadata, ModelReady and ModelInfer, logging
    ModelInfer's payloads when `payload_logger` is given."""

    def __init__(
        self, *args: Any, payload_logger: PayloadLogger | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._payload_logger = payload_logger

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        ready = await model_ready(self._data_plane, request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        metadata = await model_metadata(self._data_plane, request.name, request.version)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=metadata["inputs"],
            outputs=metadata["outputs"],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: ServicerContext
    ) -> pb.ModelInferResponse:
        check_version(self._data_plane, request.model_name, request.model_version)
        if self._payload_logger is None:
            return await super().ModelInfer(request, context)
        return await self._logged_infer(self._payload_logger, request, context)

    async def _logged_infer(
        self, logger: PayloadLogger, request: pb.ModelInferRequest, context: ServicerContext
    ) -> pb.ModelInferResponse:
        metadata = context.invocation_metadata() or ()
        request_id = next((v for k, v in metadata if k == REQUEST_ID_HEADER), None)
        if not isinstance(request_id, str) or not request_id:
            request_id = str(uuid.uuid4())
        settings = logger.settings
        wanted = {name.lower() for name in settings.metadata_headers}
        found: dict[str, list[str]] = {}
        for key, value in metadata:
            if key in wanted and isinstance(value, str):
                found.setdefault(key, []).append(value)
        shown = orjson.dumps(found).decode()
        if settings.logs_requests:
            await logger.put(
                LogEvent(request_id, REQUEST_TYPE, _as_json(request), "application/json",
                         shown, now_rfc3339())
            )
        await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
        response = await super().ModelInfer(request, context)
        if settings.logs_responses:
            await logger.put(
                LogEvent(request_id, RESPONSE_TYPE, _as_json(response), "application/json",
                         shown, now_rfc3339(), 200)
            )
        return response
