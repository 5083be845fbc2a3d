"""The gateway's REST data plane: KServe v1 and v2 (Open Inference Protocol) paths, proxied.

Each inference request is routed to a service (Knative-style by Host header, else by the model
name in the path), then to one of its ready revisions by traffic percent, and forwarded as
bytes: bodies are never decoded here. The proxy endpoints are plain Starlette routes inside
the FastAPI app, so no request model is built or validated on the hot path.

Every answer carries `x-modelserve-revision` (`none` when no backend was chosen), and every
error has the v1/v2 body `{"error": "..."}`, mapped from the shared error types in one place
(`error_response`).

When API keys or a rate limit are configured, the proxy endpoints and the model lists pass the
gateway's `Admission` first, before routing: a rejected request reaches no component and says
nothing about which models exist. Health and `/metrics` stay open (see `admission`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.dataplane.admission import Admission
from gateway.dataplane.auth import API_KEY_HEADER
from gateway.dataplane.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from gateway.dataplane.proxy import HttpForwarder
from gateway.dataplane.resolve import NO_REVISION, UNKNOWN_SERVICE, find_route, select_backend
from gateway.routing import RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from servers.errors import (
    ModelServeError,
    PayloadTooLarge,
    TooManyRequests,
    Unauthenticated,
    error_body,
)

__all__ = ["REVISION_HEADER", "create_app", "error_response"]

REVISION_HEADER = "x-modelserve-revision"
JSON = "application/json"

# Request headers forwarded to the backend; CloudEvents' `ce-*` headers pass as well.
_FORWARDED = frozenset(
    {
        b"content-type",
        b"inference-header-content-length",
        b"x-request-id",
        b"authorization",
        b"accept",
        b"traceparent",
        b"tracestate",
    }
)
_FORM = b"application/x-www-form-urlencoded"
_API_KEY = API_KEY_HEADER.encode()

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(body: object, status: int = 200, revision: str = NO_REVISION) -> Response:
    return Response(orjson.dumps(body), status, {REVISION_HEADER: revision}, media_type=JSON)


def error_response(exc: ModelServeError, revision: str = NO_REVISION) -> Response:
    """The one mapping from the shared error types to a v1/v2 REST answer."""
    response = json_response(error_body(exc.message), exc.http_status, revision)
    if isinstance(exc, Unauthenticated):
        response.headers["www-authenticate"] = "Bearer"
    elif isinstance(exc, TooManyRequests) and exc.retry_after_s is not None:
        response.headers["retry-after"] = str(exc.retry_after_s)
    return response


@dataclass(slots=True)
class _RequestHeaders:
    """What one pass over a request's headers found."""

    host: str | None = None
    length: int | None = None
    authorization: str | None = None
    api_key: str | None = None
    forwarded: list[tuple[str, str]] = field(default_factory=list)


def _peer(request: Request) -> str:
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


def _admit(admission: Admission, request: Request, found: _RequestHeaders) -> None:
    """Pass `admission` or raise; stops forwarding `Authorization` if it held our key."""
    consumed = admission.admit(found.api_key, found.authorization, _peer(request))
    if consumed:
        found.forwarded = [(k, v) for k, v in found.forwarded if k != "authorization"]


class _RestDataPlane:
    """The proxy endpoints, bound to one routing table, settings, metrics and forwarder."""

    def __init__(
        self,
        table: RoutingTable,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        admission: Admission,
    ) -> None:
        self.table = table
        self.settings = settings
        self.metrics = metrics
        self.admission = admission
        self.forwarder: HttpForwarder | None = None  # set by the app's lifespan

    def endpoint(self, protocol: str, has_body: bool) -> Endpoint:
        """An endpoint forwarding to the service's backend, counted under `protocol`."""

        async def proxy(request: Request) -> Response:
            return await self.proxy(request, protocol, has_body)

        return proxy

    async def proxy(self, request: Request, protocol: str, has_body: bool) -> Response:
        start = time.perf_counter()
        found = _scan_headers(request.scope["headers"], has_body)
        try:
            if self.admission.enabled:
                _admit(self.admission, request, found)
            route = find_route(self.table, request.path_params["name"], found.host)
        except ModelServeError as exc:
            # Rejected before routing (auth, rate limit) or no such service: no component hit.
            failed = error_response(exc)
            self.metrics.observe(
                UNKNOWN_SERVICE, protocol, str(failed.status_code), time.perf_counter() - start
            )
            return failed
        self.metrics.started(route.name)
        code = "499"  # stays so when the client goes away (the task is cancelled)
        try:
            response = await self._forward(request, route, found.length, found.forwarded, has_body)
            code = str(response.status_code)
            return response
        except Exception:
            code = "500"  # a gateway bug; the app's crash handler answers it
            raise
        finally:
            self.metrics.finished(route.name, protocol, code, time.perf_counter() - start)

    async def _forward(
        self,
        request: Request,
        route: ServiceRoute,
        length: int | None,
        headers: list[tuple[str, str]],
        has_body: bool,
    ) -> Response:
        revision = NO_REVISION
        try:
            backend = select_backend(self.table, route)
            revision = backend.revision
            body = await self._read_body(request, length) if has_body else None
            scope = request.scope
            target = scope.get("raw_path") or scope["path"].encode()
            if scope["query_string"]:
                target += b"?" + scope["query_string"]
            assert self.forwarder is not None, "the app's lifespan did not run"
            upstream = await self.forwarder.forward(
                backend.http_url, request.method, target.decode("latin-1"), headers, body
            )
        except ModelServeError as exc:
            return error_response(exc, revision)
        upstream.headers[REVISION_HEADER] = revision
        return Response(upstream.content, upstream.status, upstream.headers)

    async def _read_body(self, request: Request, length: int | None) -> bytes:
        """The request body, refusing more than `max_body_bytes` (declared or streamed)."""
        limit = self.settings.max_body_bytes
        too_large = f"request body exceeds the limit of {limit} bytes"
        if length is not None and length > limit:
            raise PayloadTooLarge(too_large)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(too_large)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _scan_headers(raw: list[tuple[bytes, bytes]], has_body: bool) -> _RequestHeaders:
    """One pass over the request headers: Host, Content-Length, credentials, what to forward."""
    found = _RequestHeaders()
    forwarded = found.forwarded
    for key, value in raw:
        if key in _FORWARDED or key.startswith(b"ce-"):
            if has_body and key == b"content-type" and value.startswith(_FORM):
                # curl -d sends JSON as a form; any KServe server behind expects JSON.
                value = b"application/json"
            elif key == b"authorization":
                found.authorization = value.decode("latin-1")
            forwarded.append((key.decode("latin-1"), value.decode("latin-1")))
        elif key == b"host":
            found.host = value.decode("latin-1")
        elif key == b"content-length" and value.isdigit():
            found.length = int(value)
        elif key == _API_KEY:
            found.api_key = value.decode("latin-1")
    return found


