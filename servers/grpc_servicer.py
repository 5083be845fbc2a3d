"""`InferenceServicer`: KServe's v2 gRPC servicer, answering for model versions.

KServe's ignores `version` (ModelReady for any version answers true, ModelInfer for any
version runs the model) and its ModelMetadata lists none. Ours checks the name and version
first (`servers/versions.py`: NOT_FOUND naming the versions served, with no traceback logged
as KServe's own ModelNotFound does) and lists the versions; the rest is KServe's.
"""

from __future__ import annotations

from typing import Any

from grpc import ServicerContext
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.servicer import InferenceServicer as KServeInferenceServicer

from servers.versions import check_version, model_metadata, model_ready

__all__ = ["InferenceServicer"]


class InferenceServicer(KServeInferenceServicer):
    """KServe's servicer with versioned ModelMetadata, ModelReady and ModelInfer."""

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
        return await super().ModelInfer(request, context)
