"""Talking to Triton: model metadata, readiness and inference over gRPC or HTTP.

Both transports speak the Open Inference Protocol and send tensors as raw little-endian bytes
(what Triton answers with too). gRPC goes through kserve's `InferenceGRPCClient` (its channel,
retry policy and stub): `tritonclient.grpc` cannot be imported next to kserve (both register
the `inference.*` protobufs, kserve/kserve#3099). HTTP goes through `tritonclient.http.aio`.

Triton's failures become ours (`servers.errors`), the same for both transports: its
INVALID_ARGUMENT/400 stays a 400, NOT_FOUND/404 a 404; a Triton that is down or refuses the
connection is a 503, one that does not answer within the deadline a 504.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import numpy as np
from grpc import aio

from servers.errors import (
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    ModelServeError,
    UpstreamError,
    status_for_http,
)
from servers.protocol.tensors import decode_tensor, tensor_to_raw

__all__ = [
    "GrpcTritonClient",
    "HttpTritonClient",
    "ModelMetadata",
    "PROTOCOLS",
    "TensorMetadata",
    "TritonClient",
    "Tensors",
    "make_client",
]

PROTOCOLS = ("grpc", "http")
# name -> (array, v2 datatype)
Tensors = Mapping[str, tuple[np.ndarray, str]]

_HTTP_TO_GRPC: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
}
# Typed gRPC contents by datatype, for a server that does not answer with raw contents.
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


@dataclass(frozen=True)
class TensorMetadata:
    """An input or output as Triton's model metadata gives it (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        """The v2 metadata form."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelMetadata:
    """Triton's v2 model metadata."""

    name: str
    platform: str
    versions: tuple[str, ...]
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ModelMetadata:
        """From the REST metadata document (or the gRPC reply made into one)."""
        def tensors(key: str) -> tuple[TensorMetadata, ...]:
            return tuple(
                TensorMetadata(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
                for t in doc.get(key) or []
            )

        return cls(
            name=str(doc.get("name", "")),
            platform=str(doc.get("platform", "")),
            versions=tuple(str(v) for v in doc.get("versions") or []),
            inputs=tensors("inputs"),
            outputs=tensors("outputs"),
        )


class TritonClient(Protocol):
    """What the predictor needs from Triton, whichever transport carries it."""

    target: str

    async def metadata(self, model: str) -> ModelMetadata:
        """The model's metadata."""
        ...

    async def model_ready(self, model: str) -> bool:
        """Whether Triton serves the model now."""
        ...

    async def infer(self, model: str, inputs: Tensors, outputs: Sequence[str]) -> Tensors:
        """One inference: the requested outputs (all when none are named)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _grpc_error(exc: grpc.RpcError, target: str, timeout_s: float) -> ModelServeError:
    if isinstance(exc, grpc.Call | aio.AioRpcError):
        code, details = exc.code(), exc.details() or exc.code().name
    else:
        code, details = grpc.StatusCode.UNKNOWN, str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendTimeout(f"Triton at {target} did not answer within {timeout_s:g} s")
    if code == grpc.StatusCode.UNAVAILABLE:
        return BackendUnavailable(f"Triton at {target} is unavailable: {details}")
    return UpstreamError(f"triton: {details}", status_for_http(code), code)


def _http_error(status: int, message: str, target: str) -> ModelServeError:
    if status == 503:
        return BackendUnavailable(f"Triton at {target} is unavailable: {message}")
    if status == 504:
        return BackendTimeout(f"Triton at {target} timed out: {message}")
    if not 400 <= status < 600:
        status = 502
    code = _HTTP_TO_GRPC.get(status, grpc.StatusCode.INTERNAL)
    return UpstreamError(f"triton: {message}", status, code)


def _malformed(target: str, exc: Exception) -> ModelServeError:
    return UpstreamError(f"Triton at {target} answered a malformed tensor: {exc}", 502,
                         grpc.StatusCode.INTERNAL)


class GrpcTritonClient:
    """Triton's gRPC endpoint through kserve's `InferenceGRPCClient`.

    The channel belongs to the event loop it was made in: one is made on first use in each
    loop (load() runs in a loop of its own, the server in another).
    """

    def __init__(self, target: str, timeout_s: float = 30.0) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _stub(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            from kserve.inference_client import InferenceGRPCClient

            # No retries: a Triton that is down answers 503 at once, not after kserve's backoff.
            self._client = InferenceGRPCClient(self.target, timeout=self.timeout_s, retries=0)
            self._loop = loop
        return self._client._client_stub

    async def metadata(self, model: str) -> ModelMetadata:
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

        try:
            reply = await self._stub().ModelMetadata(
                pb.ModelMetadataRequest(name=model), timeout=self.timeout_s
            )
        except grpc.RpcError as exc:
            raise _grpc_error(exc, self.target, self.timeout_s) from exc

        def tensors(items: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

        return ModelMetadata.from_dict({
            "name": reply.name, "platform": reply.platform, "versions": list(reply.versions),
            "inputs": tensors(reply.inputs), "outputs": tensors(reply.outputs),
        })

    async def model_ready(self, model: str) -> bool:
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

        try:
            reply = await self._stub().ModelReady(
                pb.ModelReadyRequest(name=model), timeout=min(self.timeout_s, 5.0)
            )
        except grpc.RpcError as exc:
            raise _grpc_error(exc, self.target, min(self.timeout_s, 5.0)) from exc
        return bool(reply.ready)

    async def infer(self, model: str, inputs: Tensors, outputs: Sequence[str]) -> Tensors:
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

        request = pb.ModelInferRequest(model_name=model)
        for name, (array, datatype) in inputs.items():
            tensor = request.inputs.add()
            tensor.name, tensor.datatype = name, datatype
            tensor.shape.extend(array.shape)
            request.raw_input_contents.append(tensor_to_raw(array, datatype))
        for name in outputs:
            request.outputs.add().name = name
        try:
            reply = await self._stub().ModelInfer(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _grpc_error(exc, self.target, self.timeout_s) from exc
        result: dict[str, tuple[np.ndarray, str]] = {}
        try:
            for index, out in enumerate(reply.outputs):
                if index < len(reply.raw_output_contents):
                    raw: bytes | None = reply.raw_output_contents[index]
                    data = None
                else:
                    raw, data = None, list(getattr(out.contents, _CONTENTS[out.datatype]))
                array = decode_tensor(out.name, out.datatype, list(out.shape), data, raw)
                result[out.name] = (array, out.datatype)
        except (InvalidInput, KeyError) as exc:
            raise _malformed(self.target, exc) from exc
        return result

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class HttpTritonClient:
    """Triton's HTTP endpoint through `tritonclient.http.aio` (binary tensors both ways)."""

    def __init__(self, target: str, timeout_s: float = 30.0) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import tritonclient.http.aio as httpclient

            self._client = httpclient.InferenceServerClient(self.target,
                                                            conn_timeout=self.timeout_s)
            self._loop = loop
        return self._client

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import aiohttp
        from tritonclient.utils import InferenceServerException

        try:
            return await getattr(self._http(), method)(*args, **kwargs)
        except InferenceServerException as exc:
            status = int(exc.status()) if str(exc.status() or "").isdigit() else 502
            raise _http_error(status, exc.message() or str(exc), self.target) from exc
        except TimeoutError as exc:
            raise BackendTimeout(
                f"Triton at {self.target} did not answer within {self.timeout_s:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(f"Triton at {self.target} is unavailable: {exc}") from exc

    async def metadata(self, model: str) -> ModelMetadata:
        return ModelMetadata.from_dict(await self._call("get_model_metadata", model))

    async def model_ready(self, model: str) -> bool:
        return bool(await self._call("is_model_ready", model))

    async def infer(self, model: str, inputs: Tensors, outputs: Sequence[str]) -> Tensors:
        import tritonclient.http.aio as httpclient

        tensors = []
        for name, (array, datatype) in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=True)
            tensors.append(tensor)
        requested = [httpclient.InferRequestedOutput(n, binary_data=True) for n in outputs]
        result = await self._call("infer", model, tensors, outputs=requested or None)
        answer: dict[str, tuple[np.ndarray, str]] = {}
        try:
            for out in result.get_response()["outputs"]:
                array = result.as_numpy(out["name"])
                if array is None:
                    raise KeyError(out["name"])
                answer[out["name"]] = (array, out["datatype"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(self.target, exc) from exc
        return answer

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def make_client(protocol: str, target: str, timeout_s: float = 30.0) -> TritonClient:
    """A client of Triton at `target` (HOST:PORT) speaking `protocol` ("grpc" or "http")."""
    if protocol == "grpc":
        return GrpcTritonClient(target, timeout_s)
    if protocol == "http":
        return HttpTritonClient(target, timeout_s)
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
