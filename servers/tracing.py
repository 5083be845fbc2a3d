"""The spans of a predictor or transformer: each hook is a no-op while traces are off.

What a traced request gets here (`servers/telemetry.py` turns traces on):
- **A SERVER span per inference request**, continuing the caller's W3C `traceparent` (the
  gateway's span, or the transformer's call): over REST by `TracingMiddleware`, an ASGI
  middleware on the inference routes only (health and metrics probes make no spans, as in
  kserve/kserve#6198), over gRPC by `GrpcTracingInterceptor` on `ModelInfer`. Named as
  OpenTelemetry's HTTP and RPC conventions name server spans (`POST /v2/models/{name}/infer`,
  `inference.GRPCInferenceService/ModelInfer`), with the status code and `x-request-id`.
- **`preprocess`, `predict`, `postprocess`** child spans: KServe's `Model.__call__` calls the
  three methods; `instrument_model` wraps them on the model instance, once, in the serving
  process (after the `--workers N` workers were spawned from a pickle of the model).
- **The transformer's call to its predictor**: a CLIENT span whose context goes out as
  `traceparent` (REST header or gRPC metadata), so the predictor's server span is its child.
- **The batch a request joined** (`servers/batching.py`): a `batch` span from the request's
  arrival in the queue to its answer, with the size of the merged call.

A request the gateway did not sample (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`) gets
its non-recording server span and nothing more: the child spans would be dropped by the
parent-based sampler anyway, so they are not made (each costs the SDK's span machinery), and
the call to the predictor carries the unsampled `traceparent` on, so the predictor drops its
spans too.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from servers.http_client import Headers, HttpClient, UpstreamResponse
from servers.telemetry import (
    REQUEST_ID,
    TRACING,
    configure_tracing,
    extract_context,
    inject_context,
)

__all__ = [
    "SERVER_SERVICE_NAME",
    "GrpcTracingInterceptor",
    "TracingMiddleware",
    "grpc_interceptors",
    "inference_route",
    "install_tracing",
    "instrument_model",
    "start_batch_span",
    "traced_grpc_client",
    "traced_predictor_request",
]

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_TRACE_KEYS = frozenset({b"traceparent", b"tracestate"})
_TRACED_METHODS = ("preprocess", "predict", "postprocess")
_INSTRUMENTED = "_modelserve_traced"
# A component's `service.name` when nothing names it (the platform sets OTEL_SERVICE_NAME).
SERVER_SERVICE_NAME = "modelserve-server"


def inference_route(method: str, path: str) -> tuple[str, str] | None:
    """(route template, model name) of a v1/v2 inference request, None for any other."""
    if method != "POST":
        return None
    if path.startswith("/v1/models/") and path.endswith((":predict", ":explain")):
        return f"/v1/models/{{name}}{path[-8:]}", path[11:-8]
    parts = path.split("/")
    if len(parts) in (5, 7) and parts[1:3] == ["v2", "models"] and parts[-1] == "infer":
        versioned = "/versions/{version}" if len(parts) == 7 else ""
        return f"/v2/models/{{name}}{versioned}/infer", parts[3]
    return None


def install_tracing(app: Any) -> None:
    """Trace `app`'s inference requests when traces are on (configured here if this process
    has not yet been: a `--workers N` worker), as its outermost middleware."""
    if configure_tracing(SERVER_SERVICE_NAME) is not None:
        app.add_middleware(TracingMiddleware)


class TracingMiddleware:
    """A SERVER span around each REST inference request (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        tracer = TRACING.tracer
        found = None
        if tracer is not None and scope["type"] == "http":
            found = inference_route(scope["method"], scope["path"])
        if found is None or tracer is None:
            await self.app(scope, receive, send)
            return
        route, model = found
        carried = [(k.decode(), v.decode("latin-1")) for k, v in scope["headers"]
                   if k in _TRACE_KEYS]
        request_id = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        status = 500  # stays so when the app raises before answering

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracer.start_as_current_span(
            f"POST {route}",
            context=extract_context(carried) if carried else None,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "POST",
                "http.route": route,
                "url.path": scope["path"],
                "modelserve.model": model,
                "modelserve.request_id": request_id.decode("latin-1"),
            },
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)


