"""The TensorFlow predictor served for real: answers equal the SavedModel called directly.

The reference is the SavedModel's own signature function, loaded in this process.
(`tritonclient.grpc` runs in a subprocess: it cannot share a process with kserve.)
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from sklearn.datasets import load_digits

from tests.support import ServerProcess, triton_grpc_infer

V1 = "/v1/models/tf-digits:predict"
V2 = "/v2/models/tf-digits/infer"


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_digits().images[:5].astype(np.float32)


@pytest.fixture(scope="module")
def reference(digits_tf_dir: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """What the SavedModel itself answers for `images`."""
    import tensorflow as tf

    function = tf.saved_model.load(str(digits_tf_dir / "1")).signatures["serving_default"]
    return {k: v.numpy() for k, v in function(images=tf.constant(images)).items()}


def test_model_knows_the_digits(reference: dict[str, np.ndarray]) -> None:
    assert reference["digit"].tolist() == load_digits().target[:5].tolist()


def test_v2_metadata_comes_from_the_signature(tf_server: ServerProcess) -> None:
    doc = httpx.get(f"{tf_server.http_url}/v2/models/tf-digits").json()
    assert doc["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in doc["outputs"]} == {
        "digit": ("INT64", [-1]),
        "probabilities": ("FP32", [-1, 10]),
    }


def test_v1_rows_give_one_object_per_instance(
    tf_server: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    response = httpx.post(tf_server.http_url + V1, json={"instances": images.tolist()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["digit"] for p in predictions] == reference["digit"].tolist()
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions], reference["probabilities"], rtol=1e-5
    )


def test_v1_named_instances_and_columnar_inputs(
    tf_server: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    named = {"instances": [{"images": i} for i in images.tolist()]}
    rows = httpx.post(tf_server.http_url + V1, json=named).json()["predictions"]
    assert [p["digit"] for p in rows] == reference["digit"].tolist()
    columnar = httpx.post(tf_server.http_url + V1, json={"inputs": {"images": images.tolist()}})
    assert columnar.status_code == 200, columnar.text
    assert columnar.json()["outputs"]["digit"] == reference["digit"].tolist()


def test_v2_json_and_binary_and_requested_outputs(
    tf_server: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    body = {
        "inputs": [
            {"name": "images", "datatype": "FP32", "shape": list(images.shape),
             "data": images.ravel().tolist()}
        ],
        "outputs": [{"name": "digit"}],
    }
    doc = httpx.post(tf_server.http_url + V2, json=body).json()
    assert [o["name"] for o in doc["outputs"]] == ["digit"]
    assert doc["outputs"][0]["data"] == reference["digit"].tolist()

    client = triton_http.InferenceServerClient(f"127.0.0.1:{tf_server.http_port}")
    tensor = triton_http.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=True)
    result = client.infer("tf-digits", [tensor])
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference["probabilities"],
                               rtol=1e-6)
    assert result.as_numpy("digit").tolist() == reference["digit"].tolist()


def test_v2_grpc_with_kserve_client(
    tf_server: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    async def infer() -> Any:
        tensor = InferInput("images", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images, binary_data=True)
        client = InferenceGRPCClient(tf_server.grpc_target)
        try:
            return await client.infer(InferRequest("tf-digits", [tensor]))
        finally:
            await client.close()

    result = asyncio.run(infer())
    outputs = {o.name: o.as_numpy() for o in result.outputs}
    assert outputs["digit"].tolist() == reference["digit"].tolist()
    np.testing.assert_allclose(outputs["probabilities"], reference["probabilities"], rtol=1e-6)


def test_v2_grpc_with_tritonclient(
    tf_server: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    result = triton_grpc_infer(tf_server.grpc_target, "tf-digits", {"images": ("FP32", images)})
    outputs = result["outputs"]
    assert isinstance(outputs, dict)
    assert outputs["digit"] == reference["digit"].tolist()
    np.testing.assert_allclose(outputs["probabilities"], reference["probabilities"], rtol=1e-6)
    bad = triton_grpc_infer(tf_server.grpc_target, "tf-digits", {"images": ("FP32", images[0])})
    assert bad["error"][0] == "StatusCode.INVALID_ARGUMENT"  # type: ignore[index]
    assert "rank 2" in bad["error"][1]  # type: ignore[index]


def _example(pixels: np.ndarray) -> str:
    """A serialized tf.Example with feature `pixels`, base64 for TF Serving's REST JSON."""
    import tensorflow as tf

    feature = tf.train.Feature(float_list=tf.train.FloatList(value=pixels.ravel().tolist()))
    example = tf.train.Example(features=tf.train.Features(feature={"pixels": feature}))
    return base64.b64encode(example.SerializeToString()).decode()


