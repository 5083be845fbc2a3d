"""Payload logging as KServe's `logger`: a component's requests and responses as CloudEvents.

In a KServe cluster the agent sidecar in front of a component does this (kserve
`pkg/logger`); locally the component does it itself, configured by the control plane from the
InferenceService's `spec.<component>.logger` (`PayloadLoggerSettings`, one JSON environment
variable). Each inference request and/or response becomes a CloudEvent in HTTP binary mode
with KServe's attributes: `ce-type` `org.kubeflow.serving.inference.request|response`, `ce-id`
= the request id shared by the pair (`x-request-id`, generated when missing), `ce-source`,
and the extensions `inferenceservicename`, `namespace`, `component`, `endpoint`, `metadata`
(the `metadataHeaders`, JSON) and, for responses, `statuscode` (ours: KServe logs only 200s,
we log every answer and say which it was).

What KServe's logger lacks (its tracker kserve#6193) this one has: events leave the request
path through a bounded queue with an overflow policy (`drop`, the default, counts what it
drops; `drop-oldest`; `block`, which makes requests wait for room instead of losing events),
a few workers on one pooled HTTP client, retries with exponential back-off on connection
errors, 429 and 5xx, and metrics (`modelserve_payload_logger_*`: sent, dropped, failed,
retries, queue depth, latency to the sink). On shutdown the queue is drained for a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, Literal

import httpx
import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from servers.errors import ModelServeError
from servers.http_client import HttpClient

__all__ = [
    "LOGGER_ENV",
    "REQUEST_ID_HEADER",
    "REQUEST_TYPE",
    "RESPONSE_TYPE",
    "LogEvent",
    "PayloadLogger",
    "PayloadLoggerMetrics",
    "PayloadLoggerSettings",
    "PayloadLoggingMiddleware",
    "is_inference_path",
]

LOGGER_ENV = "MODELSERVE_PAYLOAD_LOGGER"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = REQUEST_ID_HEADER.encode()

log = logging.getLogger("modelserve.payload_logger")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

Overflow = Literal["drop", "drop-oldest", "block"]


class PayloadLoggerSettings(BaseModel):
    """One component's logger: where events go, which, and how the queue behaves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(min_length=1, description="the sink: http(s) URL receiving CloudEvents")
    mode: Literal["all", "request", "response"] = "all"
    inference_service: str
    namespace: str = "default"
    component: Literal["predictor", "transformer"] = "predictor"
    endpoint: Literal["default", "canary"] = "default"
    revision: str = ""
    source: str = Field("", description="ce-source; the component's URL when empty")
    metadata_headers: tuple[str, ...] = ()
    annotations: dict[str, str] = Field(default_factory=dict)
    queue_size: int = Field(1000, ge=1, le=1_000_000)
    queue_bytes: int = Field(
        64 * 2**20, ge=1024, description="payload bytes the queue may hold (a bound on memory)"
    )
    overflow: Overflow = "drop"
    workers: int = Field(4, ge=1, le=64)
    max_retries: int = Field(3, ge=0, le=10)
    backoff_s: float = Field(0.1, gt=0, le=10)
    timeout_s: float = Field(5.0, gt=0, le=60)
    drain_s: float = Field(5.0, ge=0, le=60, description="how long shutdown waits for the queue")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"logger url {url[:200]!r} is not an http(s) URL")
        return url

    @property
    def logs_requests(self) -> bool:
        return self.mode in ("all", "request")

    @property
    def logs_responses(self) -> bool:
        return self.mode in ("all", "response")

    def to_env(self) -> dict[str, str]:
        """The environment that hands these settings to the component."""
        return {LOGGER_ENV: self.model_dump_json()}

    @classmethod
    def from_env(cls, env: MutableMapping[str, str] | None = None) -> PayloadLoggerSettings | None:
        """The settings the control plane gave, or None when no logger is set (ValueError when
        the variable is malformed: the component then refuses to start)."""
        text = (os.environ if env is None else env).get(LOGGER_ENV)
        if not text:
            return None
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ValueError(f"{LOGGER_ENV}: {exc}") from exc


