"""The image transformer in front of a real sklearn digits predictor: PNGs in, top-k labels out.

A LogisticRegression on sklearn's 8x8 digits (pixels 0..16) stands in for the TensorFlow model;
the transformer decodes, resizes and scales each PNG and must feed the predictor exactly the
pixels the estimator would see (up to the PNG's 8-bit rounding).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import joblib
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.predictor_config import PredictorConfig
from kserve.utils.inference_client_factory import InferenceClientFactory
from PIL import Image, ImageFile
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from servers.errors import (
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    ModelLoadError,
    PayloadTooLarge,
    UpstreamError,
)
from servers.transformers.image.__main__ import main
from servers.transformers.image.limits import Cancellation, RequestLimits, run_cancellable
from servers.transformers.image.model import ImageSpec, ImageTransformer, tensor_spec
from servers.transformers.upstream import from_http
from tests.support import ServerProcess, free_port, run_server

NAME = "digits"
LABELS = [str(i) for i in range(10)]
METADATA: dict[str, Any] = {
    "target_names": LABELS,
    "image": {"height": 8, "width": 8, "max_value": 16.0, "invert": False},
    "input": {"name": "input-0", "datatype": "FP64", "shape": [-1, 64]},
    "scores_output": "predict_proba",
}
# The small limits of the REST transformer: every test digit fits, noise and big canvases don't.
MAX_IMAGE_BYTES = 3000
MAX_IMAGE_PIXELS = 4096


# -- the model and its images -------------------------------------------------------------
@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    estimator = LogisticRegression(max_iter=2000).fit(digits.data, digits.target)
    joblib.dump(estimator, directory / "model.joblib")
    (directory / "metadata.json").write_text(json.dumps(METADATA))
    return directory


@pytest.fixture(scope="module")
def estimator(digits_dir: Path) -> Any:
    return joblib.load(digits_dir / "model.joblib")


@pytest.fixture(scope="module")
def samples(estimator: Any) -> tuple[np.ndarray, np.ndarray]:
    """One image of each digit that the estimator gets right: (images 8x8, targets)."""
    digits = load_digits()
    picked = []
    for digit in range(10):
        for i in np.flatnonzero(digits.target == digit):
            if estimator.predict(digits.data[i : i + 1])[0] == digit:
                picked.append(i)
                break
    return digits.images[picked], digits.target[picked]


def png(pixels: np.ndarray, size: int | None = None) -> bytes:
    """A digit (0..16 pixels, ink high) as an 8-bit grayscale PNG, upscaled with NEAREST."""
    img = Image.fromarray((pixels * 255 / 16).round().astype(np.uint8), "L")
    if size is not None:
        img = img.resize((size, size), Image.Resampling.NEAREST)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def seen_by_model(images: np.ndarray) -> np.ndarray:
    """The pixels an 8-bit PNG carries back: what the transformer should send the predictor."""
    return ((images * 255 / 16).round() / 255 * 16).reshape(len(images), -1)


def check_top_k(
    labels: list[str], scores: list[float], k: int, expected: np.ndarray
) -> None:
    """Top-k labels and scores of one image against the estimator's probabilities for it."""
    assert len(labels) == len(scores) == k
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) <= 1 + 1e-6
    order = np.argsort(-expected, kind="stable")[:k]
    assert labels == [LABELS[i] for i in order]
    np.testing.assert_allclose(scores, expected[order], rtol=1e-5)


# -- servers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(digits_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    args = [f"--model_name={NAME}", f"--model_dir={digits_dir}"]
    with run_server("servers.sklearn", args, logs) as server:
        yield server


def transformer_args(digits_dir: Path, host: str, protocol: str, *extra: str) -> list[str]:
    return [
        f"--model_name={NAME}",
        f"--model_dir={digits_dir}",
        f"--predictor_host={host}",
        f"--predictor_protocol={protocol}",
        *extra,
    ]