def _add_info_routes(
    app: FastAPI, table: RoutingTable, metrics: GatewayMetrics, admission: Admission
) -> None:
    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        waiting = sorted(r.name for r in table.routes() if not r.ready)
        if waiting:
            message = f"services not ready: {', '.join(waiting)}"
            return json_response(error_body(message), 503)
        return json_response({"ready": True})

    async def list_models(request: Request) -> Response:
        # The service names are the models' metadata: protected like the model routes.
        if admission.enabled:
            start = time.perf_counter()
            try:
                _admit(admission, request, _scan_headers(request.scope["headers"], False))
            except ModelServeError as exc:
                failed = error_response(exc)
                protocol = request.url.path.split("/", 2)[1]  # "v1" or "v2"
                seconds = time.perf_counter() - start
                metrics.observe(UNKNOWN_SERVICE, protocol, str(failed.status_code), seconds)
                return failed
        return json_response({"models": sorted(r.name for r in table.routes())})

    async def metrics_text(request: Request) -> Response:
        return Response(
            metrics.render(), headers={REVISION_HEADER: NO_REVISION}, media_type=CONTENT_TYPE_LATEST
        )

    app.add_route("/v2/health/live", live, ["GET"])
    app.add_route("/v2/health/ready", ready, ["GET"])
    app.add_route("/v1/models", list_models, ["GET"])
    app.add_route("/v2/models", list_models, ["GET"])
    app.add_route("/metrics", metrics_text, ["GET"])


def _add_proxy_routes(app: FastAPI, plane: _RestDataPlane) -> None:
    v1_call = plane.endpoint("v1", has_body=True)
    v1_get = plane.endpoint("v1", has_body=False)
    v2_call = plane.endpoint("v2", has_body=True)
    v2_get = plane.endpoint("v2", has_body=False)
    app.add_route("/v1/models/{name}:predict", v1_call, ["POST"])
    app.add_route("/v1/models/{name}:explain", v1_call, ["POST"])
    app.add_route("/v1/models/{name}", v1_get, ["GET"])
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_route(prefix + "/infer", v2_call, ["POST"])
        app.add_route(prefix + "/ready", v2_get, ["GET"])
        app.add_route(prefix, v2_get, ["GET"])


def _add_error_handlers(app: FastAPI) -> None:
    async def on_model_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ModelServeError)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own 404 (unknown path) and 405, in our error format and with the header.
        assert isinstance(exc, HTTPException)
        return json_response(error_body(str(exc.detail)), exc.status_code)

    async def on_crash(request: Request, exc: Exception) -> Response:
        return json_response(error_body(f"gateway error: {exc!r}"), 500)

    app.add_exception_handler(ModelServeError, on_model_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_crash)


def create_app(
    table: RoutingTable,
    settings: GatewaySettings,
    metrics: GatewayMetrics | None = None,
    admission: Admission | None = None,
) -> FastAPI:
    """The gateway's REST app over `table`; pass `metrics` and `admission` to share them with
    the gRPC proxy (by default both are the app's own, the admission built from `settings`).

    The HTTP pools to the backends live in the app's lifespan: opened at start-up, closed at
    shutdown (uvicorn runs it; so does `with TestClient(app)`).
    """
    admission = admission or Admission.from_settings(settings)
    plane = _RestDataPlane(table, settings, metrics or GatewayMetrics(), admission)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        plane.forwarder = HttpForwarder(settings)
        try:
            yield
        finally:
            forwarder, plane.forwarder = plane.forwarder, None
            await forwarder.aclose()

    app = FastAPI(
        title="modelserve gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.metrics = plane.metrics
    _add_info_routes(app, table, plane.metrics, admission)
    _add_proxy_routes(app, plane)
    _add_error_handlers(app)
    return app
