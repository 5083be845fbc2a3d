"""The gateway's own REST answers, shared by the inference app and the dashboard's API.

`error_response` is the one mapping from the shared error types (`servers/errors.py`) to a
v1/v2 REST answer, and `refusal` the one admission check of the routes that are not proxied
(model and service lists, the rollout and dashboard APIs): both carry
`x-modelserve-revision: none`, since no revision answered.
"""

from __future__ import annotations

from time import perf_counter

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.dataplane.admission import Admission
from gateway.dataplane.auth import API_KEY_HEADER
from gateway.dataplane.metrics import GatewayMetrics
from gateway.dataplane.resolve import NO_REVISION, UNKNOWN_SERVICE
from servers.errors import ModelServeError, TooManyRequests, Unauthenticated, error_body

__all__ = ["JSON", "REVISION_HEADER", "error_response", "json_response", "refusal"]

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
