"""End to end through `modelserve up`: real clients, through the gateway, to real components."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import psutil
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from demos.iris import IRIS_FEATURES
from tests.e2e.conftest import Platform
from tests.support import ROOT

pytestmark = pytest.mark.e2e

ROWS = np.array([[5.0, 3.4, 1.5, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.4, 1.3]])
LABELS = ["setosa", "virginica", "versicolor"]


@pytest.fixture(scope="module")
def expected(iris_dir: Path) -> list[int]:
    return [int(c) for c in joblib.load(iris_dir / "model.joblib").predict(ROWS)]


def test_curl_style_v1_request_answers(platform: Platform, expected: list[int]) -> None:
    # What `curl -d` sends: a form content type with a JSON body.
    response = httpx.post(
        f"{platform.url}/v1/models/sklearn-iris:predict",
        content=json.dumps({"instances": ROWS.tolist()}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}
    assert response.headers["x-modelserve-revision"] == "sklearn-iris-predictor-00001"


def test_iris_classifier_answers_label_names(platform: Platform) -> None:
    records = [dict(zip(IRIS_FEATURES, row, strict=True)) for row in ROWS.tolist()]
    response = httpx.post(
        f"{platform.url}/v1/models/iris-classifier:predict", json={"instances": records}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": LABELS}
    assert response.headers["x-modelserve-revision"].startswith("iris-classifier-transformer")


def test_host_header_routes_like_knative(platform: Platform, expected: list[int]) -> None:
    # The Host header selects the service, as Knative's ingress does.
    response = httpx.post(
        f"{platform.url}/v1/models/sklearn-iris:predict",
        json={"instances": ROWS.tolist()},
        headers={"host": "sklearn-iris.default.example.com"},
    )
    assert response.json() == {"predictions": expected}


def test_tritonclient_http_through_the_gateway(platform: Platform, expected: list[int]) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{platform.port}")
    x = ROWS.astype(np.float32)
    tensor = triton_http.InferInput("input-0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("sklearn-iris", [tensor])
    assert result.as_numpy("predict").tolist() == expected
    assert client.is_model_ready("sklearn-iris")


def test_kserve_clients_through_the_gateway(platform: Platform, expected: list[int]) -> None:
    async def call() -> tuple[list[int], list[int]]:
        def request() -> InferRequest:
            tensor = InferInput("input-0", list(ROWS.shape), "FP64")
            tensor.set_data_from_numpy(ROWS, binary_data=False)
            return InferRequest("sklearn-iris", [tensor])

        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        grpc_client = InferenceGRPCClient(platform.grpc_target)
        try:
            by_rest = await rest.infer(platform.url, request(), model_name="sklearn-iris")
            by_grpc = await grpc_client.infer(request())
        finally:
            await rest.close()
            await grpc_client.close()
        return (by_rest.outputs[0].as_numpy().tolist(), by_grpc.outputs[0].as_numpy().tolist())

    by_rest, by_grpc = asyncio.run(call())
    assert by_rest == expected
    assert by_grpc == expected


TRITON_GRPC = """
import json, sys
import numpy as np
import tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
x = np.array(json.loads(sys.argv[2]), dtype=np.float32)
tensor = g.InferInput("input-0", list(x.shape), "FP32")
tensor.set_data_from_numpy(x)
result = client.infer("sklearn-iris", [tensor])
try:
    client.infer("no-such-model", [tensor])
    missing = None
except g.InferenceServerException as exc:
    missing = exc.status()
