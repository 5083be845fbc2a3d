"""The gateway's REST data plane: KServe v1 and v2 (Open Inference Protocol) paths, proxied.

Each inference request is routed to a service (Knative-style by Host header, else by the model
name in the path), then to one of its ready revisions by traffic percent, and forwarded as
bytes: bodies are never decoded here. The inference routes are served by a raw ASGI fast path
in front of FastAPI (`_GatewayApp`): a request whose method and path match one of them goes
straight to the data plane, past Starlette's middleware stack, router and `Request` objects
(profiled: ~15 % of the gateway's Python time per request). Everything else, including any request
the fast path does not recognise, goes through the FastAPI app, where the same proxy routes
are registered too, so the answers are the same either way.

Every answer carries `x-modelserve-revision` (`none` when no backend was chosen), and every
error has the v1/v2 body `{"error": "..."}`, mapped from the shared error types in one place
(`error_response`).

When API keys or a rate limit are configured, the proxy endpoints and the model lists pass the
gateway's `Admission` first, before routing: a rejected request reaches no component and says
nothing about which models exist. Health and `/metrics` stay open (see `admission`).

This app serves inference only. The rollout API (`/v1/services`) and the dashboard are the
control plane's, on its own port and credentials (`gateway.controlplane.api`): no inference
key, and no request to this port, can make the platform start anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import perf_counter

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.bodies import read_body
from gateway.dataplane.admission import Admission
from gateway.dataplane.answers import (
    REVISION_HEADER,
    add_error_handlers,
    error_response,
    json_response,
    refusal,
)
from gateway.dataplane.auth import API_KEY_HEADER
from gateway.dataplane.backend_errors import (
    client_error_status,
    spell_non_finite,
    v2_request_problem,
)
from gateway.dataplane.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from gateway.dataplane.proxy import HttpForwarder, UpstreamResponse
from gateway.dataplane.repository import (
    index_ready_only,
    refuse_control_action,
    repository_index,
)
from gateway.dataplane.resolve import NO_REVISION, UNKNOWN_SERVICE, Attempt, dispatch, find_route
from gateway.dataplane.serverinfo import server_metadata
from gateway.dataplane.statistics import service_statistics
from gateway.dataplane.tracing import (
    REQUEST_ID_BYTES,
    RequestIds,
    end_rest_span,
    start_rest_span,
)
from gateway.routing import Backend, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from servers.errors import (
    InvalidInput,
    ModelServeError,
    error_body,
)
from servers.telemetry import TRACING, without_fastapi_telemetry

__all__ = ["REVISION_HEADER", "create_app", "error_response"]


# Request headers forwarded to the backend; CloudEvents' `ce-*` and the client's `x-*`
# headers (`_scan_headers`) pass as well.
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
# x-* headers kept back: ours (the revision answer, the API key, matched above) and the
# proxies' (a component must not take a client's x-forwarded-for for the peer).
_NOT_FORWARDED_X = (b"x-modelserve-", b"x-forwarded-", b"x-real-ip")
_FORM = b"application/x-www-form-urlencoded"
_JSON = b"application/json"
_API_KEY = API_KEY_HEADER.encode()
_REVISION = REVISION_HEADER.encode()

Endpoint = Callable[[Request], Awaitable[Response]]


class _Answer(Response):
    """A backend's answer, sent as it is: status, raw headers and body, no header building."""

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.raw_headers = raw_headers
        self.body = body
        self.background = None


@dataclass(slots=True)
class _RequestHeaders:
    """What one pass over a request's headers found."""

    host: str | None = None
    length: int | None = None
    authorization: str | None = None
    api_key: str | None = None
    header_length: bytes | None = None  # Inference-Header-Content-Length (binary tensors)
    request_id: bytes | None = None  # the client's x-request-id
    forwarded: list[tuple[bytes, bytes]] = field(default_factory=list)


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _admit(admission: Admission, scope: Scope, found: _RequestHeaders) -> None:
    """Pass `admission` or raise; stops forwarding `Authorization` if it held our key."""
    consumed = admission.admit(found.api_key, found.authorization, _peer(scope))
    if consumed:
        found.forwarded = [(k, v) for k, v in found.forwarded if k != b"authorization"]


