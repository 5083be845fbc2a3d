"""servers/telemetry.py: off unless the standard OTEL_* variables ask, then spans reach a real
OTLP/HTTP receiver; W3C trace context in and out."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
from opentelemetry.trace import SpanKind

from servers.telemetry import (
    TRACING,
    TelemetryError,
    configure_tracing,
    extract_context,
    inject_context,
    shutdown_tracing,
    tracing_requested,
)
from tests.otlp_receiver import OtlpReceiver

_OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_BSP_SCHEDULE_DELAY",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No OTEL_* of the outer environment; whatever a test configures is shut down after, and
    the variables are as they were: `configure_tracing` writes OTEL_SERVICE_NAME itself (for
    the workers it spawns), which would name every platform later tests start."""
    saved = {name: os.environ.get(name) for name in _OTEL_VARS}
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    shutdown_tracing()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_traces_follow_the_standard_variables(env: dict[str, str], on: bool) -> None:
    assert tracing_requested(env) is on


def test_an_exporter_we_do_not_ship_fails_loudly() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "console"}
    with pytest.raises(TelemetryError, match="only `otlp`"):
        tracing_requested(env)


def test_off_by_default_makes_no_tracer(clean_env: pytest.MonkeyPatch) -> None:
    assert configure_tracing("svc") is None
    assert TRACING.tracer is None


@pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None,
    reason="the gRPC exporter is installed here",
)
def test_grpc_protocol_without_its_exporter_says_what_to_install(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(TelemetryError, match="opentelemetry-exporter-otlp-proto-grpc"):
        configure_tracing("svc")
    assert TRACING.tracer is None


def test_unknown_protocol_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(TelemetryError, match="not supported"):
        configure_tracing("svc")


def test_spans_reach_an_otlp_http_receiver(
    clean_env: pytest.MonkeyPatch, otlp: OtlpReceiver
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    clean_env.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=default,team=ml")
    tracer = configure_tracing("default-name")
    assert tracer is not None and configure_tracing("other") is tracer  # once per process
    with tracer.start_as_current_span("outer", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("inner"):
            pass
    shutdown_tracing()  # flushes the batch processor
    spans = otlp.wait_for(lambda got: len(got) == 2)
    inner, outer = sorted(spans, key=lambda s: s.name)
    assert (outer.service, outer.kind, outer.parent_span_id) == ("default-name", "SERVER", "")
    assert inner.parent_span_id == outer.span_id and inner.trace_id == outer.trace_id
    assert otlp.resources[0]["service.namespace"] == "default"
    assert otlp.resources[0]["team"] == "ml"
    assert TRACING.tracer is None


def test_otel_service_name_wins_over_the_default(
    clean_env: pytest.MonkeyPatch, otlp: OtlpReceiver
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{otlp.endpoint}/v1/traces")
    clean_env.setenv("OTEL_SERVICE_NAME", "iris-classifier-predictor")
    tracer = configure_tracing("default-name")
    assert tracer is not None
    tracer.start_span("one").end()
    shutdown_tracing()
    assert otlp.wait_for(bool)[0].service == "iris-classifier-predictor"


def test_trace_context_round_trips_as_w3c_headers(
    clean_env: pytest.MonkeyPatch, otlp: OtlpReceiver
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    tracer = configure_tracing("svc")
    assert tracer is not None
    client = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    parent = extract_context([("traceparent", client), ("tracestate", "vendor=1"),
                              ("x-other", "y")])
    span = tracer.start_span("child", context=parent)
    carried = dict(inject_context(span))
    span.end()
    version, trace_id, span_id, flags = carried["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "01")
    assert span_id == format(span.get_span_context().span_id, "016x")
    assert carried["tracestate"] == "vendor=1"
    assert extract_context([("x-request-id", "1")]) is None
