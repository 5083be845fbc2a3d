"""An HTTP listener of the gateway: uvicorn on a socket we bind, for both doors.

The data plane's REST listener (`gateway.dataplane.server`) and the control plane's admin
door (`gateway.controlplane.api.server`) run the same way: a socket bound here, uvicorn
without signal handlers of its own (the CLI owns them and stops every server together), no
access log, and the client address taken from the connection, never from headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

__all__ = ["HttpListener", "bind_socket"]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket for an HTTP listener (port 0: a free one).

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


class _Uvicorn(uvicorn.Server):
    """uvicorn without signal handlers of its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpListener:
    """`app` under uvicorn; `config` adds uvicorn settings (the front door's, see
    `gateway.frontdoor`)."""

    def __init__(self, app: ASGIApp, **config: Any) -> None:
        # proxy_headers off: uvicorn would otherwise take the client address from
        # X-Forwarded-For for local peers (a header any client can write, and the rate
        # limit's client without auth), building a dict of every request's headers to do so.
        self._config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", proxy_headers=False,
            **config,
        )
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket, what: str) -> None:
        """Serve on `sock` (from `bind_socket`); raises if `what` (the server, for the
        message) stops during start-up."""
        self._server = _Uvicorn(self._config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"{what} stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float) -> None:
        """Stop accepting requests and let running ones finish for up to `grace` s."""
        if self._server is not None and self._task is not None:
            self._server.config.timeout_graceful_shutdown = max(1, round(grace))
            self._server.should_exit = True
            await self._task
            self._server = self._task = None
