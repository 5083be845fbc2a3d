"""Run the whole data plane: the REST app under uvicorn and the gRPC proxy, in one event loop.

The caller (the `modelserve` CLI) owns the process's signal handlers: uvicorn's own are off,
so Ctrl-C / SIGTERM reach the CLI, which calls `stop()` to drain both servers together.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from gateway.dataplane.admission import Admission
from gateway.dataplane.answers import REVISION_HEADER
from gateway.dataplane.app import create_app
from gateway.dataplane.grpc_proxy import GrpcProxy
from gateway.dataplane.metrics import GatewayMetrics
from gateway.dataplane.resolve import NO_REVISION
from gateway.frontdoor import FrontDoor, raise_nofile_limit
from gateway.routing import RoutingTable
from gateway.settings import GatewaySettings

__all__ = ["GatewayServer", "bind_socket", "front_door_config"]


class _Uvicorn(uvicorn.Server):
    """uvicorn without signal handlers of its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket for the REST server (port 0: a free one).

    Created with an explicit IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections accepted
    from sockets whose `proto` says TCP, and without it a response written as headers + body
    waits ~40 ms for the client's delayed ACK on kept-alive connections (Nagle).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


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
        self._uvicorn: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._grpc: GrpcProxy | None = None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Start serving: REST on `sock` (bound by `bind_socket`) or on a socket bound here,
        and gRPC on `grpc_port`. Fails here if a port is taken."""
        if sock is None:
            sock = bind_socket(self.host, self.http_port)
        self.http_port = sock.getsockname()[1]
        app = create_app(self.table, self.settings, self.metrics, self.admission)
        # proxy_headers off: uvicorn would otherwise take the client address from
        # X-Forwarded-For for local peers (a header any client can write, and the rate
        # limit's client without auth), building a dict of every request's headers to do so.
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", proxy_headers=False,
            **front_door_config(self.settings),
        )
        self._uvicorn = _Uvicorn(config)
        self._task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]))
        while not self._uvicorn.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the gateway's REST server stopped during start-up")
            await asyncio.sleep(0.01)
        if self.grpc_port is not None:
            self._grpc = GrpcProxy(self.table, self.settings, self.metrics, self.admission)
            self.grpc_port = await self._grpc.start(self.host, self.grpc_port)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting requests and let running ones finish for up to `grace` s."""
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        if self._uvicorn is not None and self._task is not None:
            self._uvicorn.config.timeout_graceful_shutdown = max(1, round(grace))
            self._uvicorn.should_exit = True
            await self._task
            self._uvicorn = self._task = None
        await self.table.outliers.aclose()  # no probe outlives the servers
