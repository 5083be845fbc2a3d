"""`python -m servers.triton` in front of the real tritonserver, over gRPC and over HTTP.

Every answer is checked against ONNX Runtime run here on the ONNX file Triton serves; what
Triton refuses comes back with Triton's status and message. A missing `.venv-triton` fails
these tests, saying to run `make install`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferInput, InferRequest
from sklearn.datasets import load_digits

from demos.triton import DIGITS_MODEL
from servers.errors import ModelServeError
from servers.triton.install import TritonInstall
from servers.triton.model import TritonPredictor
from servers.triton.tritonserver import TritonServer
from tests.support import ROOT, ServerProcess, run_server, triton_grpc_infer

NAME = "triton-digits"  # the service name, which is also the model's name on Triton
V1 = f"/v1/models/{NAME}:predict"
V2 = f"/v2/models/{NAME}/infer"


@pytest.fixture(scope="module")
def triton(
    triton_repository: Path, triton_install: TritonInstall, logs: Path
) -> Iterator[TritonServer]:
    with (logs / "tritonserver-predictor.log").open("wb") as log:
        with TritonServer(triton_repository, install=triton_install, log=log) as server:
            yield server


@pytest.fixture(scope="module", params=["grpc", "http"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def predictor(triton: TritonServer, protocol: str, logs: Path) -> Iterator[ServerProcess]:
    target = triton.grpc_target if protocol == "grpc" else triton.http_target
    args = [f"--model_name={NAME}", f"--triton_model_name={DIGITS_MODEL}",
            f"--triton_host={target}", f"--triton_protocol={protocol}"]
    with run_server("servers.triton", args, logs) as server:
        yield server


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_digits().images[:8].astype(np.float32)


@pytest.fixture(scope="module")
def reference(triton: TritonServer, images: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    onnx_file = triton.repository / DIGITS_MODEL / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    probabilities, digit = session.run(["probabilities", "digit"], {"images": images})
    return {"probabilities": probabilities, "digit": digit}


def _close(actual: object, expected: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float32).reshape(expected.shape),
                               expected, rtol=1e-5, atol=1e-6)


def _v2_body(images: np.ndarray, datatype: str = "FP32") -> dict[str, object]:
    return {"inputs": [{"name": "images", "datatype": datatype, "shape": list(images.shape),
                        "data": images.ravel().tolist()}]}


def test_metadata_and_readiness_come_from_triton(predictor: ServerProcess) -> None:
    doc = httpx.get(f"{predictor.http_url}/v2/models/{NAME}", timeout=10).json()
    assert doc["name"] == NAME
    assert doc["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in doc["outputs"]} == {
        "probabilities": ("FP32", [-1, 10]),
        "digit": ("INT64", [-1, 1]),
    }
    ready = httpx.get(f"{predictor.http_url}/v2/models/{NAME}/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_v1_rows_get_one_object_per_instance(
    predictor: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    response = httpx.post(predictor.http_url + V1, json={"instances": images.tolist()},
                          timeout=10)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["digit"] for p in predictions] == reference["digit"].reshape(-1, 1).tolist()
    _close([p["probabilities"] for p in predictions], reference["probabilities"])


def test_v2_json_gets_what_onnxruntime_gets(
    predictor: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    response = httpx.post(predictor.http_url + V2, json=_v2_body(images), timeout=10)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["digit"]["shape"] == [8, 1]
    assert outputs["digit"]["data"] == reference["digit"].tolist()
    _close(outputs["probabilities"]["data"], reference["probabilities"])


def test_v2_binary_with_tritonclient_http(
    predictor: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{predictor.http_port}",
                                               network_timeout=30)
    tensor = triton_http.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=True)
    wanted = [triton_http.InferRequestedOutput("digit", binary_data=True)]
    result = client.infer(NAME, [tensor], outputs=wanted)
    assert result.as_numpy("digit").ravel().tolist() == reference["digit"].tolist()
    assert result.as_numpy("probabilities") is None  # only what was asked for


def test_v2_grpc_with_kserves_client(
    predictor: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    async def infer() -> dict[str, np.ndarray]:
        tensor = InferInput("images", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images, binary_data=True)
        async with InferenceGRPCClient(predictor.grpc_target, timeout=30, retries=0) as client:
            response = await client.infer(InferRequest(NAME, [tensor]))
        return {o.name: o.as_numpy() for o in response.outputs}

    outputs = asyncio.run(infer())
    assert outputs["digit"].ravel().tolist() == reference["digit"].tolist()
    _close(outputs["probabilities"], reference["probabilities"])


def test_v2_grpc_with_tritonclient_grpc(
    predictor: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    answer = triton_grpc_infer(predictor.grpc_target, NAME, {"images": ("FP32", images)})
    outputs = answer["outputs"]
    assert isinstance(outputs, dict), answer
    assert np.array(outputs["digit"]).ravel().tolist() == reference["digit"].tolist()
    _close(outputs["probabilities"], reference["probabilities"])


def test_concurrent_requests_each_get_their_own_rows(
    predictor: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    async def one(client: httpx.AsyncClient, index: int) -> list[int]:
        response = await client.post(V2, json=_v2_body(images[index : index + 1]))
        assert response.status_code == 200, response.text
        (digit,) = [o for o in response.json()["outputs"] if o["name"] == "digit"]
        return list(digit["data"])

    async def many() -> list[list[int]]:
        async with httpx.AsyncClient(base_url=predictor.http_url, timeout=30) as client:
            return await asyncio.gather(*(one(client, i % 8) for i in range(32)))

    answers = asyncio.run(many())
    assert answers == [[int(reference["digit"][i % 8])] for i in range(32)]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": [{"name": "images", "datatype": "FP64", "shape": [1, 8, 8],
                      "data": [0.0] * 64}]}, "expects 'FP32'"),
        ({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 7],
                      "data": [0.0] * 56}]}, "unexpected shape for input 'images'"),
        ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 8, 8],
                      "data": [0.0] * 64}]}, "unexpected inference input 'pixels'"),
        ({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8],
                      "data": [0.0] * 64}], "outputs": [{"name": "nope"}]},
         "unexpected inference output 'nope'"),
        ({"inputs": [{"name": "images", "datatype": "FP32", "shape": [65, 8, 8],
                      "data": [0.0] * 65 * 64}]}, "batch-size must be <= 64"),
    ],
    ids=["datatype", "shape", "input-name", "output-name", "batch-size"],
)
def test_what_triton_refuses_is_a_400_with_its_message(
    predictor: ServerProcess, body: dict[str, object], fragment: str
) -> None:
    response = httpx.post(predictor.http_url + V2, json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]


def test_what_triton_refuses_over_grpc_is_invalid_argument(predictor: ServerProcess) -> None:
    async def infer() -> None:
        tensor = InferInput("images", [1, 8, 8], "FP64")
        tensor.set_data_from_numpy(np.zeros((1, 8, 8)), binary_data=True)
        async with InferenceGRPCClient(predictor.grpc_target, timeout=30, retries=0) as client:
            await client.infer(InferRequest(NAME, [tensor]))

    with pytest.raises(grpc.RpcError) as failure:
        asyncio.run(infer())
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "expects 'FP32'" in failure.value.details()  # type: ignore[attr-defined]


def test_bad_v1_rows_are_a_400_before_triton(predictor: ServerProcess) -> None:
    for body in ({"instances": [[[0.0] * 8] * 8, [[0.0] * 7]]}, {"instances": [["a"] * 8]},
                 {"instances": []}, {"rows": []}):
        response = httpx.post(predictor.http_url + V1, json=body, timeout=10)
        assert response.status_code == 400, (body, response.text)


def test_versions_are_tritons_and_an_unknown_one_is_a_404(
    triton: TritonServer, predictor: ServerProcess
) -> None:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    own = httpx.get(f"http://{triton.http_target}/v2/models/{DIGITS_MODEL}", timeout=10).json()
    doc = httpx.get(f"{predictor.http_url}/v2/models/{NAME}", timeout=10).json()
    assert doc["versions"] == own["versions"] and doc["versions"]
    known = doc["versions"][0]
    ready = httpx.get(f"{predictor.http_url}/v2/models/{NAME}/versions/{known}/ready", timeout=10)
    assert ready.json() == {"name": NAME, "ready": True}
    start = predictor.log.stat().st_size
    expected = f"model '{NAME}' has no version '99'; it serves {doc['versions']}"
    answer = httpx.get(f"{predictor.http_url}/v2/models/{NAME}/versions/99", timeout=10)
    assert answer.status_code == 404 and answer.json() == {"error": expected}
    with grpc.insecure_channel(predictor.grpc_target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ModelReady(pb.ModelReadyRequest(name=NAME, version=known)).ready
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelReady(pb.ModelReadyRequest(name=NAME, version="99"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == expected
    assert "Traceback" not in predictor.log.read_bytes()[start:].decode(errors="replace")


def test_a_model_our_server_does_not_have_is_a_404(predictor: ServerProcess) -> None:
    response = httpx.post(f"{predictor.http_url}/v2/models/nope/infer",
                          json=_v2_body(np.zeros((1, 8, 8), np.float32)), timeout=10)
    assert response.status_code == 404


def test_a_model_triton_does_not_have_is_a_404(triton: TritonServer, protocol: str) -> None:
    target = triton.grpc_target if protocol == "grpc" else triton.http_target
    model = TritonPredictor("nope", target, protocol=protocol, timeout_s=10)

    async def infer() -> None:
        try:
            await model.infer_v2({"images": np.zeros((1, 8, 8), np.float32)}, {}, [])
        finally:
            await model.client.close()

    with pytest.raises(ModelServeError) as failure:
        asyncio.run(infer())
    assert failure.value.http_status == 404
    assert failure.value.grpc_code == grpc.StatusCode.NOT_FOUND
    assert "unknown model" in failure.value.message


def test_a_predictor_for_a_model_triton_lacks_exits_with_the_reason(triton: TritonServer) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "servers.triton", "--model_name=nope",
         f"--triton_host={triton.grpc_target}", "--triton_startup_timeout_s=1",
         "--http_port=0", "--grpc_port=0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    assert completed.returncode == 1
    assert "did not serve model 'nope' within 1 s" in completed.stderr