@dataclass(slots=True)
class LogEvent:
    """One request or response to send: the CloudEvent's attributes that vary, and its data."""

    id: str
    type: str
    data: bytes
    content_type: str
    metadata: str  # JSON of the metadata headers
    time: str
    status: int | None = None  # responses only


class PayloadLoggerMetrics:
    """The logger's Prometheus metrics, in `registry` (the process's, by default)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["inference_service", "component"]
        self.events = Counter(
            "modelserve_payload_logger_events",
            "Payload-logger CloudEvents by outcome (sent, dropped on overflow, failed after "
            "retries)",
            [*labels, "type", "result"],
            registry=registry,
        )
        self.retries = Counter(
            "modelserve_payload_logger_retries",
            "Payload-logger sends retried after a connection error, 429 or 5xx",
            labels,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "modelserve_payload_logger_queue_depth",
            "Payload-logger events waiting to be sent",
            labels,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.send_seconds = Histogram(
            "modelserve_payload_logger_send_seconds",
            "Time from an event's first send attempt to the sink's answer (retries included)",
            labels,
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


def _short_type(event_type: str) -> str:
    return "request" if event_type == REQUEST_TYPE else "response"


class PayloadLogger:
    """The queue and its workers: `offer` or `put` events, `close` to drain and stop.

    The queue is bounded twice, by events (`queue_size`) and by payload bytes (`queue_bytes`):
    a count alone would let large payloads hold gigabytes. Workers start with the first event,
    in the running event loop (a REST worker's or the gRPC server's), so building one costs
    nothing until it is used.
    """

    def __init__(
        self, settings: PayloadLoggerSettings, metrics: PayloadLoggerMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or PayloadLoggerMetrics()
        labels = (settings.inference_service, settings.component)
        kinds = ("request", "response")
        self._sent = {t: self.metrics.events.labels(*labels, t, "sent") for t in kinds}
        self._dropped = {t: self.metrics.events.labels(*labels, t, "dropped") for t in kinds}
        self._failed = {t: self.metrics.events.labels(*labels, t, "failed") for t in kinds}
        self._retries = self.metrics.retries.labels(*labels)
        self._depth = self.metrics.queue_depth.labels(*labels)
        self._latency = self.metrics.send_seconds.labels(*labels)
        self._events: deque[LogEvent] = deque()
        self._queued_bytes = 0
        self._in_flight = 0
        self._client: HttpClient | None = None
        sink = httpx.URL(settings.url)
        self._sink_base = f"{sink.scheme}://{sink.netloc.decode('ascii')}"
        self._sink_target = sink.raw_path or b"/"
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._static_headers = self._headers_of_every_event()
        # Made with the workers, in their loop: a worker waits on `_arrived`, a `block`
        # caller on `_room`, `close` on `_idle`.
        self._arrived: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None

    def _headers_of_every_event(self) -> list[tuple[bytes, bytes]]:
        s = self.settings
        headers = {
            "ce-specversion": "1.0",
            "ce-source": s.source or "urn:modelserve:" + s.inference_service,
            "ce-inferenceservicename": s.inference_service,
            "ce-namespace": s.namespace,
            "ce-component": s.component,
            "ce-endpoint": s.endpoint,
        }
        if s.revision:
            headers["ce-revision"] = s.revision
        if s.annotations:
            headers["ce-annotations"] = orjson.dumps(s.annotations).decode()
        return [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]

    def _start(self) -> None:
        workers = self.settings.workers
        self._arrived, self._room, self._idle = asyncio.Event(), asyncio.Event(), asyncio.Event()
        # Our lean client (servers/http_client.py), as the transformer's: httpx costs ~3x its
        # CPU per request, and that CPU is taken from the component serving the traffic. It
        # knows no proxies: events go to the URL the policy checked.
        self._client = HttpClient(
            self.settings.timeout_s, min(self.settings.timeout_s, 2.0), workers,
            keep_headers=(), peer="payload log sink",
        )
        self._workers = [asyncio.create_task(self._work()) for _ in range(workers)]

    def _fits(self, event: LogEvent) -> bool:
        return (
            len(self._events) < self.settings.queue_size
            and self._queued_bytes + len(event.data) <= self.settings.queue_bytes
        )

    def _enqueue(self, event: LogEvent) -> None:
        if self._arrived is None:
            self._start()
        assert self._arrived is not None and self._idle is not None
        self._events.append(event)
        self._queued_bytes += len(event.data)
        self._depth.set(len(self._events))
        self._idle.clear()
        self._arrived.set()

    def _take(self) -> LogEvent:
        event = self._events.popleft()
        self._queued_bytes -= len(event.data)
        self._depth.set(len(self._events))
        if self._room is not None:
            self._room.set()
        return event

    def offer(self, event: LogEvent) -> None:
        """Queue `event` without waiting. When the queue is full (by count or bytes), `drop`
        counts the new event as dropped, `drop-oldest` drops waiting events to make room
        (`block` drops too: use `put`)."""
        if self._closed or len(event.data) > self.settings.queue_bytes:
            self._dropped[_short_type(event.type)].inc()
            return
        if self.settings.overflow == "drop-oldest":
            while self._events and not self._fits(event):
                self._dropped[_short_type(self._take().type)].inc()
        if self._fits(event):
            self._enqueue(event)
        else:
            self._dropped[_short_type(event.type)].inc()

    async def put(self, event: LogEvent) -> None:
        """Queue `event`, waiting for room when the policy is `block` (an event larger than
        the whole queue's bytes can never fit: it is dropped)."""
        if (
            self.settings.overflow != "block"
            or self._closed
            or len(event.data) > self.settings.queue_bytes
        ):
            self.offer(event)
            return
        while not self._fits(event):
            assert self._room is not None  # the queue is full: the workers have started
            self._room.clear()
            await self._room.wait()
            if self._closed:
                self.offer(event)  # counted as dropped
                return
        self._enqueue(event)

    async def _work(self) -> None:
        assert self._arrived is not None and self._idle is not None
        while True:
            while not self._events:
                self._arrived.clear()
                await self._arrived.wait()
            event = self._take()
            self._in_flight += 1
            try:
                await self._deliver(event)
            except Exception:  # a bug here must not kill the worker: count it and go on
                log.exception("payload logger: could not send event %s", event.id)
                self._failed[_short_type(event.type)].inc()
            finally:
                self._in_flight -= 1
                if not self._events and not self._in_flight:
                    self._idle.set()

    def _event_headers(self, event: LogEvent) -> list[tuple[bytes, bytes]]:
        headers = [
            *self._static_headers,
            (b"ce-id", event.id.encode("latin-1")),
            (b"ce-type", event.type.encode()),
            (b"ce-time", event.time.encode()),
            (b"ce-metadata", event.metadata.encode("latin-1")),
            (b"content-type", (event.content_type or "application/json").encode("latin-1")),
        ]
        if event.status is not None:
            headers.append((b"ce-statuscode", b"%d" % event.status))
        return headers

    async def _deliver(self, event: LogEvent) -> None:
        assert self._client is not None
        kind = _short_type(event.type)
        headers = self._event_headers(event)
        start = perf_counter()
        problem = ""
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                self._retries.inc()
                # Full jitter (AWS's back-off advice): workers retrying together spread out.
                await asyncio.sleep(random.uniform(0, self.settings.backoff_s * 2 ** (attempt - 1)))
            try:
                answer = await self._client.request(
                    self._sink_base, "POST", self._sink_target, headers, event.data
                )
            except ModelServeError as exc:  # refused, reset, timed out: the sink is not there
                problem = exc.message
                continue
            if answer.status < 300:
                self._latency.observe(perf_counter() - start)
                self._sent[kind].inc()
                return
            problem = f"HTTP {answer.status}"
            if answer.status != 429 and answer.status < 500:
                break  # the sink refuses this event: sending it again will not help
        self._failed[kind].inc()
        log.warning("payload logger: event %s (%s) not delivered: %s", event.id, kind, problem)

    async def close(self) -> None:
        """Stop taking events, send what is queued for up to `drain_s`, then stop the workers
        (what the drain could not send is counted as dropped)."""
        self._closed = True
        if self._idle is not None and (self._events or self._in_flight):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.settings.drain_s)
        while self._events:
            self._dropped[_short_type(self._take().type)].inc()
        if self._room is not None:
            self._room.set()  # `block` callers still waiting drop their events
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def is_inference_path(path: str) -> bool:
    """Whether `path` is one of the inference routes whose payloads are logged (v1 predict and
    explain, v2 infer, versioned or not): health, metadata and metrics are not payloads."""
    if path.startswith("/v1/models/"):
        return path.endswith((":predict", ":explain"))
    return path.startswith("/v2/models/") and path.endswith("/infer")


