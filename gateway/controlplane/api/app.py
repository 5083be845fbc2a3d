"""The control plane's HTTP app, served on the admin port only: the rollout API and the dashboard.

- `GET /v1/services`, `GET /v1/services/{name}`: the InferenceService documents with status.
- `POST /v1/services` (an InferenceService, JSON or YAML: `kubectl apply`),
  `PATCH /v1/services/{name}` (merge or JSON patch: `kubectl patch`),
  `DELETE /v1/services/{name}` (`kubectl delete`).
- `POST /v1/services/{name}/try?protocol=v1|v2`: the dashboard's "try it" panel; the body is
  sent to the data plane's own listener as a prediction, the answer returned as it came.
- `/ui` and the dashboard's JSON API (`gateway.controlplane.api.dashboard`), with
  `GET /v1/services/{name}/logged`: the last events its payload logger sent to its sink.
- Triton's repository extension: `POST /v2/repository/index`, `.../models/{name}/load` and
  `/unload` mapped onto the platform (`gateway.controlplane.api.repository`).

Every route is behind `AdminGuard` (admin token, no cross-site request, JSON/YAML bodies
only). Bodies are read while they stream, within `AdminSettings.max_body_bytes`, and parsed
off the event loop without YAML aliases (`documents`). The KServe cluster equivalent is the
Kubernetes API server with RBAC: an inference client can never create pods there either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import httpx
from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.bodies import read_body
from gateway.controlplane.api.dashboard import MetricsHistory, add_dashboard_routes
from gateway.controlplane.api.dashboard.logged import LoggedReader, add_logged_routes
from gateway.controlplane.api.documents import parse_document_async
from gateway.controlplane.api.guard import AdminGuard
from gateway.controlplane.api.repository import add_repository_routes
from gateway.controlplane.api.tokens import AdminTokens
from gateway.dataplane.answers import add_error_handlers, error_response, json_response
from gateway.dataplane.auth import API_KEY_HEADER
from gateway.dataplane.metrics import GatewayMetrics
from gateway.routing import RoutingTable
from gateway.settings import AdminSettings, DashboardSettings
from servers.errors import (
    BackendUnavailable,
    InvalidInput,
    ModelNotFound,
    ModelServeError,
    PayloadTooLarge,
)
from servers.telemetry import without_fastapi_telemetry

__all__ = ["Rollouts", "create_admin_app"]

TRY_TIMEOUT_S = 60.0


class Rollouts(Protocol):
    """The control plane's rollout operations (the local platform's; a gateway in front of a
    cluster has none: rollouts go through kubectl there)."""

    async def apply(self, data: Any, where: str = ...) -> tuple[dict[str, Any], bool]: ...

    async def patch(self, name: str, content_type: str, body: Any) -> dict[str, Any]: ...

    async def delete(self, name: str) -> None: ...

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def _deleted(name: str) -> dict[str, Any]:
    """The `Status` the Kubernetes API answers a DELETE with."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Success",
        "details": {"name": name, "group": "serving.kserve.io", "kind": "inferenceservices"},
    }


