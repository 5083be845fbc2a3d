"""`GET /v1/services[/NAME]` and `modelserve status` against the control plane (the admin app
on a port of its own, over the gateway's routing table): each service as an InferenceService
status (url, traffic per revision, latestReadyRevision, conditions). The data plane serves none
of it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from gateway.cli import main
from gateway.controlplane.api.app import create_admin_app
from gateway.controlplane.api.server import AdminServer
from gateway.controlplane.api.tokens import AdminTokens
from gateway.dataplane.metrics import GatewayMetrics
from gateway.routing import RoutingTable, ServiceRoute
from tests.gateway.conftest import Gateway, LoopThread

TOKEN = "services-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}


@contextmanager
def running_admin(
    loop_thread: LoopThread, table: RoutingTable, metrics: GatewayMetrics, token: str = TOKEN,
    **options: Any,
) -> Iterator[AdminServer]:
    """The control plane's app over `table` (`options`: `create_admin_app`'s) behind the admin
    `token`, served on a free port of its own, as `modelserve up` serves it."""
    app = create_admin_app(table, metrics, AdminTokens((token,), "the test's token"), **options)
    admin = AdminServer(app, "127.0.0.1", 0)
    loop_thread.run(admin.start())
    try:
        yield admin
    finally:
        loop_thread.run(admin.stop(grace=1))


@pytest.fixture(scope="module")
def admin_url(loop_thread: LoopThread, gateway: Gateway) -> Iterator[str]:
    """The control plane over the gateway's table: no rollouts (as in front of a cluster)."""
    with running_admin(loop_thread, gateway.table, gateway.server.metrics,
                       inference_url=gateway.url) as admin:
        yield admin.url


def test_services_list_the_routes_as_inference_service_status(
    gateway: Gateway, admin_url: str
) -> None:
    doc = httpx.get(f"{admin_url}/v1/services", headers=ADMIN).json()
    by_name = {s["metadata"]["name"]: s for s in doc["services"]}
    assert set(by_name) == {r.name for r in gateway.table.routes()}
    split = by_name["split"]["status"]
    assert split["url"] == "http://split.default.example.com"
    assert split["conditions"] == [{"type": "Ready", "status": "True"}]
    traffic = split["components"]["predictor"]["traffic"]
    assert [(t["revisionName"], t["percent"]) for t in traffic] == [
        ("split-a", 100), ("split-b", 0)
    ]
    assert split["components"]["predictor"]["latestReadyRevision"] == "split-a"


def test_one_service_and_an_unknown_one(admin_url: str) -> None:
    one = httpx.get(f"{admin_url}/v1/services/echo", headers=ADMIN)
    assert one.status_code == 200
    assert one.json()["metadata"] == {"name": "echo", "namespace": "default"}
    missing = httpx.get(f"{admin_url}/v1/services/nope", headers=ADMIN)
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]


def test_a_service_that_is_not_ready_says_why(admin_url: str) -> None:
    status = httpx.get(f"{admin_url}/v1/services/loading", headers=ADMIN).json()["status"]
    assert status["conditions"] == [{"type": "Ready", "status": "False", "reason": "NotReady",
                                     "message": "revision loading-00001 is pulling its model"}]
    assert "latestReadyRevision" not in status["components"]["predictor"]


def test_the_services_need_the_admin_token(admin_url: str) -> None:
    missing = httpx.get(f"{admin_url}/v1/services")
    assert missing.status_code == 401 and "admin token" in missing.json()["error"]
    wrong = httpx.get(f"{admin_url}/v1/services", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 403


@pytest.mark.parametrize("path", ["/v1/services", "/v1/services/echo", "/ui"])
def test_the_data_plane_points_at_the_control_plane(gateway: Gateway, path: str) -> None:
    for method in ("GET", "POST", "PATCH", "DELETE"):
        answer = httpx.request(method, gateway.url + path, json={})
        assert answer.status_code == 404
        assert "control plane" in answer.json()["error"] and "8082" in answer.json()["error"]


def test_without_a_local_platform_rollouts_are_405(admin_url: str) -> None:
    json_body = {**ADMIN, "content-type": "application/json"}
    for method, path in (("POST", "/v1/services"), ("PATCH", "/v1/services/echo"),
                         ("DELETE", "/v1/services/echo")):
        answer = httpx.request(method, admin_url + path, content=b"{}", headers=json_body)
        assert answer.status_code == 405, (method, answer.text)
        assert "kubectl" in answer.json()["error"]


def test_route_status_names_the_entry_component() -> None:
    route = ServiceRoute(name="iris-classifier", component="transformer")
    assert list(route.status()["status"]["components"]) == ["transformer"]  # type: ignore[call-overload]


def test_modelserve_status_without_kube_reads_the_platform(
    admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = ["--admin-url", admin_url, "--token", TOKEN]
    assert main(["status", "split", *admin]) == 0
    out = capsys.readouterr().out
    assert "url: http://split.default.example.com" in out
    assert "100%  split-a  (latestRevision)" in out and "  0%  split-b" in out
    assert "conditions: Ready=True" in out
    assert main(["status", *admin]) == 0
    assert "loading  (namespace default)" in capsys.readouterr().out
    assert main(["status", "nope", *admin]) == 1
    assert "404" in capsys.readouterr().err
