"""The gateway's REST data plane, run for real: uvicorn on a free port, upstreams behind it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.dataplane.app import create_app
from gateway.dataplane.metrics import GatewayMetrics
from gateway.routing import Backend, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from tests.gateway.conftest import Gateway

REVISION = "x-modelserve-revision"
V2_BODY = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}'


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "protocol"),
    [
        ("POST", "/v2/models/echo/infer", "v2"),
        ("POST", "/v2/models/echo/versions/3/infer", "v2"),
        ("GET", "/v2/models/echo", "v2"),
        ("GET", "/v2/models/echo/ready", "v2"),
        ("POST", "/v1/models/echo:predict", "v1"),
        ("GET", "/v1/models/echo", "v1"),
    ],
)
def test_routes_by_model_name_in_path(
    client: httpx.Client, gateway: Gateway, method: str, path: str, protocol: str
) -> None:
    before = gateway.sample("echo", protocol, "200")
    body = V2_BODY if method == "POST" else None
    response = client.request(method, path, content=body,
                              headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.headers[REVISION] == "echo-00001"
    echoed = response.json()
    assert (echoed["upstream"], echoed["method"], echoed["path"]) == ("a", method, path)
    if body:
        assert echoed["body"].encode() == body
    assert gateway.sample("echo", protocol, "200") == before + 1


def test_routes_by_knative_host_header(client: httpx.Client) -> None:
    response = client.post("/v2/models/echo/infer", content=V2_BODY,
                           headers={"host": "echo.default.example.com:8080"})
    assert response.status_code == 200
    assert response.headers[REVISION] == "echo-00001"
    assert response.json()["name"] == "echo"


def test_a_host_refuses_a_path_naming_another_model(client: httpx.Client) -> None:
    # The host names "echo"; "split" is another service and "whatever" none: both refused,
    # never forwarded to echo's backend (a Triton there would serve any of its models).
    for model in ("split", "whatever"):
        response = client.post(f"/v2/models/{model}/infer", content=V2_BODY,
                               headers={"host": "echo.default.example.com:8080"})
        assert response.status_code == 404
        assert response.json()["error"] == (
            f"model '{model}' is not served at host 'echo.default.example.com', which is "
            "service 'echo'"
        )
        assert response.headers[REVISION] == "none"


def test_forwards_query_and_chosen_headers_only(client: httpx.Client) -> None:
    headers = {"content-type": "application/json", "x-request-id": "req-1",
               "authorization": "Bearer t", "inference-header-content-length": "12",
               "cookie": "session=1", "x-tenant": "acme", "x-forwarded-for": "6.6.6.6",
               "x-modelserve-revision": "forged"}
    response = client.post("/v2/models/echo/infer?trace=1", content=V2_BODY, headers=headers)
    echoed = response.json()
    assert echoed["query"] == "trace=1"
    assert echoed["headers"]["x-request-id"] == "req-1"
    assert echoed["headers"]["authorization"] == "Bearer t"
    assert echoed["headers"]["inference-header-content-length"] == "12"
    assert "cookie" not in echoed["headers"]
    # The client's own x-* headers pass (a logger's metadataHeaders); the proxies' and ours not.
    assert echoed["headers"]["x-tenant"] == "acme"
    assert "x-forwarded-for" not in echoed["headers"]
    assert "x-modelserve-revision" not in echoed["headers"]
    # The backend's binary-extension header comes back; its other headers do not.
    assert response.headers["inference-header-content-length"] == "7"
    assert "x-internal" not in response.headers


def test_form_content_type_is_forwarded_as_json(client: httpx.Client) -> None:
    # What `curl -d '{...}'` sends.
    response = client.post("/v1/models/echo:predict", content=b'{"instances": [[1, 2]]}',
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.json()["headers"]["content-type"] == "application/json"


def test_backend_errors_pass_through_unchanged(client: httpx.Client, gateway: Gateway) -> None:
    before = gateway.sample("echo", "v2", "418")
    response = client.post("/v2/models/echo/infer?status=418", content=V2_BODY)
    assert response.status_code == 418
    assert response.json()["upstream"] == "a"
    assert response.headers[REVISION] == "echo-00001"
    assert gateway.sample("echo", "v2", "418") == before + 1


def test_unknown_model_is_404_with_revision_none(client: httpx.Client, gateway: Gateway) -> None:
    before = gateway.sample("unknown", "v2", "404")
    response = client.post("/v2/models/nope/infer", content=V2_BODY)
    assert response.status_code == 404
    assert "model 'nope' not found" in response.json()["error"]
    assert response.headers[REVISION] == "none"
    assert gateway.sample("unknown", "v2", "404") == before + 1


def test_route_without_ready_backend_is_503_with_its_message(client: httpx.Client) -> None:
    response = client.post("/v1/models/loading:predict", content=b"{}")
    assert response.status_code == 503
    assert response.json() == {"error": "revision loading-00001 is pulling its model"}
    assert response.headers[REVISION] == "none"


def test_backend_down_is_503(client: httpx.Client, gateway: Gateway) -> None:
    before = gateway.sample("down", "v2", "503")
    response = client.post("/v2/models/down/infer", content=V2_BODY)
    assert response.status_code == 503
    assert "unavailable" in response.json()["error"]
    assert response.headers[REVISION] == "down-00001"
    assert gateway.sample("down", "v2", "503") == before + 1


def test_a_refused_replica_is_retried_on_the_other_replica(
    client: httpx.Client, gateway: Gateway
) -> None:
    before = gateway.sample("halfdown", "v2", "200")
    for _ in range(12):  # ties between the replicas go round: some requests try the dead one
        response = client.post("/v2/models/halfdown/infer", content=V2_BODY)
        assert response.status_code == 200
        assert response.json()["upstream"] == "a"
        assert response.headers[REVISION] == "halfdown-00001"
    assert gateway.sample("halfdown", "v2", "200") == before + 12


def test_slow_backend_is_504(client: httpx.Client) -> None:
    response = client.post("/v2/models/slow/infer", content=V2_BODY)
    assert response.status_code == 504
    assert "did not answer" in response.json()["error"]
    assert response.headers[REVISION] == "slow-00001"


def test_body_over_limit_by_content_length_is_413(client: httpx.Client) -> None:
    response = client.post("/v2/models/echo/infer", content=b"x" * 4097)
    assert response.status_code == 413
    assert "limit of 4096 bytes" in response.json()["error"]
    assert response.headers[REVISION] == "echo-00001"


def test_chunked_body_over_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"x" * 1000

    response = client.post("/v2/models/echo/infer", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"].startswith("request body exceeds")


def test_chunked_body_under_limit_is_forwarded(client: httpx.Client) -> None:
    response = client.post("/v2/models/echo/infer", content=iter([V2_BODY[:10], V2_BODY[10:]]))
    assert response.status_code == 200
    assert response.json()["body"].encode() == V2_BODY


def test_traffic_split_follows_percent(client: httpx.Client) -> None:
    all_to_a = Counter(client.post("/v2/models/split/infer", content=V2_BODY)
                       .headers[REVISION] for _ in range(30))
    assert all_to_a == {"split-a": 30}
    halves = Counter(client.post("/v2/models/half/infer", content=V2_BODY)
                     .headers[REVISION] for _ in range(60))
    assert set(halves) == {"half-a", "half-b"}  # each 2**-60 to miss


def test_health_live_and_ready_name_services_not_ready(client: httpx.Client) -> None:
    live = client.get("/v2/health/live")
    assert live.json() == {"live": True}
    assert live.headers[REVISION] == "none"
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert "loading" in ready.json()["error"]
    assert ready.headers[REVISION] == "none"


def test_ready_when_every_service_has_a_ready_backend() -> None:
    table = RoutingTable()
    table.update(ServiceRoute("m", backends=(Backend("m-1", "http://127.0.0.1:1", None),)))
    with TestClient(create_app(table, GatewaySettings())) as test_client:
        assert test_client.get("/v2/health/ready").json() == {"ready": True}


def test_lists_services(client: httpx.Client) -> None:
    for path in ("/v1/models", "/v2/models"):
        models = client.get(path).json()["models"]
        assert {"echo", "split", "loading"} <= set(models)


def test_unknown_path_has_error_body_and_revision(client: httpx.Client) -> None:
    response = client.get("/v3/whatever")
    assert response.status_code == 404
    assert "error" in response.json()
    assert response.headers[REVISION] == "none"


def test_metrics_endpoint_exposes_counters_histogram_and_gauge(client: httpx.Client) -> None:
    client.post("/v2/models/echo/infer", content=V2_BODY)
    text = client.get("/metrics").text
    assert ('modelserve_gateway_requests_total{code="200",protocol="v2",revision="echo-00001",'
            'service="echo"}') in text
    assert "modelserve_gateway_request_duration_seconds_bucket" in text
    assert 'modelserve_gateway_requests_in_flight{service="echo"} 0.0' in text


def test_apps_have_separate_registries() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.observe("s", "s-00001", "v2", "200", 0.01)
    labels = {"service": "s", "revision": "s-00001", "protocol": "v2", "code": "200"}
    assert first.registry.get_sample_value("modelserve_gateway_requests_total", labels) == 1.0
    assert second.registry.get_sample_value("modelserve_gateway_requests_total", labels) is None
    create_app(RoutingTable(), GatewaySettings())
    create_app(RoutingTable(), GatewaySettings())  # no duplicate-registration error
