"""The gateway's own REST answers, shared by the inference app and the control plane's.

`error_response` is the one mapping from the shared error types (`servers/errors.py`) to a
v1/v2 REST answer, `add_error_handlers` puts it (and the answers to Starlette's own errors
and to a crash) on an app, and `refusal` is the one admission check of the inference port's
routes that are not proxied (the model lists): all carry `x-modelserve-revision: none`,
since no revision answered.
"""

from __future__ import annotations

from time import perf_counter

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.dataplane.admission import Admission
from gateway.dataplane.auth import API_KEY_HEADER
from gateway.dataplane.metrics import GatewayMetrics
from gateway.dataplane.resolve import NO_REVISION, UNKNOWN_SERVICE
from servers.errors import ModelServeError, TooManyRequests, Unauthenticated, error_body

__all__ = [
    "JSON",
    "REVISION_HEADER",
    "add_error_handlers",
    "error_response",
    "json_response",
    "refusal",
]

REVISION_HEADER = "x-modelserve-revision"
JSON = "application/json"


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


def add_error_handlers(app: Starlette, server: str) -> None:
    """Answer the shared error types by `error_response`, Starlette's own 404 (unknown path)
    and 405 in the same `{"error"}` format, and a crash as a 500 naming `server`."""

    async def on_model_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ModelServeError)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return json_response(error_body(str(exc.detail)), exc.status_code)

    async def on_crash(request: Request, exc: Exception) -> Response:
        return json_response(error_body(f"{server} error: {exc!r}"), 500)

    app.add_exception_handler(ModelServeError, on_model_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_crash)


def refusal(admission: Admission, metrics: GatewayMetrics, request: Request) -> Response | None:
    """The answer to a request `admission` refuses (API key, rate limit), None when it may
    pass. A refusal is counted as every request refused before routing is: service
    `unknown`, the path's protocol (`v1` or `v2`) and the code."""
    if not admission.enabled:
        return None
    start = perf_counter()
    headers = request.headers
    peer = request.client.host if request.client else "unknown"
    try:
        admission.admit(headers.get(API_KEY_HEADER), headers.get("authorization"), peer)
    except ModelServeError as exc:
        failed = error_response(exc)
        protocol = request.url.path.split("/", 2)[1]
        metrics.observe(
            UNKNOWN_SERVICE, NO_REVISION, protocol, str(failed.status_code),
            perf_counter() - start,
        )
        return failed
    return None