def _match(method: str, path: str) -> tuple[str, str, bool] | None:
    """(model name, protocol, has body) when `method path` is one of the proxy routes that
    `_add_proxy_routes` registers (the same names Starlette's `{name}` would match), else
    None: FastAPI then answers it."""
    if path.startswith("/v1/models/"):
        rest = path[11:]
        if method == "POST":
            if rest.endswith((":predict", ":explain")):
                name = rest[:-8]
                if name and "/" not in name:
                    return name, "v1", True
        elif method == "GET" and rest and "/" not in rest:
            return rest, "v1", False
        return None
    if not path.startswith("/v2/models/"):
        return None
    parts = path[11:].split("/")
    if not parts[0] or path == "/v2/models/stats":  # every model's statistics: not a name
        return None
    count = len(parts)
    if count >= 3 and parts[1] == "versions":
        if not parts[2]:
            return None
        tail = parts[3] if count == 4 else None if count == 3 else ""
    elif count <= 2:
        tail = parts[1] if count == 2 else None
    else:
        return None
    if tail is None:  # /v2/models/{name}[/versions/{version}]
        return (parts[0], "v2", False) if method == "GET" else None
    if tail == "infer" and method == "POST":
        return parts[0], "v2", True
    if tail in ("ready", "config") and method == "GET":
        return parts[0], "v2", False
    return None


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
        self.tracer = TRACING.tracer  # None while traces are off (servers/telemetry.py)
        self.request_ids = RequestIds()

    def endpoint(self, protocol: str, has_body: bool) -> Endpoint:
        """An endpoint forwarding to the service's backend, counted under `protocol` (for the
        requests the ASGI fast path leaves to FastAPI, e.g. HEAD)."""

        async def proxy(request: Request) -> Response:
            name = request.path_params["name"]
            return await self.proxy(request.scope, request.receive, name, protocol, has_body)

        return proxy

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, name: str, protocol: str, has_body: bool
    ) -> None:
        """The ASGI fast path: answer one proxied request, as the FastAPI route would."""
        try:
            response = await self.proxy(scope, receive, name, protocol, has_body)
        except ClientDisconnect:
            return  # the client went away while sending its body: nobody to answer
        except Exception as exc:
            # What the app's crash handler answers; re-raised so that uvicorn logs it.
            await json_response(error_body(f"gateway error: {exc!r}"), 500)(scope, receive, send)
            raise
        await response(scope, receive, send)

    async def proxy(
        self, scope: Scope, receive: Receive, name: str, protocol: str, has_body: bool
    ) -> Response:
        start = perf_counter()
        found = _scan_headers(scope["headers"], has_body)
        request_id = found.request_id
        if request_id is None:  # gateway/dataplane/tracing.py: generated only when missing
            request_id = self.request_ids.new().encode()
            found.forwarded.append((REQUEST_ID_BYTES, request_id))
        span = None
        if self.tracer is not None:
            span = start_rest_span(
                self.tracer, scope["method"], scope["path"], name, protocol, request_id,
                found.forwarded,
            )
        try:
            if self.admission.enabled:
                _admit(self.admission, scope, found)
            route, tag = find_route(self.table, name, found.host)
        except ModelServeError as exc:
            # Rejected before routing (auth, rate limit) or no such service: no component hit.
            failed = error_response(exc)
            self.metrics.observe(
                UNKNOWN_SERVICE, NO_REVISION, protocol, str(failed.status_code),
                perf_counter() - start,
            )
            failed.raw_headers.append((REQUEST_ID_BYTES, request_id))
            if span is not None:
                end_rest_span(span, UNKNOWN_SERVICE, NO_REVISION, failed.status_code)
            return failed
        self.metrics.started(route.name)
        code = "499"  # stays so when the client goes away (the task is cancelled)
        attempt = Attempt()
        try:
            response = await self._forward(
                scope, receive, route, tag, found, protocol, has_body, attempt
            )
            code = str(response.status_code)
            response.raw_headers.append((REQUEST_ID_BYTES, request_id))
            return response
        except ClientDisconnect:
            raise
        except Exception:
            code = "500"  # a gateway bug; the app's crash handler answers it
            raise
        finally:
            self.metrics.finished(
                route.name, attempt.revision, protocol, code, perf_counter() - start
            )
            if span is not None:
                end_rest_span(span, route.name, attempt.revision, int(code))

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        route: ServiceRoute,
        tag: str | None,
        found: _RequestHeaders,
        protocol: str,
        has_body: bool,
        attempt: Attempt,
    ) -> Response:
        forwarder = self.forwarder
        assert forwarder is not None, "the app's lifespan did not run"
        method = scope["method"]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        body: bytes | None = None
        # Only a v2 infer body has a tensor to check, and only tritonserver mishandles one.
        screen = route.screen_v2_bodies and protocol == "v2"

        async def read_request_body() -> None:
            nonlocal body
            body = await read_body(receive, found.length, self.settings.max_body_bytes)
            if screen and (problem := v2_request_problem(body, found.header_length)):
                raise InvalidInput(problem)

        def send(backend: Backend) -> Awaitable[UpstreamResponse]:
            return forwarder.forward(backend.http_url, method, target, found.forwarded, body)

        try:
            upstream = await dispatch(
                self.table, route, tag, self.settings, send, attempt,
                read_request_body if has_body else None,
            )
        except ModelServeError as exc:
            return error_response(exc, attempt.revision)
        status, headers, content = upstream.status, upstream.headers, upstream.content
        status = client_error_status(status, content)  # Triton's 500s for malformed JSON
        if screen and status == 200:
            headers, content = _spelt_answer(headers, content)
        headers.append((_REVISION, attempt.revision.encode("latin-1")))
        if status >= 200 and status not in (204, 304):
            headers.append((b"content-length", b"%d" % len(content)))
        return _Answer(status, headers, content)


