"""The gateway's request ids and spans, for the REST app and the gRPC proxy alike.

Request ids: a request keeps the client's `x-request-id`, or gets a uuid4 when it has none (as
Envoy and Istio's ingress do); either way the component sees it and the client gets it back
(a REST header, gRPC initial metadata). Only a missing id costs anything: `RequestIds` makes
uuid4-shaped ids from one random uuid4 and a counter (0.2 µs, against 2 µs and a getrandom
syscall for `uuid.uuid4()` per request).

Spans (`servers/telemetry.py`, only while traces are on): one SERVER span per proxied request,
continuing the client's `traceparent` when it sent one, named as OpenTelemetry's HTTP and RPC
semantic conventions name server spans (`POST /v2/models/{name}/infer`,
`inference.GRPCInferenceService/ModelInfer`), with the service, revision, protocol and status.
The forwarded request carries that span as its parent (W3C `traceparent`), in place of the
client's, so each component's server span is the gateway span's child. The span is never made
the current one: nothing else in the gateway reads it, and attaching it costs a context switch
per request.
"""

from __future__ import annotations

import itertools
import uuid

import grpc
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from servers.telemetry import REQUEST_ID, extract_context, inject_context

__all__ = [
    "GATEWAY_SERVICE_NAME",
    "REQUEST_ID",
    "REQUEST_ID_BYTES",
    "TRACE_METADATA",
    "end_grpc_span",
    "end_rest_span",
    "RequestIds",
    "start_grpc_span",
    "start_rest_span",
]

# The gateway's `service.name` when OTEL_SERVICE_NAME does not give one.
GATEWAY_SERVICE_NAME = "modelserve-gateway"
REQUEST_ID_BYTES = REQUEST_ID.encode()
_TRACE_HEADERS = (b"traceparent", b"tracestate")
# The client's trace metadata, replaced by ours when the gateway traces (prefixes, as the gRPC
# proxy drops metadata by prefix).
TRACE_METADATA = ("traceparent", "tracestate")
# gRPC codes that are the server's failure, not the client's (OpenTelemetry's RPC conventions).
_GRPC_SERVER_ERRORS = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})


class RequestIds:
    """Request ids for the requests that come without one, unique per source and process.

    Each is a version-4 UUID in form: the first 20 hex digits are one random uuid4's, drawn
    when the source is made (74 random bits: two sources do not share them), the last 12 a
    counter. Sequential within a source: a request id names a request, it is not a secret.
    """

    def __init__(self) -> None:
        self._prefix = str(uuid.uuid4())[:24]
        self._count = itertools.count()

    def new(self) -> str:
        """The next id."""
        return f"{self._prefix}{next(self._count) & 0xFFFF_FFFF_FFFF:012x}"


def start_rest_span(
    tracer: Tracer,
    method: str,
    path: str,
    name: str,
    protocol: str,
    request_id: bytes,
    forwarded: list[tuple[bytes, bytes]],
) -> Span:
    """The server span of a REST request for model `name`; `forwarded` (the headers sent on)
    gets the span's `traceparent` in place of the client's."""
    carried = [(k.decode(), v.decode("latin-1")) for k, v in forwarded if k in _TRACE_HEADERS]
    if carried:
        forwarded[:] = [(k, v) for k, v in forwarded if k not in _TRACE_HEADERS]
    # `/v2/models/iris/infer` -> `/v2/models/{name}/infer`: the route, bounded in cardinality.
    route = path[:11] + path[11:].replace(name, "{name}", 1)
    span = tracer.start_span(
        f"{method} {route}",
        context=extract_context(carried) if carried else None,
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "http.route": route,
            "url.path": path,
            "modelserve.protocol": protocol,
            "modelserve.request_id": request_id.decode("latin-1"),
        },
    )
    forwarded.extend((k.encode(), v.encode()) for k, v in inject_context(span))
    return span


def end_rest_span(span: Span, service: str, revision: str, status: int) -> None:
    """End a REST request's span with what answered it (5xx is the server's error)."""
    span.set_attribute("modelserve.service", service)
    span.set_attribute("modelserve.revision", revision)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)
    span.end()


def start_grpc_span(
    tracer: Tracer, path: str, metadata: tuple[tuple[str, str | bytes], ...], request_id: str
) -> tuple[Span, tuple[tuple[str, str], ...]]:
    """The server span of a gRPC call to `path` (`/package.Service/Method`), and the trace
    metadata to send on in place of the client's."""
    service, _, method = path[1:].partition("/")
    carried = [(k, v) for k, v in metadata if k in TRACE_METADATA and isinstance(v, str)]
    span = tracer.start_span(
        f"{service}/{method}",
        context=extract_context(carried) if carried else None,
        kind=SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
            "modelserve.protocol": "grpc",
            "modelserve.request_id": request_id,
        },
    )
    return span, tuple(inject_context(span))


def end_grpc_span(span: Span, service: str, revision: str, code: grpc.StatusCode) -> None:
    """End a gRPC call's span with its status code."""
    span.set_attribute("modelserve.service", service)
    span.set_attribute("modelserve.revision", revision)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _GRPC_SERVER_ERRORS:
        span.set_status(StatusCode.ERROR, code.name)
    span.end()
