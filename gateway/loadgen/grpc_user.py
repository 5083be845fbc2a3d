"""Locust users for gRPC: v2 `inference.GRPCInferenceService/ModelInfer` with raw input contents,
and TF Serving's `tensorflow.serving.PredictionService/Predict`.

Locust has no gRPC client, so each user times its calls itself and reports them through
`environment.events.request.fire(request_type="grpc", ...)`, like Locust's own clients do.
The target comes from `--grpc-target HOST:PORT` (modelserve serves both services on one port).

`TFServingUser` sends `<service>.tfserving.json` as a PredictRequest serialized once by
`gateway.loadgen.bodies.tfserving_body` (inputs as `tensor_content`) over a bytes-in, bytes-out stub
for the same method path as tensorflow-serving-api's `PredictionServiceStub.Predict`: that
package imports all of TensorFlow, which would cost the load generator ~15 s and ~1 GB.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, task

from gateway.loadgen.bodies import PREDICT_METHOD, raw_tensors, tfserving_body
from servers.kserve_argv import argv_hidden

__all__ = ["GrpcV2User", "TFServingUser", "import_stubs"]

TIMEOUT_S = 30.0

# grpcio blocks the whole process unless told to cooperate with gevent, which Locust runs on.
grpc_gevent.init_gevent()


@functools.cache
def import_stubs() -> tuple[ModuleType, ModuleType]:
    """kserve's v2 protobuf modules (pb2, pb2_grpc).

    kserve parses sys.argv when first imported, so Locust's arguments are hidden from it.
    """
    with argv_hidden():
        from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
    return grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc


def _request(service: str, payloads: Path) -> Any:
    pb2, _ = import_stubs()
    tensors = raw_tensors(service, payloads)
    return pb2.ModelInferRequest(
        model_name=service,
        inputs=[
            pb2.ModelInferRequest.InferInputTensor(name=t.name, datatype=t.datatype, shape=t.shape)
            for t in tensors
        ],
        raw_input_contents=[t.raw for t in tensors],
    )


class _GrpcUser(User):
    """One channel per user, calls in a closed loop, each reported as a Locust request."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        assert options is not None, f"{type(self).__name__} runs under the locust command line"
        self.service: str = options.service
        self.payloads = Path(options.payloads)
        self.channel = grpc.insecure_channel(options.grpc_target)

    def on_stop(self) -> None:
        self.channel.close()

    def _report(self, name: str, started: float, length: int, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"{name} {self.service}",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )


class GrpcV2User(_GrpcUser):
    """Calls ModelInfer with the v2 payload's tensors as raw input contents."""

    def on_start(self) -> None:
        super().on_start()
        _, pb2_grpc = import_stubs()
        self.stub = pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.request = _request(self.service, self.payloads)

    @task
    def model_infer(self) -> None:
        started = time.perf_counter()
        length = 0
        error: Exception | None = None
        try:
            response = self.stub.ModelInfer(self.request, timeout=TIMEOUT_S)
            length = response.ByteSize()
        except grpc.RpcError as exc:
            error = exc
        self._report("ModelInfer", started, length, error)


class TFServingUser(_GrpcUser):
    """Calls TF Serving's Predict with `<service>.tfserving.json`, serialized once."""

    def on_start(self) -> None:
        super().on_start()
        # No (de)serializers: the pre-serialized request goes out as is, the answer stays bytes.
        self.predict_call = self.channel.unary_unary(PREDICT_METHOD)
        self.request = tfserving_body(self.service, self.payloads)

    @task
    def predict(self) -> None:
        started = time.perf_counter()
        length = 0
        error: Exception | None = None
        try:
            response: bytes = self.predict_call(self.request, timeout=TIMEOUT_S)
            length = len(response)
        except grpc.RpcError as exc:
            error = exc
        self._report("Predict", started, length, error)
