"""The gateway's `x-request-id` (kept, or made when missing; sent on and back) and, with traces
on, its server span per proxied request, over REST and gRPC, in front of real upstreams."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from servers.telemetry import configure_tracing, shutdown_tracing
from tests.gateway.conftest import Gateway, LoopThread, Upstream, running_gateway
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


def _is_uuid4(value: str) -> bool:
    return uuid.UUID(value).version == 4


def _infer(
    stub: pb_grpc.GRPCInferenceServiceStub, model: str,
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[pb.ModelInferResponse, dict[str, str]]:
    request = pb.ModelInferRequest(model_name=model, id="r1")
    request.inputs.add(name="x", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x01")
    response, call = stub.ModelInfer.with_call(request, metadata=metadata)
    return response, dict(call.initial_metadata() or ())


@pytest.fixture
def stub(gateway: Gateway) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_rest_request_without_an_id_gets_one_sent_on_and_back(gateway: Gateway) -> None:
    answer = httpx.post(f"{gateway.url}/v2/models/echo/infer", content=b"{}")
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    assert _is_uuid4(request_id)
    assert answer.json()["headers"]["x-request-id"] == request_id  # what the backend got
    again = httpx.post(f"{gateway.url}/v2/models/echo/infer", content=b"{}")
    assert again.headers["x-request-id"] != request_id


@pytest.mark.parametrize("path", ["/v2/models/echo/infer", "/v1/models/echo:predict"])
def test_rest_request_keeps_the_clients_id(gateway: Gateway, path: str) -> None:
    answer = httpx.post(f"{gateway.url}{path}", content=b"{}", headers={"x-request-id": "abc-1"})
    assert answer.headers["x-request-id"] == "abc-1"
    assert answer.json()["headers"]["x-request-id"] == "abc-1"


def test_rest_answers_the_gateway_gives_itself_carry_the_id(gateway: Gateway) -> None:
    answer = httpx.post(f"{gateway.url}/v2/models/nope/infer", content=b"{}",
                        headers={"x-request-id": "lost-1"})
    assert answer.status_code == 404
    assert answer.headers["x-request-id"] == "lost-1"


def test_grpc_call_without_an_id_gets_one_in_initial_metadata(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    response, metadata = _infer(stub, "echo")
    assert _is_uuid4(metadata["x-request-id"])
    assert "x-request-id" in response.parameters["metadata-keys"].string_param.split(",")


def test_grpc_call_keeps_the_clients_id(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    response, metadata = _infer(stub, "echo", (("x-request-id", "g-7"),))
    assert metadata["x-request-id"] == "g-7"
    keys = response.parameters["metadata-keys"].string_param.split(",")
    assert keys.count("x-request-id") == 1  # the client's, not a second one


def test_grpc_refusal_carries_the_id(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        _infer(stub, "nope", (("x-request-id", "g-8"),))
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert dict(failed.value.initial_metadata())["x-request-id"] == "g-8"


@pytest.fixture
def traced_gateway(
    monkeypatch: pytest.MonkeyPatch,
    otlp: OtlpReceiver,
    loop_thread: LoopThread,
    upstreams: tuple[Upstream, Upstream],
) -> Iterator[Gateway]:
    """A gateway of its own, made while traces are on (exporting to `otlp`)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "modelserve-gateway")
    try:
        configure_tracing("modelserve-gateway")
        with running_gateway(loop_thread, upstreams) as gateway:
            yield gateway
    finally:
        shutdown_tracing()


def _server_span(otlp: OtlpReceiver, request_id: str) -> ReceivedSpan:
    def found(spans: list[ReceivedSpan]) -> bool:
        return any(s.attributes.get("modelserve.request_id") == request_id for s in spans)

    spans = otlp.wait_for(found)
    return next(s for s in spans if s.attributes.get("modelserve.request_id") == request_id)


def test_rest_span_continues_the_clients_trace(
    traced_gateway: Gateway, otlp: OtlpReceiver
) -> None:
    headers = {"traceparent": TRACEPARENT, "x-request-id": "t-1"}
    answer = httpx.post(f"{traced_gateway.url}/v2/models/echo/infer", content=b"{}",
                        headers=headers)
    assert answer.status_code == 200
    span = _server_span(otlp, "t-1")
    assert (span.name, span.kind, span.service) == (
        "POST /v2/models/{name}/infer", "SERVER", "modelserve-gateway")
    assert (span.trace_id, span.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert span.attributes["modelserve.service"] == "echo"
    assert span.attributes["modelserve.revision"] == "echo-00001"
    assert span.attributes["modelserve.protocol"] == "v2"
    assert span.attributes["http.response.status_code"] == 200


def test_rest_span_of_an_unknown_model_says_404(
    traced_gateway: Gateway, otlp: OtlpReceiver
) -> None:
    httpx.post(f"{traced_gateway.url}/v1/models/nope:predict", content=b"{}",
               headers={"x-request-id": "t-2"})
    span = _server_span(otlp, "t-2")
    assert span.name == "POST /v1/models/{name}:predict"
    assert span.parent_span_id == ""  # no traceparent from the client: a new trace
    assert (span.attributes["modelserve.service"], span.attributes["modelserve.revision"]) == (
        "unknown", "none")
    assert span.attributes["http.response.status_code"] == 404
    assert span.status_code != 2  # a client's mistake is no server error


def test_grpc_span_sends_its_own_traceparent_on(
    traced_gateway: Gateway, otlp: OtlpReceiver
) -> None:
    with grpc.insecure_channel(traced_gateway.grpc_target) as channel:
        response, _ = _infer(pb_grpc.GRPCInferenceServiceStub(channel), "echo",
                             (("x-request-id", "t-3"), ("traceparent", TRACEPARENT)))
    span = _server_span(otlp, "t-3")
    assert span.name == "inference.GRPCInferenceService/ModelInfer"
    assert (span.trace_id, span.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["modelserve.revision"] == "echo-00001"
    # The backend got one traceparent, the gateway's (its span id is not the client's).
    assert response.parameters["metadata-keys"].string_param.split(",").count("traceparent") == 1
