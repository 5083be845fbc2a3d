"""The dashboard's view of payload logging: a service's last logged requests and responses,
read by the control plane from the sink its components' `logger.url` names.

`GET /v1/services/{name}/logged?limit=10` (1 to 50) answers a `LoggedView`: per distinct sink
(`scheme://host:port` of a logger URL) whether it answered, and the events it holds for the
service, newest first, each with a short preview of its data. The sink is asked at its
`/events` (`modelserve logsink`'s API, `gateway.logsink.app`) within one second and its answer
is read up to `MAX_ANSWER_BYTES`; a sink that is down, slow, or answers anything but a list of
CloudEvents is reported in `sinks[].error`, never as a failure of the route. A service without
a logger has no sinks and no events.

The page shows every string of it as text (never as HTML): payloads are whatever clients sent.
The control plane sends the sink nothing but the query, with no credentials.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gateway.controlplane.manifests import LoggerSpec
from gateway.dataplane.answers import error_response, json_response
from gateway.logsink.events import LoggedEvent
from gateway.routing import RoutingTable, ServiceRoute
from servers.errors import InvalidInput, ModelNotFound, ModelServeError

__all__ = ["LoggedReader", "LoggedRow", "LoggedView", "SinkView", "add_logged_routes"]

COMPONENTS = ("predictor", "transformer")
TIMEOUT_S = 1.0
MAX_ANSWER_BYTES = 8 * 1024 * 1024
PREVIEW_CHARS = 160
DEFAULT_LIMIT, MAX_LIMIT = 10, 50
_EVENTS = TypeAdapter(list[LoggedEvent])
_KINDS = {
    "org.kubeflow.serving.inference.request": "request",
    "org.kubeflow.serving.inference.response": "response",
}


class SinkView(BaseModel):
    """One sink the service's loggers send to, and how asking it went."""

    url: str = Field(description="the sink's /events URL the control plane asked")
    components: list[str] = Field(description="the components whose logger.url is this sink")
    ok: bool
    error: str | None = Field(None, description="why there are no events from it")
    events: int = Field(0, description="events of this service it answered")


class LoggedRow(BaseModel):
    """One logged request or response, as the dashboard lists it."""

    time: str | None
    id: str
    type: str
    kind: str = Field(description="request, response, or the CloudEvent type")
    component: str | None
    endpoint: str | None
    statuscode: str | None
    content_type: str | None
    preview: str = Field(description="the data, cut short, or what it was when not JSON")
    sink: str


class LoggedView(BaseModel):
    """`GET /v1/services/{name}/logged`: the service's sinks and its last logged events."""

    service: str
    limit: int
    sinks: list[SinkView]
    events: list[LoggedRow]


class _SinkProblem(Exception):
    """Why a sink's events could not be read (said in `SinkView.error`)."""


