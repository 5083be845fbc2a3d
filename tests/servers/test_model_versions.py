"""Model versions on every backend: metadata lists them, the versioned v2 routes (REST and gRPC)
serve a known version and answer 404 / NOT_FOUND naming the version for any other, with no
traceback in the server's log for the client's mistake."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from PIL import Image

from tests.support import ServerProcess, run_server

# Fixture name -> the model the server registers.
SERVICES = {
    "sklearn_server": "sklearn-iris",
    "tabular_server": "sklearn-iris",
    "tf_server": "tf-digits",
    "image_server": "tf-digits",
}
UNKNOWN = ("2", "0", "abc")


@pytest.fixture(scope="module")
def image_server(
    tf_server: ServerProcess, digits_tf_dir: Path, logs: Path
) -> Iterator[ServerProcess]:
    """The image transformer in front of the TensorFlow predictor, as the demo runs it."""
    args = [
        "--model_name=tf-digits",
        f"--model_dir={digits_tf_dir}",
        f"--predictor_host={tf_server.grpc_target}",
        "--predictor_protocol=grpc-v2",
    ]
    with run_server("servers.transformers.image", args, logs) as server:
        yield server


@pytest.fixture(params=list(SERVICES))
def service(request: pytest.FixtureRequest) -> tuple[ServerProcess, str]:
    server: ServerProcess = request.getfixturevalue(request.param)
    return server, SERVICES[request.param]


def _png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), "L").save(out, "PNG")
    return out.getvalue()


def _inputs(metadata: dict[str, Any]) -> list[triton_http.InferInput]:
    """One row for each input of the model's metadata (zeros, or a blank PNG for BYTES)."""
    inputs = []
    for spec in metadata["inputs"]:
        shape = [1 if d < 0 else d for d in spec["shape"]]
        if spec["datatype"] == "BYTES":
            array = np.array([_png()] * int(np.prod(shape)), dtype=object).reshape(shape)
        else:
            dtype = triton_http.triton_to_np_dtype(spec["datatype"])
            array = np.zeros(shape, dtype=dtype)
        tensor = triton_http.InferInput(spec["name"], shape, spec["datatype"])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _log_tail(server: ServerProcess, start: int) -> str:
    return server.log.read_bytes()[start:].decode(errors="replace")


def test_metadata_lists_the_versions_served(service: tuple[ServerProcess, str]) -> None:
    server, model = service
    unversioned = httpx.get(f"{server.http_url}/v2/models/{model}", timeout=30)
    assert unversioned.status_code == 200, unversioned.text
    assert unversioned.json()["versions"] == ["1"]
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    versioned = client.get_model_metadata(model, model_version="1")
    assert versioned["name"] == model
    assert versioned["versions"] == ["1"]
    assert versioned["inputs"] == unversioned.json()["inputs"]


def test_known_version_is_ready_and_infers(service: tuple[ServerProcess, str]) -> None:
    server, model = service
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert client.is_model_ready(model, "1")
    ready = httpx.get(f"{server.http_url}/v2/models/{model}/versions/1/ready", timeout=30)
    assert ready.json() == {"name": model, "ready": True}
    result = client.infer(model, _inputs(client.get_model_metadata(model)), model_version="1")
    assert result.get_response()["outputs"]


@pytest.mark.parametrize("version", UNKNOWN)
def test_unknown_version_is_404_naming_it(
    service: tuple[ServerProcess, str], version: str
) -> None:
    server, model = service
    start = server.log.stat().st_size
    base = f"{server.http_url}/v2/models/{model}/versions/{version}"
    answers = [
        httpx.get(base, timeout=30),
        httpx.get(f"{base}/ready", timeout=30),
        httpx.post(f"{base}/infer", json={"inputs": []}, timeout=30),
    ]
    expected = f"model '{model}' has no version '{version}'; it serves ['1']"
    for answer in answers:
        assert answer.status_code == 404, answer.text
        assert answer.json() == {"error": expected}
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert not client.is_model_ready(model, version)
    with pytest.raises(triton_http.InferenceServerException, match="has no version"):
        client.get_model_metadata(model, model_version=version)
    assert "Traceback" not in _log_tail(server, start)


def test_grpc_serves_known_versions(service: tuple[ServerProcess, str]) -> None:
    server, model = service
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        for version in ("", "1"):
            metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version))
            assert list(metadata.versions) == ["1"]
            assert stub.ModelReady(pb.ModelReadyRequest(name=model, version=version)).ready


@pytest.mark.parametrize("version", UNKNOWN)
def test_grpc_unknown_version_is_not_found(
    service: tuple[ServerProcess, str], version: str
) -> None:
    server, model = service
    start = server.log.stat().st_size
    expected = f"model '{model}' has no version '{version}'; it serves ['1']"
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        calls = [
            lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version)),
            lambda: stub.ModelReady(pb.ModelReadyRequest(name=model, version=version)),
            lambda: stub.ModelInfer(
                pb.ModelInferRequest(model_name=model, model_version=version)
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert caught.value.details() == expected
    assert "Traceback" not in _log_tail(server, start)


def test_unknown_model_is_not_found_without_traceback(sklearn_server: ServerProcess) -> None:
    start = sklearn_server.log.stat().st_size
    answer = httpx.get(f"{sklearn_server.http_url}/v2/models/nope/versions/1", timeout=30)
    assert answer.status_code == 404
    assert "nope" in answer.json()["error"]
    with grpc.insecure_channel(sklearn_server.grpc_target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelReady(pb.ModelReadyRequest(name="nope", version="1"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Traceback" not in _log_tail(sklearn_server, start)


def test_a_savedmodel_serves_its_highest_version_directory(
    digits_tf_dir: Path, logs: Path, tmp_path: Path
) -> None:
    """TF Serving's default policy: of versions 1 and 3 on disk, 3 is served, 1 is not."""
    for version in ("1", "3"):
        shutil.copytree(digits_tf_dir / "1", tmp_path / "digits" / version)
    args = ["--model_name=tf-digits", f"--model_dir={tmp_path / 'digits'}"]
    with run_server("servers.tensorflow", args, logs) as server:
        doc = httpx.get(f"{server.http_url}/v2/models/tf-digits", timeout=30).json()
        assert doc["versions"] == ["3"]
        ready = httpx.get(f"{server.http_url}/v2/models/tf-digits/versions/3/ready", timeout=30)
        assert ready.json() == {"name": "tf-digits", "ready": True}
        old = httpx.get(f"{server.http_url}/v2/models/tf-digits/versions/1", timeout=30)
        assert old.status_code == 404
        assert old.json() == {"error": "model 'tf-digits' has no version '1'; it serves ['3']"}