@pytest.fixture(scope="module")
def over_grpc(predictor: ServerProcess, digits_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    """The transformer calling the predictor over v2 gRPC, default settings."""
    args = transformer_args(digits_dir, predictor.grpc_target, "grpc-v2")
    with run_server("servers.transformers.image", args, logs) as server:
        yield server


@pytest.fixture(scope="module")
def over_rest(predictor: ServerProcess, digits_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    """The transformer calling the predictor over v2 REST, with top_k 2 and small limits."""
    args = transformer_args(
        digits_dir,
        f"127.0.0.1:{predictor.http_port}",
        "v2",
        "--top_k=2",
        f"--max_image_bytes={MAX_IMAGE_BYTES}",
        f"--max_image_pixels={MAX_IMAGE_PIXELS}",
    )
    with run_server("servers.transformers.image", args, logs) as server:
        yield server


def v1_predict(server: ServerProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v1/models/{NAME}:predict", json=body, timeout=30)


def assert_still_answers(server: ServerProcess, samples: tuple[np.ndarray, np.ndarray]) -> None:
    images, targets = samples
    response = v1_predict(server, {"instances": [{"b64": b64(png(images[0]))}]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == str(targets[0])


# -- v1 in --------------------------------------------------------------------------------
def test_v1_b64_instances(
    over_grpc: ServerProcess, samples: tuple[np.ndarray, np.ndarray], estimator: Any
) -> None:
    images, targets = samples
    response = v1_predict(over_grpc, {"instances": [{"b64": b64(png(img))} for img in images]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    direct = estimator.predict(images.reshape(len(images), -1))
    assert [p["label"] for p in predictions] == [str(d) for d in direct] == [
        str(t) for t in targets
    ]
    proba = estimator.predict_proba(seen_by_model(images))
    for prediction, expected in zip(predictions, proba, strict=True):
        top = prediction["top_k"]
        check_top_k([t["label"] for t in top], [t["score"] for t in top], 3, expected)
        assert prediction["label"] == top[0]["label"]


def test_v1_image_bytes_and_bare_strings_of_upscaled_images(
    over_grpc: ServerProcess, samples: tuple[np.ndarray, np.ndarray], estimator: Any
) -> None:
    # 32x32 NEAREST copies: BOX downsampling must give back the very same 8x8 pixels.
    images, targets = samples
    instances: list[Any] = [{"image_bytes": {"b64": b64(png(img, 32))}} for img in images[:5]]
    instances += [b64(png(img, 32)) for img in images[5:]]
    response = v1_predict(over_grpc, {"instances": instances, "parameters": {"top_k": 10}})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    # TF Serving's columnar form of the same request.
    column = [{"b64": b64(png(img, 32))} for img in images]
    columnar = {"inputs": {"image_bytes": column}, "parameters": {"top_k": 10}}
    assert v1_predict(over_grpc, columnar).json()["predictions"] == predictions
    assert [p["label"] for p in predictions] == [str(t) for t in targets]
    proba = estimator.predict_proba(seen_by_model(images))
    for prediction, expected in zip(predictions, proba, strict=True):
        top = prediction["top_k"]
        check_top_k([t["label"] for t in top], [t["score"] for t in top], 10, expected)


def test_top_k_flag_sets_the_default(
    over_rest: ServerProcess, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    images, targets = samples
    response = v1_predict(over_rest, {"instances": [{"b64": b64(png(images[4]))}]})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["label"] == str(targets[4])
    assert len(prediction["top_k"]) == 2


# -- v2 in --------------------------------------------------------------------------------
def test_v2_rest_json_base64_elements(
    over_rest: ServerProcess, samples: tuple[np.ndarray, np.ndarray], estimator: Any
) -> None:
    images, targets = samples
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images), 1],
                "data": [b64(png(img, 16)) for img in images],
            }
        ],
        "parameters": {"top_k": 5},
    }
    response = httpx.post(f"{over_rest.http_url}/v2/models/{NAME}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES"
    assert outputs["label"]["shape"] == [len(images)]
    assert outputs["label"]["data"] == [str(t) for t in targets]
    assert outputs["top_k_labels"]["shape"] == outputs["top_k_scores"]["shape"] == [len(images), 5]
    assert outputs["top_k_scores"]["datatype"] == "FP32"
    labels = np.array(outputs["top_k_labels"]["data"]).reshape(len(images), 5)
    scores = np.array(outputs["top_k_scores"]["data"]).reshape(len(images), 5)
    proba = estimator.predict_proba(seen_by_model(images))
    for row_labels, row_scores, expected in zip(labels, scores, proba, strict=True):
        check_top_k(row_labels.tolist(), row_scores.tolist(), 5, expected)


@pytest.mark.parametrize("transformer", ["over_rest", "over_grpc"])
def test_v2_rest_binary_with_tritonclient(
    transformer: str,
    request: pytest.FixtureRequest,
    samples: tuple[np.ndarray, np.ndarray],
    estimator: Any,
) -> None:
    server: ServerProcess = request.getfixturevalue(transformer)
    images, targets = samples
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    tensor = triton_http.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(
        np.array([png(img) for img in images], dtype=np.object_), binary_data=True
    )
    outputs = [
        triton_http.InferRequestedOutput(name, binary_data=True)
        for name in ("label", "top_k_labels", "top_k_scores")
    ]
    result = client.infer(NAME, [tensor], outputs=outputs, parameters={"top_k": 4})
    assert [v.decode() for v in result.as_numpy("label")] == [str(t) for t in targets]
    labels, scores = result.as_numpy("top_k_labels"), result.as_numpy("top_k_scores")
    assert labels.shape == scores.shape == (len(images), 4)
    assert scores.dtype == np.float32
    proba = estimator.predict_proba(seen_by_model(images))
    for row_labels, row_scores, expected in zip(labels, scores, proba, strict=True):
        check_top_k([v.decode() for v in row_labels], row_scores.tolist(), 4, expected)


def test_v2_grpc_with_kserve_client(
    over_grpc: ServerProcess, samples: tuple[np.ndarray, np.ndarray], estimator: Any
) -> None:
    images, targets = samples

    async def infer(parameters: dict[str, Any] | None) -> Any:
        tensor = InferInput("image", [len(images)], "BYTES")
        tensor.set_data_from_numpy(np.array([png(img, 24) for img in images], dtype=np.object_))
        client = InferenceGRPCClient(over_grpc.grpc_target)
        try:
            return await client.infer(InferRequest(NAME, [tensor], parameters=parameters))
        finally:
            await client.close()

    result = asyncio.run(infer({"top_k": 1}))
    outputs = {o.name: o.as_numpy() for o in result.outputs}
    assert [v.decode() for v in outputs["label"]] == [str(t) for t in targets]
    assert outputs["top_k_labels"].shape == outputs["top_k_scores"].shape == (len(images), 1)
    proba = estimator.predict_proba(seen_by_model(images))
    np.testing.assert_allclose(outputs["top_k_scores"][:, 0], proba.max(axis=1), rtol=1e-5)

    with pytest.raises(grpc.RpcError) as failed:
        asyncio.run(infer({"top_k": 11}))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "top_k" in str(failed.value.details())


def test_transformer_metadata(over_grpc: ServerProcess) -> None:
    doc = httpx.get(f"{over_grpc.http_url}/v2/models/{NAME}").json()
    assert doc["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in doc["outputs"]] == ["label", "top_k_labels", "top_k_scores"]


# -- bad input ----------------------------------------------------------------------------
BLANK = {"b64": b64(png(np.zeros((8, 8))))}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"instances": [{"b64": "not base64 at all!"}]}, "instance 0 is not valid base64"),
        ({"instances": [{"b64": b64(b"just some text")}]}, "instance 0 is not a decodable image"),
        ({"instances": [BLANK, {"b64": ""}]}, "instance 1 is empty"),
        ({"instances": []}, "empty"),
        ({"instances": [42]}, "instance 0 must be"),
        ({"instances": [{"b64": 7}]}, "instance 0 must be"),
        ({"instances": [BLANK], "parameters": {"top_k": 0}}, "top_k"),
        ({"instances": [BLANK], "parameters": {"top_k": 11}}, "top_k"),
        ({"instances": [BLANK], "parameters": {"top_k": "3"}}, "top_k"),
        ({"images": []}, "instances"),
    ],
    ids=[
        "not-base64",
        "not-an-image",
        "empty-image",
        "empty-batch",
        "number",
        "b64-not-a-string",
        "top_k-0",
        "top_k-11",
        "top_k-string",
        "no-instances",
    ],
)
def test_bad_v1_input_is_400(
    over_grpc: ServerProcess,
    samples: tuple[np.ndarray, np.ndarray],
    body: dict[str, Any],
    fragment: str,
) -> None:
    response = v1_predict(over_grpc, body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
    assert_still_answers(over_grpc, samples)


def _v2_tensor(datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "datatype": datatype, "shape": shape, "data": data}]}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (_v2_tensor("FP32", [1], [1.0]), "must be BYTES"),
        (_v2_tensor("BYTES", [0], []), "empty"),
        (_v2_tensor("BYTES", [1, 2], ["a", "b"]), "shape [batch] or [batch, 1]"),
        (_v2_tensor("BYTES", [1], ["%%%"]), "neither an encoded image"),
        (_v2_tensor("BYTES", [1], [b64(b"GIF89a but not really")]), "not a decodable image"),
        (
            {"inputs": [*_v2_tensor("BYTES", [1], ["x"])["inputs"]] * 2},
            "one BYTES tensor",
        ),
    ],
    ids=["fp32", "empty", "rank-2", "not-base64", "not-an-image", "two-inputs"],
)
def test_bad_v2_input_is_400(
    over_rest: ServerProcess,
    samples: tuple[np.ndarray, np.ndarray],
    body: dict[str, Any],
    fragment: str,
) -> None:
    response = httpx.post(f"{over_rest.http_url}/v2/models/{NAME}/infer", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
    assert_still_answers(over_rest, samples)


def test_oversized_images_are_400(
    over_rest: ServerProcess, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 60), dtype=np.uint8))
    big_canvas = Image.new("L", (100, 100))  # compresses to ~100 bytes, but 10,000 pixels
    encoded = []
    for img in (noise, big_canvas):
        out = io.BytesIO()
        img.save(out, "PNG")
        encoded.append(out.getvalue())
    assert len(encoded[0]) > MAX_IMAGE_BYTES > len(encoded[1])

    too_many_bytes = v1_predict(over_rest, {"instances": [{"b64": b64(encoded[0])}]})
    assert too_many_bytes.status_code == 400, too_many_bytes.text
    assert f"over the limit of {MAX_IMAGE_BYTES}" in too_many_bytes.json()["error"]

    images = samples[0]
    batch = [{"b64": b64(png(images[0]))}, {"b64": b64(encoded[1])}]
    too_many_pixels = v1_predict(over_rest, {"instances": batch})
    assert too_many_pixels.status_code == 400, too_many_pixels.text
    error = too_many_pixels.json()["error"]
    assert "instance 1" in error and f"pixels, over the limit of {MAX_IMAGE_PIXELS}" in error
    assert_still_answers(over_rest, samples)


