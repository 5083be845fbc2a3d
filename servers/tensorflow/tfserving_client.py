"""`TFServingBackend`: a model served by TF Serving, reached over its gRPC PredictionService.

What `python -m servers.tensorflow --tfserving_host HOST:PORT` runs on (KServe's "TF Serving
runtime" case): the signatures come from the backend's `GetModelMetadata` at start-up, every
request is checked against them by the predictor, then sent as one `Predict` call with an
`output_filter`. Backend failures map to our errors: no answer in time is 504, an unreachable
backend 503, and any other status (a 400 for input the backend refuses, say) passes through
with its code.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from grpc import aio

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from servers.errors import (  # noqa: E402
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    ModelLoadError,
    ModelServeError,
    UpstreamError,
    status_for_http,
)
from servers.tensorflow.signatures import Signature, TensorSpec  # noqa: E402
from servers.tensorflow.tensor_proto import (  # noqa: E402
    from_tensor_proto,
    numpy_dtype,
    to_tensor_proto,
)

__all__ = ["TFServingBackend", "signatures_from_map"]

log = logging.getLogger("modelserve.tensorflow")

SIGNATURE_DEF_FIELD = "signature_def"
# Tensors can be large (images); gRPC's 4 MiB default receive limit would refuse them.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]


def _spec(name: str, info: Any) -> TensorSpec:
    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(None if d.size < 0 else d.size for d in shape.dim)
    return TensorSpec(name, numpy_dtype(info.dtype), dims)


def signatures_from_map(signature_defs: Mapping[str, Any]) -> dict[str, Signature]:
    """Our `Signature`s from a SignatureDefMap's entries.

    TensorFlow's internal entries (`__saved_model_init_op`) and signatures with a dtype we
    cannot carry (resources, variants) are left out, the latter with a warning.
    """
    signatures: dict[str, Signature] = {}
    for key, sig in sorted(signature_defs.items()):
        if key.startswith("__"):
            continue
        try:
            signatures[key] = Signature(
                name=key,
                inputs={n: _spec(n, info) for n, info in sorted(sig.inputs.items())},
                outputs={n: _spec(n, info) for n, info in sorted(sig.outputs.items())},
                method_name=sig.method_name,
            )
        except InvalidInput as exc:
            log.warning("signature '%s' is not served: %s", key, exc)
    return signatures


def _status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """Code and details of a failed call (sync errors are `grpc.Call`s, aio ones are not)."""
    if isinstance(exc, grpc.Call | aio.AioRpcError):
        code = exc.code()
        return code, exc.details() or code.name
    return grpc.StatusCode.UNKNOWN, str(exc)


def _call_error(exc: grpc.RpcError, target: str, timeout_s: float) -> ModelServeError:
    """The error that answers a failed call to the backend at `target`."""
    code, details = _status(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendTimeout(f"TF Serving backend {target} did not answer within {timeout_s:g} s")
    if code == grpc.StatusCode.UNAVAILABLE:
        return BackendUnavailable(f"TF Serving backend {target} unavailable: {details}")
    return UpstreamError(details, status_for_http(code), code)


class TFServingBackend:
    """The signatures of one model on a TF Serving backend, run with gRPC `Predict`.

    `model_name` is the name we serve the model under, `remote_name` its name on the backend.
    Requests ask for the backend's latest version; `version` is the one seen at start-up.
    """

    def __init__(
        self,
        model_name: str,
        target: str,
        remote_name: str,
        timeout_s: float,
        version: int,
        signatures: Mapping[str, Signature],
    ) -> None:
        self.model_name = model_name
        self.target = target
        self.remote_name = remote_name
        self.timeout_s = timeout_s
        self.version = version
        self.signatures: Mapping[str, Signature] = signatures
        self._channel: aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._predict: Any = None

    @classmethod
    def connect(
        cls,
        model_name: str,
        target: str,
        remote_name: str | None = None,
        timeout_s: float = 30.0,
    ) -> TFServingBackend:
        """Read the model's signatures from the backend (blocking: called before the server's
        event loop runs). Waits up to `timeout_s` for the backend to come up; a backend that
        does not, or does not serve the model, is a `ModelLoadError`."""
        remote = remote_name or model_name
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=[SIGNATURE_DEF_FIELD]
        )
        request.model_spec.name = remote
        with grpc.insecure_channel(target, options=_CHANNEL_OPTIONS) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            try:
                # wait_for_ready: a backend still starting next to us is not an error yet.
                response = stub.GetModelMetadata(request, timeout=timeout_s, wait_for_ready=True)
            except grpc.RpcError as exc:
                code, _ = _status(exc)
                if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    raise ModelLoadError(
                        f"TF Serving backend {target} is unreachable: no answer to "
                        f"GetModelMetadata within {timeout_s:g} s"
                    ) from exc
                raise ModelLoadError(
                    f"TF Serving backend {target} refused GetModelMetadata for model "
                    f"'{remote}': {_call_error(exc, target, timeout_s)}"
                ) from exc
        packed = response.metadata.get(SIGNATURE_DEF_FIELD)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        if packed is None or not packed.Unpack(signature_defs):
            raise ModelLoadError(
                f"TF Serving backend {target} answered no SignatureDefMap for model '{remote}'"
            )
        signatures = signatures_from_map(signature_defs.signature_def)
        version = int(response.model_spec.version.value)
        log.info("TF Serving backend %s serves %s version %d with signatures %s",
                 target, remote, version, sorted(signatures))
        return cls(model_name, target, remote, timeout_s, version, signatures)

    def _stub(self) -> Any:
        """Predict on an aio channel of the running loop (made on first use in that loop)."""
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            self._channel = aio.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
            self._loop = loop
            self._predict = prediction_service_pb2_grpc.PredictionServiceStub(
                self._channel
            ).Predict
        return self._predict

    async def run(
        self, signature: str, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """One `Predict` call on the backend for checked `inputs`; the named `outputs`."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.remote_name
        request.model_spec.signature_name = signature
        for name, array in inputs.items():
            to_tensor_proto(array, out=request.inputs[name])
        request.output_filter.extend(outputs)
        try:
            response = await self._stub()(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _call_error(exc, self.target, self.timeout_s) from exc
        result: dict[str, np.ndarray] = {}
        for name in outputs:
            if name not in response.outputs:
                raise UpstreamError(
                    f"TF Serving backend {self.target} answered without output '{name}'",
                    502,
                    grpc.StatusCode.INTERNAL,
                )
            try:
                result[name] = from_tensor_proto(response.outputs[name], name)
            except InvalidInput as exc:  # the backend's fault, not the client's
                raise UpstreamError(
                    f"TF Serving backend {self.target} answered a malformed tensor: {exc}",
                    502,
                    grpc.StatusCode.INTERNAL,
                ) from exc
        return result

    async def close(self) -> None:
        """Close the channel to the backend (a later call opens a new one)."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
