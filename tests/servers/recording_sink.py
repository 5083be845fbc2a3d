"""A CloudEvents sink for the payload logger's fault tests: it records what arrives, and can
refuse (503) the first attempts or stall until released, which the real sink never does."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from cloudevents.http import from_http
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import free_port


@dataclass
class Received:
    """One delivered event: its HTTP headers (lower-case) and body, and the parsed event."""

    headers: dict[str, str]
    body: bytes
    attributes: dict[str, str]


@dataclass
class RecordingSink:
    """What the sink saw; `refuse_first` 503s each event's first attempts; a cleared
    `released` stalls every delivery until it is set."""

    url: str = ""
    refuse_first: int = 0
    events: list[Received] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_type(self, kind: str) -> list[Received]:
        with self.lock:
            return [e for e in self.events if e.attributes["type"].endswith(kind)]

    def count(self) -> int:
        with self.lock:
            return len(self.events)


@contextmanager
def recording_sink(refuse_first: int = 0, stalled: bool = False) -> Iterator[RecordingSink]:
    """A RecordingSink listening on 127.0.0.1 for the duration of the block."""
    sink = RecordingSink(refuse_first=refuse_first)
    if not stalled:
        sink.released.set()

    async def receive(request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        key = f"{headers.get('ce-id')}/{headers.get('ce-type')}"
        with sink.lock:
            sink.attempts[key] = sink.attempts.get(key, 0) + 1
            attempt = sink.attempts[key]
        if attempt <= sink.refuse_first:
            return Response(status_code=503)
        while not sink.released.is_set():
            await asyncio.sleep(0.01)
        event = from_http(headers, body)
        attributes = {k: str(v) for k, v in event.get_attributes().items()}
        with sink.lock:
            sink.events.append(Received(headers, body, attributes))
        return Response(status_code=200)

    app = Starlette(routes=[Route("/", receive, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    sink.url = f"http://127.0.0.1:{port}/"
    try:
        yield sink
    finally:
        sink.released.set()
        server.should_exit = True
        thread.join(timeout=10)