class _RolloutRoutes:
    """`/v1/services` over one routing table and, with the local platform, its rollouts."""

    def __init__(
        self,
        table: RoutingTable,
        rollouts: Rollouts | None,
        settings: AdminSettings,
        inference_url: str | None,
        inference_key: str | None,
    ) -> None:
        self.table = table
        self.rollouts = rollouts
        self.settings = settings
        self.inference_url = inference_url
        self.inference_key = inference_key
        self.client: httpx.AsyncClient | None = None  # set by the app's lifespan

    def add_to(self, app: FastAPI) -> None:
        app.add_route("/v1/services", self.list_services, ["GET"])
        app.add_route("/v1/services", self.apply_service, ["POST"])
        app.add_route("/v1/services/{name}", self.get_service, ["GET"])
        app.add_route("/v1/services/{name}", self.patch_service, ["PATCH"])
        app.add_route("/v1/services/{name}", self.delete_service, ["DELETE"])
        app.add_route("/v1/services/{name}/try", self.try_service, ["POST"])

    async def _body(self, request: Request) -> bytes:
        return await read_body(
            request.receive, _declared_length(request), self.settings.max_body_bytes,
            "the control plane's",
        )

    async def _document(self, request: Request) -> Any:
        body = await self._body(request)
        return await parse_document_async(
            body, request.headers.get("content-type"), self.settings.max_document_depth
        )

    def _need_rollouts(self) -> Rollouts:
        if self.rollouts is None:
            raise _NoRollouts()
        return self.rollouts

    async def list_services(self, request: Request) -> Response:
        routes = sorted(self.table.routes(), key=lambda r: r.name)
        return json_response({"services": [self.table.status(r) for r in routes]})

    async def get_service(self, request: Request) -> Response:
        name = request.path_params["name"]
        route = self.table.get(name)
        if route is None:
            return error_response(ModelNotFound(f"no InferenceService named '{name}'"))
        return json_response(self.table.status(route))

    async def apply_service(self, request: Request) -> Response:
        rollouts = self._need_rollouts()
        doc, created = await rollouts.apply(await self._document(request))
        return json_response(doc, 201 if created else 200)

    async def patch_service(self, request: Request) -> Response:
        rollouts = self._need_rollouts()
        body = await self._document(request)
        doc = await rollouts.patch(
            request.path_params["name"], request.headers.get("content-type", ""), body
        )
        return json_response(doc)

    async def delete_service(self, request: Request) -> Response:
        name = request.path_params["name"]
        await self._need_rollouts().delete(name)
        return json_response(_deleted(name))

    async def try_service(self, request: Request) -> Response:
        name = request.path_params["name"]
        if self.table.get(name) is None:
            raise ModelNotFound(f"no InferenceService named '{name}'")
        if self.inference_url is None or self.client is None:
            raise BackendUnavailable("this control plane does not know the data plane's URL")
        protocol = request.query_params.get("protocol", "v1")
        if protocol == "v1":
            path = f"/v1/models/{name}:predict"
        elif protocol == "v2":
            path = f"/v2/models/{name}/infer"
        else:
            raise InvalidInput(f"protocol must be v1 or v2, not {protocol!r}")
        body = await self._body(request)
        headers = {"content-type": "application/json"}
        if self.inference_key is not None:
            headers[API_KEY_HEADER] = self.inference_key
        try:
            answer = await self.client.post(
                self.inference_url + path, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"the data plane did not answer: {exc}") from exc
        kept = {
            key: value
            for key, value in answer.headers.items()
            if key in ("content-type", "x-modelserve-revision")
        }
        return Response(answer.content, answer.status_code, headers=kept)


class _NoRollouts(ModelServeError):
    """A gateway without the local control plane: rollouts go through the cluster."""

    http_status = 405

    def __init__(self) -> None:
        super().__init__(
            "rollouts need the local control plane (`modelserve up`); in a cluster use "
            "`kubectl apply` / `kubectl patch` or `modelserve ... --kube`"
        )


def _add_error_handlers(app: FastAPI) -> None:
    """The gateway's error answers (`add_error_handlers`), and two of the control plane's:
    a 413 closes the connection, and a client gone mid-body gets no answer."""
    add_error_handlers(app, "control plane")

    async def on_model_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ModelServeError)
        response = error_response(exc)
        if isinstance(exc, PayloadTooLarge):
            # The rest of the body was never read: the connection cannot carry another request.
            response.headers["connection"] = "close"
        return response

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nobody is there to read it

    app.add_exception_handler(ModelServeError, on_model_error)
    app.add_exception_handler(ClientDisconnect, on_disconnect)


def create_admin_app(
    table: RoutingTable,
    metrics: GatewayMetrics,
    tokens: AdminTokens,
    settings: AdminSettings | None = None,
    rollouts: Rollouts | None = None,
    dashboard: DashboardSettings | None = None,
    inference_url: str | None = None,
    inference_key: str | None = None,
) -> AdminGuard:
    """The control plane's app over `table` (the data plane's `metrics` feed the dashboard),
    behind the admin guard. `rollouts` serves `POST`/`PATCH`/`DELETE /v1/services`;
    `inference_url` (the data plane's REST base, with `inference_key` when it needs one) the
    dashboard's "try it" panel."""
    settings = settings or AdminSettings()
    dashboard = dashboard or DashboardSettings()
    history = MetricsHistory.from_settings(metrics.registry, dashboard)
    routes = _RolloutRoutes(table, rollouts, settings, inference_url, inference_key)
    logged = LoggedReader()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        routes.client = httpx.AsyncClient(timeout=TRY_TIMEOUT_S, trust_env=False)
        logged.open()
        history.start()
        try:
            yield
        finally:
            await history.stop()
            await routes.client.aclose()
            await logged.aclose()

    app = FastAPI(
        title="modelserve control plane",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    without_fastapi_telemetry(app)  # no spans for admin requests (the dashboard polls)
    routes.add_to(app)
    add_repository_routes(app, table, rollouts, settings.max_body_bytes)
    add_dashboard_routes(app, table, history, dashboard)
    add_logged_routes(app, table, logged)
    _add_error_handlers(app)
    return AdminGuard(app, tokens, settings.allowed_hosts)
