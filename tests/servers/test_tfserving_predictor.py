"""`python -m servers.tensorflow --tfserving_host`: our predictor in front of a TF Serving
backend (here: the in-process TF server's PredictionService, reached through a TCP relay the
tests can cut). Answers over v1/v2 REST and v2 gRPC equal the direct server's; a dead backend
is 503, a silent one 504, and the backend's own 400s pass through.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from sklearn.datasets import load_digits

from tests.support import ROOT, ServerProcess, free_ports, run_server

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

MODEL = "tf-digits"
V1 = f"/v1/models/{MODEL}:predict"
V2 = f"/v2/models/{MODEL}/infer"
TIMEOUT_S = 5  # the proxy's deadline for each backend call (the 504 test waits this long)


class Relay:
    """A TCP relay to `target` that can refuse (connections reset) or stall (bytes dropped)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.mode = "forward"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.mode == "forward":
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _shut(sock)

    def set_mode(self, mode: str) -> None:
        """`forward`, `stall` (keep connections, drop every byte) or `refuse` (reset all)."""
        self.mode = mode
        if mode != "stall":
            self.drop_connections()

    def drop_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def close(self) -> None:
        self._listener.close()
        self.drop_connections()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture(scope="module")
def relay(tf_server: ServerProcess) -> Iterator[Relay]:
    relay = Relay(tf_server.grpc_target)
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def proxy(relay: Relay, logs: Path) -> Iterator[ServerProcess]:
    # --allow_nan: NaN passes our own checks, so the backend's refusal is what answers.
    args = [f"--model_name={MODEL}", f"--tfserving_host=127.0.0.1:{relay.port}",
            f"--tfserving_timeout_s={TIMEOUT_S}", "--allow_nan"]
    with run_server("servers.tensorflow", args, logs) as server:
        yield server


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_digits().images[:4].astype(np.float32)


def post(server: ServerProcess, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(server.http_url + path, timeout=30, **kwargs)


def without_id(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "id"}


def test_v1_predict_matches_the_direct_server(
    proxy: ServerProcess, tf_server: ServerProcess, images: np.ndarray
) -> None:
    for body in ({"instances": images.tolist()},
                 {"signature_name": "serving_default", "inputs": {"images": images.tolist()}}):
        via_proxy, direct = post(proxy, V1, json=body), post(tf_server, V1, json=body)
        assert via_proxy.status_code == direct.status_code == 200, via_proxy.text
        assert via_proxy.json() == direct.json()


def test_v2_rest_infer_and_metadata_match_the_direct_server(
    proxy: ServerProcess, tf_server: ServerProcess, images: np.ndarray
) -> None:
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(images.shape),
                        "data": images.ravel().tolist()}],
            "outputs": [{"name": "digit"}]}
    via_proxy, direct = post(proxy, V2, json=body), post(tf_server, V2, json=body)
    assert via_proxy.status_code == direct.status_code == 200, via_proxy.text
    assert without_id(via_proxy.json()) == without_id(direct.json())
    assert via_proxy.json()["outputs"][0]["data"] == load_digits().target[:4].tolist()
    metadata = [httpx.get(f"{s.http_url}/v2/models/{MODEL}").json() for s in (proxy, tf_server)]
    assert metadata[0] == metadata[1]


def test_v2_grpc_infer_matches_the_direct_server(
    proxy: ServerProcess, tf_server: ServerProcess, images: np.ndarray
) -> None:
    request = pb.ModelInferRequest(model_name=MODEL, id="q1")
    request.inputs.add(name="images", datatype="FP32", shape=list(images.shape))
    request.raw_input_contents.append(images.tobytes())
    answers = []
    for server in (proxy, tf_server):
        with grpc.insecure_channel(server.grpc_target) as channel:
            answers.append(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request,
                                                                                 timeout=30))
    assert answers[0] == answers[1]
    assert {o.name for o in answers[0].outputs} == {"digit", "probabilities"}


def test_tf_serving_api_on_the_proxy_matches_the_direct_server(
    proxy: ServerProcess, tf_server: ServerProcess, images: np.ndarray
) -> None:
    # The proxy serves PredictionService too, over the same TF Serving backend.
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = MODEL
    predict.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = MODEL
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = MODEL
    classify.model_spec.signature_name = "classify"
    for image in images:
        example = classify.input.example_list.examples.add()
        example.features.feature["pixels"].float_list.value.extend(image.ravel().tolist())
    answers = []
    for server in (proxy, tf_server):
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            answers.append((stub.Predict(predict, timeout=30),
                            stub.GetModelMetadata(metadata, timeout=30),
                            stub.Classify(classify, timeout=30)))
    assert answers[0] == answers[1]


def test_bad_input_is_refused_before_the_backend_sees_it(proxy: ServerProcess) -> None:
    response = post(proxy, V1, json={"instances": [[1.0, 2.0]]})
    assert response.status_code == 400
    assert "expects rank 3" in response.json()["error"]


def test_the_backends_400_passes_through(proxy: ServerProcess) -> None:
    # NaN passes the proxy (--allow_nan); the backend refuses it with INVALID_ARGUMENT.
    x = np.zeros((1, 8, 8), np.float32)
    x[0, 3, 3] = np.nan
    header = json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8],
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    response = post(proxy, V2, content=header + x.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(header)),
                             "content-type": "application/octet-stream"})
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "input 'images' contains NaN or infinity"}


def wait_until_serving(server: ServerProcess, images: np.ndarray, within_s: float = 30) -> None:
    """The proxy answers again once gRPC's reconnect backoff lets it reach the backend."""
    deadline = time.monotonic() + within_s
    while True:
        response = post(server, V1, json={"instances": images[:1].tolist()})
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert response.status_code == 200, response.text


def test_a_stopped_backend_is_503_until_it_comes_back(
    proxy: ServerProcess, relay: Relay, images: np.ndarray
) -> None:
    wait_until_serving(proxy, images)
    relay.set_mode("refuse")
    try:
        response = post(proxy, V1, json={"instances": images.tolist()})
        assert response.status_code == 503, response.text
        assert "unavailable" in response.json()["error"]
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="images", datatype="FP32", shape=[1, 8, 8])
        request.raw_input_contents.append(images[:1].tobytes())
        with grpc.insecure_channel(proxy.grpc_target) as channel, \
                pytest.raises(grpc.RpcError) as caught:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        assert isinstance(caught.value, grpc.Call)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        relay.set_mode("forward")
    wait_until_serving(proxy, images)


def test_a_silent_backend_is_504(proxy: ServerProcess, relay: Relay, images: np.ndarray) -> None:
    wait_until_serving(proxy, images)
    relay.set_mode("stall")
    try:
        started = time.monotonic()
        response = post(proxy, V1, json={"instances": images.tolist()})
        assert response.status_code == 504, response.text
        assert f"did not answer within {TIMEOUT_S} s" in response.json()["error"]
        assert time.monotonic() - started < TIMEOUT_S + 5
    finally:
        relay.set_mode("forward")
    wait_until_serving(proxy, images)


def test_an_unreachable_backend_stops_the_server_at_start_up() -> None:
    dead, http_port, grpc_port = free_ports(3)
    command = [sys.executable, "-m", "servers.tensorflow", f"--model_name={MODEL}",
               f"--tfserving_host=127.0.0.1:{dead}", "--tfserving_timeout_s=1",
               f"--http_port={http_port}", f"--grpc_port={grpc_port}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"TF Serving backend 127.0.0.1:{dead} is unreachable: no answer to GetModelMetadata "
            "within 1 s") in done.stderr
