"""The admin door's listener: the control plane's app under uvicorn, on its own port.

Same loop as the data plane (one process), its own socket: `127.0.0.1:8082` unless the
operator says otherwise (`modelserve up --admin-host/--admin-port`). Like the data plane's
server it has no signal handlers of its own: the CLI stops both.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from gateway.dataplane.server import bind_socket

__all__ = ["AdminServer"]


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AdminServer:
    """Serves `app` (`create_admin_app`) on `host:port` (0: a free port; after `start()`,
    `port` holds the bound one). `config` adds uvicorn settings (the front door's limits)."""

    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", port: int = 8082, **config: Any
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.config = config
        self._uvicorn: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> None:
        """Start serving on `sock` or on a socket bound here; fails here if the port is taken."""
        if sock is None:
            sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            proxy_headers=False,
            **self.config,
        )
        self._uvicorn = _Uvicorn(config)
        self._task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]))
        while not self._uvicorn.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the control plane's server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting requests and let running ones finish for up to `grace` s."""
        if self._uvicorn is not None and self._task is not None:
            self._uvicorn.config.timeout_graceful_shutdown = max(1, round(grace))
            self._uvicorn.should_exit = True
            await self._task
            self._uvicorn = self._task = None
