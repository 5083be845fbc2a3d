"""Traces end to end: `modelserve up` exporting to a real OTLP/HTTP receiver, one request
through iris-classifier (tabular transformer + sklearn predictor) is one trace, gateway ->
transformer -> predictor, over REST and gRPC, with the transformer's hop to its predictor
over v2 REST (the demo's) and over gRPC (a copy of it on `grpc-v2`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support import ROOT, Platform, run_platform

IRIS = ROOT / "inferenceservices" / "iris-classifier.yaml"
ROW = {"sepal_length": 5.0, "sepal_width": 3.4, "petal_length": 1.5, "petal_width": 0.2}
GRPC_INFER = "inference.GRPCInferenceService/ModelInfer"
REST_INFER = "POST /v2/models/{name}/infer"


def _grpc_hop_copy(directory: Path) -> Path:
    """iris-classifier as `iris-classifier-grpc`, its transformer calling over `grpc-v2`."""
    doc = yaml.safe_load(IRIS.read_text())
    doc["metadata"]["name"] = "iris-classifier-grpc"
    for component in ("transformer", "predictor"):
        container = doc["spec"][component]["containers"][0]
        container["args"] = [
            "--model_name=iris-classifier-grpc" if a.startswith("--model_name")
            else "--predictor_protocol=grpc-v2" if a.startswith("--predictor_protocol")
            else a
            for a in container["args"]
        ]
    path = directory / "iris-classifier-grpc.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def traced(
    models_root: Path, logs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Platform, OtlpReceiver]]:
    """The platform with both services, every process exporting to one receiver."""
    copy = _grpc_hop_copy(tmp_path_factory.mktemp("manifests"))
    with otlp_receiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with run_platform(models_root, logs, files=[IRIS, copy], env=env) as platform:
            yield platform, receiver


def _trace_of(
    receiver: OtlpReceiver, request_id: str, *needed: tuple[str, str]
) -> list[ReceivedSpan]:
    """The spans of the trace whose gateway span has `request_id`, once every `needed`
    (service, span name) has arrived in it too. Each process exports on its own: a server
    span ends after its children, so once a process's server span is in, all of its are."""

    def gateway_span(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
        return next((s for s in spans if s.service == "modelserve-gateway"
                     and s.attributes.get("modelserve.request_id") == request_id), None)

    def complete(spans: list[ReceivedSpan]) -> bool:
        root = gateway_span(spans)
        if root is None:
            return False
        got = {(s.service, s.name) for s in spans if s.trace_id == root.trace_id}
        return set(needed) <= got

    spans = receiver.wait_for(complete, timeout=60)
    root = gateway_span(spans)
    assert root is not None
    return [s for s in spans if s.trace_id == root.trace_id]


def _one(
    spans: list[ReceivedSpan], service: str, name: str, kind: str | None = None
) -> ReceivedSpan:
    found = [s for s in spans
             if (s.service, s.name) == (service, name) and kind in (None, s.kind)]
    assert len(found) == 1, f"{service} {name} {kind}: {found}"
    return found[0]


def _check_chain(
    spans: list[ReceivedSpan], service: str, gateway_name: str, transformer_name: str,
    hop_name: str, predictor_name: str, request_id: str,
) -> None:
    """gateway -> transformer server -> its predict -> its client call -> predictor server ->
    predictor's predict -> the batch the request joined; one trace, the request id on each
    server span."""
    gateway = _one(spans, "modelserve-gateway", gateway_name)
    transformer = _one(spans, f"{service}-transformer", transformer_name, "SERVER")
    t_predict = _one(spans, f"{service}-transformer", "predict")
    hop = _one(spans, f"{service}-transformer", hop_name, "CLIENT")
    predictor = _one(spans, f"{service}-predictor", predictor_name, "SERVER")
    p_predict = _one(spans, f"{service}-predictor", "predict")
    batch = _one(spans, f"{service}-predictor", "batch")
    assert gateway.parent_span_id == "" and gateway.kind == "SERVER"
    assert gateway.attributes["modelserve.service"] == service
    assert gateway.attributes["modelserve.revision"] == f"{service}-transformer-00001"
    assert transformer.parent_span_id == gateway.span_id and transformer.kind == "SERVER"
    for child in ("preprocess", "postprocess"):
        assert _one(spans, f"{service}-transformer", child).parent_span_id == transformer.span_id
    assert t_predict.parent_span_id == transformer.span_id
    assert hop.parent_span_id == t_predict.span_id and hop.kind == "CLIENT"
    assert predictor.parent_span_id == hop.span_id and predictor.kind == "SERVER"
    for phase in ("preprocess", "postprocess"):
        assert _one(spans, f"{service}-predictor", phase).parent_span_id == predictor.span_id
    assert p_predict.parent_span_id == predictor.span_id
    assert batch.parent_span_id == p_predict.span_id
    assert batch.attributes["modelserve.batch.size"] >= 1
    assert batch.attributes["modelserve.batch.requests"] >= 1
    for server in (gateway, transformer, predictor):
        assert server.attributes["modelserve.request_id"] == request_id


def _grpc_infer(platform: Platform, model: str, request_id: str) -> pb.ModelInferResponse:
    request = pb.ModelInferRequest(model_name=model, id="g1")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    tensor.contents.fp64_contents.extend(ROW.values())
    with grpc.insecure_channel(platform.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response, call = stub.ModelInfer.with_call(
            request, metadata=(("x-request-id", request_id),), timeout=30)
    assert dict(call.initial_metadata())["x-request-id"] == request_id
    return response


def test_rest_request_is_one_trace_gateway_to_predictor(
    traced: tuple[Platform, OtlpReceiver],
) -> None:
    platform, receiver = traced
    answer = httpx.post(f"{platform.url}/v1/models/iris-classifier:predict",
                        json={"instances": [ROW]}, timeout=30)
    assert answer.status_code == 200 and answer.json() == {"predictions": ["setosa"]}
    request_id = answer.headers["x-request-id"]  # made by the gateway: the client sent none
    spans = _trace_of(receiver, request_id,
                      ("iris-classifier-transformer", "POST /v1/models/{name}:predict"),
                      ("iris-classifier-predictor", REST_INFER))
    _check_chain(spans, "iris-classifier", "POST /v1/models/{name}:predict",
                 "POST /v1/models/{name}:predict", REST_INFER, REST_INFER, request_id)
    gateway = _one(spans, "modelserve-gateway", "POST /v1/models/{name}:predict")
    assert gateway.attributes["http.response.status_code"] == 200
    assert gateway.attributes["modelserve.protocol"] == "v1"
    # Only our spans: FastAPI's own instrumentation (>= 0.165, on once a tracer provider is
    # set) is off. A second traced request, once in, means each process exported the first's.
    again = httpx.post(f"{platform.url}/v1/models/iris-classifier:predict",
                       json={"instances": [ROW]}, timeout=30)
    _trace_of(receiver, again.headers["x-request-id"],
              ("iris-classifier-transformer", "POST /v1/models/{name}:predict"),
              ("iris-classifier-predictor", REST_INFER))
    first = [s for s in receiver.snapshot() if s.trace_id == gateway.trace_id]
    assert sorted((s.service, s.name) for s in first) == sorted([
        ("modelserve-gateway", "POST /v1/models/{name}:predict"),
        *(("iris-classifier-transformer", name) for name in (
            "POST /v1/models/{name}:predict", "preprocess", "predict", REST_INFER,
            "postprocess")),
        *(("iris-classifier-predictor", name) for name in (
            REST_INFER, "preprocess", "predict", "batch", "postprocess")),
    ])


def test_grpc_request_is_one_trace_gateway_to_predictor(
    traced: tuple[Platform, OtlpReceiver],
) -> None:
    platform, receiver = traced
    _grpc_infer(platform, "iris-classifier", "e2e-grpc-1")
    spans = _trace_of(receiver, "e2e-grpc-1", ("iris-classifier-transformer", GRPC_INFER),
                      ("iris-classifier-predictor", REST_INFER))
    _check_chain(spans, "iris-classifier", GRPC_INFER, GRPC_INFER, REST_INFER, REST_INFER,
                 "e2e-grpc-1")
    gateway = _one(spans, "modelserve-gateway", GRPC_INFER)
    assert gateway.attributes["rpc.grpc.status_code"] == 0


def test_transformer_hop_over_grpc_carries_the_trace(
    traced: tuple[Platform, OtlpReceiver],
) -> None:
    platform, receiver = traced
    _grpc_infer(platform, "iris-classifier-grpc", "e2e-grpc-2")
    spans = _trace_of(receiver, "e2e-grpc-2", ("iris-classifier-grpc-transformer", GRPC_INFER),
                      ("iris-classifier-grpc-predictor", GRPC_INFER))
    _check_chain(spans, "iris-classifier-grpc", GRPC_INFER, GRPC_INFER, GRPC_INFER, GRPC_INFER,
                 "e2e-grpc-2")
    predictor = _one(spans, "iris-classifier-grpc-predictor", GRPC_INFER, "SERVER")
    assert predictor.attributes["rpc.grpc.status_code"] == 0
    assert any(r.get("modelserve.revision") == "iris-classifier-grpc-predictor-00001"
               for r in receiver.resources)


def test_a_client_error_is_traced_as_the_clients(traced: tuple[Platform, OtlpReceiver]) -> None:
    platform, receiver = traced
    answer = httpx.post(f"{platform.url}/v1/models/iris-classifier:predict",
                        json={"instances": [{"sepal_length": 1}]},
                        headers={"x-request-id": "e2e-bad-1"}, timeout=30)
    assert answer.status_code == 400 and answer.headers["x-request-id"] == "e2e-bad-1"
    spans = _trace_of(receiver, "e2e-bad-1",
                      ("iris-classifier-transformer", "POST /v1/models/{name}:predict"))
    transformer = _one(spans, "iris-classifier-transformer", "POST /v1/models/{name}:predict")
    assert transformer.attributes["http.response.status_code"] == 400
    assert transformer.status_code != 2


def test_an_unsampled_request_makes_no_span_anywhere_and_a_sampled_one_still_does(
    traced: tuple[Platform, OtlpReceiver],
) -> None:
    # The client's traceparent says "not sampled" (flags 00): the gateway's parent-based
    # sampler follows it, the transformer makes no child span and passes the decision on, so
    # the predictor records nothing either. The sampled request after it proves the path
    # exports; each process exports in order, so spans of the first would have come first.
    platform, receiver = traced
    unsampled = "5b8efff798038103d269b633813fc60c"
    sampled = "5b8efff798038103d269b633813fc60d"
    url = f"{platform.url}/v1/models/iris-classifier:predict"
    for trace_id, flags, request_id in ((unsampled, "00", "e2e-unsampled"),
                                        (sampled, "01", "e2e-sampled")):
        answer = httpx.post(url, json={"instances": [ROW]}, timeout=30, headers={
            "traceparent": f"00-{trace_id}-eee19b7ec3c1b174-{flags}",
            "x-request-id": request_id,
        })
        assert answer.status_code == 200, answer.text
    spans = _trace_of(receiver, "e2e-sampled",
                      ("iris-classifier-transformer", "POST /v1/models/{name}:predict"),
                      ("iris-classifier-predictor", REST_INFER))
    assert {s.trace_id for s in spans} == {sampled}
    assert [s for s in receiver.snapshot() if s.trace_id == unsampled] == []
