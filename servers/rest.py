"""Our REST front on KServe's FastAPI app: strict v1/v2 inference routes and one error mapping.

KServe's own inference routes answer 500 for several client errors (a v2 body without `id`
from `tritonclient.http`, a binary body whose sizes don't match, a v1 body sent with curl's
form content type) and 422 in FastAPI's own format for others. These routes are registered
before KServe's, so they take the inference paths, and the metadata and versioned routes
(KServe lists no versions and answers 501 for those: see `servers/versions.py`); everything
else (health, unversioned ready, model repository) stays KServe's. Model calls still go
through KServe's DataPlane, so transformers' preprocess/predict/postprocess and KServe's
metrics work as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from kserve.errors import ModelNotFound as KServeModelNotFound
from kserve.protocol.dataplane import DataPlane
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from servers.errors import (
    ModelNotFound,
    ModelServeError,
    NotReady,
    PayloadTooLarge,
    UnsupportedMediaType,
    error_body,
)
from servers.model_config import derive_config
from servers.payload_logger import PayloadLogger, PayloadLoggingMiddleware
from servers.protocol.v1 import parse_json_body
from servers.protocol.v2 import HEADER_LENGTH, encode_rest_response, parse_rest_request
from servers.versions import check_version, model_metadata, model_ready, model_statistics

__all__ = ["BodyLimitMiddleware", "install_routes"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = "application/json"


def _error_response(exc: ModelServeError) -> JSONResponse:
    return JSONResponse(error_body(exc.message), status_code=exc.http_status)


class BodyLimitMiddleware:
    """Answers 413 for bodies over `max_bytes`, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body exceeds the limit of {self.max_bytes} bytes")
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _error_response(too_large)(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)


# Bodies we read as JSON (or JSON + binary tensors): JSON itself, curl -d's form type, plain
# text, octet-stream (the binary extension), or no type at all. Anything else is refused.
_READABLE_TYPES = frozenset(
    {
        "",
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/octet-stream",
    }
)


def _check_content_type(headers: dict[str, str]) -> None:
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in _READABLE_TYPES and not media.endswith("+json"):
        raise UnsupportedMediaType(f"content type {media!r} cannot be read: send application/json")


def metrics_text() -> bytes:
    """The server's Prometheus metrics, summed over every worker process when there are several.

    With `--workers N`, `serve` points PROMETHEUS_MULTIPROC_DIR at a directory the workers
    share; KServe's own /metrics would show whichever worker answers (kserve#2979).
    """
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


async def _check_model(dataplane: DataPlane, name: str) -> None:
    try:
        await dataplane.model_ready(name, True)
    except KServeModelNotFound:
        raise ModelNotFound(f"model '{name}' not found on this server") from None


def _stops_when_client_leaves(dataplane: DataPlane, name: str) -> bool:
    """Whether the model asks for its work to stop when the client is gone (a model whose
    requests can be expensive, e.g. the image transformer's decoding)."""
    model = dataplane.model_registry.get_model(name)
    return bool(getattr(model, "cancel_on_disconnect", False))


async def _infer(
    dataplane: DataPlane, request: Request, name: str, body: Any, headers: dict[str, str]
) -> tuple[Any, dict[str, str]]:
    """`dataplane.infer`, cancelled when the client disconnects if the model asks for it.

    uvicorn never cancels a handler whose client went away; once the body is read, the next
    ASGI message is `http.disconnect`, so a watcher waiting for it cancels the model's task
    (an asyncio cancellation the model turns into stopping its work, see
    `servers/transformers/image/limits.py`). Off by default: one more task per request.
    """
    if not _stops_when_client_leaves(dataplane, name):
        return await dataplane.infer(name, body, headers)
    work = asyncio.ensure_future(dataplane.infer(name, body, headers))

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not work.done():
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        raise ClientGone()
    return work.result()


class ClientGone(Exception):
    """The client disconnected before its answer was ready: nobody to answer."""


