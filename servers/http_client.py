"""A lean HTTP/1.1 client over kept-alive connections: whole requests out, whole answers in.

Our own: an asyncio `Protocol` per connection, `httptools` (uvicorn's parser, so always
installed) reading the answers, and a small pool per backend. It writes a request's head and
body in one `write` and keeps the answer's bytes as they arrive. Profiled (py-spy, 2 cores,
the gateway in front of `sklearn-iris` at 1 and 16 connections), aiohttp's client was ~40 % of
the gateway's Python time per request, in its generic machinery (header multidicts, auto
headers, cookie filtering, payload objects, timer contexts); this one is ~14 %, of a total that
fell ~4.5x (httpx/httpcore forwarded only ~500 req/s). The gateway forwards with it
(`gateway/dataplane/proxy.py`), and a transformer calls its predictor with it.

A backend gets at most `max_connections` connections; idle ones are reused, most recently used
first, for up to 4 s (below uvicorn's 5 s keep-alive, so we rarely reuse a socket the backend
is closing). Only the answer headers in `keep_headers` are kept. Sockets get `TCP_NODELAY`
(asyncio's default since 3.7, set again so that uvloop's transports do too).

Failures become the shared error types: a refused, reset or dropped connection before any
byte of an answer is `BackendConnectFailed` (503, safe to send elsewhere), one after it, or an
answer that is not HTTP, is `BackendUnavailable` (503); no answer within the timeout is
`BackendTimeout` (504). A connection the backend closes before answering is retried once on a
fresh one (most often it closed a kept-alive socket just as we reused it; the requests sent
here are idempotent inference calls). A backend's own error answers are not failures here:
they come back as answers.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from servers.errors import BackendConnectFailed, BackendTimeout, BackendUnavailable

__all__ = ["Headers", "HttpClient", "UpstreamResponse"]

# (lower-case name, value) pairs, as ASGI servers give them.
Headers = Sequence[tuple[bytes, bytes]]

# Response headers that say where the body ends (else it ends when the backend closes).
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# Below uvicorn's 5 s keep-alive, so we rarely reuse a socket the backend is closing.
KEEPALIVE_S = 4.0


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """What a backend answered: status, the headers asked for, and the body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    content: bytes


class _Disconnected(Exception):
    """The backend closed the connection before its whole answer arrived."""

    def __init__(self, received: bool, reason: str) -> None:
        super().__init__(reason)
        self.received = received  # whether any byte of an answer came first


class _BadAnswer(Exception):
    """The backend answered with bytes that are not an HTTP/1.1 response."""