def loggers(document: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The components of an InferenceService document with a `logger.url`, by URL."""
    spec = (document or {}).get("spec") or {}
    found: dict[str, list[str]] = {}
    for component in COMPONENTS:
        block = spec.get(component)
        if not isinstance(block, Mapping) or block.get("logger") is None:
            continue
        try:
            logger = LoggerSpec.model_validate(block["logger"])
        except ValidationError:
            continue  # the platform refused to run it: no sink to ask
        if logger.url:
            found.setdefault(logger.url, []).append(component)
    return found


def events_url(logger_url: str) -> str:
    """The `/events` URL of the sink at `logger_url`'s scheme, host and port."""
    url = httpx.URL(logger_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise _SinkProblem(f"logger.url {logger_url[:200]!r} is not an http(s) URL")
    return str(url.copy_with(path="/events", query=None, fragment=None, userinfo=b""))


def preview(event: LoggedEvent) -> str:
    """The event's data in a line: compact JSON cut at PREVIEW_CHARS, or what it is."""
    if event.data is not None:
        text = orjson.dumps(event.data).decode()
        return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"
    if event.data_base64 is not None:
        try:
            size = len(base64.b64decode(event.data_base64))
        except ValueError:
            size = len(event.data_base64) * 3 // 4
        return f"({size} bytes of {event.datacontenttype or 'binary data'}, not JSON)"
    if event.data_omitted_bytes is not None:
        return f"({event.data_omitted_bytes} bytes, too large for the sink to keep in memory)"
    return "(no data)"


def _row(event: LoggedEvent, sink: str) -> LoggedRow:
    def text(name: str) -> str | None:
        value = event.extension(name)
        return None if value is None else str(value)

    return LoggedRow(
        time=event.time, id=event.id, type=event.type, kind=_KINDS.get(event.type, event.type),
        component=text("component"), endpoint=text("endpoint"),
        statuscode=text("statuscode"), content_type=event.datacontenttype,
        preview=preview(event), sink=sink,
    )


class LoggedReader:
    """Asks sinks for a service's events with one pooled client (`open()` in the running
    loop, `aclose()` at the end: the admin app's lifespan does both)."""

    def __init__(self, timeout_s: float = TIMEOUT_S, max_answer_bytes: int = MAX_ANSWER_BYTES
                 ) -> None:
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        self._client: httpx.AsyncClient | None = None

    def open(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self.timeout_s, trust_env=False, follow_redirects=False
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def view(self, route: ServiceRoute, limit: int) -> LoggedView:
        """What `route`'s loggers' sinks hold for it, newest first, at most `limit` events."""
        sinks: list[SinkView] = []
        rows: list[LoggedRow] = []
        by_sink: dict[str, list[str]] = {}
        for url, components in loggers(route.document).items():
            try:
                by_sink.setdefault(events_url(url), []).extend(components)
            except _SinkProblem as exc:
                sinks.append(SinkView(url=url, components=components, ok=False, error=str(exc)))
        asked = list(by_sink.items())
        answers = await asyncio.gather(*(self._events(url, route.name, limit) for url, _ in asked))
        for (url, components), answer in zip(asked, answers, strict=True):
            if isinstance(answer, str):
                sinks.append(SinkView(url=url, components=components, ok=False, error=answer))
                continue
            sinks.append(SinkView(url=url, components=components, ok=True, events=len(answer)))
            rows.extend(_row(event, url) for event in answer)
        if len(asked) > 1:  # each sink's answer is newest first already
            rows.sort(key=lambda r: r.time or "", reverse=True)
        return LoggedView(service=route.name, limit=limit, sinks=sinks, events=rows[:limit])

    async def _events(self, url: str, name: str, limit: int) -> list[LoggedEvent] | str:
        """The sink's events of service `name`, or why not (a sentence)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._get(url, {"inferenceservicename": name, "limit": str(limit)})
        except (TimeoutError, httpx.TimeoutException):
            return f"the log sink at {url} did not answer within {self.timeout_s:g} s"
        except httpx.ConnectError:
            return f"the log sink at {url} is not running (the connection was refused)"
        except httpx.HTTPError as exc:
            return f"the log sink at {url} failed: {type(exc).__name__}: {exc}"
        except _SinkProblem as exc:
            return str(exc)
        try:
            # Off the loop: it serves inference too, and the answer may be megabytes.
            events = await asyncio.to_thread(_EVENTS.validate_json, body)
        except ValidationError:
            return (f"{url} is not a modelserve log sink: its answer is not a list of "
                    "CloudEvents (`modelserve logsink` serves them)")
        # A sink that ignored the query shows only this service's events all the same.
        return [e for e in events if e.extension("inferenceservicename") == name]

    async def _get(self, url: str, params: dict[str, str]) -> bytes:
        if self._client is None:
            raise _SinkProblem("the control plane's sink client is not open")
        async with self._client.stream("GET", url, params=params) as answer:
            if answer.status_code != 200:
                raise _SinkProblem(f"{url} answered {answer.status_code}: not a modelserve "
                                   "log sink's /events")
            body = bytearray()
            async for chunk in answer.aiter_bytes():
                body += chunk
                if len(body) > self.max_answer_bytes:
                    raise _SinkProblem(f"{url} answered more than {self.max_answer_bytes} "
                                       "bytes: too much to show")
            return bytes(body)


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return int(text)


def add_logged_routes(app: FastAPI, table: RoutingTable, reader: LoggedReader) -> None:
    """Register `GET /v1/services/{name}/logged` on the control plane's `app`."""

    async def logged(request: Request) -> Response:
        try:
            name = request.path_params["name"]
            route = table.get(name)
            if route is None:
                raise ModelNotFound(f"no InferenceService named '{name}'")
            view = await reader.view(route, _limit(request))
            response = json_response(view.model_dump())
        except ModelServeError as exc:
            response = error_response(exc)
        response.headers["cache-control"] = "no-store"
        return response

    app.add_route("/v1/services/{name}/logged", logged, ["GET"])
