"""TF Serving's gRPC `tensorflow.serving.PredictionService` over our TensorFlow predictors.

`tensorflow-serving-api` clients (`PredictionServiceStub`) work against `python -m
servers.tensorflow` as against `tensorflow_model_server`: same requests, same answers, and
TF Serving's status codes and messages for the usual mistakes (unknown model or version,
unknown signature, a signature of the wrong kind for Classify/Regress, empty input). Every
call goes through the predictor (`TensorFlowPredictor.run_signature`), so inputs are checked
and batched exactly as for KServe v1/v2 requests, and whichever backend runs the model (a
SavedModel in process, or a TF Serving backend) answers.

Registered on the same gRPC port as KServe's v2 service; errors are our `ModelServeError`s,
which KServe's exception interceptor turns into gRPC statuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np
from grpc import StatusCode, aio
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from servers.errors import InvalidInput, ModelServeError, UnprocessableEntity
from servers.model_server import GrpcService
from servers.tensorflow.model import TensorFlowPredictor
from servers.tensorflow.signatures import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    Signature,
    SignatureBackend,
    TensorSpec,
    servable_not_found,
)
from servers.tensorflow.tensor_proto import (
    dtype_enum,
    dtype_name,
    from_tensor_proto,
    tensor_shape,
    to_tensor_proto,
)

__all__ = [
    "SIGNATURE_DEF_FIELD",
    "PredictionServicer",
    "prediction_service",
    "signature_def_map",
]

SIGNATURE_DEF_FIELD = "signature_def"  # the one GetModelMetadata field TF Serving knows
# TF Serving's fixed names of Classify/Regress signature inputs and outputs.
_INPUTS, _CLASSES, _SCORES, _OUTPUTS = "inputs", "classes", "scores", "outputs"


class Unimplemented(ModelServeError):
    """A request TF Serving itself answers with UNIMPLEMENTED."""

    http_status = 501
    grpc_code = StatusCode.UNIMPLEMENTED


def signature_def_map(signatures: Mapping[str, Signature]) -> Any:
    """Our signatures as TF Serving's `SignatureDefMap` (GetModelMetadata's answer).

    TensorInfo names are the aliases: where the graph tensors are is the backend's business.
    """
    result = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in signatures.items():
        sig = result.signature_def[key]
        sig.method_name = signature.method_name
        for specs, infos in ((signature.inputs, sig.inputs), (signature.outputs, sig.outputs)):
            for name, spec in specs.items():
                _tensor_info(spec, infos[name])
    return result


def _tensor_info(spec: TensorSpec, info: meta_graph_pb2.TensorInfo) -> None:
    info.name = spec.name
    info.dtype = dtype_enum(spec.dtype)
    tensor_shape(spec.shape, out=info.tensor_shape)


def _set_model_spec(
    spec: model_pb2.ModelSpec, name: str, version: int, signature: str | None
) -> None:
    spec.name = name
    spec.version.value = version
    if signature is not None:
        spec.signature_name = signature


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService` for the predictors named in `predictors`."""

    def __init__(self, predictors: Mapping[str, TensorFlowPredictor]) -> None:
        self.predictors = dict(predictors)

    # -- lookups ---------------------------------------------------------------------------
    def _servable(self, spec: model_pb2.ModelSpec) -> tuple[TensorFlowPredictor, SignatureBackend]:
        """The predictor and loaded backend a ModelSpec asks for, or TF Serving's error."""
        name = spec.name
        predictor = self.predictors.get(name)
        backend = predictor.backend if predictor is not None else None
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            # No labels are configured here, and TF Serving answers an unknown label so.
            raise InvalidInput(f"Unrecognized servable version label: {spec.version_label}")
        if choice == "version":
            if backend is None or backend.version != spec.version.value:
                raise servable_not_found(name, spec.version.value)
        elif backend is None:
            raise servable_not_found(name)
        assert predictor is not None and backend is not None
        return predictor, backend

    @staticmethod
    def _spec_of(request: Any) -> model_pb2.ModelSpec:
        if not request.HasField("model_spec"):
            raise InvalidInput("Missing ModelSpec")
        return request.model_spec

    # -- Predict ---------------------------------------------------------------------------
    async def Predict(  # gRPC method names are CamelCase
        self, request: predict_pb2.PredictRequest, context: aio.ServicerContext[Any, Any]
    ) -> predict_pb2.PredictResponse:
        """Run a signature on named TensorProtos; answer the (filtered) outputs."""
        spec = self._spec_of(request)
        predictor, backend = self._servable(spec)
        signature = predictor.signature(spec.signature_name or DEFAULT_SIGNATURE)
        arrays = {name: from_tensor_proto(t, name) for name, t in request.inputs.items()}
        _check_dtypes(signature, arrays)
        requested = _output_filter(signature, list(request.output_filter))
        result = await predictor.run_signature(signature, arrays, requested)
        response = predict_pb2.PredictResponse()
        _set_model_spec(response.model_spec, spec.name, backend.version, signature.name)
        for name, array in result.items():
            # Typed fields, as TF Serving answers: clients read `.float_val` directly.
            to_tensor_proto(array, typed_fields=True, out=response.outputs[name])
        return response

    # -- GetModelMetadata ------------------------------------------------------------------
    async def GetModelMetadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """The model's SignatureDefs, packed in `metadata["signature_def"]`."""
        spec = self._spec_of(request)
        if not request.metadata_field:
            raise InvalidInput("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise InvalidInput(f"Metadata field {field} is not supported")
        _, backend = self._servable(spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _set_model_spec(response.model_spec, spec.name, backend.version, None)
        # Deterministic: map entries sorted, so the same signatures always pack the same bytes.
        response.metadata[SIGNATURE_DEF_FIELD].Pack(
            signature_def_map(backend.signatures), deterministic=True
        )
        return response

    # -- Classify / Regress / MultiInference -----------------------------------------------
    async def Classify(
        self,
        request: classification_pb2.ClassificationRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> classification_pb2.ClassificationResponse:
        """Classify tf.Examples with a signature of method tensorflow/serving/classify."""
        spec = self._spec_of(request)
        predictor, backend = self._servable(spec)
        signature = _typed_signature(backend, spec.signature_name, CLASSIFY_METHOD)
        examples = serialized_examples(request.input)
        response = classification_pb2.ClassificationResponse()
        await _classify(predictor, signature, examples, response.result)
        _set_model_spec(response.model_spec, spec.name, backend.version, signature.name)
        return response

    async def Regress(
        self,
        request: regression_pb2.RegressionRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> regression_pb2.RegressionResponse:
        """Regress tf.Examples with a signature of method tensorflow/serving/regress."""
        spec = self._spec_of(request)
        predictor, backend = self._servable(spec)
        signature = _typed_signature(backend, spec.signature_name, REGRESS_METHOD)
        examples = serialized_examples(request.input)
        response = regression_pb2.RegressionResponse()
        await _regress(predictor, signature, examples, response.result)
        _set_model_spec(response.model_spec, spec.name, backend.version, signature.name)
        return response

    async def MultiInference(
        self,
        request: inference_pb2.MultiInferenceRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> inference_pb2.MultiInferenceResponse:
        """Several Classify/Regress tasks of one model on the same examples."""
        if not request.tasks:
            raise InvalidInput("Expected at least one task")
        tasks = list(request.tasks)
        predictor, backend = self._servable(tasks[0].model_spec)
        signatures: list[Signature] = []
        for task in tasks:
            if not task.model_spec.name:
                raise InvalidInput("Found ModelSpec with an empty model name.")
            if task.model_spec.name != tasks[0].model_spec.name:
                raise InvalidInput(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            key = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if any(s.name == key for s in signatures):
                raise InvalidInput(f"Duplicate evaluation of signature: {key}")
            if key not in backend.signatures:
                raise InvalidInput(f"Requested signature not found in model graph: {key}")
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
            signature = _typed_signature(backend, key, task.method_name)
            (_classify_io if task.method_name == CLASSIFY_METHOD else _regress_io)(signature)
            signatures.append(signature)
        examples = serialized_examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        runs = []
        for task, signature in zip(tasks, signatures, strict=True):
            result = response.results.add()
            _set_model_spec(result.model_spec, task.model_spec.name, backend.version,
                            signature.name)
            if task.method_name == CLASSIFY_METHOD:
                runs.append(_classify(predictor, signature, examples,
                                      result.classification_result))
            else:
                runs.append(_regress(predictor, signature, examples, result.regression_result))
        await asyncio.gather(*runs)
        return response


def prediction_service(predictors: Mapping[str, TensorFlowPredictor]) -> GrpcService:
    """A `GrpcService` adding TF Serving's PredictionService for `predictors` to a server."""
    servicer = PredictionServicer(predictors)

    def add(server: aio.Server) -> None:
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)

    return add


# -- Predict helpers -----------------------------------------------------------------------


def _check_dtypes(signature: Signature, arrays: Mapping[str, np.ndarray]) -> None:
    """Refuse a dtype mismatch in TensorFlow's terms (DT_DOUBLE, not FP64)."""
    for name, array in arrays.items():
        spec = signature.inputs.get(name)
        if spec is None:
            continue  # the predictor names unknown inputs along with missing ones
        if (spec.dtype.kind == "O") != (array.dtype.kind == "O") or (
            spec.dtype.kind != "O" and spec.dtype != array.dtype
        ):
            raise InvalidInput(
                f"input '{name}' is {dtype_name(dtype_enum(array.dtype))}, signature "
                f"'{signature.name}' expects {dtype_name(dtype_enum(spec.dtype))}"
            )


def _output_filter(signature: Signature, requested: list[str]) -> list[str]:
    """`output_filter` checked as TF Serving does (unknown or duplicate aliases are refused)."""
    seen: set[str] = set()
    for alias in requested:
        if alias not in signature.outputs:
            raise InvalidInput(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise InvalidInput(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return requested


# -- Classify / Regress helpers ------------------------------------------------------------


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """The request's tf.Examples, serialized, as the DT_STRING vector a signature takes.

    With `example_list_with_context` each example is the context followed by the example,
    which protobuf parses as their merge (the example's features win), as TF Serving does.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        items = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        items = [context + e.SerializeToString() for e in listed.examples]
    else:
        items = []
    if not items:
        raise InvalidInput("Input is empty.")
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    return array


def _typed_signature(backend: SignatureBackend, name: str, method: str) -> Signature:
    """The signature `name` (serving_default when empty) if it is of `method`'s kind."""
    key = name or DEFAULT_SIGNATURE
    signature = backend.signatures.get(key)
    if signature is None:
        raise InvalidInput(f"No signature was found with the name: {key}")
    if signature.method_name != method:
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        raise InvalidInput(
            f"Expected {kind} signature method_name to be {method}. Was: "
            f"{signature.method_name}"
        )
    return signature


def _example_input(signature: Signature, kind: str) -> str:
    if len(signature.inputs) != 1:
        raise InvalidInput("Expected one input Tensor.")
    spec = signature.inputs.get(_INPUTS)
    if spec is None:
        raise UnprocessableEntity(
            f"No {kind} inputs found in SignatureDef '{signature.name}': it needs an input "
            f"named '{_INPUTS}'"
        )
    if spec.dtype.kind != "O":
        raise UnprocessableEntity(
            f"signature '{signature.name}' input '{_INPUTS}' is "
            f"{dtype_name(dtype_enum(spec.dtype))}: {kind} feeds it serialized tf.Examples "
            "(DT_STRING)"
        )
    return _INPUTS


def _classify_io(signature: Signature) -> list[str]:
    """TF Serving's checks of a classification signature; the outputs to fetch."""
    _example_input(signature, "classification")
    if len(signature.outputs) not in (1, 2):
        raise InvalidInput(
            f"Expected one or two output Tensors, found {len(signature.outputs)}"
        )
    outputs = [name for name in (_CLASSES, _SCORES) if name in signature.outputs]
    if not outputs:
        raise UnprocessableEntity(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature \'{signature.name}\' has {sorted(signature.outputs)}'
        )
    return outputs


def _regress_io(signature: Signature) -> list[str]:
    """TF Serving's checks of a regression signature; the outputs to fetch."""
    _example_input(signature, "regression")
    if len(signature.outputs) != 1:
        raise InvalidInput("Expected one output Tensor.")
    if _OUTPUTS not in signature.outputs:
        raise UnprocessableEntity(
            f"No regression outputs found in SignatureDef '{signature.name}': it needs an "
            f"output named '{_OUTPUTS}'"
        )
    return [_OUTPUTS]


def _check_class_tensor(array: np.ndarray, name: str, count: int, want_string: bool) -> None:
    if array.ndim != 2:
        raise InvalidInput(
            f"Expected Tensor shape: [batch_size num_classes] but got {list(array.shape)}"
        )
    if (array.dtype.kind == "O") != want_string or (not want_string and array.dtype != np.float32):
        expected = "DT_STRING" if want_string else "DT_FLOAT"
        raise InvalidInput(
            f"Expected {name} Tensor of {expected}. Got: {dtype_name(dtype_enum(array.dtype))}"
        )
    if array.shape[0] != count:
        raise InvalidInput(
            f"Expected {name} output batch size of {count}. Got: {array.shape[0]}"
        )


async def _classify(
    predictor: TensorFlowPredictor,
    signature: Signature,
    examples: np.ndarray,
    result: classification_pb2.ClassificationResult,
) -> None:
    outputs = _classify_io(signature)
    found = await predictor.run_signature(signature, {_INPUTS: examples}, outputs)
    count = len(examples)
    classes, scores = found.get(_CLASSES), found.get(_SCORES)
    if classes is not None:
        _check_class_tensor(classes, _CLASSES, count, want_string=True)
    if scores is not None:
        _check_class_tensor(scores, _SCORES, count, want_string=False)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidInput(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    either = classes if classes is not None else scores
    if either is None:  # _classify_io asked for at least one of them
        raise InvalidInput("the classification signature answered neither classes nor scores")
    labels = classes.tolist() if classes is not None else None
    values = scores.tolist() if scores is not None else None
    width = either.shape[1]
    for i in range(count):
        per_example = result.classifications.add()
        for c in range(width):
            entry = per_example.classes.add()
            if labels is not None:
                entry.label = _label(labels[i][c])
            if values is not None:
                entry.score = values[i][c]


def _label(value: Any) -> str:
    # `Class.label` is a proto string: TensorFlow's bytes are UTF-8 text here.
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


async def _regress(
    predictor: TensorFlowPredictor,
    signature: Signature,
    examples: np.ndarray,
    result: regression_pb2.RegressionResult,
) -> None:
    outputs = _regress_io(signature)
    found = await predictor.run_signature(signature, {_INPUTS: examples}, outputs)
    values = found[_OUTPUTS]
    count = len(examples)
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidInput(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{list(values.shape)}"
        )
    if values.shape[0] != count:
        raise InvalidInput(
            f"Input batch size did not match output batch size: {count} vs. {values.shape[0]}"
        )
    if values.dtype != np.float32:
        raise InvalidInput(
            f"Expected output Tensor of DT_FLOAT.  Got: {dtype_name(dtype_enum(values.dtype))}"
        )
    for value in values.reshape(-1).tolist():
        result.regressions.add(value=value)
