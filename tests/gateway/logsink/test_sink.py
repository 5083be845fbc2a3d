"""The real log sink on a free port: CloudEvents sent with the SDK through httpx become JSON
lines at once and come back at `/events`; what is not a CloudEvent is a 400, what is too
large a 413, a slow client is cut off, and the sink keeps serving through all of it."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from gateway.logsink import LogSink
from tests.gateway.conftest import LoopThread
from tests.gateway.logsink.support import (
    REQUEST,
    RESPONSE,
    TIME,
    inference_event,
    lines,
    running_sink,
    send,
)

LIMIT = 64 * 1024


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@pytest.fixture
def sink(loop_thread: LoopThread, out: Path) -> Iterator[LogSink]:
    with running_sink(loop_thread, out, max_body_bytes=LIMIT, header_timeout_s=0.5) as running:
        yield running


def test_a_binary_event_is_a_json_line_at_once(sink: LogSink, out: Path) -> None:
    answer = send(sink.url, inference_event({"instances": [[1, 2]]}), path="/any/path")
    assert answer.status_code == 200 and answer.json() == {"id": "req-1"}
    # The 200 comes once the line is flushed: a reader sees it now, not later.
    assert lines(out) == [{
        "specversion": "1.0", "id": "req-1", "source": "http://127.0.0.1:9000/iris",
        "type": REQUEST, "time": TIME, "datacontenttype": "application/json",
        "data": {"instances": [[1, 2]]}, "inferenceservicename": "iris",
        "namespace": "default", "component": "predictor", "endpoint": "default",
        "metadata": '{"x-tenant": ["a"]}',
    }]


def test_structured_and_binary_events_land_alike(sink: LogSink, out: Path) -> None:
    send(sink.url, inference_event({"predictions": [0]}, kind="response", statuscode="200"),
         mode="structured")
    send(sink.url, inference_event({"predictions": [0]}, kind="response", statuscode="200"))
    first, second = lines(out)
    assert first == second
    assert first["type"] == RESPONSE and first["statuscode"] == "200"


def test_binary_data_is_base64_with_its_marker(sink: LogSink, out: Path) -> None:
    tensor = b"\x00\x00\x80?\x00\x00\x00@"
    send(sink.url, inference_event(tensor, content_type="application/octet-stream"))
    (line,) = lines(out)
    assert "data" not in line and base64.b64decode(line["data_base64"]) == tensor


def test_events_are_served_newest_first_per_service(sink: LogSink) -> None:
    for n in range(3):
        send(sink.url, inference_event({"n": n}, event_id=f"iris-{n}"))
    send(sink.url, inference_event({"n": 0}, service="digits", event_id="digits-0"))
    iris = httpx.get(f"{sink.url}/events", params={"inferenceservicename": "iris"})
    assert iris.status_code == 200 and iris.headers["content-type"] == "application/json"
    assert [e["id"] for e in iris.json()] == ["iris-2", "iris-1", "iris-0"]
    assert iris.json()[0]["data"] == {"n": 2}
    two = httpx.get(f"{sink.url}/events", params={"inferenceservicename": "iris", "limit": 2})
    assert [e["id"] for e in two.json()] == ["iris-2", "iris-1"]
    every = httpx.get(f"{sink.url}/events").json()
    assert [e["id"] for e in every] == ["digits-0", "iris-2", "iris-1", "iris-0"]
    assert httpx.get(f"{sink.url}/events", params={"inferenceservicename": "x"}).json() == []


@pytest.mark.parametrize("limit", ["0", "-1", "ten", "1001"])
def test_a_bad_limit_is_a_400(sink: LogSink, limit: str) -> None:
    answer = httpx.get(f"{sink.url}/events", params={"limit": limit})
    assert answer.status_code == 400 and "limit" in answer.json()["error"]


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        ({"content-type": "application/json"}, b'{"instances": [[1]]}', "not a CloudEvent"),
        ({}, b"\xff\xfe garbage", "not a CloudEvent"),
        ({"content-type": "application/cloudevents+json"}, b"{", "not a CloudEvent"),
        ({"ce-specversion": "1.0", "ce-id": "1"}, b"{}", "needs the ce-source, ce-type"),
        ({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t",
          "ce-time": "noon"}, b"{}", "not an RFC 3339 timestamp"),
    ],
)
def test_what_is_not_a_cloudevent_is_a_400_and_the_sink_goes_on(
    sink: LogSink, out: Path, headers: dict[str, str], body: bytes, problem: str
) -> None:
    answer = httpx.post(sink.url, headers=headers, content=body)
    assert answer.status_code == 400 and problem in answer.json()["error"]
    assert send(sink.url, inference_event()).status_code == 200
    assert len(lines(out)) == 1  # only the good one


def test_a_body_over_the_limit_is_a_413_declared_or_streamed(sink: LogSink, out: Path) -> None:
    event = inference_event({"instances": ["x" * LIMIT]})
    answer = send(sink.url, event)
    assert answer.status_code == 413 and str(LIMIT) in answer.json()["error"]
    assert answer.headers["connection"] == "close"

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, cut when it crosses
        for _ in range(LIMIT // 1024 + 2):
            yield b"x" * 1024

    streamed = httpx.post(sink.url, content=chunks(), headers={"ce-specversion": "1.0"})
    assert streamed.status_code == 413
    assert send(sink.url, inference_event()).status_code == 200
    assert len(lines(out)) == 1


def test_a_large_event_is_in_the_file_whole_and_in_memory_without_its_data(
    loop_thread: LoopThread, out: Path
) -> None:
    with running_sink(loop_thread, out, keep_event_bytes=1024) as sink:
        data = {"instances": ["y" * 4096]}
        assert send(sink.url, inference_event(data)).status_code == 200
        (kept,) = httpx.get(f"{sink.url}/events").json()
    assert lines(out)[0]["data"] == data
    assert "data" not in kept and kept["data_omitted_bytes"] > 4096


def test_a_client_that_never_finishes_its_headers_is_cut_off(sink: LogSink) -> None:
    with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as raw:
        raw.sendall(b"POST / HTTP/1.1\r\nHost: sink\r\nce-specversion: 1.0\r\n")
        answer = raw.recv(4096)  # the front door's 408 and a close, after header_timeout_s
    assert answer.startswith(b"HTTP/1.1 408")
    assert httpx.get(f"{sink.url}/healthz").json() == {"status": "ok"}


def test_health_metrics_and_unknown_routes(sink: LogSink) -> None:
    send(sink.url, inference_event())
    send(sink.url, inference_event(kind="response"))
    send(sink.url, CloudEvent({"type": "com.example.other", "source": "/s"}, {"a": 1}))
    httpx.post(sink.url, content=b"nope")
    metrics = httpx.get(f"{sink.url}/metrics").text
    assert 'modelserve_logsink_events_total{kind="request"} 1.0' in metrics
    assert 'modelserve_logsink_events_total{kind="response"} 1.0' in metrics
    assert 'modelserve_logsink_events_total{kind="other"} 1.0' in metrics
    assert 'modelserve_logsink_rejected_total{reason="not_cloudevent"} 1.0' in metrics
    assert "modelserve_logsink_kept_events 3.0" in metrics
    wrong = httpx.get(f"{sink.url}/nope")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_an_unwritable_file_is_a_500_the_sender_retries(
    loop_thread: LoopThread, tmp_path: Path
) -> None:
    with running_sink(loop_thread, Path("/dev/full")) as sink:
        answer = send(sink.url, inference_event())
        assert answer.status_code == 500 and "/dev/full" in answer.json()["error"]
        assert httpx.get(f"{sink.url}/events").json() == []


def test_a_file_that_cannot_be_opened_stops_the_start(
    loop_thread: LoopThread, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "events.jsonl"
    with pytest.raises(OSError, match="cannot append to .*no-such-dir"):
        with running_sink(loop_thread, missing):
            pass


def test_the_sdk_structured_helper_round_trips(sink: LogSink, out: Path) -> None:
    headers, body = to_structured(inference_event({"a": [1.5, None, "é"]}))
    assert httpx.post(sink.url, headers=headers, content=body).status_code == 200
    assert lines(out)[0]["data"] == {"a": [1.5, None, "é"]}
