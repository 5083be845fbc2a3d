"""Run the whole data plane: the REST app under uvicorn and the gRPC proxy, in one event loop.

The caller (the `modelserve` CLI) owns the process's signal handlers: uvicorn's own are off,
so Ctrl-C / SIGTERM reach the CLI, which calls `stop()` to drain both servers together.
"""

from __future__ import annotations

import socket
from typing import Any

from gateway.dataplane.admission import Admission
from gateway.dataplane.answers import REVISION_HEADER
from gateway.dataplane.app import create_app
from gateway.dataplane.grpc_proxy import GrpcProxy
from gateway.dataplane.metrics import GatewayMetrics
from gateway.dataplane.resolve import NO_REVISION
from gateway.frontdoor import FrontDoor, raise_nofile_limit
from gateway.listener import HttpListener, bind_socket
from gateway.routing import RoutingTable
from gateway.settings import GatewaySettings

__all__ = ["GatewayServer", "front_door_config"]


def front_door_config(settings: GatewaySettings) -> dict[str, Any]:
    """The `uvicorn.Config` keywords of the REST listener's front door (`gateway.frontdoor`),
    after raising the process's open-files limit to fit it; none when `settings.front_door`
    is off (uvicorn's own protocol, for comparison)."""
    nofile = raise_nofile_limit()
    if not settings.front_door:
        return {}
    door = FrontDoor(settings.front_door_limits(), nofile, headers=[(REVISION_HEADER, NO_REVISION)])
    return door.uvicorn_config_kwargs()


def _documents(table: RoutingTable) -> list[dict[str, object]]:
    return [table.status(route) for route in table.routes()]


class GatewayServer:
    """The gateway's REST (uvicorn) and gRPC servers over one routing table, one metrics set
    and one admission (API keys, rate limits: a key's limit counts both protocols).

    `http_port` / `grpc_port` 0 pick free ports; after `start()` the attributes hold the bound
    ports. `grpc_port=None` serves REST only. `admission` defaults to the one `settings` ask for.
    """

    def __init__(
        self,
        table: RoutingTable,
        settings: GatewaySettings,
        host: str = "127.0.0.1",
        http_port: int = 8080,
        grpc_port: int | None = 8081,
        metrics: GatewayMetrics | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.table = table
        self.settings = settings
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics = metrics or GatewayMetrics(
            documents=lambda: _documents(table), outliers=table.outliers
        )
        self.admission = admission or Admission.from_settings(settings)
        self._rest: HttpListener | None = None
        self._grpc: GrpcProxy | None = None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Start serving: REST on `sock` (bound by `bind_socket`) or on a socket bound here,
        and gRPC on `grpc_port`. Fails here if a port is taken."""
        if sock is None:
            sock = bind_socket(self.host, self.http_port)
        self.http_port = sock.getsockname()[1]
        app = create_app(self.table, self.settings, self.metrics, self.admission)
        self._rest = HttpListener(app, **front_door_config(self.settings))
        await self._rest.start(sock, "the gateway's REST server")
        if self.grpc_port is not None:
            self._grpc = GrpcProxy(self.table, self.settings, self.metrics, self.admission)
            self.grpc_port = await self._grpc.start(self.host, self.grpc_port)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting requests and let running ones finish for up to `grace` s."""
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        if self._rest is not None:
            await self._rest.stop(grace)
            self._rest = None
        await self.table.outliers.aclose()  # no probe outlives the servers
