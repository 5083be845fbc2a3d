"""The sklearn predictor served for real, spoken to with real clients (no tritonclient.grpc
here: it cannot share a process with kserve, see test_triton_grpc_client)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.support import ROOT, ServerProcess, run_server

BATCH = np.array([[5.0, 3.4, 1.5, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.4, 1.3]])


@pytest.fixture(scope="module")
def estimator(iris_dir: Path):  # type: ignore[no-untyped-def]
    return joblib.load(iris_dir / "model.joblib")


def test_v1_predict_matches_the_model(sklearn_server: ServerProcess, estimator) -> None:  # type: ignore[no-untyped-def]
    url = f"{sklearn_server.http_url}/v1/models/sklearn-iris:predict"
    response = httpx.post(url, json={"instances": BATCH.tolist()})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": estimator.predict(BATCH).tolist()}


def test_v1_accepts_curl_form_content_type(sklearn_server: ServerProcess, estimator) -> None:  # type: ignore[no-untyped-def]
    # curl -d sends application/x-www-form-urlencoded; stock KServe answers 500 there.
    url = f"{sklearn_server.http_url}/v1/models/sklearn-iris:predict"
    body = json.dumps({"instances": BATCH[:1].tolist()})
    headers = {"content-type": "application/x-www-form-urlencoded"}
    response = httpx.post(url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == estimator.predict(BATCH[:1]).tolist()


def test_v1_columnar_inputs_are_ordered_by_feature_names(
    sklearn_server: ServerProcess,
    estimator,  # type: ignore[no-untyped-def]
) -> None:
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    columns = {name: BATCH[:, i].tolist() for i, name in reversed(list(enumerate(names)))}
    url = f"{sklearn_server.http_url}/v1/models/sklearn-iris:predict"
    response = httpx.post(url, json={"inputs": columns})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == estimator.predict(BATCH).tolist()


def test_v2_json_predict_and_predict_proba(sklearn_server: ServerProcess, estimator) -> None:  # type: ignore[no-untyped-def]
    url = f"{sklearn_server.http_url}/v2/models/sklearn-iris/infer"
    tensor = {
        "name": "x",
        "datatype": "FP64",
        "shape": list(BATCH.shape),
        "data": BATCH.ravel().tolist(),
    }
    body = {
        "id": "req-1",
        "inputs": [tensor],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    response = httpx.post(url, json=body)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["id"] == "req-1"
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert outputs["predict"]["data"] == estimator.predict(BATCH).tolist()
    proba = np.array(outputs["predict_proba"]["data"]).reshape(outputs["predict_proba"]["shape"])
    np.testing.assert_allclose(proba, estimator.predict_proba(BATCH))


def test_v2_method_parameter(sklearn_server: ServerProcess, estimator) -> None:  # type: ignore[no-untyped-def]
    url = f"{sklearn_server.http_url}/v2/models/sklearn-iris/infer"
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": BATCH[0].tolist()}
    body = {"inputs": [tensor], "parameters": {"method": "predict_proba"}}
    doc = httpx.post(url, json=body).json()
    assert doc["outputs"][0]["name"] == "predict_proba"
    assert doc["outputs"][0]["shape"] == [1, 3]


def test_tritonclient_http_binary_and_json(sklearn_server: ServerProcess, estimator) -> None:  # type: ignore[no-untyped-def]
    client = triton_http.InferenceServerClient(f"127.0.0.1:{sklearn_server.http_port}")
    assert client.is_server_ready()
    x = BATCH.astype(np.float32)
    for binary in (True, False):
        tensor = triton_http.InferInput("input-0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [
            triton_http.InferRequestedOutput("predict", binary_data=binary),
            triton_http.InferRequestedOutput("predict_proba", binary_data=binary),
        ]
        result = client.infer("sklearn-iris", [tensor], outputs=outputs)
        assert result.get_response()["id"]  # tritonclient sends no id; we generate one
        np.testing.assert_array_equal(result.as_numpy("predict"), estimator.predict(x))
        np.testing.assert_allclose(
            result.as_numpy("predict_proba"), estimator.predict_proba(x), rtol=1e-6
        )
    metadata = client.get_model_metadata("sklearn-iris")
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]


def test_kserve_rest_and_grpc_clients(sklearn_server: ServerProcess, estimator) -> None:  # type: ignore[no-untyped-def]
    async def call() -> tuple[np.ndarray, np.ndarray]:
        def request() -> InferRequest:
            tensor = InferInput("input-0", list(BATCH.shape), "FP64")
            tensor.set_data_from_numpy(BATCH, binary_data=False)
            return InferRequest("sklearn-iris", [tensor])

        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        grpc_client = InferenceGRPCClient(sklearn_server.grpc_target)
        try:
            by_rest = await rest.infer(
                sklearn_server.http_url, request(), model_name="sklearn-iris"
            )
            by_grpc = await grpc_client.infer(request())
        finally:
            await rest.close()
            await grpc_client.close()
        return (
            by_rest.get_output_by_name("predict").as_numpy(),
            by_grpc.get_output_by_name("predict").as_numpy(),
        )

    by_rest, by_grpc = asyncio.run(call())
    expected = estimator.predict(BATCH)
    np.testing.assert_array_equal(by_rest, expected)
    np.testing.assert_array_equal(by_grpc, expected)


TRITON_GRPC_SCRIPT = """
import json, sys
import numpy as np
import tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
x = np.array(json.loads(sys.argv[2]), dtype=np.float32)
tensor = g.InferInput("input-0", list(x.shape), "FP32")
tensor.set_data_from_numpy(x)
result = client.infer("sklearn-iris", [tensor], outputs=[g.InferRequestedOutput("predict"),
                      g.InferRequestedOutput("predict_proba")])
errors = []
for name, bad in (("sklearn-iris", x[:, :3].copy()), ("no-such-model", x)):
    t = g.InferInput("input-0", list(bad.shape), "FP32")
    t.set_data_from_numpy(bad)
    try:
        client.infer(name, [t])
    except g.InferenceServerException as exc:
        errors.append([exc.status(), exc.message()])
print(json.dumps({"predict": result.as_numpy("predict").tolist(),
                  "proba": result.as_numpy("predict_proba").tolist(),
                  "ready": client.is_model_ready("sklearn-iris"), "errors": errors}))
"""


def test_triton_grpc_client(sklearn_server: ServerProcess, estimator) -> None:  # type: ignore[no-untyped-def]
    # tritonclient.grpc and kserve both register the inference.* protos (kserve/kserve#3099):
    # run the Triton client in its own process.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            TRITON_GRPC_SCRIPT,
            sklearn_server.grpc_target,
            json.dumps(BATCH.tolist()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    doc = json.loads(out.stdout)
    # Raw outputs: tritonclient.grpc's as_numpy reads only raw_output_contents.
    assert doc["predict"] == estimator.predict(BATCH).tolist()
    x32 = BATCH.astype(np.float32)
    np.testing.assert_allclose(doc["proba"], estimator.predict_proba(x32), rtol=1e-6)
    assert doc["ready"] is True
    (bad_status, bad_message), (missing_status, _) = doc["errors"]
    assert bad_status == "StatusCode.INVALID_ARGUMENT" and "expects 4" in bad_message
    assert missing_status == "StatusCode.NOT_FOUND"


def test_several_workers_keep_our_routes(iris_dir: Path, logs: Path, estimator) -> None:  # type: ignore[no-untyped-def]
    # KServe's workers import its app afresh; our routes and error mapping must be there too.
    args = ["--model_name=sklearn-iris", f"--model_dir={iris_dir}", "--workers=2"]
    with run_server("servers.sklearn", args, logs) as server:
        url = f"{server.http_url}/v1/models/sklearn-iris:predict"
        for _ in range(4):
            good = httpx.post(url, json={"instances": BATCH.tolist()})
            assert good.json() == {"predictions": estimator.predict(BATCH).tolist()}
            bad = httpx.post(url, content=b'{"instances": [[1, 2, 3]]}',
                             headers={"content-type": "application/x-www-form-urlencoded"})
            assert bad.status_code == 400
            assert "expects 4" in bad.json()["error"]
        # Metrics add up over the workers (stock KServe shows one worker's, kserve#2979):
        # 8 predict calls (4 good, 4 refused inside predict), each made by whichever worker
        # accepted its connection.
        for _ in range(3):
            text = httpx.get(f"{server.http_url}/metrics").text
            count = [line for line in text.splitlines()
                     if line.startswith('request_predict_seconds_count{model_name="sklearn-iris"}')]
            assert count and float(count[0].split()[-1]) == 8.0, text[-2000:]
