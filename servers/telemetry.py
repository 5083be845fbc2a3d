"""Traces: OpenTelemetry's SDK with an OTLP exporter, on only when the standard variables ask.

Every process of the platform (the gateway, each predictor and transformer) calls
`configure_tracing` once at start-up. It builds a `TracerProvider` with a `BatchSpanProcessor`
and an OTLP span exporter only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, `OTEL_SDK_DISABLED` is not `true` and
`OTEL_TRACES_EXPORTER` is not `none` (the SDK environment variables spec,
opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/). Everything else is
read by the SDK itself from the same standard variables: the resource (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`), the sampler (`OTEL_TRACES_SAMPLER`), the batch processor
(`OTEL_BSP_SCHEDULE_DELAY`, ...) and the exporter (headers, timeout, compression). The
protocol is OTLP/HTTP with protobuf bodies by default; `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`
(or `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`) takes the gRPC exporter when it is installed. As in
KServe's own tracing (kserve/kserve#6198), nothing is on unless the operator asks.

Off, the hooks cost one check: `TRACING.tracer is None`. No no-op span is made per request.

Context crosses processes as W3C Trace Context (`traceparent`, `tracestate`: w3.org/TR/
trace-context/) through OpenTelemetry's `TraceContextTextMapPropagator`, whatever
`OTEL_PROPAGATORS` says: the gateway and the components speak exactly that one format.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "REQUEST_ID",
    "TRACING",
    "TelemetryError",
    "configure_tracing",
    "extract_context",
    "inject_context",
    "shutdown_tracing",
    "tracing_requested",
    "without_fastapi_telemetry",
]

REQUEST_ID = "x-request-id"
ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOL_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
SCOPE = "modelserve"  # the instrumentation scope of every span we make
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
_PROPAGATOR = TraceContextTextMapPropagator()


# FastAPI >= 0.165 instruments every request itself once a global tracer provider is set (its
# "native telemetry": a server span, operation spans, metrics and logs per request), which
# doubled our spans and half the SDK's cost per traced request. The platform's spans are its
# own (this module, servers/tracing.py, gateway/dataplane/tracing.py): FastAPI's are off.
_FASTAPI_TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False,
                          "operation_spans": False}


def without_fastapi_telemetry(app: Any) -> None:
    """Turn off FastAPI's own instrumentation of `app` (a FastAPI app built elsewhere, e.g.
    kserve's): its settings dict, which the constructor's `telemetry=` fills; nothing on a
    FastAPI without it."""
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict):
        config.update(_FASTAPI_TELEMETRY_OFF)


class TelemetryError(ValueError):
    """The OTEL_* variables ask for something this process cannot do (fails the start-up)."""


class _Tracing:
    """This process's tracing: the tracer our hooks use, None while traces are off."""

    __slots__ = ("provider", "tracer")

    def __init__(self) -> None:
        self.tracer: Tracer | None = None
        self.provider: Any = None  # the SDK's TracerProvider, for the flush at shutdown


TRACING = _Tracing()


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard variables turn traces on: an OTLP endpoint is set, the SDK is not
    disabled and the traces exporter is not `none`."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if exporters == {"none"}:
        return False
    if not any(env.get(name) for name in ENDPOINT_ENVS):
        return False
    if exporters - {"otlp", ""}:
        raise TelemetryError(
            f"OTEL_TRACES_EXPORTER={env['OTEL_TRACES_EXPORTER']!r}: only `otlp` (or `none`) "
            "is supported"
        )
    return True


def configure_tracing(default_service_name: str) -> Tracer | None:
    """Turn traces on in this process when the standard variables ask (module docstring), once;
    returns the tracer, or None when traces are off. `default_service_name` names the process
    when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` does; it is put in
    `OTEL_SERVICE_NAME` so that processes started from this one (KServe's `--workers N`) name
    themselves the same. Raises TelemetryError for settings it cannot honour."""
    if TRACING.tracer is not None or not tracing_requested():
        return TRACING.tracer
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        os.environ["OTEL_SERVICE_NAME"] = default_service_name
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    # The SDK registers its own flush at exit (shutdown_on_exit); `shutdown_tracing` flushes
    # earlier, where a process has a stop of its own.
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    # Global too, so a user's model code that asks OpenTelemetry for a tracer joins our traces.
    trace.set_tracer_provider(provider)
    TRACING.provider = provider
    TRACING.tracer = provider.get_tracer(SCOPE)
    return TRACING.tracer


def _exporter() -> Any:
    """The OTLP span exporter of the protocol asked for; it reads its own settings (endpoint,
    headers, timeout, ...) from the standard variables."""
    protocol = next((os.environ[n] for n in _PROTOCOL_ENVS if os.environ.get(n)), "http/protobuf")
    protocol = protocol.strip().lower()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError as exc:
            raise TelemetryError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                f"installed ({exc}); the default, http/protobuf, needs nothing more"
            ) from exc
        return GrpcSpanExporter()
    raise TelemetryError(
        f"OTLP protocol {protocol!r} is not supported: use http/protobuf (the default) or grpc"
    )


def shutdown_tracing() -> None:
    """Export what is still buffered and stop (at the process's own stop; idempotent)."""
    provider, TRACING.provider, TRACING.tracer = TRACING.provider, None, None
    if provider is not None:
        provider.shutdown()


def extract_context(pairs: Iterable[tuple[str, str]]) -> Context | None:
    """The remote parent that `traceparent`/`tracestate` among `pairs` name (lower-case keys,
    as HTTP/2 metadata and our header scans give them), None when there is none."""
    carrier = {key: value for key, value in pairs if key in _TRACE_HEADERS}
    if "traceparent" not in carrier:
        return None
    return _PROPAGATOR.extract(carrier)


def inject_context(span: Span) -> list[tuple[str, str]]:
    """`traceparent` (and `tracestate`, when there is one) naming `span` as the parent."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return list(carrier.items())
