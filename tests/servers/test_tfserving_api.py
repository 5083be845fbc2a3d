"""TF Serving's gRPC PredictionService on `python -m servers.tensorflow`, with the stock
`tensorflow-serving-api` stub: answers equal the SavedModel called in this process, and the
usual mistakes get TF Serving's codes and messages while the server keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.support import ServerProcess

tf = pytest.importorskip("tensorflow")
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

MODEL = "tf-digits"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


@pytest.fixture(scope="module")
def stub(tf_server: ServerProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(tf_server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def loaded(digits_tf_dir: Path) -> Any:
    """The SavedModel itself, in this process: the reference for every answer."""
    return tf.saved_model.load(str(digits_tf_dir / "1"))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_digits().images[:6].astype(np.float32)


def make_examples(images: np.ndarray) -> list[Any]:
    feature = tf.train.Feature
    return [
        tf.train.Example(features=tf.train.Features(feature={
            "pixels": feature(float_list=tf.train.FloatList(value=image.ravel().tolist()))
        }))
        for image in images
    ]


def predict_request(images: np.ndarray, signature: str = "") -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    return request


def outputs_of(response: Any) -> dict[str, np.ndarray]:
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def reference(loaded: Any, signature: str, **inputs: Any) -> dict[str, np.ndarray]:
    result = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in result.items()}


def test_get_model_metadata_is_the_saved_models_signatures(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, loaded: Any, digits_tf_dir: Path
) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = stub.GetModelMetadata(request, timeout=10)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    answered = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(answered)

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((digits_tf_dir / "1" / "saved_model.pb").read_bytes())
    defs = saved.meta_graphs[0].signature_def
    on_disk = {k: v for k, v in defs.items() if not k.startswith("__")}
    assert set(answered.signature_def) == set(on_disk) == {"serving_default", "classify", "regress"}
    for key, sig in answered.signature_def.items():
        assert sig.method_name == on_disk[key].method_name
        function = loaded.signatures[key]
        specs = {"inputs": function.structured_input_signature[1],
                 "outputs": function.structured_outputs}
        for side, want in specs.items():
            got = getattr(sig, side)
            assert set(got) == set(want) == set(getattr(on_disk[key], side))
            for name, info in got.items():
                assert info.dtype == want[name].dtype.as_datatype_enum
                assert [d.size for d in info.tensor_shape.dim] == [
                    -1 if d is None else d for d in want[name].shape.as_list()
                ]
                assert info.tensor_shape == getattr(on_disk[key], side)[name].tensor_shape


def test_predict_equals_the_saved_model(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, loaded: Any, images: np.ndarray
) -> None:
    response = stub.Predict(predict_request(images), timeout=10)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    got, want = outputs_of(response), reference(loaded, "serving_default", images=images)
    assert set(got) == set(want) == {"digit", "probabilities"}
    for name in want:
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name], want[name])


def test_predict_answers_in_typed_fields_as_tf_serving_does(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    # Many TF Serving clients read `.float_val` / `.int64_val` directly.
    response = stub.Predict(predict_request(images), timeout=10)
    assert len(response.outputs["probabilities"].float_val) == len(images) * 10
    assert list(response.outputs["digit"].int64_val) == load_digits().target[:6].tolist()


def test_predict_reads_typed_fields_and_broadcasts_a_single_value(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, loaded: Any, images: np.ndarray
) -> None:
    typed = predict_request(images[:2])
    typed.inputs["images"].ClearField("tensor_content")
    typed.inputs["images"].float_val.extend(images[:2].ravel().tolist())
    np.testing.assert_array_equal(
        outputs_of(stub.Predict(typed, timeout=10))["probabilities"],
        reference(loaded, "serving_default", images=images[:2])["probabilities"],
    )
    broadcast = predict_request(images[:3])
    broadcast.inputs["images"].ClearField("tensor_content")
    broadcast.inputs["images"].float_val.append(4.0)
    np.testing.assert_array_equal(
        outputs_of(stub.Predict(broadcast, timeout=10))["probabilities"],
        reference(loaded, "serving_default", images=np.full((3, 8, 8), 4.0, np.float32))[
            "probabilities"
        ],
    )


def test_output_filter_returns_only_those_outputs(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, loaded: Any, images: np.ndarray
) -> None:
    request = predict_request(images)
    request.output_filter.append("digit")
    got = outputs_of(stub.Predict(request, timeout=10))
    assert list(got) == ["digit"]
    np.testing.assert_array_equal(
        got["digit"], reference(loaded, "serving_default", images=images)["digit"]
    )


def test_concurrent_predicts_each_get_their_own_answer(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, loaded: Any, images: np.ndarray
) -> None:
    # Concurrent requests may share one batched graph call; each must get its own rows.
    futures = [stub.Predict.future(predict_request(images[i : i + 1]), timeout=20)
               for i in range(len(images))]
    digits = [int(outputs_of(f.result())["digit"][0]) for f in futures]
    assert digits == reference(loaded, "serving_default", images=images)["digit"].tolist()


def test_classify_equals_the_saved_model(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, loaded: Any, images: np.ndarray
) -> None:
    examples = make_examples(images)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "classify"
    request.input.example_list.examples.extend(examples)
    response = stub.Classify(request, timeout=10)
    assert (response.model_spec.name, response.model_spec.signature_name) == (MODEL, "classify")
    assert response.model_spec.version.value == 1
    serialized = np.array([e.SerializeToString() for e in examples], dtype=object)
    want = reference(loaded, "classify", inputs=serialized)
    assert len(response.result.classifications) == len(images)
    for i, per_example in enumerate(response.result.classifications):
        assert [c.label.encode() for c in per_example.classes] == want["classes"][i].tolist()
        np.testing.assert_array_equal(
            np.array([c.score for c in per_example.classes], np.float32), want["scores"][i]
        )
    best = [max(c.classes, key=lambda x: x.score).label for c in response.result.classifications]
    assert best == [str(d) for d in load_digits().target[:6]]


def test_regress_equals_the_saved_model(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, loaded: Any, images: np.ndarray
) -> None:
    examples = make_examples(images)
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "regress"
    request.input.example_list.examples.extend(examples)
    response = stub.Regress(request, timeout=10)
    assert response.model_spec.signature_name == "regress"
    serialized = np.array([e.SerializeToString() for e in examples], dtype=object)
    want = reference(loaded, "regress", inputs=serialized)["outputs"]
    got = np.array([r.value for r in response.result.regressions], np.float32)
    np.testing.assert_array_equal(got, want)


def test_example_list_with_context_merges_the_context(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    # The features live in the context; each example is empty: every row is images[0].
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "regress"
    listed = request.input.example_list_with_context
    listed.context.CopyFrom(make_examples(images[:1])[0])
    listed.examples.extend([tf.train.Example(), tf.train.Example()])
    values = [r.value for r in stub.Regress(request, timeout=10).result.regressions]
    plain = regression_pb2.RegressionRequest(model_spec=request.model_spec)
    plain.input.example_list.examples.extend(make_examples(images[:1]))
    alone = stub.Regress(plain, timeout=10).result.regressions[0].value
    # A batch of 2 and a batch of 1 may run different float kernels: equal to rounding.
    np.testing.assert_allclose(values, [alone] * 2, rtol=1e-5)


def test_multi_inference_runs_every_task(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify", CLASSIFY), ("regress", REGRESS)):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = MODEL
        task.model_spec.signature_name = signature
    request.input.example_list.examples.extend(make_examples(images[:2]))
    response = stub.MultiInference(request, timeout=10)
    classified, regressed = response.results
    assert classified.model_spec.signature_name == "classify"
    assert regressed.model_spec.version.value == 1
    single = classification_pb2.ClassificationRequest(model_spec=request.tasks[0].model_spec,
                                                      input=request.input)
    assert classified.classification_result == stub.Classify(single, timeout=10).result
    assert len(regressed.regression_result.regressions) == 2


def _predict_with(change: Callable[[Any], None]) -> Callable[[Any, np.ndarray], Any]:
    def call(stub: Any, images: np.ndarray) -> Any:
        request = predict_request(images[:2])
        change(request)
        return stub.Predict(request, timeout=10)

    return call


def _set(path: str, value: Any) -> Callable[[Any], None]:
    def change(request: Any) -> None:
        *parents, last = path.split(".")
        target = request
        for part in parents:
            target = getattr(target, part)
        setattr(target, last, value)

    return change


def _tensor(name: str, array: np.ndarray) -> Callable[[Any], None]:
    def change(request: Any) -> None:
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))

    return change


def _metadata(*fields: str, model: str = MODEL) -> Callable[[Any, np.ndarray], Any]:
    def call(stub: Any, images: np.ndarray) -> Any:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
        request.model_spec.name = model
        return stub.GetModelMetadata(request, timeout=10)

    return call


def _examples_call(method: str, signature: str, count: int = 2) -> Callable[[Any, np.ndarray], Any]:
    def call(stub: Any, images: np.ndarray) -> Any:
        kinds = {"Classify": classification_pb2.ClassificationRequest,
                 "Regress": regression_pb2.RegressionRequest}
        request = kinds[method]()
        request.model_spec.name = MODEL
        request.model_spec.signature_name = signature
        request.input.example_list.examples.extend(make_examples(images[:count]))
        return getattr(stub, method)(request, timeout=10)

    return call


def _drop_input(request: Any) -> None:
    del request.inputs["images"]


def _bad_content(request: Any) -> None:
    request.inputs["images"].tensor_content = b"\x00" * 10


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
BAD_CALLS = {
    "double-for-float": (_predict_with(_tensor("images", np.zeros((2, 8, 8)))), INVALID,
                         "input 'images' is DT_DOUBLE, signature 'serving_default' expects "
                         "DT_FLOAT"),
    "wrong-rank": (_predict_with(_tensor("images", np.zeros((2, 64), np.float32))), INVALID,
                   "expects rank 3"),
    "wrong-shape": (_predict_with(_tensor("images", np.zeros((2, 8, 9), np.float32))), INVALID,
                    "expects [-1, 8, 8]"),
    "nan": (_predict_with(_tensor("images", np.full((1, 8, 8), np.nan, np.float32))), INVALID,
            "NaN"),
    "unknown-input": (_predict_with(_tensor("pixels", np.zeros((2, 8, 8), np.float32))), INVALID,
                      "unknown ['pixels']"),
    "missing-input": (_predict_with(_drop_input), INVALID, "missing ['images']"),
    "bad-tensor-content": (_predict_with(_bad_content), INVALID, "tensor_content has 10 bytes"),
    "unknown-signature": (_predict_with(_set("model_spec.signature_name", "nope")), INVALID,
                          'Serving signature key "nope" not found'),
    "unknown-output": (_predict_with(lambda r: r.output_filter.append("logits")), INVALID,
                       "output tensor alias not found in signature: logits"),
    "duplicate-output": (_predict_with(lambda r: r.output_filter.extend(["digit", "digit"])),
                         INVALID, "duplicate output tensor alias: digit"),
    "unknown-model": (_predict_with(_set("model_spec.name", "nope")), NOT_FOUND,
                      "Servable not found for request: Latest(nope)"),
    "unknown-version": (_predict_with(_set("model_spec.version.value", 7)), NOT_FOUND,
                        f"Servable not found for request: Specific({MODEL}, 7)"),
    "version-label": (_predict_with(_set("model_spec.version_label", "stable")), INVALID,
                      "Unrecognized servable version label: stable"),
    "no-model-spec": (_predict_with(lambda r: r.ClearField("model_spec")), INVALID,
                      "Missing ModelSpec"),
    "metadata-without-field": (_metadata(), INVALID, "must specify at least one metadata_field"),
    "metadata-unknown-field": (_metadata("signature_def", "graph"), INVALID,
                               "Metadata field graph is not supported"),
    "metadata-unknown-model": (_metadata("signature_def", model="nope"), NOT_FOUND,
                               "Servable not found for request: Latest(nope)"),
    "classify-predict-signature": (_examples_call("Classify", ""), INVALID,
                                   f"Expected classification signature method_name to be "
                                   f"{CLASSIFY}. Was: tensorflow/serving/predict"),
    "regress-classify-signature": (_examples_call("Regress", "classify"), INVALID,
                                   f"Expected regression signature method_name to be {REGRESS}"),
    "classify-unknown-signature": (_examples_call("Classify", "nope"), INVALID,
                                   "No signature was found with the name: nope"),
    "classify-empty-input": (_examples_call("Classify", "classify", count=0), INVALID,
                             "Input is empty."),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_requests_get_tf_serving_codes_and_the_server_keeps_serving(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray, case: str
) -> None:
    call, code, detail = BAD_CALLS[case]
    with pytest.raises(grpc.RpcError) as caught:
        call(stub, images)
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    assert detail in (error.details() or "")
    assert stub.Predict(predict_request(images[:1]), timeout=10).outputs["digit"].int64_val


def test_multi_inference_refuses_mixed_models_and_unknown_methods(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    def multi(*tasks: tuple[str, str, str]) -> Any:
        request = inference_pb2.MultiInferenceRequest()
        for model, signature, method in tasks:
            task = request.tasks.add(method_name=method)
            task.model_spec.name = model
            task.model_spec.signature_name = signature
        request.input.example_list.examples.extend(make_examples(images[:1]))
        return request

    cases = [
        (multi(), INVALID, "Expected at least one task"),
        (multi((MODEL, "classify", CLASSIFY), ("other", "regress", REGRESS)), INVALID,
         "must access the same model name"),
        (multi((MODEL, "classify", CLASSIFY), (MODEL, "classify", CLASSIFY)), INVALID,
         "Duplicate evaluation of signature: classify"),
        (multi((MODEL, "serving_default", "tensorflow/serving/predict")),
         grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name"),
        (multi(("nope", "classify", CLASSIFY)), NOT_FOUND, "Latest(nope)"),
    ]
    for request, code, detail in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.MultiInference(request, timeout=10)
        assert isinstance(caught.value, grpc.Call)
        assert caught.value.code() == code
        assert detail in (caught.value.details() or "")
