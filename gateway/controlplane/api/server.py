"""The admin door's listener: the control plane's app under uvicorn, on its own port.

Same loop as the data plane (one process), its own socket: `127.0.0.1:8082` unless the
operator says otherwise (`modelserve up --admin-host/--admin-port`). Like the data plane's
server it has no signal handlers of its own: the CLI stops both.
"""

from __future__ import annotations

import socket
from typing import Any

from starlette.types import ASGIApp

from gateway.listener import HttpListener, bind_socket

__all__ = ["AdminServer"]


class AdminServer:
    """Serves `app` (`create_admin_app`) on `host:port` (0: a free port; after `start()`,
    `port` holds the bound one). `config` adds uvicorn settings (the front door's limits)."""

    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", port: int = 8082, **config: Any
    ) -> None:
        self.host = host
        self.port = port
        self._listener = HttpListener(app, **config)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> None:
        """Start serving on `sock` or on a socket bound here; fails here if the port is taken."""
        if sock is None:
            sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        await self._listener.start(sock, "the control plane's server")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting requests and let running ones finish for up to `grace` s."""
        await self._listener.stop(grace)