# -- the other predictor protocols and failures -------------------------------------------
def in_process(
    digits_dir: Path, host: str, protocol: str, name: str = NAME
) -> ImageTransformer:
    """A transformer in this process (one process start less), calling a real `host`."""
    transformer = ImageTransformer(name, str(digits_dir), PredictorConfig(host, protocol))
    transformer.load()
    return transformer


def predict_in_process(transformer: ImageTransformer, body: dict[str, Any]) -> Any:
    async def predict() -> Any:
        try:
            return await transformer.predict(body)
        finally:
            # kserve keeps one client per protocol per process (whatever the host) and binds
            # it to this event loop: close them and let the next transformer make its own.
            factory = InferenceClientFactory()
            await factory.close()
            factory._grpc_client = factory._rest_v1_client = factory._rest_v2_client = None

    return asyncio.run(predict())


class TFServingStub(BaseHTTPRequestHandler):
    """KServe's TF Serving runtime as the transformer sees it: v1 `:predict` on the digits
    estimator, answering score lists, or (`named`) one dict of named outputs per instance."""

    estimator: Any = None
    named = False
    received: list[Any] = []

    def do_POST(self) -> None:
        if self.path != f"/v1/models/{NAME}:predict":
            self._answer(404, {"error": f"no route {self.path}"})
            return
        instances = json.loads(self.rfile.read(int(self.headers["content-length"])))["instances"]
        TFServingStub.received.append(instances)
        proba = self.estimator.predict_proba(np.asarray(instances, dtype=np.float64)).tolist()
        if self.named:
            predictions: list[Any] = [{"predict_proba": p, "classes": 0} for p in proba]
        else:
            predictions = proba
        self._answer(200, {"predictions": predictions})

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("named", [False, True], ids=["score-lists", "named-outputs"])
def test_v1_predictor_protocol(
    named: bool, digits_dir: Path, samples: tuple[np.ndarray, np.ndarray], estimator: Any
) -> None:
    # What KServe's TF Serving runtime speaks: {"instances": rows} in, {"predictions"} out
    # (a stub here: there is no TF Serving binary on this machine).
    images, targets = samples
    TFServingStub.estimator, TFServingStub.named, TFServingStub.received = estimator, named, []
    stub = ThreadingHTTPServer(("127.0.0.1", 0), TFServingStub)
    thread = threading.Thread(target=stub.serve_forever, daemon=True)
    thread.start()
    try:
        transformer = in_process(digits_dir, f"127.0.0.1:{stub.server_address[1]}", "v1")
        body = {"instances": [{"b64": b64(png(img))} for img in images]}
        predictions = predict_in_process(transformer, body)["predictions"]
    finally:
        stub.shutdown()
        stub.server_close()
    # Rows shaped as metadata.json's input block says, [-1, 64], holding the PNGs' pixels.
    (sent,) = TFServingStub.received
    np.testing.assert_allclose(np.asarray(sent), seen_by_model(images))
    assert [p["label"] for p in predictions] == [str(t) for t in targets]
    proba_expected = estimator.predict_proba(seen_by_model(images))
    for prediction, expected in zip(predictions, proba_expected, strict=True):
        top = prediction["top_k"]
        check_top_k([t["label"] for t in top], [t["score"] for t in top], 3, expected)


