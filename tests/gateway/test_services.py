"""`GET /v1/services[/NAME]` and `modelserve status` against the local platform: each service
as an InferenceService status (url, traffic per revision, latestReadyRevision, conditions)."""

from __future__ import annotations

import httpx
import pytest

from gateway.cli import main
from gateway.routing import ServiceRoute
from tests.gateway.conftest import Gateway


def test_services_list_the_routes_as_inference_service_status(gateway: Gateway) -> None:
    doc = httpx.get(f"{gateway.url}/v1/services").json()
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


def test_one_service_and_an_unknown_one(gateway: Gateway) -> None:
    one = httpx.get(f"{gateway.url}/v1/services/echo")
    assert one.status_code == 200
    assert one.json()["metadata"] == {"name": "echo", "namespace": "default"}
    missing = httpx.get(f"{gateway.url}/v1/services/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]


def test_a_service_that_is_not_ready_says_why(gateway: Gateway) -> None:
    status = httpx.get(f"{gateway.url}/v1/services/loading").json()["status"]
    assert status["conditions"] == [{"type": "Ready", "status": "False", "reason": "NotReady",
                                     "message": "revision loading-00001 is pulling its model"}]
    assert "latestReadyRevision" not in status["components"]["predictor"]


def test_route_status_names_the_entry_component() -> None:
    route = ServiceRoute(name="iris-classifier", component="transformer")
    assert list(route.status()["status"]["components"]) == ["transformer"]  # type: ignore[call-overload]


def test_modelserve_status_without_kube_reads_the_platform(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "split", "--url", gateway.url]) == 0
    out = capsys.readouterr().out
    assert "url: http://split.default.example.com" in out
    assert "100%  split-a  (latestRevision)" in out and "  0%  split-b" in out
    assert "conditions: Ready=True" in out
    assert main(["status", "--url", gateway.url]) == 0
    assert "loading  (namespace default)" in capsys.readouterr().out
    assert main(["status", "nope", "--url", gateway.url]) == 1
    assert "404" in capsys.readouterr().err
