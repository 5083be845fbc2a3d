"""The gateway's gRPC proxy, run for real in front of grpc.aio upstreams."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from gateway.dataplane.grpc_proxy import GrpcProxy
from gateway.dataplane.grpc_wire import read_model_name
from gateway.routing import RoutingTable
from gateway.settings import GatewaySettings
from servers.errors import InvalidInput
from tests.gateway.conftest import Gateway

REVISION = "x-modelserve-revision"


@pytest.fixture
def stub(gateway: Gateway) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def infer_request(model: str, payload: bytes = b"\x01\x02") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="r1")
    tensor = request.inputs.add(name="x", datatype="BYTES", shape=[1])
    tensor.parameters["p"].int64_param = 3
    request.raw_input_contents.append(payload)
    return request


def revision_of(call: grpc.Call) -> str | None:
    return dict(call.initial_metadata() or ()).get(REVISION)


def test_model_infer_is_forwarded_with_metadata(
    stub: pb_grpc.GRPCInferenceServiceStub, gateway: Gateway
) -> None:
    before = gateway.sample("echo", "grpc", "OK")
    response, call = stub.ModelInfer.with_call(infer_request("echo"),
                                               metadata=(("x-test", "hello"),))
    assert response.model_name == "echo"
    assert response.id == "r1"
    assert response.parameters["upstream"].string_param == "a"
    assert response.parameters["x-test"].string_param == "hello"
    assert response.raw_output_contents == [b"\x01\x02"]
    assert revision_of(call) == "echo-00001"
    assert gateway.sample("echo", "grpc", "OK") == before + 1


def test_model_ready_and_metadata_are_forwarded(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    ready, call = stub.ModelReady.with_call(pb.ModelReadyRequest(name="echo"))
    assert ready.ready
    assert revision_of(call) == "echo-00001"
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="split"))
    assert (metadata.name, metadata.platform) == ("split", "a")


def test_server_calls_are_answered_by_the_gateway(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    # "loading" has no ready backend.
    ready, call = stub.ServerReady.with_call(pb.ServerReadyRequest())
    assert not ready.ready
    assert revision_of(call) == "none"
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "modelserve-gateway"


@pytest.mark.parametrize(
    ("model", "code", "revision", "detail"),
    [
        ("nope", grpc.StatusCode.NOT_FOUND, "none", "model 'nope' not found"),
        ("loading", grpc.StatusCode.UNAVAILABLE, "none", "pulling its model"),
        ("down", grpc.StatusCode.UNAVAILABLE, "down-00001", "unavailable"),
        ("slow", grpc.StatusCode.DEADLINE_EXCEEDED, "slow-00001", "did not answer"),
        ("refuse", grpc.StatusCode.NOT_FOUND, "refuse-00001", "backend refuses this model"),
    ],
)
def test_failures_map_to_grpc_codes(
    stub: pb_grpc.GRPCInferenceServiceStub,
    gateway: Gateway,
    model: str,
    code: grpc.StatusCode,
    revision: str,
    detail: str,
) -> None:
    service = "unknown" if model == "nope" else model
    before = gateway.sample(service, "grpc", code.name)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(infer_request(model), timeout=10)
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code
    assert detail in (error.details() or "")
    assert revision_of(error) == revision
    assert gateway.sample(service, "grpc", code.name) == before + 1


def test_message_over_limit_is_resource_exhausted(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(infer_request("echo", b"x" * (65 * 1024)))
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_traffic_split_follows_percent(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    tags = {stub.ModelInfer(infer_request("split")).parameters["upstream"].string_param
            for _ in range(20)}
    assert tags == {"a"}


@given(
    name=st.text(min_size=1, max_size=40),
    request_id=st.text(max_size=20),
    payload=st.binary(max_size=300),
    order_first=st.booleans(),
)
def test_read_model_name_finds_field_one_anywhere(
    name: str, request_id: str, payload: bytes, order_first: bool
) -> None:
    request = infer_request(name, payload)
    request.id = request_id
    request.model_version = "7"
    data = request.SerializeToString()
    if not order_first:
        # Field order is not guaranteed on the wire: put the name last.
        rest = pb.ModelInferRequest()
        rest.CopyFrom(request)
        rest.ClearField("model_name")
        data = rest.SerializeToString() + pb.ModelInferRequest(model_name=name).SerializeToString()
    assert read_model_name(data) == name


def test_read_model_name_rejects_requests_without_one() -> None:
    with pytest.raises(InvalidInput):
        read_model_name(pb.ModelReadyRequest(version="1").SerializeToString())
    with pytest.raises(InvalidInput):
        read_model_name(b"\x0a\x80")  # truncated


def test_a_refused_replica_is_retried_on_the_other_replica(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    for _ in range(12):  # ties between the replicas go round: some calls try the dead one
        response, call = stub.ModelInfer.with_call(infer_request("halfdown"))
        assert response.parameters["upstream"].string_param == "a"
        assert revision_of(call) == "halfdown-00001"


def test_a_connection_that_never_finishes_the_http2_handshake_is_closed() -> None:
    # The gRPC listener's header timeout (grpc core's handshake timeout, 120 s by default).
    async def run() -> list[bytes]:
        proxy = GrpcProxy(RoutingTable(), GatewaySettings(header_timeout_s=1.0))
        port = await proxy.start("127.0.0.1", 0)

        def idle_client(sent: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.settimeout(30)  # generous: the server must close long before
                sock.sendall(sent)
                received = b""
                while chunk := sock.recv(4096):
                    received += chunk
                return received

        try:
            loop = asyncio.get_running_loop()
            return [await loop.run_in_executor(None, idle_client, sent)
                    for sent in (b"", b"PRI * HTTP/2.0\r\n")]
        finally:
            await proxy.stop(1)

    # Both closed by the server: recv saw the end of the stream (a socket.timeout, raised
    # after 30 s, would fail the test), with no gRPC answer on it.
    for received in asyncio.run(run()):
        assert b"grpc-status" not in received
