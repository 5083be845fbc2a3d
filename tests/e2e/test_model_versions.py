"""Model versions through the gateway, for every demo service: metadata lists them, a known
version is served, an unknown one is refused (404 / NOT_FOUND naming it on our servers,
Triton's own answer for the Triton-backed service)."""

from __future__ import annotations

import grpc
import httpx
import pytest
import tritonclient.http as triton_http
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.e2e.conftest import Platform

pytestmark = pytest.mark.e2e

OURS = ["sklearn-iris", "iris-classifier", "tf-digits", "digits-classifier"]


@pytest.mark.parametrize("service", [*OURS, "triton-digits"])
def test_metadata_lists_versions_and_a_known_one_is_ready(
    platform: Platform, service: str
) -> None:
    doc = httpx.get(f"{platform.url}/v2/models/{service}", timeout=30)
    assert doc.status_code == 200, doc.text
    versions = doc.json()["versions"]
    assert isinstance(versions, list) and versions
    client = triton_http.InferenceServerClient(f"127.0.0.1:{platform.port}")
    assert client.get_model_metadata(service, model_version=versions[0])["inputs"]
    assert client.is_model_ready(service, versions[0])
    assert not client.is_model_ready(service, "99")


@pytest.mark.parametrize("service", OURS)
def test_unknown_version_is_404_naming_it(platform: Platform, service: str) -> None:
    base = f"{platform.url}/v2/models/{service}/versions/99"
    expected = f"model '{service}' has no version '99'; it serves ['1']"
    for answer in (
        httpx.get(base, timeout=30),
        httpx.get(f"{base}/ready", timeout=30),
        httpx.post(f"{base}/infer", json={"inputs": []}, timeout=30),
    ):
        assert answer.status_code == 404, answer.text
        assert answer.json() == {"error": expected}
    with grpc.insecure_channel(platform.grpc_target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ModelReady(pb.ModelReadyRequest(name=service, version="1")).ready
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelReady(pb.ModelReadyRequest(name=service, version="99"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == expected
