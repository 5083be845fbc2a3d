"""triton-digits and digits-classifier through `modelserve up`: the real tritonserver (CPU,
python backend running the ONNX with ONNX Runtime) behind the gateway, checked against ONNX
Runtime run here on the same ONNX file and input."""

from __future__ import annotations

import base64
import io
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.http as triton_http
from PIL import Image
from sklearn.datasets import load_digits

from demos.triton import DIGITS_MODEL, TRITON_REPOSITORY
from tests.e2e.conftest import Platform
from tests.support import triton_grpc_infer

pytestmark = pytest.mark.e2e

DIGITS = load_digits()
IMAGES = DIGITS.images[:12].astype(np.float32)


@pytest.fixture(scope="module")
def onnx_reference(models_root: Path) -> dict[str, np.ndarray]:
    """What ONNX Runtime answers for IMAGES with the ONNX file Triton serves."""
    import onnxruntime as ort

    onnx_file = models_root / TRITON_REPOSITORY / DIGITS_MODEL / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    probabilities, digit = session.run(["probabilities", "digit"], {"images": IMAGES})
    return {"probabilities": probabilities, "digit": digit.reshape(-1)}


def test_tritonclient_http_through_the_gateway_equals_onnxruntime(
    platform: Platform, onnx_reference: dict[str, np.ndarray]
) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{platform.port}")
    assert client.is_model_ready("triton-digits")
    assert client.get_model_metadata("triton-digits")["platform"] == "python"  # Triton's own
    tensor = triton_http.InferInput("images", list(IMAGES.shape), "FP32")
    tensor.set_data_from_numpy(IMAGES, binary_data=True)
    response = client.infer("triton-digits", [tensor])
    np.testing.assert_allclose(response.as_numpy("probabilities"),
                               onnx_reference["probabilities"], rtol=1e-5, atol=1e-7)
    assert response.as_numpy("digit").reshape(-1).tolist() == onnx_reference["digit"].tolist()
    assert onnx_reference["digit"].tolist() == DIGITS.target[:12].tolist()


def test_tritonclient_grpc_through_the_gateway_equals_onnxruntime(
    platform: Platform, onnx_reference: dict[str, np.ndarray]
) -> None:
    result = triton_grpc_infer(platform.grpc_target, "triton-digits",
                               {"images": ("FP32", IMAGES)}, ["probabilities", "digit"])
    outputs = result["outputs"]
    assert isinstance(outputs, dict)
    np.testing.assert_allclose(outputs["probabilities"], onnx_reference["probabilities"],
                               rtol=1e-5, atol=1e-7)
    assert np.reshape(outputs["digit"], -1).tolist() == onnx_reference["digit"].tolist()
    wrong = triton_grpc_infer(platform.grpc_target, "triton-digits",
                              {"images": ("FP32", IMAGES.reshape(12, 64))})
    assert wrong["error"][0] == "StatusCode.INVALID_ARGUMENT"  # type: ignore[index]


def png(index: int) -> bytes:
    pixels = (DIGITS.images[index] * 255 / 16).round().astype(np.uint8)
    image = Image.fromarray(pixels, "L").resize((32, 32), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_digits_classifier_reads_pngs(platform: Platform) -> None:
    instances = [{"b64": base64.b64encode(png(i)).decode()} for i in range(10)]
    response = httpx.post(f"{platform.url}/v1/models/digits-classifier:predict",
                          json={"instances": instances}, timeout=30)
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == [
        str(d) for d in DIGITS.target[:10]
    ]
    assert response.headers["x-modelserve-revision"] == "digits-classifier-transformer-00001"
    client = triton_http.InferenceServerClient(f"127.0.0.1:{platform.port}")
    tensor = triton_http.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([png(4), png(9)], dtype=np.object_))
    labels = client.infer("digits-classifier", [tensor]).as_numpy("label")
    assert [v.decode() for v in labels.tolist()] == ["4", "9"]


def _tritonserver_pids(platform: Platform) -> set[int]:
    return {
        child.pid
        for child in psutil.Process(platform.process.pid).children(recursive=True)
        if child.name() == "tritonserver"
    }


def test_killed_tritonservers_are_restarted_like_any_component(platform: Platform) -> None:
    # Each Triton service runs its own tritonserver: kill them all, both must come back.
    victims = _tritonserver_pids(platform)
    assert len(victims) == 2
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8],
                        "data": IMAGES[0].ravel().tolist()}]}
    checks = {
        f"{platform.url}/v2/models/triton-digits/infer": body,
        f"{platform.url}/v1/models/digits-classifier:predict": {
            "instances": [{"b64": base64.b64encode(png(0)).decode()}]
        },
    }
    statuses: set[int] = set()
    for url, request in checks.items():
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            response = httpx.post(url, json=request, timeout=30)
            statuses.add(response.status_code)
            if response.status_code == 200:
                break
            time.sleep(0.2)
        assert response.status_code == 200, platform.log.read_text()[-3000:]
    assert statuses <= {200, 503}, statuses  # down means 503, never a 500 or a hang
    restarted = _tritonserver_pids(platform)
    assert len(restarted) == 2 and not restarted & victims


MALFORMED = [
    b'{"inputs": [',
    b'{"inputs": {}}',
    b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": "abc", "data": [1]}]}',
    b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8], "data": [1, 2]}]}',
    b"{}",
    b"null",
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_v2_json_to_triton_is_a_client_error(platform: Platform, body: bytes) -> None:
    # tritonserver answers these 500; the gateway reclassifies them (backend_errors.py), so a
    # client's mistake is a 4xx with Triton's own message, counted as one in /metrics.
    def count() -> float:
        text = httpx.get(f"{platform.url}/metrics").text
        for line in text.splitlines():
            if (line.startswith("modelserve_gateway_requests_total{")
                    and 'service="triton-digits"' in line and 'code="400"' in line
                    and 'protocol="v2"' in line):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    response = httpx.post(f"{platform.url}/v2/models/triton-digits/infer", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(("failed to parse", "Unable to parse"))
    assert count() == before + 1
    # Triton keeps serving.
    assert httpx.get(f"{platform.url}/v2/models/triton-digits/ready").status_code == 200
