"""API keys at the gateway: REST and gRPC, run for real in front of counting upstreams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from pydantic import ValidationError

from gateway.dataplane.auth import ApiKeyAuth, bearer_token
from gateway.settings import GatewaySettings
from servers.errors import PermissionDenied, Unauthenticated
from tests.gateway.conftest import SETTINGS, Gateway, LoopThread, Upstream, running_gateway

KEYS = ("key-one-0123456789", "key-two-abcdefghij")
V2_BODY = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'
GOOD = [{"authorization": f"Bearer {KEYS[0]}"}, {"x-api-key": KEYS[1]},
        {"authorization": f"bearer {KEYS[1]}"}]
WRONG = [{"authorization": "Bearer not-a-key"}, {"x-api-key": "not-a-key"},
         {"x-api-key": KEYS[0][:-1]}]
MISSING: list[dict[str, str]] = [{}, {"authorization": f"Basic {KEYS[0]}"}, {"x-api-key": ""},
                                 {"authorization": "Bearer"}]
PROTECTED = [("POST", "/v2/models/echo/infer"), ("POST", "/v1/models/echo:predict"),
             ("GET", "/v2/models/echo"), ("GET", "/v2/models/echo/ready"),
             ("GET", "/v1/models/echo"), ("GET", "/v2/models"), ("GET", "/v1/models"),
             ("POST", "/v2/models/nope/infer")]


def secured_settings(**extra: object) -> GatewaySettings:
    fields = SETTINGS.model_dump(exclude={"api_keys"}) | {"api_keys": ",".join(KEYS)} | extra
    return GatewaySettings(**fields)


@pytest.fixture(scope="module")
def secured(loop_thread: LoopThread, upstreams: tuple[Upstream, Upstream]) -> Iterator[Gateway]:
    with running_gateway(loop_thread, upstreams, secured_settings()) as running:
        yield running


@pytest.fixture
def client(secured: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.url, timeout=10) as c:
        yield c


@pytest.fixture
def stub(secured: Gateway) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(secured.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def hits(gateway: Gateway) -> int:
    return gateway.a.hits.count + gateway.b.hits.count


def call(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = V2_BODY if method == "POST" else None
    return client.request(method, path, content=body, headers=headers)


# --- REST -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("headers", MISSING)
def test_rest_without_a_key_is_401_and_reaches_no_component(
    client: httpx.Client, secured: Gateway, method: str, path: str, headers: dict[str, str]
) -> None:
    before = hits(secured)
    response = call(client, method, path, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-modelserve-revision"] == "none"
    assert "missing API key" in response.json()["error"]
    assert hits(secured) == before


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("headers", WRONG)
def test_rest_with_a_wrong_key_is_403_and_reaches_no_component(
    client: httpx.Client, secured: Gateway, method: str, path: str, headers: dict[str, str]
) -> None:
    before = hits(secured)
    response = call(client, method, path, headers)
    assert response.status_code == 403
    assert response.json() == {"error": "API key not accepted"}  # never echoes the key
    assert "www-authenticate" not in response.headers
    assert hits(secured) == before


@pytest.mark.parametrize(("method", "path"), PROTECTED[:5])
@pytest.mark.parametrize("headers", GOOD)
def test_rest_with_a_right_key_is_forwarded(
    client: httpx.Client, secured: Gateway, method: str, path: str, headers: dict[str, str]
) -> None:
    before = hits(secured)
    response = call(client, method, path, headers)
    assert response.status_code == 200
    assert response.headers["x-modelserve-revision"] == "echo-00001"
    # The key is the gateway's: the component never sees it.
    echoed = response.json()["headers"]
    assert "authorization" not in echoed and "x-api-key" not in echoed
    assert hits(secured) == before + 1


def test_rest_model_list_needs_a_key(client: httpx.Client) -> None:
    response = client.get("/v2/models", headers={"x-api-key": KEYS[0]})
    assert response.status_code == 200
    assert "echo" in response.json()["models"]


def test_authorization_for_the_component_passes_when_the_key_is_in_x_api_key(
    client: httpx.Client,
) -> None:
    headers = {"x-api-key": KEYS[0], "authorization": "Bearer component-token"}
    response = client.post("/v2/models/echo/infer", content=V2_BODY, headers=headers)
    assert response.status_code == 200
    echoed = response.json()["headers"]
    assert echoed["authorization"] == "Bearer component-token"
    assert "x-api-key" not in echoed


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/metrics"])
def test_health_and_metrics_stay_open(client: httpx.Client, path: str) -> None:
    # Probes and scrapers carry no credentials. "ready" is 503: the table has a loading service.
    response = client.get(path)
    assert response.status_code in (200, 503)
    assert "www-authenticate" not in response.headers


def test_rest_rejections_are_counted_by_code(client: httpx.Client, secured: Gateway) -> None:
    before = (secured.sample("unknown", "v2", "401"), secured.sample("unknown", "v1", "403"))
    client.post("/v2/models/echo/infer", content=V2_BODY)
    client.post("/v1/models/echo:predict", content=V2_BODY, headers={"x-api-key": "nope"})
    after = (secured.sample("unknown", "v2", "401"), secured.sample("unknown", "v1", "403"))
    assert after == (before[0] + 1, before[1] + 1)
    assert KEYS[0].encode() not in client.get("/metrics").content


def test_without_keys_nothing_changes(gateway: Gateway) -> None:
    # The shared gateway has no keys: no credentials needed, and Authorization is forwarded.
    response = httpx.post(f"{gateway.url}/v2/models/echo/infer", content=V2_BODY,
                          headers={"authorization": "Bearer t"})
    assert response.status_code == 200
    assert response.json()["headers"]["authorization"] == "Bearer t"


# --- gRPC -----------------------------------------------------------------------------------


def infer_request(model: str = "echo") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="r1")
    request.inputs.add(name="x", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x01")
    return request


GRPC_CALLS = [("ModelInfer", infer_request()), ("ModelReady", pb.ModelReadyRequest(name="echo")),
              ("ModelMetadata", pb.ModelMetadataRequest(name="echo")),
              ("ModelInfer", infer_request("nope"))]


@pytest.mark.parametrize(("method", "request_"), GRPC_CALLS)
@pytest.mark.parametrize(
    ("metadata", "code"),
    [(m, grpc.StatusCode.UNAUTHENTICATED) for m in MISSING]
    + [(m, grpc.StatusCode.PERMISSION_DENIED) for m in WRONG],
)
def test_grpc_rejects_missing_and_wrong_keys_before_any_component(
    stub: pb_grpc.GRPCInferenceServiceStub, secured: Gateway, method: str, request_: object,
    metadata: dict[str, str], code: grpc.StatusCode,
) -> None:
    before = hits(secured)
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request_, metadata=tuple(metadata.items()))
    assert caught.value.code() == code
    assert KEYS[0] not in (caught.value.details() or "")
    assert hits(secured) == before


@pytest.mark.parametrize("metadata", GOOD)
def test_grpc_with_a_right_key_is_forwarded_without_it(
    stub: pb_grpc.GRPCInferenceServiceStub, secured: Gateway, metadata: dict[str, str]
) -> None:
    before = (hits(secured), secured.sample("echo", "grpc", "OK"))
    response = stub.ModelInfer(infer_request(), metadata=(*metadata.items(), ("x-test", "hi")))
    assert response.parameters["upstream"].string_param == "a"
    assert response.parameters["x-test"].string_param == "hi"
    forwarded = response.parameters["metadata-keys"].string_param.split(",")
    assert "authorization" not in forwarded and "x-api-key" not in forwarded
    assert stub.ModelReady(pb.ModelReadyRequest(name="echo"), metadata=tuple(metadata.items()))
    assert (hits(secured), secured.sample("echo", "grpc", "OK")) == (before[0] + 2,
                                                                     before[1] + 2)


def test_grpc_server_calls_stay_open(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    stub.ServerReady(pb.ServerReadyRequest())
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "modelserve-gateway"


def test_grpc_rejections_are_counted_by_code(
    stub: pb_grpc.GRPCInferenceServiceStub, secured: Gateway
) -> None:
    before = secured.sample("unknown", "grpc", "UNAUTHENTICATED")
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(infer_request())
    assert secured.sample("unknown", "grpc", "UNAUTHENTICATED") == before + 1


# --- the pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER abc", "abc"), ("Basic abc", None),
     ("Bearer", None), ("", None), (None, None)],
)
def test_bearer_token(value: str | None, token: str | None) -> None:
    assert bearer_token(value) == token


def test_api_key_auth_names_clients_by_key_and_says_where_the_key_was() -> None:
    auth = ApiKeyAuth(KEYS)
    assert auth.identify(KEYS[1], None) == ("key-2", False)
    assert auth.identify(None, f"Bearer {KEYS[0]}") == ("key-1", True)
    assert auth.identify(KEYS[0], "Bearer other") == ("key-1", False)  # x-api-key first
    with pytest.raises(Unauthenticated):
        auth.identify(None, None)
    with pytest.raises(PermissionDenied):
        auth.identify("x" + KEYS[0], None)
    with pytest.raises(ValueError, match="at least one key"):
        ApiKeyAuth([])


# --- settings -------------------------------------------------------------------------------


def test_keys_from_the_environment_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSERVE_GATEWAY_API_KEYS", f" {KEYS[0]} ,{KEYS[1]},,")
    settings = GatewaySettings()
    assert settings.api_key_values() == KEYS
    # Neither the repr nor the dump shows a key.
    assert KEYS[0] not in repr(settings) and KEYS[0] not in str(settings.model_dump())


def test_no_keys_means_auth_off() -> None:
    assert GatewaySettings().api_key_values() == ()


def test_keys_file_with_comments_adds_to_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# gateway keys\n{KEYS[1]}   # team b\n\n  third-key\n{KEYS[0]}\n")
    settings = GatewaySettings(api_keys=KEYS[0], api_keys_file=path)
    assert settings.api_key_values() == (KEYS[0], KEYS[1], "third-key")


def test_keys_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys"
    path.write_text(KEYS[0] + "\n")
    monkeypatch.setenv("MODELSERVE_GATEWAY_API_KEYS_FILE", str(path))
    assert GatewaySettings().api_key_values() == (KEYS[0],)


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "holds no keys"), ("# only a comment\n\n", "holds no keys"),
     ("two words\n", "visible ASCII"), (None, "cannot read")],
)
def test_bad_keys_files_fail_at_start(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValidationError, match=message) as caught:
        GatewaySettings(api_keys_file=path)
    assert "two words" not in str(caught.value)  # inputs are hidden from errors


def test_bad_keys_fail_at_start_without_showing_them() -> None:
    with pytest.raises(ValidationError, match="visible ASCII") as caught:
        GatewaySettings(api_keys=("sécret-key",))
    assert "sécret" not in str(caught.value)


def test_modelserve_predict_sends_the_api_key(
    secured: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    common = ["predict", "echo", "--data", '{"instances": [[1, 2]]}', "--url", secured.url]
    assert main([*common, "--api-key", KEYS[0]]) == 0
    capsys.readouterr()
    assert main(common) == 1
    assert "401" in capsys.readouterr().err
    grpc_common = ["predict", "echo", "--protocol", "grpc", "--grpc-url", secured.grpc_target,
                   "--data", V2_BODY.decode()]
    # The echo upstream's answer is not a model's (raw contents, no outputs): with the key the
    # call gets past the gateway and the CLI says the response is malformed.
    assert main([*grpc_common, "--api-key", KEYS[1]]) == 1
    assert "malformed response" in capsys.readouterr().err
    assert main(grpc_common) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
