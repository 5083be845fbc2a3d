"""Triton's model repository extension on the control plane's door (admin token).

`POST /v2/repository/index` lists every service and its state (as the inference port does,
gateway/dataplane/repository.py); `POST /v2/repository/models/{name}/load` and `/unload` are
the control actions, mapped onto the local platform: load wakes a service at zero and answers
once it is ready, unload scales a `minReplicas: 0` service to zero, anything else is a 4xx
saying why. Nothing is ever loaded that is not already an InferenceService: a load's
`parameters` (Triton's inline `config` and model `files`) would be new code, so they are
refused; services are created with `kubectl apply`. So Triton's clients work against this
door as against Triton's own server: `tritonclient.http.InferenceServerClient(
"127.0.0.1:8082", ...).load_model("sklearn-iris", headers={"Authorization": "Bearer ..."})`.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from gateway.bodies import read_body
from gateway.dataplane.answers import REVISION_HEADER, json_response
from gateway.dataplane.repository import index_ready_only, repository_index, request_object
from gateway.dataplane.resolve import NO_REVISION
from gateway.routing import RoutingTable
from servers.errors import InvalidInput, ModelServeError

__all__ = ["Repository", "add_repository_routes"]


class Repository(Protocol):
    """The platform's side of load and unload (`LocalPlatform`)."""

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...


class _NoRepository(ModelServeError):
    http_status = 405

    def __init__(self) -> None:
        super().__init__(
            "load and unload need the local control plane (`modelserve up`); in a cluster, "
            "scale a service with its minReplicas (`kubectl patch`)"
        )


def _check_load_request(body: bytes) -> None:
    """A load's body may be empty or `{}`/`{"parameters": {}}`: no inline config or files."""
    parameters = request_object(body, "load").get("parameters") or {}
    if parameters:
        raise InvalidInput(
            f"load parameters {sorted(parameters)} are not supported: a model is loaded "
            "only as an InferenceService that is already applied (kubectl apply), never "
            "from a request's config or files"
        )


def add_repository_routes(
    app: FastAPI, table: RoutingTable, repository: Repository | None, max_body_bytes: int
) -> None:
    """Add the index, load and unload routes to the control plane's app."""

    async def body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        return await read_body(request.receive, int(length) if length and length.isdigit()
                               else None, max_body_bytes, "the control plane's")

    def need() -> Repository:
        if repository is None:
            raise _NoRepository()
        return repository

    async def index(request: Request) -> Response:
        return json_response(repository_index(table, index_ready_only(await body(request))))

    async def load(request: Request) -> Response:
        _check_load_request(await body(request))
        await need().load(request.path_params["name"])
        return _done()

    async def unload(request: Request) -> Response:
        await body(request)  # `unload_dependents` has nothing to act on: no ensembles here
        await need().unload(request.path_params["name"])
        return _done()

    app.add_route("/v2/repository/index", index, ["POST"])
    app.add_route("/v2/repository/models/{name}/load", load, ["POST"])
    app.add_route("/v2/repository/models/{name}/unload", unload, ["POST"])


def _done() -> Response:
    # Triton answers a load or unload with 200 and no body.
    headers: dict[str, Any] = {REVISION_HEADER: NO_REVISION}
    return Response(status_code=200, headers=headers)