class GrpcTracingInterceptor(aio.ServerInterceptor):
    """A SERVER span around each v2 `ModelInfer` call (other calls pass untouched)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method != _INFER_METHOD:
            return handler
        metadata = tuple(handler_call_details.invocation_metadata or ())
        behaviour = handler.unary_unary

        async def traced(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            tracer = TRACING.tracer
            if tracer is None:
                return await behaviour(request, context)
            carried = [(k, v) for k, v in metadata if isinstance(v, str)]
            request_id = next((v for k, v in carried if k == REQUEST_ID), "")
            with tracer.start_as_current_span(
                "inference.GRPCInferenceService/ModelInfer",
                context=extract_context(carried),
                kind=SpanKind.SERVER,
                attributes={
                    "rpc.system": "grpc",
                    "rpc.service": "inference.GRPCInferenceService",
                    "rpc.method": "ModelInfer",
                    "modelserve.model": getattr(request, "model_name", ""),
                    "modelserve.request_id": request_id,
                },
                record_exception=False,  # an abort is the answer, not a crash
                set_status_on_exception=False,
            ) as span:
                try:
                    return await behaviour(request, context)
                finally:
                    code = context.code() or grpc.StatusCode.OK
                    if not isinstance(code, grpc.StatusCode):  # the abort gave an int
                        code = next((c for c in grpc.StatusCode if c.value[0] == code),
                                    grpc.StatusCode.UNKNOWN)
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code not in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                                    grpc.StatusCode.NOT_FOUND):
                        span.set_status(StatusCode.ERROR, code.name)

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def grpc_interceptors() -> tuple[aio.ServerInterceptor, ...]:
    """The gRPC server's tracing interceptor, or none while traces are off."""
    return (GrpcTracingInterceptor(),) if TRACING.tracer is not None else ()


def instrument_model(model: Any) -> None:
    """Give `model`'s preprocess, predict and postprocess a child span each (once; the
    wrappers are instance attributes, which `ServedModel` leaves out of its pickle)."""
    tracer = TRACING.tracer
    if tracer is None or model.__dict__.get(_INSTRUMENTED):
        return
    for name in _TRACED_METHODS:
        setattr(model, name, _in_span(tracer, name, getattr(model, name)))
    model.__dict__[_INSTRUMENTED] = True


def _recording() -> bool:
    """Whether the request being served is sampled (its current span records)."""
    return trace.get_current_span().is_recording()


def _in_span(tracer: Tracer, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` run in a span `name` when the request is sampled, a coroutine function if it
    is one: KServe awaits the methods that are coroutine functions and calls the others."""
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            if not _recording():
                return await method(*args, **kwargs)
            with tracer.start_as_current_span(name):
                return await method(*args, **kwargs)

        return traced_async

    @functools.wraps(method)
    def traced(*args: Any, **kwargs: Any) -> Any:
        if not _recording():
            return method(*args, **kwargs)
        with tracer.start_as_current_span(name):
            return method(*args, **kwargs)

    return traced


def instrumented_attributes() -> tuple[str, ...]:
    """The instance attributes `instrument_model` adds (left out of a model's pickle)."""
    return (*_TRACED_METHODS, _INSTRUMENTED)


def start_batch_span(rows: int) -> Span | None:
    """The `batch` span of a request of `rows` rows joining a batcher's queue (a child of
    the current span), None while traces are off; the batcher adds what it merged."""
    tracer = TRACING.tracer
    if tracer is None or not _recording():
        return None
    return tracer.start_span("batch", attributes={"modelserve.batch.request_rows": rows})


async def traced_predictor_request(
    client: HttpClient, base_url: str, target: bytes, headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> UpstreamResponse:
    """A transformer's v2 REST call to its predictor, in a CLIENT span it names as parent."""
    tracer = TRACING.tracer
    assert tracer is not None, "traces are off"
    if not _recording():  # unsampled: the decision travels on, no span is made
        carried = inject_context(trace.get_current_span())
        sent_on: Headers = [*headers, *((k.encode(), v.encode()) for k, v in carried)]
        return await client.request(base_url, "POST", target, sent_on, body)
    route = "/v2/models/{name}/infer"
    with tracer.start_as_current_span(
        f"POST {route}",
        kind=SpanKind.CLIENT,
        attributes={"http.request.method": "POST", "url.full": base_url + target.decode(),
                    "http.route": route},
    ) as span:
        sent: Headers = [*headers, *((k.encode(), v.encode()) for k, v in inject_context(span))]
        answer = await client.request(base_url, "POST", target, sent, body)
        span.set_attribute("http.response.status_code", answer.status)
        if answer.status >= 400:
            span.set_status(StatusCode.ERROR)
        return answer


def traced_grpc_client(client: Any) -> Any:
    """kserve's `InferenceGRPCClient` whose `infer` runs in a CLIENT span it names as parent
    (gRPC metadata `traceparent`); the client itself while traces are off."""
    if TRACING.tracer is None:
        return client
    infer = client.infer

    async def traced_infer(*args: Any, headers: Any = None, **kwargs: Any) -> Any:
        tracer = TRACING.tracer
        if tracer is None:
            return await infer(*args, headers=headers, **kwargs)
        if not _recording():  # unsampled: the decision travels on, no span is made
            carried = inject_context(trace.get_current_span())
            return await infer(*args, headers=(*(headers or ()), *carried), **kwargs)
        with tracer.start_as_current_span(
            "inference.GRPCInferenceService/ModelInfer",
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService",
                        "rpc.method": "ModelInfer"},
        ) as span:
            metadata = (*(headers or ()), *inject_context(span))
            return await infer(*args, headers=metadata, **kwargs)

    client.infer = traced_infer
    return client
