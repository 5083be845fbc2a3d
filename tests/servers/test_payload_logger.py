"""The payload logger in a real component: CloudEvents as KServe's agent sends them, off the
request path, bounded, retried, counted (servers/payload_logger.py)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from prometheus_client import CollectorRegistry

from servers.payload_logger import (
    LOGGER_ENV,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    LogEvent,
    PayloadLogger,
    PayloadLoggerMetrics,
    PayloadLoggerSettings,
    is_inference_path,
)
from tests.servers.recording_sink import RecordingSink, recording_sink
from tests.support import ServerProcess, free_port, run_server

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def _settings(url: str, **extra: object) -> PayloadLoggerSettings:
    return PayloadLoggerSettings.model_validate(
        {"url": url, "inference_service": "sklearn-iris", "component": "predictor",
         "revision": "sklearn-iris-predictor-00001", "source": "http://127.0.0.1:1/",
         "metadata_headers": ["x-tenant"], "annotations": {"team": "fraud"}, **extra}
    )


@contextmanager
def _predictor(
    iris_dir: Path, logs: Path, settings: PayloadLoggerSettings
) -> Iterator[ServerProcess]:
    """The sklearn predictor with this payload logger."""
    args = ["--model_name=sklearn-iris", f"--model_dir={iris_dir}"]
    with run_server("servers.sklearn", args, logs, env=settings.to_env()) as server:
        yield server


def _until(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def _metric(server: ServerProcess, result: str) -> float:
    text = httpx.get(f"{server.http_url}/metrics").text
    pattern = rf'^modelserve_payload_logger_events_total\{{[^}}]*result="{result}"[^}}]*\}} (\S+)$'
    return sum(float(m) for m in re.findall(pattern, text, re.MULTILINE))


def _v1(server: ServerProcess, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.http_url}/v1/models/sklearn-iris:predict", json={"instances": ROWS},
        headers=headers,
    )


def test_every_request_and_response_reaches_the_sink_as_kserve_cloudevents(
    iris_dir: Path, logs: Path
) -> None:
    with recording_sink() as sink:
        settings = _settings(sink.url)
        with _predictor(iris_dir, logs, settings) as server:
            given = _v1(server, **{"x-request-id": "req-given", "x-tenant": "acme"})
            made = httpx.post(
                f"{server.http_url}/v2/models/sklearn-iris/infer",
                json={"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                  "data": [v for row in ROWS for v in row]}]},
            )
            assert given.status_code == made.status_code == 200
            assert given.headers["x-request-id"] == "req-given"
            made_id = made.headers["x-request-id"]
            assert made_id and made_id != "req-given"
            _until(lambda: sink.count() == 4, "four events at the sink")
            httpx.get(f"{server.http_url}/v2/models/sklearn-iris")  # metadata: no payload
            assert _metric(server, "sent") == 4

    by_id: dict[str, dict[str, object]] = {}
    for event in sink.events:
        by_id.setdefault(event.attributes["id"], {})[event.attributes["type"]] = event
    assert set(by_id) == {"req-given", made_id}
    for pair in by_id.values():
        assert set(pair) == {REQUEST_TYPE, RESPONSE_TYPE}
    request = by_id["req-given"][REQUEST_TYPE]
    response = by_id["req-given"][RESPONSE_TYPE]
    for event in (request, response):
        headers = event.headers  # type: ignore[attr-defined]
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-inferenceservicename"] == "sklearn-iris"
        assert headers["ce-namespace"] == "default"
        assert headers["ce-component"] == "predictor"
        assert headers["ce-endpoint"] == "default"
        assert headers["ce-source"] == "http://127.0.0.1:1/"
        assert orjson.loads(headers["ce-metadata"]) == {"x-tenant": ["acme"]}
        assert orjson.loads(headers["ce-annotations"]) == {"team": "fraud"}
    assert orjson.loads(request.body) == {"instances": ROWS}  # type: ignore[attr-defined]
    assert orjson.loads(response.body) == {"predictions": [0, 2]}  # type: ignore[attr-defined]
    assert response.headers["ce-statuscode"] == "200"  # type: ignore[attr-defined]


def test_grpc_infer_is_logged_as_json_under_the_call_request_id(
    iris_dir: Path, logs: Path
) -> None:
    with recording_sink() as sink:
        with _predictor(iris_dir, logs, _settings(sink.url)) as server:
            with grpc.insecure_channel(server.grpc_target) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                request = pb.ModelInferRequest(model_name="sklearn-iris")
                tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
                tensor.contents.fp32_contents.extend(ROWS[0])
                _, call = stub.ModelInfer.with_call(
                    request, metadata=(("x-request-id", "grpc-1"),)
                )
                assert ("x-request-id", "grpc-1") in call.initial_metadata()
            _until(lambda: sink.count() == 2, "the gRPC pair at the sink")
    request_event, response_event = sorted(sink.events, key=lambda e: e.attributes["type"])
    assert {request_event.attributes["id"], response_event.attributes["id"]} == {"grpc-1"}
    assert orjson.loads(request_event.body)["model_name"] == "sklearn-iris"
    assert "outputs" in orjson.loads(response_event.body)


def test_with_the_sink_down_requests_succeed_and_the_loss_is_counted(
    iris_dir: Path, logs: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}/"
    settings = _settings(down, queue_size=8, workers=1, max_retries=1, backoff_s=0.01)
    with _predictor(iris_dir, logs, settings) as server:
        answers = [_v1(server) for _ in range(30)]
        assert all(a.status_code == 200 for a in answers)
        _until(lambda: _metric(server, "dropped") + _metric(server, "failed") == 60,
               "all 60 events counted as lost")
        assert _metric(server, "sent") == 0
        assert _metric(server, "failed") >= 1


def test_a_stalled_sink_never_holds_requests_and_drops_beyond_the_queue(
    iris_dir: Path, logs: Path
) -> None:
    with recording_sink(stalled=True) as sink:
        settings = _settings(sink.url, queue_size=4, workers=1)
        with _predictor(iris_dir, logs, settings) as server:
            # Every request is answered while the sink holds its first event.
            answers = [_v1(server) for _ in range(25)]
            assert all(a.status_code == 200 for a in answers)
            assert sink.count() == 0
            dropped = _metric(server, "dropped")
            assert dropped >= 50 - 4 - 1  # the queue's bound, and the event being sent
            sink.released.set()
            _until(lambda: _metric(server, "sent") + dropped == 50, "the queue drained")
            assert sink.count() == 50 - dropped


def test_a_refusing_sink_is_retried_until_it_takes_the_event(
    iris_dir: Path, logs: Path
) -> None:
    with recording_sink(refuse_first=2) as sink:
        settings = _settings(sink.url, max_retries=3, backoff_s=0.01)
        with _predictor(iris_dir, logs, settings) as server:
            assert _v1(server).status_code == 200
            _until(lambda: sink.count() == 2, "both events delivered after two 503s")
            text = httpx.get(f"{server.http_url}/metrics").text
            assert re.search(r"^modelserve_payload_logger_retries_total\{.*\} 4\.0$", text, re.M)
            assert _metric(server, "failed") == 0


def test_request_mode_logs_requests_only(iris_dir: Path, logs: Path) -> None:
    with recording_sink() as sink:
        with _predictor(iris_dir, logs, _settings(sink.url, mode="request")) as server:
            for _ in range(3):
                assert _v1(server).status_code == 200
            _until(lambda: sink.count() == 3, "three request events")
            assert _metric(server, "sent") == 3
    assert not sink.by_type("response")


def _event(number: int) -> LogEvent:
    return LogEvent(str(number), REQUEST_TYPE, b"{}", "application/json", "{}", "t")


def test_block_policy_makes_the_caller_wait_for_room_instead_of_dropping() -> None:
    async def scenario(sink: RecordingSink) -> None:
        settings = _settings(sink.url, queue_size=1, workers=1, overflow="block")
        logger = PayloadLogger(settings, PayloadLoggerMetrics(CollectorRegistry()))
        logger.offer(_event(1))  # taken by the worker, held by the stalled sink
        await asyncio.sleep(0.2)
        await logger.put(_event(2))  # fills the queue
        waiting = asyncio.ensure_future(logger.put(_event(3)))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # no room while the sink stalls: the caller waits
        sink.released.set()
        await asyncio.wait_for(waiting, 30)
        await logger.close()
        assert sink.count() == 3

    with recording_sink(stalled=True) as sink:
        asyncio.run(scenario(sink))


def test_drop_oldest_keeps_the_newest_events() -> None:
    async def scenario(sink: RecordingSink) -> None:
        settings = _settings(sink.url, queue_size=2, workers=1, overflow="drop-oldest")
        registry = CollectorRegistry()
        logger = PayloadLogger(settings, PayloadLoggerMetrics(registry))
        logger.offer(_event(0))
        await asyncio.sleep(0.2)  # event 0 is in flight, held by the sink
        for number in range(1, 6):
            logger.offer(_event(number))
        sink.released.set()
        await logger.close()
        dropped = registry.get_sample_value(
            "modelserve_payload_logger_events_total",
            {"inference_service": "sklearn-iris", "component": "predictor",
             "type": "request", "result": "dropped"},
        )
        assert dropped == 3
        assert sorted(e.attributes["id"] for e in sink.events) == ["0", "4", "5"]

    with recording_sink(stalled=True) as sink:
        asyncio.run(scenario(sink))


def test_the_queue_is_bounded_by_payload_bytes_too() -> None:
    async def scenario(sink: RecordingSink) -> None:
        settings = _settings(sink.url, queue_bytes=2048, workers=1, overflow="block")
        registry = CollectorRegistry()
        logger = PayloadLogger(settings, PayloadLoggerMetrics(registry))
        big = LogEvent("big", REQUEST_TYPE, b"x" * 4096, "application/json", "{}", "t")
        await logger.put(big)  # larger than the whole queue: never fits, even when blocking
        logger.offer(_event(1))
        await asyncio.sleep(0.2)  # event 1 in flight, held by the sink
        first = LogEvent("a", REQUEST_TYPE, b"y" * 1500, "application/json", "{}", "t")
        second = LogEvent("b", REQUEST_TYPE, b"z" * 1500, "application/json", "{}", "t")
        await logger.put(first)
        waiting = asyncio.ensure_future(logger.put(second))  # 3000 bytes > 2048: waits
        await asyncio.sleep(0.3)
        assert not waiting.done()
        sink.released.set()
        await asyncio.wait_for(waiting, 30)
        await logger.close()
        dropped = registry.get_sample_value(
            "modelserve_payload_logger_events_total",
            {"inference_service": "sklearn-iris", "component": "predictor",
             "type": "request", "result": "dropped"},
        )
        assert dropped == 1
        assert sorted(e.attributes["id"] for e in sink.events) == ["1", "a", "b"]

    with recording_sink(stalled=True) as sink:
        asyncio.run(scenario(sink))


def test_settings_come_from_one_variable_and_refuse_what_is_not_http() -> None:
    settings = _settings("http://127.0.0.1:9/")
    assert PayloadLoggerSettings.from_env(settings.to_env()) == settings
    assert PayloadLoggerSettings.from_env({}) is None
    with pytest.raises(ValueError, match="not an http"):
        _settings("file:///etc/passwd")
    with pytest.raises(ValueError, match=LOGGER_ENV):
        PayloadLoggerSettings.from_env({LOGGER_ENV: '{"url": 3}'})


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/v1/models/m:predict", True),
        ("/v1/models/m:explain", True),
        ("/v2/models/m/infer", True),
        ("/v2/models/m/versions/2/infer", True),
        ("/v2/models/m", False),
        ("/v2/health/ready", False),
        ("/metrics", False),
    ],
)
def test_only_inference_paths_are_payloads(path: str, logged: bool) -> None:
    assert is_inference_path(path) is logged
