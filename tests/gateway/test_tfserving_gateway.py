"""TF Serving's PredictionService through the gateway, in front of a real TF server.

The gateway forwards the bytes and routes by `model_spec.name`, read from the wire format:
answers equal the direct server's, with `x-modelserve-revision`, metrics and admission as for
v2 calls, and TF Serving's NOT_FOUND for a model it does not know.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from gateway.dataplane.grpc_wire import read_model_spec
from gateway.dataplane.server import GatewayServer
from gateway.routing import Backend, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from servers.errors import InvalidInput
from tests.gateway.conftest import LoopThread
from tests.support import ROOT, ServerProcess

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

MODEL = "tf-digits"
REVISION = "tf-digits-predictor-00001"
KEY = "tf-gateway-key-0123456789"
Stub = prediction_service_pb2_grpc.PredictionServiceStub


def start_gateway(
    loop_thread: LoopThread, tf_server: ServerProcess, settings: GatewaySettings
) -> GatewayServer:
    table = RoutingTable()
    backend = Backend(REVISION, tf_server.http_url, tf_server.grpc_target)
    table.update(ServiceRoute(MODEL, backends=(backend,)))
    server = GatewayServer(table, settings, http_port=0, grpc_port=0)
    loop_thread.run(server.start())
    return server


@pytest.fixture(scope="module")
def tf_gateway(loop_thread: LoopThread, tf_server: ServerProcess) -> Iterator[GatewayServer]:
    server = start_gateway(loop_thread, tf_server, GatewaySettings())
    yield server
    loop_thread.run(server.stop(grace=1))


@pytest.fixture(scope="module")
def via_gateway(tf_gateway: GatewayServer) -> Iterator[Stub]:
    with grpc.insecure_channel(f"127.0.0.1:{tf_gateway.grpc_port}") as channel:
        yield Stub(channel)


@pytest.fixture(scope="module")
def direct(tf_server: ServerProcess) -> Iterator[Stub]:
    with grpc.insecure_channel(tf_server.grpc_target) as channel:
        yield Stub(channel)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_digits().images[:3].astype(np.float32)


def predict_request(images: np.ndarray, model: str = MODEL) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    return request


def metadata_request(model: str = MODEL) -> Any:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    return request


def example_input(images: np.ndarray) -> Any:
    request = classification_pb2.ClassificationRequest()
    for image in images:
        example = request.input.example_list.examples.add()
        example.features.feature["pixels"].float_list.value.extend(image.ravel().tolist())
    return request.input


def revision_of(call: grpc.Call) -> str | None:
    return dict(call.initial_metadata() or ()).get("x-modelserve-revision")


def requests_total(gateway: GatewayServer, service: str, code: str) -> float:
    return gateway.metrics.count(service=service, protocol="grpc", code=code)


def test_predict_through_the_gateway_equals_the_direct_answer(
    via_gateway: Stub, direct: Stub, tf_gateway: GatewayServer, images: np.ndarray
) -> None:
    before = requests_total(tf_gateway, MODEL, "OK")
    response, call = via_gateway.Predict.with_call(predict_request(images), timeout=30)
    assert response == direct.Predict(predict_request(images), timeout=30)
    assert tf.make_ndarray(response.outputs["digit"]).tolist() == load_digits().target[:3].tolist()
    assert revision_of(call) == REVISION
    assert requests_total(tf_gateway, MODEL, "OK") == before + 1


def test_get_model_metadata_through_the_gateway_equals_the_direct_answer(
    via_gateway: Stub, direct: Stub
) -> None:
    response, call = via_gateway.GetModelMetadata.with_call(metadata_request(), timeout=30)
    assert response == direct.GetModelMetadata(metadata_request(), timeout=30)
    assert response.model_spec.name == MODEL
    assert revision_of(call) == REVISION


def test_classify_regress_and_multi_inference_are_forwarded(
    via_gateway: Stub, direct: Stub, images: np.ndarray
) -> None:
    spec = model_pb2.ModelSpec(name=MODEL, signature_name="classify")
    examples = example_input(images)
    classify = classification_pb2.ClassificationRequest(model_spec=spec, input=examples)
    assert via_gateway.Classify(classify, timeout=30) == direct.Classify(classify, timeout=30)
    spec = model_pb2.ModelSpec(name=MODEL, signature_name="regress")
    regress = regression_pb2.RegressionRequest(model_spec=spec, input=example_input(images))
    assert via_gateway.Regress(regress, timeout=30) == direct.Regress(regress, timeout=30)
    multi = inference_pb2.MultiInferenceRequest(input=example_input(images))
    multi.tasks.add(model_spec=spec, method_name="tensorflow/serving/regress")
    response, call = via_gateway.MultiInference.with_call(multi, timeout=30)
    assert response == direct.MultiInference(multi, timeout=30)
    assert revision_of(call) == REVISION


@pytest.mark.parametrize(
    ("version", "detail"),
    [(None, "Servable not found for request: Latest(nope)"),
     (3, "Servable not found for request: Specific(nope, 3)")],
)
def test_an_unknown_model_is_tf_servings_not_found(
    via_gateway: Stub, tf_gateway: GatewayServer, images: np.ndarray, version: int | None,
    detail: str,
) -> None:
    spec = model_pb2.ModelSpec(name="nope")
    if version is not None:
        spec.version.value = version
    predict = predict_pb2.PredictRequest(model_spec=spec)
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=spec, metadata_field=["signature_def"])
    examples = example_input(images)
    classify = classification_pb2.ClassificationRequest(model_spec=spec, input=examples)
    calls = [(via_gateway.Predict, predict), (via_gateway.GetModelMetadata, metadata),
             (via_gateway.Classify, classify)]
    before = requests_total(tf_gateway, "unknown", "NOT_FOUND")
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as caught:
            method(request, timeout=30)
        assert isinstance(caught.value, grpc.Call)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == detail
        assert revision_of(caught.value) == "none"
    assert requests_total(tf_gateway, "unknown", "NOT_FOUND") == before + len(calls)


def test_backend_errors_pass_through_with_the_revision(
    via_gateway: Stub, images: np.ndarray
) -> None:
    request = predict_request(images)
    request.model_spec.signature_name = "nope"
    with pytest.raises(grpc.RpcError) as caught:
        via_gateway.Predict(request, timeout=30)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'Serving signature key "nope" not found' in (caught.value.details() or "")
    assert revision_of(caught.value) == REVISION


def test_a_request_without_model_spec_is_invalid(via_gateway: Stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        via_gateway.Predict(predict_pb2.PredictRequest(), timeout=30)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Missing ModelSpec"


def test_api_keys_guard_the_tf_serving_calls(
    loop_thread: LoopThread, tf_server: ServerProcess, images: np.ndarray
) -> None:
    gateway = start_gateway(loop_thread, tf_server, GatewaySettings(api_keys=KEY))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = Stub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(predict_request(images), timeout=30)
            assert isinstance(caught.value, grpc.Call)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            metadata = (("authorization", f"Bearer {KEY}"),)
            response = stub.GetModelMetadata(metadata_request(), metadata=metadata, timeout=30)
            assert response.model_spec.name == MODEL
    finally:
        loop_thread.run(gateway.stop(grace=1))


# -- reading model_spec from the wire ------------------------------------------------------

names = st.text(max_size=30)
versions = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(min_size=1, max_size=8))


def model_spec(name: str, version: int | str | None, signature: str) -> Any:
    spec = model_pb2.ModelSpec(name=name, signature_name=signature)
    if isinstance(version, int):
        spec.version.value = version
    elif isinstance(version, str):
        spec.version_label = version
    return spec


def expected(spec: Any) -> tuple[str, int | None]:
    has_version = spec.WhichOneof("version_choice") == "version"
    return spec.name, spec.version.value if has_version else None


@settings(max_examples=200)
@given(name=names, version=versions, signature=st.text(max_size=10),
       kind=st.sampled_from(["predict", "metadata", "classify", "regress"]),
       payload=st.binary(max_size=200))
def test_read_model_spec_agrees_with_protobuf(
    name: str, version: int | str | None, signature: str, kind: str, payload: bytes
) -> None:
    spec = model_spec(name, version, signature)
    if kind == "predict":
        request: Any = predict_pb2.PredictRequest(model_spec=spec, output_filter=["a"])
        request.inputs["x"].tensor_content = payload
    elif kind == "metadata":
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=["signature_def"])
    else:
        kinds = {"classify": classification_pb2.ClassificationRequest,
                 "regress": regression_pb2.RegressionRequest}
        request = kinds[kind](model_spec=spec)
        request.input.example_list.examples.add().features.feature["f"].bytes_list.value.append(
            payload)
    assert read_model_spec(request.SerializeToString()) == expected(spec)


@given(first=st.tuples(names, versions), second=st.tuples(names, versions))
def test_read_model_spec_merges_repeated_fields_as_protobuf_does(
    first: tuple[str, int | str | None], second: tuple[str, int | str | None]
) -> None:
    # Concatenated messages parse as their merge: the reader must route where the backend reads.
    data = b"".join(predict_pb2.PredictRequest(model_spec=model_spec(n, v, "")).SerializeToString()
                    for n, v in (first, second))
    parsed = predict_pb2.PredictRequest.FromString(data)
    assert read_model_spec(data) == expected(parsed.model_spec)


@given(tasks=st.lists(st.tuples(names, versions), min_size=1, max_size=3))
def test_multi_inference_routes_by_the_first_task(
    tasks: list[tuple[str, int | str | None]]
) -> None:
    request = inference_pb2.MultiInferenceRequest()
    for name, version in tasks:
        request.tasks.add(model_spec=model_spec(name, version, "s"), method_name="m")
    data = request.SerializeToString()
    assert read_model_spec(data, first_task=True) == expected(request.tasks[0].model_spec)


def test_read_model_spec_refuses_malformed_requests() -> None:
    with pytest.raises(InvalidInput, match="Missing ModelSpec"):
        read_model_spec(predict_pb2.PredictRequest(output_filter=["x"]).SerializeToString())
    with pytest.raises(InvalidInput, match="Expected at least one task"):
        read_model_spec(b"", first_task=True)
    with pytest.raises(InvalidInput, match="truncated"):
        read_model_spec(b"\x0a\x05\x0a\x10abc")  # the name claims more bytes than model_spec has
    with pytest.raises(InvalidInput, match="not UTF-8"):
        read_model_spec(b"\x0a\x03\x0a\x01\xff")


def test_the_gateway_does_not_import_tensorflow() -> None:
    code = ("import sys, gateway.dataplane.server, gateway.dataplane.grpc_proxy; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tensorflow_serving')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
