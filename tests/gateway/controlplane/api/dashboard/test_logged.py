"""`GET /v1/services/{name}/logged` on a real control plane (the admin app on its own port)
reading a real log sink: a service's last logged requests, newest first, with previews; and
what it says when the sink is down, slow, or not a modelserve log sink."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.controlplane.api.dashboard.logged import PREVIEW_CHARS, LoggedView
from gateway.dataplane.metrics import GatewayMetrics
from gateway.logsink import LogSink
from gateway.routing import RoutingTable, ServiceRoute
from tests.gateway.conftest import LoopThread, start_uvicorn
from tests.gateway.logsink.support import TIME, inference_event, running_sink, send
from tests.gateway.test_services import running_admin
from tests.support import free_port

TOKEN = "logged-admin-token-0123"
ADMIN = {"authorization": f"Bearer {TOKEN}"}


def _service(name: str, **loggers: str) -> ServiceRoute:
    """A route whose document's components log to the given URLs, as the platform writes it."""
    spec = {part: {"logger": {"mode": "all", "url": url}} for part, url in loggers.items()}
    spec.setdefault("predictor", {})
    document = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": {"name": name, "namespace": "default"}, "spec": spec, "status": {}}
    return ServiceRoute(name, document=document)


@dataclass
class Setup:
    admin_url: str
    sink: LogSink
    silent_port: int


@pytest.fixture(scope="module")
def setup(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    out = tmp_path_factory.mktemp("logged") / "events.jsonl"

    async def not_events(request: Request) -> JSONResponse:
        return JSONResponse({"events": "elsewhere"})

    impostor_app = Starlette(routes=[Route("/events", not_events)])
    impostor, task, impostor_port = loop_thread.run(start_uvicorn(impostor_app))
    # Listens, never answers: the kernel completes the connection, nobody reads it.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    silent_port = silent.getsockname()[1]
    with running_sink(loop_thread, out) as sink:
        table = RoutingTable()
        for route in (
            _service("iris", predictor=f"{sink.url}/"),
            _service("both", predictor=f"{sink.url}/", transformer=f"{sink.url}/log"),
            _service("quiet"),
            _service("down", predictor=f"http://127.0.0.1:{free_port()}/"),
            _service("impostor", predictor=f"http://127.0.0.1:{impostor_port}/"),
            _service("silent", predictor=f"http://127.0.0.1:{silent_port}/"),
        ):
            table.update(route)
        with running_admin(loop_thread, table, GatewayMetrics(), TOKEN) as admin:
            yield Setup(admin.url, sink, silent_port)
    silent.close()

    async def stop_impostor() -> None:
        impostor.should_exit = True
        await task

    loop_thread.run(stop_impostor())


def _logged(setup: Setup, name: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{setup.admin_url}/v1/services/{name}/logged", params=params,
                     headers=ADMIN, timeout=10)


def test_the_last_logged_requests_newest_first_with_previews(setup: Setup) -> None:
    url = setup.sink.url
    send(url, inference_event({"instances": [[5.1, 3.5]]}, event_id="a"))
    send(url, inference_event({"predictions": [0]}, kind="response", event_id="a",
                              statuscode="200"))
    send(url, inference_event({"instances": ["<img src=x onerror=alert(1)>"]}, event_id="b"))
    send(url, inference_event({"n": 1}, service="other", event_id="not-iris"))
    answer = _logged(setup, "iris")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    view = LoggedView.model_validate(answer.json())
    assert view.service == "iris" and view.limit == 10
    (sink,) = view.sinks
    assert sink.url == f"{url}/events" and sink.components == ["predictor"]
    assert sink.ok and sink.error is None and sink.events == 3
    assert [(e.id, e.kind) for e in view.events] == [("b", "request"), ("a", "response"),
                                                     ("a", "request")]
    newest, response, request = view.events
    # The payload is text for the page to show as text: here as it came.
    assert newest.preview == '{"instances":["<img src=x onerror=alert(1)>"]}'
    assert response.statuscode == "200" and response.preview == '{"predictions":[0]}'
    assert request.time == TIME and request.component == "predictor"
    assert request.endpoint == "default" and request.content_type == "application/json"
    assert request.sink == f"{url}/events"

    one = LoggedView.model_validate(_logged(setup, "iris", limit=1).json())
    assert [e.id for e in one.events] == ["b"]


def test_previews_are_short_and_say_what_is_not_json(setup: Setup) -> None:
    url = setup.sink.url
    send(url, inference_event({"instances": ["z" * 1000]}, service="both", event_id="long"))
    send(url, inference_event(b"\x00" * 32, service="both", event_id="tensor",
                              content_type="application/octet-stream", component="transformer"))
    view = LoggedView.model_validate(_logged(setup, "both").json())
    (sink,) = view.sinks  # two components, one sink: asked once
    assert sink.components == ["predictor", "transformer"] and sink.ok
    tensor, long = view.events
    assert tensor.preview == "(32 bytes of application/octet-stream, not JSON)"
    assert tensor.component == "transformer"
    assert long.preview.endswith("…") and len(long.preview) == PREVIEW_CHARS + 1


def test_a_service_without_a_logger_has_no_sinks(setup: Setup) -> None:
    assert _logged(setup, "quiet").json() == {
        "service": "quiet", "limit": 10, "sinks": [], "events": []}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("down", "is not running (the connection was refused)"),
        ("impostor", "is not a modelserve log sink"),
        ("silent", "did not answer within 1 s"),
    ],
)
def test_a_sink_that_cannot_be_read_is_said_not_failed(
    setup: Setup, name: str, problem: str
) -> None:
    answer = _logged(setup, name)
    assert answer.status_code == 200
    view = LoggedView.model_validate(answer.json())
    (sink,) = view.sinks
    assert not sink.ok and sink.error is not None and problem in sink.error
    assert view.events == []


def test_unknown_services_bad_limits_and_no_token(setup: Setup) -> None:
    assert _logged(setup, "nope").status_code == 404
    for limit in ("0", "51", "x"):
        bad = _logged(setup, "iris", limit=limit)
        assert bad.status_code == 400 and "limit" in bad.json()["error"]
    anonymous = httpx.get(f"{setup.admin_url}/v1/services/iris/logged")
    assert anonymous.status_code == 401


def test_the_sink_keeps_serving_while_the_control_plane_reads_it(
    loop_thread: LoopThread, tmp_path: Path
) -> None:
    # The control plane never writes to a sink: reading twice changes nothing there.
    with running_sink(loop_thread, tmp_path / "e.jsonl") as sink:
        table = RoutingTable()
        table.update(_service("iris", predictor=sink.url))
        with running_admin(loop_thread, table, GatewayMetrics(), TOKEN) as admin:
            send(sink.url, inference_event())
            first = httpx.get(f"{admin.url}/v1/services/iris/logged", headers=ADMIN).json()
            again = httpx.get(f"{admin.url}/v1/services/iris/logged", headers=ADMIN).json()
    assert first == again and len(first["events"]) == 1
    assert (tmp_path / "e.jsonl").read_text().count("\n") == 1