def test_predictor_down_is_503(
    digits_dir: Path, logs: Path, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    args = transformer_args(digits_dir, f"127.0.0.1:{free_port()}", "grpc-v2")
    with run_server("servers.transformers.image", args, logs) as server:
        response = v1_predict(server, {"instances": [{"b64": b64(png(samples[0][0]))}]})
        assert response.status_code == 503, response.text
        assert "predictor" in response.json()["error"]
        response = v1_predict(server, {"instances": [{"b64": b64(png(samples[0][0]))}]})
        assert response.status_code == 503, response.text  # nothing cached from the failure


@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_predictor_down_over_rest_is_503(
    protocol: str, digits_dir: Path, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    transformer = in_process(digits_dir, f"127.0.0.1:{free_port()}", protocol)
    body = {"instances": [{"b64": b64(png(samples[0][0]))}]}
    with pytest.raises(BackendUnavailable, match="predictor") as failed:
        predict_in_process(transformer, body)
    assert failed.value.http_status == 503


def test_predictor_errors_keep_their_status(
    predictor: ServerProcess, digits_dir: Path, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    # A model the predictor does not serve: no v2 metadata there (metadata.json's input is
    # used), and the predictor's 404 comes back as a 404, not a 500 or a 503.
    transformer = in_process(digits_dir, predictor.grpc_target, "grpc-v2", name="no-such-digits")
    body = {"instances": [{"b64": b64(png(samples[0][0]))}]}
    with pytest.raises(UpstreamError, match="predictor") as failed:
        predict_in_process(transformer, body)
    assert (failed.value.http_status, failed.value.grpc_code) == (404, grpc.StatusCode.NOT_FOUND)


# -- in process: metadata.json and the predictor's input tensor ---------------------------
@pytest.mark.parametrize(
    ("shape", "dims"),
    [([-1, 8, 8], (8, 8)), ([-1, 64], (64,)), ([-1, 8, 8, 1], (8, 8, 1)), ([-1, -1], (64,))],
)
def test_tensor_spec_holds_one_image(shape: list[int], dims: tuple[int, ...]) -> None:
    spec = tensor_spec({"name": "x", "datatype": "fp32", "shape": shape}, ImageSpec(8, 8))
    assert (spec.datatype, spec.dims) == ("FP32", dims)


@pytest.mark.parametrize(
    "doc",
    [
        {"name": "x", "datatype": "FP32", "shape": [-1, 28, 28]},
        {"name": "x", "datatype": "FP32", "shape": [-1, -1, -1]},
        {"name": "x", "datatype": "FP32", "shape": [64]},
        {"name": "x", "datatype": "BYTES", "shape": [-1, 64]},
        {"datatype": "FP32", "shape": [-1, 64]},
    ],
)
def test_tensor_spec_refuses_what_does_not_fit(doc: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        tensor_spec(doc, ImageSpec(8, 8))


def _transformer(
    directory: Path, metadata: dict[str, Any] | None, protocol: str
) -> ImageTransformer:
    directory.mkdir(exist_ok=True)
    if metadata is not None:
        (directory / "metadata.json").write_text(json.dumps(metadata))
    return ImageTransformer(NAME, str(directory), PredictorConfig("127.0.0.1:1", protocol))


@pytest.mark.parametrize(
    ("change", "protocol", "fragment"),
    [
        (None, "v2", "target_names"),
        ({"target_names": []}, "v2", "target_names"),
        ({"image": None}, "v2", "'image'"),
        ({"image": {"height": 8}}, "v2", "image.width"),
        ({"image": {"height": 8, "width": 8, "max_value": -1}}, "v2", "max_value"),
        ({"image": {"height": 8, "width": 8, "invert": "yes"}}, "v2", "invert"),
        ({"input": {"name": "x", "datatype": "FP32", "shape": [-1, 9]}}, "v2", "8x8"),
        ({"scores_output": 3}, "v2", "scores_output"),
        ({"input": None}, "v1", "'input' block"),
    ],
    ids=[
        "no-file",
        "no-targets",
        "no-image",
        "no-width",
        "bad-max",
        "bad-invert",
        "bad-shape",
        "bad-scores",
        "v1-no-input",
    ],
)
def test_bad_metadata_fails_at_load(
    tmp_path: Path, change: dict[str, Any] | None, protocol: str, fragment: str
) -> None:
    # A None in `change` drops that key; no `change` at all: no metadata.json.
    metadata = None
    if change is not None:
        metadata = {k: v for k, v in {**METADATA, **change}.items() if v is not None}
    with pytest.raises(ModelLoadError) as failed:
        _transformer(tmp_path / "model", metadata, protocol).load()
    assert fragment in str(failed.value)


def test_no_predictor_metadata_falls_back_to_metadata_json(tmp_path: Path) -> None:
    transformer = _transformer(tmp_path / "model", METADATA, "v2")
    transformer.load()

    async def no_metadata() -> None:
        return None

    transformer._rest_metadata = no_metadata  # type: ignore[method-assign]
    spec = asyncio.run(transformer.predictor_input())
    assert (spec.name, spec.datatype, spec.dims) == ("input-0", "FP64", (64,))

    without_input = {k: v for k, v in METADATA.items() if k != "input"}
    bare = _transformer(tmp_path / "bare", without_input, "v2")
    bare.load()
    bare._rest_metadata = no_metadata  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailable, match="'input' block"):
        asyncio.run(bare.predictor_input())


def test_transparent_and_inverted_images(tmp_path: Path) -> None:
    # Dark ink on a transparent background, for a model that wants dark-on-white inverted:
    # transparency is white (background), ink ends up high.
    metadata = {**METADATA, "image": {**METADATA["image"], "invert": True}}
    transformer = _transformer(tmp_path / "model", metadata, "v2")
    transformer.load()
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    img.putpixel((3, 4), (0, 0, 0, 255))
    out = io.BytesIO()
    img.save(out, "PNG")
    assert transformer.stored_input is not None
    batch = transformer._batch([out.getvalue()], transformer.stored_input)
    expected = np.zeros((1, 64))
    expected[0, 4 * 8 + 3] = 16.0
    np.testing.assert_allclose(batch, expected)


def _encode(img: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize("encoding", ["jpeg-rgb", "png-16-bit", "gif", "webp", "bilevel-bmp"])
def test_other_encodings_give_the_same_digit(
    encoding: str, tmp_path: Path, samples: tuple[np.ndarray, np.ndarray], estimator: Any
) -> None:
    transformer = _transformer(tmp_path / "model", METADATA, "v2")
    transformer.load()
    assert transformer.stored_input is not None
    images, targets = samples
    gray = Image.fromarray((images[7] * 255 / 16).round().astype(np.uint8), "L")
    big = gray.resize((64, 64), Image.Resampling.NEAREST)
    # sklearn's digits are 32x32 bitmaps counted in 4x4 blocks (0..16 pixels on): a bitmap
    # with as many pixels on in each block as the digit's value there, BOX gives back exactly.
    bits = np.zeros((32, 32), dtype=bool)
    for (row, col), value in np.ndenumerate(images[7].astype(int)):
        bits[4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = (np.arange(16) < value).reshape(4, 4)
    bitmap = Image.fromarray(bits)
    data = {
        "jpeg-rgb": lambda: _encode(big.convert("RGB"), "JPEG", quality=95),
        "png-16-bit": lambda: _encode(
            Image.fromarray((images[7] * 65535 / 16).astype(np.uint16)), "PNG"
        ),
        "gif": lambda: _encode(big, "GIF"),
        "webp": lambda: _encode(big, "WEBP", lossless=True),
        "bilevel-bmp": lambda: _encode(bitmap, "BMP"),
    }[encoding]()
    batch = transformer._batch([data], transformer.stored_input)
    assert estimator.predict(batch)[0] == targets[7]
    if encoding in ("gif", "webp"):  # lossless 8-bit: the very pixels of the 8-bit PNGs
        np.testing.assert_allclose(batch, seen_by_model(images[7:8]), atol=1e-4)
    if encoding in ("png-16-bit", "bilevel-bmp"):  # the digit's own pixels
        np.testing.assert_allclose(batch, images[7].reshape(1, -1), atol=1e-3)


def test_eps_is_not_decoded(tmp_path: Path) -> None:
    # Pillow would hand EPS to Ghostscript: client bytes never reach it.
    transformer = _transformer(tmp_path / "model", METADATA, "v2")
    transformer.load()
    assert transformer.stored_input is not None
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    with pytest.raises(InvalidInput, match="neither an encoded image"):
        transformer._batch([eps], transformer.stored_input)


# -- bounded work per request (in process) -----------------------------------------------
def _loaded(directory: Path, limits: RequestLimits | None = None) -> ImageTransformer:
    transformer = _transformer(directory, METADATA, "v2")
    transformer.limits = limits or RequestLimits()
    transformer.load()
    assert transformer.stored_input is not None
    return transformer


def _black_png(size: int) -> bytes:
    return _encode(Image.new("L", (size, size)), "PNG")


@pytest.fixture
def pixel_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image whose pixels Pillow decodes from now on."""
    loads: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> Any:
        if self.tile:  # pixels still to decode (later calls find them loaded)
            loads.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return loads


def test_png_bomb_is_refused_from_headers_without_decoding_a_pixel(
    tmp_path: Path, pixel_loads: list[tuple[int, int]]
) -> None:
    # 64 black 4000x4000 PNGs: 1 MB encoded, 1.02 G pixels (~6 CPU-s to decode); each one is
    # under the per-image limit, together they are 15 times the default request budget.
    transformer = _loaded(tmp_path / "model")
    bomb = [_black_png(4000)] * 64
    assert sum(map(len, bomb)) < 1_100_000
    assert transformer.stored_input is not None
    with pytest.raises(PayloadTooLarge) as refused:
        transformer._batch(bomb, transformer.stored_input)
    assert str(refused.value) == (
        "instances 0 to 4 hold 80000000 pixels, over the limit of 67108864 pixels per request"
    )
    assert refused.value.http_status == 413
    assert pixel_loads == []


@pytest.mark.parametrize(("limit", "refused"), [(128, False), (127, True)])
def test_request_pixel_budget_counts_every_image(
    tmp_path: Path, pixel_loads: list[tuple[int, int]], limit: int, refused: bool
) -> None:
    transformer = _loaded(tmp_path / "model", RequestLimits(max_request_pixels=limit))
    assert transformer.stored_input is not None
    two = [_black_png(8)] * 2
    if refused:
        message = "instances 0 to 1 hold 128 pixels, over the limit of 127 pixels per request"
        with pytest.raises(PayloadTooLarge, match=message):
            transformer._batch(two, transformer.stored_input)
        assert pixel_loads == []
    else:
        assert transformer._batch(two, transformer.stored_input).shape == (2, 64)
        assert pixel_loads == [(8, 8), (8, 8)]


def test_batch_size_limit_names_the_limit() -> None:
    RequestLimits(max_batch_size=2).check_batch_size(2)
    with pytest.raises(PayloadTooLarge, match="3 images, over the limit of 2 images per request"):
        RequestLimits(max_batch_size=2).check_batch_size(3)


def _spy_decode(
    transformer: ImageTransformer, monkeypatch: pytest.MonkeyPatch, first: Any
) -> list[int]:
    """Record each image `_decode` is called for, calling `first()` during image 0."""
    decoded: list[int] = []
    real = transformer._decode

    def decode(index: int, img: Image.Image) -> np.ndarray:
        decoded.append(index)
        if index == 0:
            first()
        return real(index, img)

    monkeypatch.setattr(transformer, "_decode", decode)
    return decoded


def test_cancelled_request_stops_after_the_image_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    transformer = _loaded(tmp_path / "model")
    spec = transformer.stored_input
    assert spec is not None
    in_progress, release = threading.Event(), threading.Event()

    def hold() -> None:
        in_progress.set()
        release.wait(60)

    decoded = _spy_decode(transformer, monkeypatch, hold)
    cancellation = Cancellation(60.0)

    async def cancel_during_the_first_image() -> None:
        work = functools.partial(transformer._batch, [_black_png(8)] * 8, spec)
        task = asyncio.create_task(run_cancellable(work, cancellation))
        while not in_progress.is_set():
            await asyncio.sleep(0.01)
        task.cancel()  # what grpc.aio does when the client cancels or its deadline passes
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cancellation.cancelled.is_set()
        release.set()

    with caplog.at_level(logging.WARNING, "modelserve.transformers.image"):
        asyncio.run(cancel_during_the_first_image())  # which waits for the executor's thread
    assert decoded == [0]
    assert "decoding stopped after 1 of 8 images" in caplog.text


def test_decode_timeout_stops_before_the_next_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transformer = _loaded(tmp_path / "model")
    assert transformer.stored_input is not None
    cancellation = Cancellation(30.0)

    def age_the_request() -> None:
        cancellation.started = time.monotonic() - 31.0

    decoded = _spy_decode(transformer, monkeypatch, age_the_request)
    with pytest.raises(BackendTimeout, match="took over 30 s: stopped after 1 of 3 images"):
        transformer._batch([_black_png(8)] * 3, transformer.stored_input, cancellation)
    assert decoded == [0]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--max_batch_size=0", "--max_batch_size must be positive"),
        ("--max_request_pixels=-1", "--max_request_pixels must be positive"),
        ("--decode_timeout_s=0", "--decode_timeout_s must be positive"),
        ("--decode_timeout_s=nan", "--decode_timeout_s must be positive"),
    ],
)
def test_limit_flags_must_be_positive(
    flag: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([f"--model_name={NAME}", "--predictor_host=127.0.0.1:1", flag])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# -- the predictor-error mapping both transformers share ----------------------------------
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (404, grpc.StatusCode.NOT_FOUND),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (500, grpc.StatusCode.UNAVAILABLE),
        (504, grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_predictor_http_errors_keep_status_and_message(status: int, code: grpc.StatusCode) -> None:
    error = from_http(status, json.dumps({"error": "input 'x' is wrong"}))
    assert (error.http_status, error.grpc_code) == (status, code)
    assert error.message == "predictor: input 'x' is wrong"
    assert from_http(302, "moved").http_status == 502
