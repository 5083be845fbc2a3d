"""The log sink's HTTP app (Starlette): CloudEvents in, JSON lines out, the recent ones back.

- `POST` any path: one CloudEvent, binary or structured mode. 200 `{"id": ...}` once its line
  is in the file; 400 `{"error": ...}` naming why the body is not a CloudEvent; 413 over the
  body limit (the connection is closed: the rest of the body is never read); 500 when the
  file cannot be written (a sender retries those, as KServe's agent and ours do).
- `GET /events?inferenceservicename=NAME&limit=N`: the kept events, newest first, as a JSON
  list of CloudEvents in the JSON format (`gateway.logsink.events`); without a name, every
  service's. `limit` 1 to 1000, default 20.
- `GET /healthz`, `GET /metrics` (Prometheus: events received by kind, rejected by reason,
  what the memory holds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.bodies import read_body
from gateway.logsink.events import LoggedEvent, NotACloudEvent, parse_event
from gateway.logsink.store import JsonLinesFile, RecentEvents
from servers.errors import InvalidInput, ModelServeError, PayloadTooLarge, error_body

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "SinkMetrics", "SinkWriteFailed", "create_app"]

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
JSON = "application/json"
_KINDS = {
    "org.kubeflow.serving.inference.request": "request",
    "org.kubeflow.serving.inference.response": "response",
}


class SinkWriteFailed(ModelServeError):
    """The events file refused a line (disk full, file gone read-only): 500, so senders retry."""

    http_status = 500


class SinkMetrics:
    """The sink's counters, in a registry of its own (served at `/metrics`)."""

    def __init__(self, store: RecentEvents) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter(
            "modelserve_logsink_events", "CloudEvents written to the file, by kind "
            "(request, response: KServe's inference event types; other)", ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "modelserve_logsink_rejected", "requests refused, by reason "
            "(not_cloudevent, too_large, write_failed)", ["reason"], registry=self.registry,
        )
        kept = Gauge("modelserve_logsink_kept_events", "events kept in memory for /events",
                     registry=self.registry)
        kept.set_function(lambda: len(store))
        kept_bytes = Gauge("modelserve_logsink_kept_bytes", "bytes of events kept in memory",
                           registry=self.registry)
        kept_bytes.set_function(lambda: store.kept_bytes)


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status, {"cache-control": "no-store"}, media_type=JSON)


def _error(exc: ModelServeError) -> Response:
    response = _json(orjson.dumps(error_body(exc.message)), exc.http_status)
    if isinstance(exc, PayloadTooLarge):
        response.headers["connection"] = "close"
    return response


_INLINE_PARSE_BYTES = 64 * 1024


def _parse(headers: Mapping[str, str], body: bytes) -> tuple[LoggedEvent, bytes]:
    event = parse_event(headers, body)
    return event, event.line()


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return int(text)


def create_app(
    out: JsonLinesFile, store: RecentEvents, metrics: SinkMetrics, max_body_bytes: int
) -> Starlette:
    """The sink's app: events appended to `out` and kept in `store`, counted in `metrics`."""

    async def receive_event(request: Request) -> Response:
        length = request.headers.get("content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        try:
            body = await read_body(request.receive, declared, max_body_bytes, "the log sink's")
            headers = dict(request.headers.items())
            # Off the loop when large (a 16 MiB structured event is a few hundred ms of JSON);
            # a small one inline: the thread hop cost more than the parse (~2x the sink's
            # events/s measured with KServe-sized payloads on 2 cores).
            if len(body) > _INLINE_PARSE_BYTES:
                event, line = await asyncio.to_thread(_parse, headers, body)
            else:
                event, line = _parse(headers, body)
        except PayloadTooLarge as exc:
            metrics.rejected.labels("too_large").inc()
            return _error(exc)
        except NotACloudEvent as exc:
            metrics.rejected.labels("not_cloudevent").inc()
            return _error(exc)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is there to read an answer
        try:
            await out.append(line)
        except OSError as exc:
            metrics.rejected.labels("write_failed").inc()
            return _error(SinkWriteFailed(f"cannot write to {out.path}: {exc.strerror}"))
        store.add(event, line)
        metrics.received.labels(_KINDS.get(event.type, "other")).inc()
        return _json(orjson.dumps({"id": event.id}))

    async def events(request: Request) -> Response:
        try:
            limit = _limit(request)
        except InvalidInput as exc:
            return _error(exc)
        lines = store.lines(request.query_params.get("inferenceservicename"), limit)
        return _json(b"[" + b",".join(lines) + b"]")

    async def healthz(request: Request) -> Response:
        return _json(b'{"status":"ok"}')

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _json(orjson.dumps(error_body(exc.detail)), exc.status_code)

    async def crash(request: Request, exc: Exception) -> Response:
        return _json(orjson.dumps(error_body(f"log sink: internal error: {exc}")), 500)

    return Starlette(
        routes=[
            Route("/events", events, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
            Route("/{path:path}", receive_event, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: crash},
    )
