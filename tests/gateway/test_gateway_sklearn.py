"""The gateway in front of a real `python -m servers.sklearn` process, with real clients."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import httpx
import joblib
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from sklearn.base import ClassifierMixin

from gateway.dataplane.server import GatewayServer
from tests.gateway.conftest import SKLEARN_REVISION
from tests.support import ServerProcess

BATCH = np.array([[5.0, 3.4, 1.5, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.4, 1.3]])

# Triton's names of the extensions every service behind the gateway answers.
SERVED_EXTENSIONS = [
    "binary_tensor_data", "parameters", "model_configuration", "statistics", "model_repository",
]


@pytest.fixture(scope="module")
def estimator(iris_dir: Path) -> ClassifierMixin:
    model: ClassifierMixin = joblib.load(iris_dir / "model.joblib")
    return model


def test_v1_predict_with_curl_content_type(
    sklearn_gateway: GatewayServer, estimator: ClassifierMixin
) -> None:
    url = f"http://127.0.0.1:{sklearn_gateway.http_port}/v1/models/sklearn-iris:predict"
    body = json.dumps({"instances": BATCH.tolist()})
    response = httpx.post(url, content=body,
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": estimator.predict(BATCH).tolist()}
    assert response.headers["x-modelserve-revision"] == SKLEARN_REVISION


def test_backend_error_passes_through(sklearn_gateway: GatewayServer) -> None:
    url = f"http://127.0.0.1:{sklearn_gateway.http_port}/v2/models/sklearn-iris/infer"
    response = httpx.post(url, content=b"{not json")
    assert response.status_code == 400
    assert "error" in response.json()
    assert response.headers["x-modelserve-revision"] == SKLEARN_REVISION


def test_tritonclient_http_binary_through_gateway(
    sklearn_gateway: GatewayServer, estimator: ClassifierMixin
) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{sklearn_gateway.http_port}")
    assert client.is_server_ready()
    x = BATCH.astype(np.float32)
    tensor = triton_http.InferInput("input-0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    outputs = [triton_http.InferRequestedOutput("predict", binary_data=True)]
    result = client.infer("sklearn-iris", [tensor], outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("predict"), estimator.predict(x))
    assert client.is_model_ready("sklearn-iris")


def test_grpc_answers_are_the_backends_bytes(
    sklearn_gateway: GatewayServer, sklearn_server: ServerProcess
) -> None:
    request = pb.ModelInferRequest(model_name="sklearn-iris", id="same")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=list(BATCH.shape))
    tensor.contents.fp32_contents.extend(BATCH.ravel().tolist())
    answers = []
    for target in (f"127.0.0.1:{sklearn_gateway.grpc_port}", sklearn_server.grpc_target):
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            answers.append(stub.ModelInfer(request, timeout=10))
    via_gateway, direct = answers
    assert via_gateway == direct
    assert via_gateway.outputs


def test_server_metadata_and_liveness_as_the_clients_ask_for_them(
    sklearn_gateway: GatewayServer,
) -> None:
    # tritonclient.http's get_server_metadata (GET /v2), KServe's v1 is_server_live (GET /),
    # and gRPC ServerMetadata: answered by the gateway itself, with the extensions it serves.
    client = triton_http.InferenceServerClient(f"127.0.0.1:{sklearn_gateway.http_port}")
    assert client.get_server_metadata() == {
        "name": "modelserve-gateway",
        "version": "0.1.0",
        "extensions": SERVED_EXTENSIONS,
    }
    assert client.is_server_live()
    root = httpx.get(f"http://127.0.0.1:{sklearn_gateway.http_port}/")
    assert root.status_code == 200 and root.json() == {"status": "alive"}
    with grpc.insecure_channel(f"127.0.0.1:{sklearn_gateway.grpc_port}") as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ServerMetadata(
            pb.ServerMetadataRequest()
        )
    assert list(reply.extensions) == SERVED_EXTENSIONS


def test_kserve_v1_client_liveness_through_the_gateway(sklearn_gateway: GatewayServer) -> None:
    import asyncio

    from kserve import InferenceRESTClient, RESTConfig

    async def live() -> bool:
        client = InferenceRESTClient(RESTConfig(protocol="v1"))
        try:
            return bool(await client.is_server_live(f"http://127.0.0.1:{sklearn_gateway.http_port}"))
        finally:
            await client.close()

    assert asyncio.run(live())
