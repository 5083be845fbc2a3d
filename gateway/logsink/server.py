"""The log sink as a server: its file, its memory and its app under uvicorn, behind the same
front door as the gateway's listeners (header and body read timeouts, connection caps:
`gateway.frontdoor`), on a socket bound here. No signal handlers: its owner stops it."""

from __future__ import annotations

import socket

from gateway.frontdoor import FrontDoor
from gateway.listener import HttpListener, bind_socket
from gateway.logsink.app import SinkMetrics, create_app
from gateway.logsink.settings import LogSinkSettings
from gateway.logsink.store import JsonLinesFile, RecentEvents

__all__ = ["LogSink"]


class LogSink:
    """`settings.out` appended to, `settings.host:port` served, from `start()` to `stop()`.
    Build and start it inside the event loop that will serve it."""

    def __init__(self, settings: LogSinkSettings) -> None:
        self.settings = settings
        self.port = settings.port
        self.store = RecentEvents(
            settings.keep_per_service, settings.keep_services, settings.keep_bytes,
            settings.keep_event_bytes,
        )
        self.metrics = SinkMetrics(self.store)
        self._file: JsonLinesFile | None = None
        self._listener: HttpListener | None = None

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> None:
        """Open the file and serve; OSError naming the file or the address if either fails."""
        try:
            self._file = JsonLinesFile(self.settings.out)
        except OSError as exc:
            raise OSError(f"cannot append to {self.settings.out}: {exc.strerror}") from exc
        try:
            if sock is None:
                sock = self._bind()
            self.port = sock.getsockname()[1]
            app = create_app(self._file, self.store, self.metrics, self.settings.max_body_bytes)
            door = FrontDoor(self.settings.front_door())
            self._listener = HttpListener(app, **door.uvicorn_config_kwargs())
            await self._listener.start(sock, "the log sink")
        except BaseException:
            self._listener = None
            self._file.close()
            self._file = None
            raise

    def _bind(self) -> socket.socket:
        host, port = self.settings.host, self.settings.port
        try:
            return bind_socket(host, port)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting events, let those in flight finish for up to `grace` s, write what
        is queued and close the file."""
        if self._listener is not None:
            await self._listener.stop(grace)
            self._listener = None
        if self._file is not None:
            self._file.close()
            self._file = None
