"""The real log sink on a free port (in the tests' event-loop thread), and events made and sent
as a payload logger sends them: with the `cloudevents` SDK, through httpx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from gateway.logsink import LogSink, LogSinkSettings
from tests.gateway.conftest import LoopThread

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
TIME = "2026-12-03T10:00:00.123456789Z"


@contextmanager
def running_sink(loop_thread: LoopThread, out: Path, **settings: Any) -> Iterator[LogSink]:
    """`LogSink` appending to `out`, on a free loopback port; `settings` are LogSinkSettings'."""
    sink = LogSink(LogSinkSettings(out=out, port=0, **settings))
    loop_thread.run(sink.start())
    try:
        yield sink
    finally:
        loop_thread.run(sink.stop(grace=1))


def inference_event(
    data: Any = None,
    *,
    service: str = "iris",
    kind: str = "request",
    event_id: str = "req-1",
    content_type: str = "application/json",
    **extensions: str,
) -> CloudEvent:
    """An event as KServe's logger makes it (type, source, time, the extensions)."""
    attributes = {
        "type": REQUEST if kind == "request" else RESPONSE,
        "source": f"http://127.0.0.1:9000/{service}",
        "id": event_id,
        "time": TIME,
        "datacontenttype": content_type,
        "inferenceservicename": service,
        "namespace": "default",
        "component": "predictor",
        "endpoint": "default",
        "metadata": json.dumps({"x-tenant": ["a"]}),
        **extensions,
    }
    return CloudEvent(attributes, data if data is not None else {"instances": [[1, 2]]})


def send(url: str, event: CloudEvent, mode: str = "binary", path: str = "/") -> httpx.Response:
    """POST `event` in HTTP binary or structured mode."""
    headers, body = to_binary(event) if mode == "binary" else to_structured(event)
    return httpx.post(url + path, headers=headers, content=body, timeout=10)


def lines(path: Path) -> list[dict[str, Any]]:
    """The sink's file, one JSON document per line."""
    return [json.loads(line) for line in path.read_text().splitlines()]
