"""tf-digits through `modelserve up`: Triton's and TF Serving's clients, via the gateway."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from sklearn.datasets import load_digits

from tests.e2e.conftest import Platform
from tests.support import triton_grpc_infer

pytestmark = pytest.mark.e2e

# Known images: the first ten digits of scikit-learn's set, 0 to 9, which the model gets right.
DIGITS = load_digits()
IMAGES = DIGITS.images[:10].astype(np.float32)
TARGETS = DIGITS.target[:10].tolist()


def test_tritonclient_http_gets_the_right_digits(platform: Platform) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{platform.port}")
    assert client.is_model_ready("tf-digits")
    metadata = client.get_model_metadata("tf-digits")
    assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 8, 8]}]
    for binary in (True, False):
        tensor = triton_http.InferInput("images", list(IMAGES.shape), "FP32")
        tensor.set_data_from_numpy(IMAGES, binary_data=binary)
        wanted = [triton_http.InferRequestedOutput("digit", binary_data=binary)]
        result = client.infer("tf-digits", [tensor], outputs=wanted)
        assert result.as_numpy("digit").tolist() == TARGETS
        assert result.get_response()["model_name"] == "tf-digits"


def test_tritonclient_grpc_gets_the_right_digits(platform: Platform) -> None:
    result = triton_grpc_infer(platform.grpc_target, "tf-digits", {"images": ("FP32", IMAGES)},
                               ["digit", "probabilities"])
    outputs = result["outputs"]
    assert isinstance(outputs, dict)
    assert outputs["digit"] == TARGETS
    assert np.allclose(np.sum(outputs["probabilities"], axis=1), 1.0, atol=1e-5)


def test_v1_through_the_gateway_names_the_revision(platform: Platform) -> None:
    response = httpx.post(f"{platform.url}/v1/models/tf-digits:predict",
                          json={"instances": IMAGES[:3].tolist()})
    assert response.status_code == 200, response.text
    assert [p["digit"] for p in response.json()["predictions"]] == TARGETS[:3]
    assert response.headers["x-modelserve-revision"] == "tf-digits-predictor-00001"
    bad = httpx.post(f"{platform.url}/v1/models/tf-digits:predict", json={"instances": [[1.0]]})
    assert bad.status_code == 400
    assert "rank" in bad.json()["error"]


def test_tf_serving_stub_through_the_gateway_equals_the_saved_model(
    platform: Platform, digits_tf_dir: Path
) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc as tfs_grpc

    direct = tf.saved_model.load(str(digits_tf_dir / "1")).signatures["serving_default"]
    expected = {k: v.numpy() for k, v in direct(images=tf.constant(IMAGES)).items()}
    with grpc.insecure_channel(platform.grpc_target) as channel:
        stub = tfs_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "tf-digits"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(IMAGES))
        response = stub.Predict(request, timeout=30)
        assert response.model_spec.name == "tf-digits"
        assert response.model_spec.version.value == 1
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["digit"]),
                                      expected["digit"])
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]),
                                   expected["probabilities"], rtol=1e-6)

        metadata = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=request.model_spec, metadata_field=["signature_def"]), timeout=30)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        metadata.metadata["signature_def"].Unpack(signatures)
        assert set(signatures.signature_def) == {"serving_default", "classify", "regress"}
        assert list(signatures.signature_def["serving_default"].inputs) == ["images"]

        request.model_spec.name = "no-such-model"
        with pytest.raises(grpc.RpcError) as missing:
            stub.Predict(request, timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert "Servable not found for request: Latest(no-such-model)" in (
            missing.value.details() or ""
        )