print(json.dumps({"predict": result.as_numpy("predict").tolist(), "missing": missing}))
"""


def test_tritonclient_grpc_through_the_gateway(platform: Platform, expected: list[int]) -> None:
    # Own process: tritonclient.grpc and kserve can't share one (kserve/kserve#3099).
    out = subprocess.run(
        [sys.executable, "-c", TRITON_GRPC, platform.grpc_target, json.dumps(ROWS.tolist())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert doc["predict"] == expected
    assert doc["missing"] == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/models/sklearn-iris:predict", b"{not json", 400),
        ("/v1/models/sklearn-iris:predict", b'{"instances": [[1, 2, 3]]}', 400),
        (
            "/v2/models/sklearn-iris/infer",
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]}]}',
            400,
        ),
        ("/v1/models/iris-classifier:predict", b'{"instances": [{"sepal_length": 1}]}', 400),
        ("/v1/models/no-such-model:predict", b'{"instances": [[1, 2, 3, 4]]}', 404),
    ],
    ids=["malformed", "feature-count", "shape-mismatch", "missing-feature", "unknown-model"],
)
def test_client_errors_pass_through_as_4xx(
    platform: Platform, path: str, body: bytes, status: int
) -> None:
    response = httpx.post(platform.url + path, content=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert "x-modelserve-revision" in response.headers


def test_oversized_body_is_413(platform: Platform) -> None:
    body = b'{"instances": [' + b"[1,2,3,4]," * 1_800_000 + b"[1,2,3,4]]}"  # ~18 MiB
    response = httpx.post(f"{platform.url}/v1/models/sklearn-iris:predict", content=body)
    assert response.status_code == 413


def test_metrics_count_requests_by_service_and_code(platform: Platform) -> None:
    httpx.post(f"{platform.url}/v1/models/sklearn-iris:predict", json={"instances": ROWS.tolist()})
    text = httpx.get(f"{platform.url}/metrics").text
    assert "modelserve_gateway_requests_total" in text
    assert 'service="sklearn-iris"' in text
    assert "modelserve_gateway_request_duration_seconds_bucket" in text


def _component(platform: Platform, module: str, model: str) -> psutil.Process:
    for child in psutil.Process(platform.process.pid).children(recursive=True):
        cmdline = " ".join(child.cmdline())
        if f"-m {module}" in cmdline and f"--model_name={model}" in cmdline:
            return child
    raise AssertionError(f"no {module} process for {model}")


def test_killed_component_is_restarted(platform: Platform, expected: list[int]) -> None:
    victim = _component(platform, "servers.sklearn", "sklearn-iris")
    os.kill(victim.pid, signal.SIGKILL)
    url = f"{platform.url}/v1/models/sklearn-iris:predict"
    statuses: set[int] = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        response = httpx.post(url, json={"instances": ROWS.tolist()}, timeout=30)
        statuses.add(response.status_code)
        if response.status_code == 200:
            break
        time.sleep(0.2)
    assert response.status_code == 200, platform.log.read_text()[-3000:]
    assert response.json() == {"predictions": expected}
    assert statuses <= {200, 503}, statuses  # down means 503, never 500
    assert _component(platform, "servers.sklearn", "sklearn-iris").pid != victim.pid


def test_iris_classifier_over_grpc_through_the_gateway(platform: Platform) -> None:
    async def call() -> list[str]:
        inputs = []
        for i, name in enumerate(IRIS_FEATURES):
            tensor = InferInput(name, [len(ROWS)], "FP64")
            tensor.set_data_from_numpy(ROWS[:, i].copy())
            inputs.append(tensor)
        client = InferenceGRPCClient(platform.grpc_target)
        try:
            result = await client.infer(InferRequest("iris-classifier", inputs))
        finally:
            await client.close()
        return [v.decode() for v in result.outputs[0].as_numpy().tolist()]

    assert asyncio.run(call()) == LABELS


def test_services_report_each_service_like_an_inference_service_status(
    platform: Platform,
) -> None:
    with platform.admin() as admin:
        doc = admin.get("/v1/services").json()
    by_name = {s["metadata"]["name"]: s["status"] for s in doc["services"]}
    assert {"sklearn-iris", "iris-classifier", "tf-digits", "triton-digits",
            "digits-classifier"} <= set(by_name)
    iris = by_name["sklearn-iris"]
    assert iris["url"] == "http://sklearn-iris.default.example.com"
    assert iris["components"]["predictor"]["latestReadyRevision"] == "sklearn-iris-predictor-00001"
    assert iris["components"]["predictor"]["traffic"] == [
        {"revisionName": "sklearn-iris-predictor-00001", "percent": 100, "latestRevision": True,
         "tag": "latest"}
    ]
    assert iris["components"]["predictor"]["latestRolledoutRevision"] == (
        "sklearn-iris-predictor-00001"
    )
    # As KServe writes it: every component of the spec, the one taking the traffic first.
    components = by_name["iris-classifier"]["components"]
    assert list(components) == ["transformer", "predictor"]
    assert components["transformer"]["latestReadyRevision"] == "iris-classifier-transformer-00001"
    assert components["predictor"]["latestReadyRevision"] == "iris-classifier-predictor-00001"
    assert all(s["conditions"][0]["status"] == "True" for s in by_name.values())
    # Only the control plane serves them, and only with its token.
    assert httpx.get(f"{platform.url}/v1/services").status_code == 404
    assert httpx.get(f"{platform.admin_url}/v1/services").status_code == 401