def now_rfc3339() -> str:
    """The CloudEvents `time` attribute for now."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class PayloadLoggingMiddleware:
    """ASGI middleware logging the inference requests and responses that pass through it.

    It reads the request id from `x-request-id` (or makes one, and adds it to the request the
    model sees, so a transformer forwards it to its predictor) and returns it on the response.
    The request event is queued once the body has been read, the response event once it has
    been sent: the client never waits for the sink (unless the policy is `block`).
    """

    def __init__(self, app: ASGIApp, logger: PayloadLogger) -> None:
        self.app = app
        self.logger = logger
        self._metadata_headers = tuple(
            name.lower().encode() for name in logger.settings.metadata_headers
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._draining(receive), send)
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if not is_inference_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        await self._logged(scope, receive, send)

    def _draining(self, receive: Receive) -> Receive:
        async def receive_then_drain() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.logger.close()
            return message

        return receive_then_drain

    def _metadata(self, headers: list[tuple[bytes, bytes]]) -> str:
        found: dict[str, list[str]] = {}
        if self._metadata_headers:
            for key, value in headers:
                if key in self._metadata_headers:
                    found.setdefault(key.decode(), []).append(value.decode("latin-1"))
        return orjson.dumps(found).decode()

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.logger.settings
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
        request_id = content_type = ""
        for key, value in headers:
            if key == _REQUEST_ID:
                request_id = value.decode("latin-1")
            elif key == b"content-type":
                content_type = value.decode("latin-1")
        if not request_id:
            request_id = str(uuid.uuid4())
            headers.append((_REQUEST_ID, request_id.encode()))
            scope = {**scope, "headers": headers}
        metadata = self._metadata(headers)
        request_parts: list[bytes] = []

        async def logged_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and settings.logs_requests:
                request_parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    event = LogEvent(
                        request_id, REQUEST_TYPE, b"".join(request_parts), content_type,
                        metadata, now_rfc3339(),
                    )
                    request_parts.clear()
                    await self.logger.put(event)
            return message

        status = 0
        response_type = ""
        response_parts: list[bytes] = []

        async def logged_send(message: Message) -> None:
            nonlocal status, response_type
            if message["type"] == "http.response.start":
                status = message["status"]
                raw = list(message.get("headers", ()))
                for key, value in raw:
                    if key == b"content-type":
                        response_type = value.decode("latin-1")
                if not any(key == _REQUEST_ID for key, _ in raw):
                    raw.append((_REQUEST_ID, request_id.encode()))
                    message = {**message, "headers": raw}
            elif message["type"] == "http.response.body" and settings.logs_responses:
                response_parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    event = LogEvent(
                        request_id, RESPONSE_TYPE, b"".join(response_parts), response_type,
                        metadata, now_rfc3339(), status,
                    )
                    response_parts.clear()
                    await send(message)
                    await self.logger.put(event)
                    return
            await send(message)

        await self.app(scope, logged_receive, logged_send)
