"""A Locust user for v2 gRPC: `inference.GRPCInferenceService/ModelInfer` with raw input contents.

Locust has no gRPC client, so the user times each call itself and reports it through
`environment.events.request.fire(request_type="grpc", ...)`, like Locust's own clients do.
The target comes from `--grpc-target HOST:PORT`.

A TF Serving `PredictionService` user belongs here too once the TensorFlow backend exists;
it is deliberately not written yet.
"""

from __future__ import annotations

import functools
import time
from types import ModuleType
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, task

from loadtests.bodies import raw_tensors
from servers.kserve_argv import argv_hidden

__all__ = ["GrpcV2User", "import_stubs"]

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


def _request(service: str) -> Any:
    pb2, _ = import_stubs()
    tensors = raw_tensors(service)
    return pb2.ModelInferRequest(
        model_name=service,
        inputs=[
            pb2.ModelInferRequest.InferInputTensor(name=t.name, datatype=t.datatype, shape=t.shape)
            for t in tensors
        ],
        raw_input_contents=[t.raw for t in tensors],
    )


class GrpcV2User(User):
    """Calls ModelInfer over one channel per user, in a closed loop."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        assert options is not None, "GrpcV2User runs under the locust command line"
        self.service: str = options.service
        _, pb2_grpc = import_stubs()
        self.channel = grpc.insecure_channel(options.grpc_target)
        self.stub = pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.request = _request(self.service)

    def on_stop(self) -> None:
        self.channel.close()

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
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"ModelInfer {self.service}",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )
