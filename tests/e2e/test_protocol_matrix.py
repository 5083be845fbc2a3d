"""The protocol matrix: every demo service through the gateway, with Triton's and KServe's own
clients, each call answered as Triton's own server would (or with the documented 4xx).

tritonclient.grpc runs in a process of its own (it cannot share one with kserve:
kserve/kserve#3099); tritonclient.http and KServe's clients run here. perf_analyzer's cells
are tests/e2e/test_perf_analyzer.py, malformed bodies tests/e2e/test_malformed_requests.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests.support import ROOT, Platform

SERVICES = ["sklearn-iris", "iris-classifier", "digits-classifier", "tf-digits", "triton-digits",
            "xgboost-iris", "lightgbm-iris"]
EXTENSIONS = {"binary_tensor_data", "parameters", "model_configuration", "statistics",
              "model_repository"}


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.eye(8) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def valid_inputs(service: str) -> dict[str, tuple[str, Any]]:
    """One valid request's inputs for `service`: name -> (v2 datatype, array)."""
    if service in ("sklearn-iris", "xgboost-iris", "lightgbm-iris"):
        return {"input-0": ("FP64", np.array([[5.1, 3.5, 1.4, 0.2]]))}
    if service == "iris-classifier":
        row = dict(zip(("sepal_length", "sepal_width", "petal_length", "petal_width"),
                       (5.1, 3.5, 1.4, 0.2), strict=True))
        return {name: ("FP64", np.array([value])) for name, value in row.items()}
    if service == "digits-classifier":
        return {"image": ("BYTES", np.array([_png()], dtype=np.object_))}
    return {"images": ("FP32", np.full((1, 8, 8), 8.0, dtype=np.float32))}


def _http_inputs(service: str) -> list[triton_http.InferInput]:
    tensors = []
    for name, (datatype, array) in valid_inputs(service).items():
        tensor = triton_http.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        tensors.append(tensor)
    return tensors


@pytest.mark.parametrize("service", SERVICES)
def test_tritonclient_http(platform: Platform, service: str) -> None:
    client = triton_http.InferenceServerClient(platform.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert EXTENSIONS <= set(client.get_server_metadata()["extensions"])
        metadata = client.get_model_metadata(service)
        versions = metadata["versions"]
        assert metadata["name"] == service and versions
        assert client.is_model_ready(service) and client.is_model_ready(service, versions[0])
        config = client.get_model_config(service)
        assert config["name"] == service and {i["name"] for i in config["input"]} == {
            i["name"] for i in metadata["inputs"]}
        before = client.get_inference_statistics(service)["model_stats"]
        names = [o["name"] for o in metadata["outputs"]]
        requested = [triton_http.InferRequestedOutput(n, binary_data=True) for n in names]
        result = client.infer(service, _http_inputs(service), outputs=requested)
        for name in names:  # each output the metadata lists, when asked for
            assert result.as_numpy(name) is not None, name
        after = client.get_inference_statistics(service)["model_stats"]
        assert sum(s["inference_stats"]["success"]["count"] for s in after) > sum(
            s["inference_stats"]["success"]["count"] for s in before)
        index = {e["name"]: e["state"] for e in client.get_model_repository_index()}
        assert index[service] == "READY"
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata(service, model_version="99")
        assert unknown.value.status() in ("400", "404")  # Triton says 400 for its versions
        with pytest.raises(InferenceServerException) as refused:
            client.load_model(service)
        assert refused.value.status() == "403" and "control plane" in str(refused.value)
    finally:
        client.close()


_GRPC = """
import json, queue, sys
import httpx
import numpy as np
import tritonclient.grpc as g
target, service, doc = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = g.InferenceServerClient(target)
DTYPES = {"FP64": np.float64, "FP32": np.float32}
def inputs():
    tensors = []
    for name, (datatype, values) in doc.items():
        if datatype == "BYTES":
            array = np.array([bytes.fromhex(v) for v in values], dtype=np.object_)
        else:
            array = np.array(values, dtype=DTYPES[datatype])
        tensor = g.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors
out = {}
out["live"] = client.is_server_live() and client.is_server_ready()
out["extensions"] = list(client.get_server_metadata(as_json=True).get("extensions", []))
metadata = client.get_model_metadata(service, as_json=True)
out["versions"] = metadata.get("versions", [])
out["ready"] = client.is_model_ready(service, out["versions"][0])
out["config"] = client.get_model_config(service, as_json=True)["config"]["name"]
answer = client.infer(service, inputs()).get_response(as_json=True)
out["infer"] = [o["name"] for o in answer["outputs"]]
stats = client.get_inference_statistics(service, as_json=True)["model_stats"]
out["successes"] = sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats)
index = client.get_model_repository_index(as_json=True)["models"]
out["index"] = {m["name"]: m.get("state", "") for m in index}
answers = queue.Queue()
client.start_stream(callback=lambda result, error: answers.put(error is None))
for _ in range(3):
    client.async_stream_infer(service, inputs())
client.stop_stream()
out["stream"] = [answers.get() for _ in range(answers.qsize())]
try:
    client.get_model_metadata(service, model_version="99")
except g.InferenceServerException as exc:
    out["unknown_version"] = exc.status()
print(json.dumps(out))
"""


def _wire(service: str) -> dict[str, tuple[str, Any]]:
    doc: dict[str, tuple[str, Any]] = {}
    for name, (datatype, array) in valid_inputs(service).items():
        values = [v.hex() for v in array] if datatype == "BYTES" else array.tolist()
        doc[name] = (datatype, values)
    return doc


@pytest.mark.parametrize("service", SERVICES)
def test_tritonclient_grpc(platform: Platform, service: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _GRPC, platform.grpc_target, service, json.dumps(_wire(service))],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = json.loads(completed.stdout)
    assert out["live"] and EXTENSIONS <= set(out["extensions"])
    assert out["versions"] and out["ready"] and out["config"] == service
    assert out["infer"] and out["successes"] > 0
    assert out["index"][service] == "READY"
    assert out["stream"] == [True, True, True]
    assert out["unknown_version"] in ("StatusCode.NOT_FOUND", "StatusCode.INVALID_ARGUMENT",
                                      "StatusCode.UNAVAILABLE")


def _kserve_request(service: str) -> InferRequest:
    tensors = []
    for name, (datatype, array) in valid_inputs(service).items():
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        tensors.append(tensor)
    return InferRequest(service, tensors)


@pytest.mark.parametrize("service", SERVICES)
def test_kserve_clients(platform: Platform, service: str) -> None:
    async def calls() -> tuple[bool, Any, Any]:
        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        grpc_client = InferenceGRPCClient(platform.grpc_target)
        try:
            live = bool(await rest.is_server_live(platform.url))
            by_rest = await rest.infer(platform.url, _kserve_request(service), model_name=service)
            by_grpc = await grpc_client.infer(_kserve_request(service))
            return live, by_rest, by_grpc
        finally:
            await rest.close()
            await grpc_client.close()

    live, by_rest, by_grpc = asyncio.run(calls())
    assert live
    assert {o.name for o in by_rest.outputs} == {o.name for o in by_grpc.outputs} != set()


def test_kserve_v1_liveness_and_models(platform: Platform) -> None:
    async def calls() -> bool:
        client = InferenceRESTClient(RESTConfig(protocol="v1"))
        try:
            return bool(await client.is_server_live(platform.url))
        finally:
            await client.close()

    assert asyncio.run(calls())
    models = httpx.get(f"{platform.url}/v1/models", timeout=30)
    assert models.status_code == 200 and set(SERVICES) <= set(models.json()["models"])
