"""One gRPC message limit on every hop: 64 MiB by default (the gateway's), both directions,
`MODELSERVE_GRPC_MAX_MESSAGE_BYTES` to change it. Real servers, raw v2 gRPC messages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from servers.limits import DEFAULT_GRPC_MAX_MESSAGE_BYTES
from tests.support import ServerProcess, run_server

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def channel_to() -> Iterator[dict[str, grpc.Channel]]:
    """Channels by target, with no client-side limit: only the server's applies."""
    channels: dict[str, grpc.Channel] = {}
    yield channels
    for channel in channels.values():
        channel.close()


def infer(
    channels: dict[str, grpc.Channel], target: str, matrix: np.ndarray
) -> pb.ModelInferResponse:
    """One v2 infer of `matrix` as one raw FP32 tensor."""
    if target not in channels:
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        channels[target] = grpc.insecure_channel(target, options=options)
    request = pb.ModelInferRequest(model_name="sklearn-iris")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input-0", "FP32"
    tensor.shape.extend(matrix.shape)
    request.raw_input_contents.append(matrix.astype(np.float32).tobytes())
    stub = pb_grpc.GRPCInferenceServiceStub(channels[target])
    response: pb.ModelInferResponse = stub.ModelInfer(request, timeout=60)
    return response


def rows_of(size_bytes: int, features: int) -> np.ndarray:
    return np.ones((size_bytes // (4 * features), features), dtype=np.float32)


def test_the_default_is_the_gateways_64_mib() -> None:
    assert DEFAULT_GRPC_MAX_MESSAGE_BYTES == 64 * MIB


def test_a_20_mib_message_reaches_the_model(
    sklearn_server: ServerProcess, channel_to: dict[str, grpc.Channel]
) -> None:
    # Past KServe's 8 MiB: the transport takes it, the model refuses the shape (5 features).
    with pytest.raises(grpc.RpcError) as caught:
        infer(channel_to, sklearn_server.grpc_target, rows_of(20 * MIB, 5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "feature" in (caught.value.details() or "")


def test_a_message_over_64_mib_is_resource_exhausted(
    sklearn_server: ServerProcess, channel_to: dict[str, grpc.Channel]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        infer(channel_to, sklearn_server.grpc_target, rows_of(65 * MIB, 4))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()


@pytest.fixture(scope="module")
def small_limit_transformer(
    sklearn_server: ServerProcess, iris_dir: Path, logs: Path
) -> Iterator[ServerProcess]:
    """The tabular transformer with a 1 MiB limit, in front of a predictor with the default."""
    args = [
        "--model_name=sklearn-iris",
        f"--model_dir={iris_dir}",
        f"--predictor_host={sklearn_server.grpc_target}",
        "--predictor_protocol=grpc-v2",
    ]
    with ExitStack() as stack:
        # Only while this one starts: the session's other servers keep the default.
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MODELSERVE_GRPC_MAX_MESSAGE_BYTES", str(MIB))
            server = stack.enter_context(run_server("servers.transformers.tabular", args, logs))
        yield server


def test_the_transformer_server_takes_its_limit_from_the_environment(
    small_limit_transformer: ServerProcess, channel_to: dict[str, grpc.Channel]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        infer(channel_to, small_limit_transformer.grpc_target, rows_of(2 * MIB, 4))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()


def test_the_transformer_client_to_its_predictor_has_the_same_limit(
    small_limit_transformer: ServerProcess,
    tabular_server: ServerProcess,
    channel_to: dict[str, grpc.Channel],
) -> None:
    # 0.75 MiB of FP32 in, under the transformer's 1 MiB; 1.5 MiB of FP64 to the predictor,
    # which takes 64 MiB: only the transformer's own client can refuse it.
    matrix = rows_of(3 * MIB // 4, 4)
    with pytest.raises(grpc.RpcError) as caught:
        infer(channel_to, small_limit_transformer.grpc_target, matrix)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    assert "predictor" in (caught.value.details() or "")
    # With the default limit the same request goes through.
    response = infer(channel_to, tabular_server.grpc_target, matrix)
    assert response.outputs[0].name == "label"
    assert list(response.outputs[0].shape) == [matrix.shape[0]]
