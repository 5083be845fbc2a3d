"""xgboost-iris and lightgbm-iris through the gateway: right answers to curl, Triton's clients
(HTTP here, gRPC in a process of its own: kserve/kserve#3099) and KServe's REST and gRPC
clients, on the manifests' `modelFormat` form (KServe's runtime resolution picks the server)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.support import ROOT, Platform

BOOSTERS = ["xgboost-iris", "lightgbm-iris"]
# A setosa, a versicolor and a virginica from the training data: every booster gets them right.
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]]
CLASSES = [0, 1, 2]


@pytest.mark.parametrize("service", BOOSTERS)
def test_curl_v1_rows_and_named_columns(platform: Platform, service: str) -> None:
    url = f"{platform.url}/v1/models/{service}:predict"
    rows = subprocess.run(["curl", "-sS", "--max-time", "30", url, "-d",
                           json.dumps({"instances": ROWS})],
                          capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(rows.stdout) == {"predictions": CLASSES}
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    columns = {"inputs": {n: [r[i] for r in ROWS] for i, n in enumerate(names)},
               "parameters": {"method": "predict_proba"}}
    proba = subprocess.run(["curl", "-sS", "--max-time", "30", url, "-d", json.dumps(columns)],
                           capture_output=True, text=True, timeout=60, check=True)
    probabilities = np.array(json.loads(proba.stdout)["predictions"])
    assert probabilities.shape == (3, 3) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert probabilities.argmax(axis=1).tolist() == CLASSES


@pytest.mark.parametrize("service", BOOSTERS)
def test_tritonclient_http_gets_classes_and_probabilities(platform: Platform, service: str) -> None:
    client = triton_http.InferenceServerClient(platform.url.removeprefix("http://"))
    try:
        tensor = triton_http.InferInput("input-0", [3, 4], "FP64")
        tensor.set_data_from_numpy(np.array(ROWS), binary_data=True)
        outputs = [triton_http.InferRequestedOutput(n, binary_data=True)
                   for n in ("predict", "predict_proba")]
        result = client.infer(service, [tensor], outputs=outputs)
        assert result.as_numpy("predict").tolist() == CLASSES
        assert np.allclose(result.as_numpy("predict_proba").sum(axis=1), 1.0)
    finally:
        client.close()


_GRPC = """
import json, sys
import numpy as np
import tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
tensor = g.InferInput("input-0", [3, 4], "FP32")
tensor.set_data_from_numpy(np.array(json.loads(sys.argv[3]), dtype=np.float32))
print(json.dumps(client.infer(sys.argv[2], [tensor]).as_numpy("predict").tolist()))
"""


@pytest.mark.parametrize("service", BOOSTERS)
def test_tritonclient_grpc_gets_classes(platform: Platform, service: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _GRPC, platform.grpc_target, service, json.dumps(ROWS)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout) == CLASSES


@pytest.mark.parametrize("service", BOOSTERS)
def test_kserve_clients_get_classes(platform: Platform, service: str) -> None:
    def request() -> InferRequest:
        tensor = InferInput("input-0", [3, 4], "FP64")
        tensor.set_data_from_numpy(np.array(ROWS), binary_data=False)
        return InferRequest(service, [tensor])

    async def calls() -> tuple[object, object, object]:
        v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
        grpc_client = InferenceGRPCClient(platform.grpc_target)
        try:
            by_v1 = await v1.infer(platform.url, {"instances": ROWS}, model_name=service)
            by_v2 = await v2.infer(platform.url, request(), model_name=service)
            by_grpc = await grpc_client.infer(request())
            return by_v1, by_v2, by_grpc
        finally:
            await v1.close()
            await v2.close()
            await grpc_client.close()

    by_v1, by_v2, by_grpc = asyncio.run(calls())
    assert by_v1 == {"predictions": CLASSES}
    for answer in (by_v2, by_grpc):
        [output] = answer.outputs  # type: ignore[attr-defined]
        assert output.name == "predict" and output.as_numpy().tolist() == CLASSES