class _Connection(asyncio.Protocol):
    """One connection to a backend: one request at a time, the answer parsed by httptools."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[UpstreamResponse] | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reusable = False
        self._head = False
        self._received = False
        self._headers_done = False
        self._framed = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():  # bytes nobody asked for: not HTTP any more
            self.reusable = False
            self.close()
            return
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(_BadAnswer(f"invalid HTTP answer ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        if self._headers_done and not self._framed and not self._head:
            self._complete()  # an answer without length ends when the backend closes
        reason = f"connection lost ({exc})" if exc else "Server disconnected"
        self._fail(_Disconnected(self._received, reason))

    # --- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in self.pool.keep_headers:
            self._headers.append((name, value))
        elif name in _FRAMING:
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        self._headers_done = True
        if self._head and self._status >= 200:
            self._complete()  # an answer to HEAD has no body, whatever its headers say

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._start(self._head)
            self._received = True
            return
        self.reusable = not self._head and self.parser.should_keep_alive()
        self._complete()

    # --- requests -----------------------------------------------------------------------

    async def request(self, data: bytes, head: bool, deadline: float) -> UpstreamResponse:
        """Send one request (its whole bytes) and wait for the answer until `deadline`."""
        assert self.transport is not None
        self._start(head)
        self.reusable = False
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_at(deadline, self._fail, TimeoutError())
        try:
            self.transport.write(data)
            return await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
            self.pool.discard(self)

    def _start(self, head: bool) -> None:
        self._head = head
        self._received = self._headers_done = self._framed = False
        self._status = 0
        self._headers = []
        self._chunks = []

    def _complete(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            chunks = self._chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            waiter.set_result(UpstreamResponse(self._status, self._headers, body))

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class _Pool:
    """The connections to one backend: at most `limit` open, idle ones reused newest first."""

    def __init__(
        self,
        base_url: str,
        limit: int,
        connect_timeout_s: float,
        loop: asyncio.AbstractEventLoop,
        keep_headers: Collection[bytes],
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) backend URL: {base_url!r}")
        self.loop = loop
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.host_header = parts.netloc.encode("idna")
        self.prefix = parts.path.rstrip("/").encode("latin-1")
        self.limit = limit
        self.connect_timeout_s = connect_timeout_s
        self.keep_headers = keep_headers
        self.size = 0  # connections open or opening
        self.idle: deque[_Connection] = deque()
        self._members: set[_Connection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, deadline: float, fresh: bool = False) -> _Connection:
        """A connection for one request: an idle one (unless `fresh`), else a new one once
        fewer than `limit` are open."""
        while True:
            if not fresh:
                conn = self._take_idle()
                if conn is not None:
                    return conn
            if self.size < self.limit:
                return await self._open(deadline)
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # we were woken but leave: pass the turn on
                else:
                    waiter.cancel()
                raise

    def release(self, conn: _Connection) -> None:
        """Take `conn` back after a request: kept for the next one if it can be reused."""
        if conn.reusable and not conn.closed:
            conn.idle_since = self.loop.time()
            self.idle.append(conn)
            self._wake()
        else:
            conn.close()

    def discard(self, conn: _Connection) -> None:
        """`conn` is closed: it no longer counts against the limit."""
        if conn in self._members:
            self._members.discard(conn)
            self.size -= 1
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
            self._wake()

    @property
    def empty(self) -> bool:
        """No connection open or opening, and nobody waiting for one."""
        return self.size == 0 and not self._waiters

    def close(self) -> None:
        for conn in list(self._members):
            conn.close()

    def _take_idle(self) -> _Connection | None:
        now = self.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since >= KEEPALIVE_S:
                conn.close()
                continue
            return conn
        return None

    async def _open(self, deadline: float) -> _Connection:
        self.size += 1
        try:
            connect_by = min(deadline, self.loop.time() + self.connect_timeout_s)
            async with asyncio.timeout_at(connect_by):
                transport, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except BaseException:
            self.size -= 1
            self._wake()
            raise
        conn.transport = transport  # uvloop may call connection_made after this returns
        if conn.closed:  # lost before we got it: count it once, here
            self.size -= 1
            self._wake()
            raise _Disconnected(False, "connection lost while connecting")
        self._members.add(conn)
        return conn

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class HttpClient:
    """Sends whole requests to backends, at most `max_connections` connections to each.

    `keep_headers` (lower-case names): the answer headers kept; `peer`: what the errors call
    the other end ("backend", "predictor"). Create it inside the running event loop that will
    use it and `aclose()` it at shutdown.
    """

    def __init__(
        self,
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int,
        keep_headers: Collection[bytes] = (b"content-type",),
        peer: str = "backend",
    ) -> None:
        self._peer = peer
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._limit = max_connections
        self._keep_headers = frozenset(keep_headers)
        self._loop = asyncio.get_running_loop()
        self._pools: dict[str, _Pool] = {}

    async def request(
        self, base_url: str, method: str, target: bytes, headers: Headers, body: bytes | None
    ) -> UpstreamResponse:
        """Send `method base_url+target` and return the whole answer, whatever its status.

        `target` is the raw (still percent-encoded) path and query; it is sent unchanged, as
        are `headers`. A body (even an empty one) goes with a `content-length`.
        """
        pool = self._pools.get(base_url)
        if pool is None:
            # A new backend (a new revision): forget the pools of backends with no connection.
            for url in [u for u, p in self._pools.items() if p.empty]:
                del self._pools[url]
            pool = self._pools[base_url] = _Pool(
                base_url, self._limit, self._connect_timeout_s, self._loop, self._keep_headers
            )
        parts = [method.encode("latin-1"), b" ", pool.prefix, target, b" HTTP/1.1\r\nhost: ",
                 pool.host_header, b"\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if body is not None:
            parts += (b"content-length: ", b"%d" % len(body), b"\r\n\r\n", body)
        else:
            parts.append(b"\r\n")
        data = b"".join(parts)
        head = method == "HEAD"
        deadline = self._loop.time() + self._timeout_s
        try:
            try:
                return await self._send(pool, data, head, deadline, fresh=False)
            except _Disconnected as exc:
                if exc.received:
                    raise
                # Most often the backend closed a kept-alive socket just as we reused it.
                return await self._send(pool, data, head, deadline, fresh=True)
        except TimeoutError as exc:
            raise BackendTimeout(
                f"{self._peer} {base_url} did not answer within {self._timeout_s} s"
            ) from exc
        except _Connecting as exc:
            raise BackendConnectFailed(
                f"{self._peer} {base_url} did not accept a connection"
            ) from exc
        except _Disconnected as exc:
            error = BackendUnavailable if exc.received else BackendConnectFailed
            raise error(f"{self._peer} {base_url} unavailable: {exc}") from exc
        except OSError as exc:  # refused, unreachable: nothing was sent
            raise BackendConnectFailed(f"{self._peer} {base_url} unavailable: {exc}") from exc
        except _BadAnswer as exc:
            raise BackendUnavailable(f"{self._peer} {base_url} unavailable: {exc}") from exc

    async def _send(
        self, pool: _Pool, data: bytes, head: bool, deadline: float, fresh: bool
    ) -> UpstreamResponse:
        try:
            conn = await pool.acquire(deadline, fresh)
        except TimeoutError as exc:
            if self._loop.time() < deadline:  # the connect timeout, not the request's
                raise _Connecting() from exc
            raise
        try:
            return await conn.request(data, head, deadline)
        finally:
            pool.release(conn)

    @property
    def backends(self) -> list[str]:
        """The base URLs a pool is kept for (a backend with no connection left is dropped
        when a new one is first called)."""
        return list(self._pools)

    async def aclose(self) -> None:
        """Close every connection (at the app's shutdown)."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


class _Connecting(Exception):
    """The backend did not accept a connection within the connect timeout."""
