"""The dashboard's routes on the gateway's app: the page at `/ui` and the JSON API behind it.

- `GET /ui` (and `/ui/static/{file}`): the page, its script and style, shipped in this package
  and served from memory. Open without a token (they hold no data); the page takes the admin
  token from its URL's fragment (`/ui#token=...`, never sent to a server) or asks for it.
- `GET /v1/metrics?window=60`: every service's req/s, p50/p95/p99 and error ratios.
- `GET /v1/services/{name}/metrics?window=300&step=5`: one service, per revision too, with a
  time series for the chart.
- `GET /v1/slo?window=60`: targets from the SLO file, verdicts of the latest load-test report
  and of the live window.
- `GET /v1/services/{name}/example?protocol=v1|v2`: the load tests' payload, to try a service.

They are served by the control plane's admin door (`gateway.controlplane.api.app`), whose
guard checks the admin token and refuses cross-site requests before any of them runs; errors
are answered as `{"error": "..."}`. The services themselves and the rollout controls are the
control plane's `/v1/services` API, which the page calls as the CLI does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.controlplane.api.dashboard.api import (
    example_doc,
    metrics_doc,
    service_metrics_doc,
    slo_doc,
)
from gateway.controlplane.api.dashboard.history import MetricsHistory
from gateway.dataplane.answers import REVISION_HEADER, error_response, json_response
from gateway.dataplane.resolve import NO_REVISION
from gateway.routing import RoutingTable
from gateway.settings import DashboardSettings
from servers.errors import (
    InvalidInput,
    ModelNotFound,
    ModelServeError,
)

__all__ = ["add_dashboard_routes"]

# The page loads nothing but its own files and talks to nothing but this gateway.
_PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
    REVISION_HEADER: NO_REVISION,
}
_STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

Handler = Callable[[Request], Awaitable[Response]]


def _fresh(response: Response) -> Response:
    """The answer, never cached: the page polls these documents."""
    response.headers["cache-control"] = "no-store"
    return response


def _json(body: object) -> Response:
    return _fresh(json_response(body))


def _error(exc: ModelServeError) -> Response:
    return _fresh(error_response(exc))


def _load_static() -> dict[str, bytes]:
    folder = resources.files("gateway.controlplane.api.dashboard").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in _STATIC_TYPES}


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    """A numeric query parameter within [low, high], or InvalidInput naming it."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a number of seconds, not {text!r}") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low:g} and {high:g} seconds, not {text}")
    return value


def add_dashboard_routes(
    app: FastAPI,
    table: RoutingTable,
    history: MetricsHistory,
    settings: DashboardSettings | None = None,
) -> None:
    """Register `/ui`, its assets and the dashboard's JSON API on the control plane's `app`.
    `history` samples the data plane's metrics (the app's lifespan starts and stops it);
    `settings` default to the environment's (`MODELSERVE_DASHBOARD_*`)."""
    settings = settings or DashboardSettings()
    static = _load_static()
    retention = history.retention_s

    def protected(handler: Callable[[Request], Response]) -> Handler:
        """`handler` with its errors in the `{"error"}` format."""

        async def endpoint(request: Request) -> Response:
            try:
                return handler(request)
            except ModelServeError as exc:
                return _error(exc)

        return endpoint

    def known(request: Request) -> str:
        name: str = request.path_params["name"]
        if table.get(name) is None:
            raise ModelNotFound(f"no InferenceService named '{name}'")
        return name

    def names() -> list[str]:
        return [route.name for route in table.routes()]

    def all_metrics(request: Request) -> Response:
        window = _number(request, "window", 60, 1, retention)
        return _json(metrics_doc(history, names(), window))

    def service_metrics(request: Request) -> Response:
        name = known(request)
        window = _number(request, "window", 300, 1, retention)
        step = _number(request, "step", max(5.0, history.interval_s), history.interval_s, window)
        return _json(service_metrics_doc(history, name, window, step))

    def slo(request: Request) -> Response:
        window = _number(request, "window", 60, 1, retention)
        return _json(slo_doc(settings, history, names(), window))

    def example(request: Request) -> Response:
        name = known(request)
        return _json(example_doc(settings, name, request.query_params.get("protocol")))

    def asset(name: str) -> Handler:
        body, media_type = static[name], _STATIC_TYPES[name]

        async def serve(request: Request) -> Response:
            return Response(body, headers=_PAGE_HEADERS, media_type=media_type)

        return serve

    async def slash(request: Request) -> Response:
        return RedirectResponse("/ui", 308, headers={REVISION_HEADER: NO_REVISION})

    app.add_route("/ui", asset("index.html"), ["GET"])
    app.add_route("/ui/", slash, ["GET"])
    for name in _STATIC_TYPES:
        if name != "index.html":
            app.add_route(f"/ui/static/{name}", asset(name), ["GET"])
    app.add_route("/v1/metrics", protected(all_metrics), ["GET"])
    app.add_route("/v1/slo", protected(slo), ["GET"])
    app.add_route("/v1/services/{name}/metrics", protected(service_metrics), ["GET"])
    app.add_route("/v1/services/{name}/example", protected(example), ["GET"])