def install_routes(
    app: FastAPI,
    dataplane: DataPlane,
    max_body_bytes: int,
    payload_logger: PayloadLogger | None = None,
) -> None:
    """Add the inference routes, error handlers and body limit to KServe's app, and the payload
    logger's middleware when one is set (inside the body limit: it never buffers more)."""

    async def v2_infer(request: Request) -> Response:
        name = request.path_params["model_name"]
        check_version(dataplane, name, request.path_params.get("model_version"))
        await _check_model(dataplane, name)
        headers = dict(request.headers)
        _check_content_type(headers)
        infer_request = parse_rest_request(await request.body(), headers.get(HEADER_LENGTH), name)
        response, response_headers = await _infer(dataplane, request, name, infer_request, headers)
        body, extra = encode_rest_response(response, infer_request)
        extra.update({k: v for k, v in response_headers.items() if k.lower() != "content-length"})
        media = "application/octet-stream" if HEADER_LENGTH in extra else JSON
        return Response(body, media_type=media, headers=extra)

    async def v2_metadata(request: Request) -> Response:
        name, version = request.path_params["model_name"], request.path_params.get("model_version")
        return JSONResponse(await model_metadata(dataplane, name, version))

    async def v2_ready(request: Request) -> Response:
        name, version = request.path_params["model_name"], request.path_params["model_version"]
        if not await model_ready(dataplane, name, version):
            raise NotReady(f"model '{name}' is not ready")
        return JSONResponse({"name": name, "ready": True})

    async def v1_predict(request: Request) -> Response:
        name = request.path_params["model_name"]
        await _check_model(dataplane, name)
        headers = dict(request.headers)
        _check_content_type(headers)
        doc = parse_json_body(await request.body())
        response, response_headers = await _infer(dataplane, request, name, doc, headers)
        if isinstance(response, bytes | str):
            return Response(response, headers=response_headers)
        response_headers.pop("content-length", None)
        body = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type=JSON, headers=response_headers)

    async def metrics(_: Request) -> Response:
        return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)

    async def handle_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ModelServeError)
        return _error_response(exc)

    async def handle_validation(_: Request, exc: Exception) -> Response:
        return JSONResponse(error_body(f"invalid request: {exc}"), status_code=400)

    async def handle_gone(_: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # written to a closed connection: never read

    _install_statistics_routes(app, dataplane)  # first: `/v2/models/stats` is no model name
    for path in (
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    ):
        app.add_route(path, v2_infer, methods=["POST"])
    for path in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}"):
        app.add_route(path, v2_metadata, methods=["GET"])
    app.add_route("/v2/models/{model_name}/versions/{model_version}/ready", v2_ready, ["GET"])
    app.add_route("/v1/models/{model_name}:predict", v1_predict, methods=["POST"])
    app.add_route("/metrics", metrics, methods=["GET"])
    _install_config_routes(app, dataplane)
    app.add_exception_handler(ModelServeError, handle_error)
    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(ClientGone, handle_gone)
    if payload_logger is not None:
        app.add_middleware(PayloadLoggingMiddleware, logger=payload_logger)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)


def _install_config_routes(app: FastAPI, dataplane: DataPlane) -> None:
    """The model configuration extension: Triton's schema, derived (`servers.model_config`)."""

    async def model_config(request: Request) -> Response:
        name = request.path_params["model_name"]
        await _check_model(dataplane, name)
        check_version(dataplane, name, request.path_params.get("model_version"))
        model = dataplane.model_registry.get_model(name)
        config = derive_config(model, await dataplane.model_metadata(name))
        return Response(orjson.dumps(config), media_type=JSON)

    for path in (
        "/v2/models/{model_name}/config",
        "/v2/models/{model_name}/versions/{model_version}/config",
    ):
        app.add_route(path, model_config, methods=["GET"])


def _install_statistics_routes(app: FastAPI, dataplane: DataPlane) -> None:
    """The statistics extension (`servers/statistics.py`): one model, or every model."""

    async def stats(request: Request) -> Response:
        name = request.path_params.get("model_name", "")
        doc = model_statistics(dataplane, name, request.path_params.get("model_version"))
        return Response(orjson.dumps(doc), media_type=JSON)

    for path in (
        "/v2/models/stats",
        "/v2/models/{model_name}/stats",
        "/v2/models/{model_name}/versions/{model_version}/stats",
    ):
        app.add_route(path, stats, methods=["GET"])