def test_v1_other_signature_with_b64_strings(
    tf_server: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    body = {"signature_name": "classify", "instances": [{"b64": _example(i)} for i in images]}
    response = httpx.post(tf_server.http_url + V1, json=body)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions[0]["classes"] == [str(d) for d in range(10)]
    np.testing.assert_allclose(
        [p["scores"] for p in predictions], reference["probabilities"], rtol=1e-5
    )


BAD_REST = [
    # (id, path, body, status, fragment)
    ("v1-wrong-rank", V1, {"instances": [[1.0, 2.0]]}, 400, "rank 2"),
    ("v1-wrong-shape", V1, {"instances": [[[1.0] * 7] * 8]}, 400, "expects [-1, 8, 8]"),
    ("v1-strings", V1, {"instances": [[["a"] * 8] * 8]}, 400, "numeric"),
    ("v1-ragged", V1, {"instances": [[[1.0] * 8] * 8, [[1.0] * 8]]}, 400, "ragged"),
    ("v1-unknown-signature", V1, {"signature_name": "nope", "instances": [[1]]}, 400,
     'signature key "nope" not found'),
    ("v1-both-forms", V1, {"instances": [1], "inputs": [1]}, 400, "either"),
    ("v1-unknown-named-input", V1, {"inputs": {"pixels": [1]}}, 400, "unknown inputs"),
    ("v1-overflow", V1, {"instances": [[[1e39] * 8] * 8]}, 400, "overflows FP32"),
    ("v2-wrong-dtype", V2, {"inputs": [{"name": "images", "datatype": "FP64", "shape": [1, 8, 8],
                                        "data": [0.0] * 64}]}, 400, "expects FP32"),
    ("v2-wrong-name", V2, {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8, 8],
                                       "data": [0.0] * 64}]}, 400, "unknown ['x']"),
    ("v2-wrong-rank", V2, {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 64],
                                       "data": [0.0] * 64}]}, 400, "rank 2"),
    ("v2-empty-batch", V2, {"inputs": [{"name": "images", "datatype": "FP32", "shape": [0, 8, 8],
                                        "data": []}]}, 400, "empty batch"),
    ("v2-unknown-output", V2, {"inputs": [{"name": "images", "datatype": "FP32",
                                           "shape": [1, 8, 8], "data": [0.0] * 64}],
                               "outputs": [{"name": "logits"}]}, 400, "unknown output"),
    ("v2-unknown-signature", V2, {"parameters": {"signature_name": "x"},
                                  "inputs": [{"name": "images", "datatype": "FP32",
                                              "shape": [1, 8, 8], "data": [0.0] * 64}]},
     400, 'signature key "x" not found'),
    ("v2-unknown-model", "/v2/models/nope/infer", {"inputs": []}, 404, "not found"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [case[1:] for case in BAD_REST],
    ids=[case[0] for case in BAD_REST],
)
def test_bad_rest_requests_get_clear_errors(
    tf_server: ServerProcess, images: np.ndarray, path: str, body: Any, status: int, fragment: str
) -> None:
    response = httpx.post(tf_server.http_url + path, json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    # ... and the server still answers correctly.
    ok = httpx.post(tf_server.http_url + V1, json={"instances": images[:1].tolist()})
    assert ok.status_code == 200


def test_nan_is_refused_over_binary_rest(tf_server: ServerProcess) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{tf_server.http_port}")
    tensor = triton_http.InferInput("images", [1, 8, 8], "FP32")
    tensor.set_data_from_numpy(np.full((1, 8, 8), np.nan, dtype=np.float32), binary_data=True)
    with pytest.raises(triton_http.InferenceServerException, match="NaN") as info:
        client.infer("tf-digits", [tensor])
    assert info.value.status() == "400"


def test_bad_grpc_requests_are_invalid_argument(tf_server: ServerProcess) -> None:
    import grpc

    with grpc.insecure_channel(tf_server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="tf-digits")
        tensor = request.inputs.add(name="images", datatype="FP64", shape=[1, 8, 8])
        tensor.contents.fp64_contents.extend([0.0] * 64)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "expects FP32" in (info.value.details() or "")
        with pytest.raises(grpc.RpcError) as missing:
            stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_concurrent_requests_share_graph_calls_and_get_their_own_rows(
    tf_server: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    """Batching is observable from outside only through correctness under concurrency; the
    batcher's call counting is tested in tests/servers/test_tensorflow_backend.py."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tf_server.http_url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post(V1, json={"instances": images[i % 5 : i % 5 + 1].tolist()})
                  for i in range(40))
            )

    for i, response in enumerate(asyncio.run(burst())):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["digit"] == int(reference["digit"][i % 5])


def test_grpc_request_parameters_pick_the_signature(
    tf_server: ServerProcess, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    import grpc

    examples = [base64.b64decode(_example(i)) for i in images]
    request = pb.ModelInferRequest(model_name="tf-digits")
    request.parameters["signature_name"].string_param = "classify"
    tensor = request.inputs.add(name="inputs", datatype="BYTES", shape=[len(examples)])
    tensor.contents.bytes_contents.extend(examples)
    request.outputs.add(name="scores")
    with grpc.insecure_channel(tf_server.grpc_target) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    [output] = response.outputs
    assert output.name == "scores" and list(output.shape) == [len(examples), 10]
    np.testing.assert_allclose(
        np.array(output.contents.fp32_contents).reshape(-1, 10), reference["probabilities"],
        rtol=1e-5,
    )