_HEADER_LENGTH = b"inference-header-content-length"


def _spelt_answer(
    headers: list[tuple[bytes, bytes]], content: bytes
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """A tritonserver answer with its bare NaN and infinities spelt as strings (JSON)."""
    length = next((int(v) for k, v in headers if k == _HEADER_LENGTH and v.isdigit()), None)
    spelt = spell_non_finite(content, length)
    if spelt is None:
        return headers, content
    content, json_length = spelt
    if length is not None:
        headers = [(k, b"%d" % json_length if k == _HEADER_LENGTH else v) for k, v in headers]
    return headers, content


def _scan_headers(raw: list[tuple[bytes, bytes]], has_body: bool) -> _RequestHeaders:
    """One pass over the request headers: Host, Content-Length, credentials, what to forward."""
    found = _RequestHeaders()
    forwarded = found.forwarded
    for key, value in raw:
        if key in _FORWARDED or key.startswith(b"ce-"):
            if has_body and key == b"content-type" and value.startswith(_FORM):
                # curl -d sends JSON as a form; any KServe server behind expects JSON.
                value = _JSON
            elif key == b"authorization":
                found.authorization = value.decode("latin-1")
            elif key == _HEADER_LENGTH:
                found.header_length = value
            elif key == REQUEST_ID_BYTES:
                found.request_id = value
            forwarded.append((key, value))
        elif key == b"host":
            found.host = value.decode("latin-1")
        elif key == b"content-length" and value.isdigit():
            found.length = int(value)
        elif key == _API_KEY:
            found.api_key = value.decode("latin-1")
        elif key.startswith(b"x-") and not key.startswith(_NOT_FORWARDED_X):
            # The client's own x-* headers (a tenant, B3 trace ids) reach the component, as
            # through KServe's ingress: a logger's `metadataHeaders` are read from them there.
            forwarded.append((key, value))
    return found


def _add_statistics_routes(app: FastAPI, plane: _RestDataPlane) -> None:
    """The statistics extension: summed over replicas (gateway/dataplane/statistics.py)."""

    async def stats(request: Request) -> Response:
        if (failed := refusal(plane.admission, plane.metrics, request)) is not None:
            return failed
        forwarder = plane.forwarder
        assert forwarder is not None, "the app's lifespan did not run"
        name = request.path_params.get("name", "")
        doc = await service_statistics(
            plane.table, forwarder, name, request.path_params.get("version"),
            request.headers.get("host"),
        )
        return json_response(doc)

    for path in (
        "/v2/models/stats",
        "/v2/models/{name}/stats",
        "/v2/models/{name}/versions/{version}/stats",
    ):
        app.add_route(path, stats, ["GET"])


def _add_repository_routes(app: FastAPI, plane: _RestDataPlane) -> None:
    """The repository extension's index; load/unload belong to the control plane
    (gateway/dataplane/repository.py)."""

    async def index(request: Request) -> Response:
        if (failed := refusal(plane.admission, plane.metrics, request)) is not None:
            return failed
        length = request.headers.get("content-length")
        body = await read_body(request.receive, int(length) if length and length.isdigit()
                               else None, plane.settings.max_body_bytes)
        return json_response(repository_index(plane.table, index_ready_only(body)))

    async def control(request: Request) -> Response:
        return error_response(refuse_control_action())

    app.add_route("/v2/repository/index", index, ["POST"])
    for action in ("load", "unload"):
        app.add_route(f"/v2/repository/models/{{name}}/{action}", control, ["POST"])


def _add_info_routes(
    app: FastAPI,
    table: RoutingTable,
    metrics: GatewayMetrics,
    admission: Admission,
) -> None:
    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        waiting = sorted(r.name for r in table.routes() if not r.ready)
        if waiting:
            message = f"services not ready: {', '.join(waiting)}"
            return json_response(error_body(message), 503)
        return json_response({"ready": True})

    def refused(request: Request) -> Response | None:
        # Service names are the models' metadata: protected like the model routes.
        return refusal(admission, metrics, request)

    async def list_models(request: Request) -> Response:
        if (failed := refused(request)) is not None:
            return failed
        return json_response({"models": sorted(r.name for r in table.routes())})

    async def metrics_text(request: Request) -> Response:
        return Response(
            metrics.render(), headers={REVISION_HEADER: NO_REVISION}, media_type=CONTENT_TYPE_LATEST
        )

    async def server_info(request: Request) -> Response:
        return json_response(server_metadata())

    async def v1_live(request: Request) -> Response:
        return json_response({"status": "alive"})  # KServe's `GET /` (is_server_live, v1)

    app.add_route("/", v1_live, ["GET"])
    app.add_route("/v2", server_info, ["GET"])
    app.add_route("/v2/", server_info, ["GET"])  # the OIP spec's path; else a 307 to /v2
    app.add_route("/v2/health/live", live, ["GET"])
    app.add_route("/v2/health/ready", ready, ["GET"])
    app.add_route("/v1/models", list_models, ["GET"])
    app.add_route("/v2/models", list_models, ["GET"])
    app.add_route("/metrics", metrics_text, ["GET"])

    async def elsewhere(request: Request) -> Response:
        # The rollout API and the dashboard used to be here: say where they are now.
        message = (
            f"{request.url.path} is not served on the inference port: the rollout API and "
            "the dashboard are the control plane's (`modelserve up --admin-port`, default "
            "http://127.0.0.1:8082), behind an admin token"
        )
        return json_response(error_body(message), 404)

    for path in ("/v1/services", "/v1/services/{rest:path}", "/ui", "/ui/{rest:path}"):
        app.add_route(path, elsewhere, ["GET", "POST", "PATCH", "PUT", "DELETE"])


class _GatewayApp(FastAPI):
    """The FastAPI app behind an ASGI fast path for the inference routes (module docstring)."""

    plane: _RestDataPlane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plane = self.plane
        if plane is not None and scope["type"] == "http" and not scope.get("root_path"):
            matched = _match(scope["method"], scope["path"])
            if matched is not None:
                await plane.serve(scope, receive, send, *matched)
                return
        await super().__call__(scope, receive, send)


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
        app.add_route(prefix + "/config", v2_get, ["GET"])  # Triton's model configuration
        app.add_route(prefix, v2_get, ["GET"])


def create_app(
    table: RoutingTable,
    settings: GatewaySettings,
    metrics: GatewayMetrics | None = None,
    admission: Admission | None = None,
) -> FastAPI:
    """The gateway's REST app over `table`; pass `metrics` and `admission` to share them with
    the gRPC proxy (by default both are the app's own, the admission built from `settings`).
    It serves inference only: the rollout API and the dashboard are the control plane's, on
    its own port (`gateway.controlplane.api`).

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

    app = _GatewayApp(
        title="modelserve gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    without_fastapi_telemetry(app)  # the gateway's spans are its own (tracing.py)
    app.state.metrics = plane.metrics
    _add_info_routes(app, table, plane.metrics, admission)
    _add_statistics_routes(app, plane)  # before the proxy's `/v2/models/{name}`
    _add_repository_routes(app, plane)
    _add_proxy_routes(app, plane)
    add_error_handlers(app, "gateway")
    app.plane = plane
    return app
