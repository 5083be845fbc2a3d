"""The front door of an HTTP listener: read timeouts and connection caps uvicorn lacks.

uvicorn (0.55, `protocols/http/httptools_impl.py`, `h11_impl.py` alike) has one timeout,
`timeout_keep_alive`, armed only after a response and cancelled by the next byte, and one cap,
`limit_concurrency`, checked when a request's headers are complete (a 503 to that request).
Measured against it: a connection that sends half a header, nothing, or a body shorter than
its Content-Length stays open for good (12 s of trickle, still open), and with
`limit_concurrency` held by such connections every complete request is answered 503. Under
`ulimit -n 1024`, 2,000 of them from one address take every file and accept() fails for
everyone: 3 of 63 normal probes served, the gateway at 1,024 open files; with the front door,
66 of 66 served and at most 283 files open (tests/security/test_slow_clients.py).

`FrontDoor` adds, per listener (one per server, no global state):

- a header timeout, total and not idle, so trickling cannot stretch it: from accept, or from
  a kept-alive response, until the request's headers are complete; then `408` if part of a
  head came, else a silent close;
- a body timeout between reads, as nginx's `client_body_timeout`: a body that stops short of
  its Content-Length gets `408` and a close (a close only, once the app started answering).
  Between reads rather than total, so a large body on a slow link is not cut; what bounds a
  slow-body attacker is the connection caps, not the timeout (he reconnects either way);
- the keep-alive idle timeout (uvicorn's own, from `keepalive_timeout_s`);
- a cap on open connections and one per client address (IPv6: per /64), refused at accept:
  a raw `503` with `connection: close` written and the socket closed at once, never held.

The cap is fitted to the files the process may open: `raise_nofile_limit()` lifts the soft
RLIMIT_NOFILE to the hard one, and the cap is at most that minus `fd_reserve` (the files the
rest of the process needs: backend pools, other listeners, logs), so a flood is refused by
the front door instead of by a failing accept().
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr
from uvicorn.server import ServerState

from gateway.writes import CoalescingTransport

__all__ = ["FrontDoor", "FrontDoorLimits", "FrontDoorProtocol", "FrontDoorStats", "client_key",
           "raise_nofile_limit"]

logger = logging.getLogger(__name__)

# Where the soft limit goes when the hard one is "unlimited" (Linux refuses more than
# fs.nr_open, 1048576 by default).
_NOFILE_CEILING = 1 << 20
_WARN_EVERY_S = 60.0


class FrontDoorLimits(BaseModel):
    """A listener's read timeouts and connection caps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    header_timeout_s: float = Field(10.0, gt=0, description="accept (or last response) to headers")
    body_timeout_s: float = Field(30.0, gt=0, description="longest wait between two body reads")
    keepalive_timeout_s: float = Field(5.0, gt=0, description="idle time after a response")
    max_connections: int = Field(4096, gt=0, description="open connections, beyond them 503")
    max_connections_per_client: int = Field(256, gt=0, description="per client address (/64)")
    fd_reserve: int = Field(128, ge=0, description="files left to the rest of the process")

    @model_validator(mode="after")
    def _per_client_below_cap(self) -> FrontDoorLimits:
        if self.max_connections_per_client >= self.max_connections:
            raise ValueError("max_connections_per_client must be below max_connections, "
                             "or one address can take every connection")
        return self

    def fitted(self, nofile: int) -> FrontDoorLimits:
        """These limits with the connection cap lowered to `nofile - fd_reserve` if it is
        above (and the per-client cap to half of that, if above); a warning says so."""
        room = nofile - self.fd_reserve
        if room < 2:
            raise ValueError(f"RLIMIT_NOFILE is {nofile}, the front door reserves "
                             f"{self.fd_reserve} files: no room for connections (ulimit -n)")
        if self.max_connections <= room:
            return self
        per_client = min(self.max_connections_per_client, room // 2)
        logger.warning(
            "RLIMIT_NOFILE %d (less %d reserved files) lowers max_connections %d -> %d and "
            "max_connections_per_client %d -> %d; raise the hard limit to serve more",
            nofile, self.fd_reserve, self.max_connections, room,
            self.max_connections_per_client, per_client,
        )
        return self.model_copy(
            update={"max_connections": room, "max_connections_per_client": per_client}
        )


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit in
    force afterwards. Idempotent; a refusal leaves the limit as it was (with a warning)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return target if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        logger.warning("cannot raise RLIMIT_NOFILE from %d to %d: %s", soft, target, exc)
        return soft
    return target


@dataclass
class FrontDoorStats:
    """What a front door did, since it was made."""

    open: int = 0
    refused: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0


def client_key(host: str) -> str:
    """The address a per-client cap counts under: IPv4 as is, IPv6 by its /64 (one host
    routinely holds a whole /64)."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class FrontDoor:
    """The timeouts and caps of one listener, and its open connections' count.

    Make one per server (in or out of its event loop) and pass `uvicorn_config_kwargs()` to
    `uvicorn.Config`. `limits` are fitted to `nofile` (default: the current soft
    RLIMIT_NOFILE; call `raise_nofile_limit()` first to lift it). `headers` go on the
    front door's own answers (408, 503).
    """

    def __init__(
        self,
        limits: FrontDoorLimits,
        nofile: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        if nofile is None:
            nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if nofile == resource.RLIM_INFINITY:
                nofile = _NOFILE_CEILING
        self.limits = limits.fitted(nofile)
        self.stats = FrontDoorStats()
        self._headers = b"".join(
            name.lower().encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n"
            for name, value in headers
        )
        self._per_client: dict[str, int] = {}
        self._refused_since_warning = 0
        self._warned_at = -_WARN_EVERY_S

    def uvicorn_config_kwargs(self) -> dict[str, Any]:
        """`uvicorn.Config` keywords that put this front door on the listener (HTTP/1.1 over
        httptools; no WebSocket upgrade, which would leave the connection uncounted)."""
        return {
            "http": partial(FrontDoorProtocol, door=self),
            "ws": "none",
            "timeout_keep_alive": self.limits.keepalive_timeout_s,
            "limit_concurrency": None,
        }

    def admit(self, key: str | None) -> str | None:
        """Count a new connection from `key` (None: an address-less peer, counted in the
        total only); return why it is refused instead, counting nothing."""
        if self.stats.open >= self.limits.max_connections:
            return self._refuse("too many connections")
        if key is not None:
            held = self._per_client.get(key, 0)
            if held >= self.limits.max_connections_per_client:
                return self._refuse("too many connections from this address")
            self._per_client[key] = held + 1
        self.stats.open += 1
        return None

    def release(self, key: str | None) -> None:
        """Uncount a connection `admit` counted."""
        self.stats.open -= 1
        if key is not None:
            held = self._per_client.pop(key) - 1
            if held:
                self._per_client[key] = held

    def answer(self, status: bytes, message: str, default_headers: list[tuple[bytes, bytes]]
               ) -> bytes:
        """A whole `connection: close` answer with a JSON `{"error": message}` body."""
        body = json.dumps({"error": message}).encode()
        head = [b"HTTP/1.1 ", status, b"\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in default_headers]
        head += [self._headers, b"content-type: application/json\r\n",
                 b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)]
        return b"".join(head) + body

    def _refuse(self, reason: str) -> str:
        self.stats.refused += 1
        self._refused_since_warning += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:  # a flood must not flood the log too
            logger.warning(
                "refused %d connection(s) since the last such warning (latest: %s; open %d, "
                "caps %d total, %d per client)", self._refused_since_warning, reason,
                self.stats.open, self.limits.max_connections,
                self.limits.max_connections_per_client,
            )
            self._warned_at, self._refused_since_warning = now, 0
        return reason


class FrontDoorProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a `FrontDoor`'s caps and read timers.

    A timer exists only while a client owes bytes: from accept until the first headers, and
    when a head or a body spans reads; a request that comes whole in one read arms none
    (uvicorn's keep-alive timer covers the silence after a response). Relies on uvicorn's
    per-connection state (`cycle`, `flow`, `pipeline`): the front door's tests cover each
    path, so an uvicorn change that breaks one fails there.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        door: FrontDoor,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._door = door
        self._admitted = False
        self._key: str | None = None
        self._in_head = False  # part of a request head has come, not its end
        self._head_deadline = 0.0  # when the head now owed must be complete
        self._last_read = 0.0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = get_remote_addr(transport)
        key = client_key(peer[0]) if peer else None
        refusal = self._door.admit(key)
        if refusal is not None:
            answer = self._door.answer(b"503 Service Unavailable", refusal,
                                       self.server_state.default_headers)
            transport.write(answer)
            transport.close()
            return
        self._admitted, self._key = True, key
        # One send per answer (gateway/writes.py); the front door's own answers above go
        # straight out.
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._head_deadline = self.loop.time() + self._door.limits.header_timeout_s
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._door.release(self._key)
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        super().data_received(data)
        if self.transport.is_closing():
            return
        cycle = self.cycle
        idle = cycle is None or cycle.response_complete  # no request of this client in flight
        if self._in_head and idle and self._header_timer is None:
            self._arm_header_timer()
        if cycle is not None and cycle.more_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(
                self._door.limits.body_timeout_s, self._body_timeout
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if pipelined or self.transport.is_closing():
            return
        # The next head is owed within the header timeout of this answer, however it trickles
        # (uvicorn's keep-alive timer stops at its first byte).
        self._head_deadline = self.loop.time() + self._door.limits.header_timeout_s
        if self._in_head and self._header_timer is None:
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_at(self._head_deadline, self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        self._door.stats.header_timeouts += 1
        if self._in_head:
            limit = self._door.limits.header_timeout_s
            self._close_with_408(f"request headers not received within {limit:g} s")
        else:
            self.transport.close()

    def _body_timeout(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if not cycle.more_body or self.transport.is_closing():
            return
        limit = self._door.limits.body_timeout_s
        waiting = self.loop.time() - self._last_read
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # The app, not the client, is the one not reading: the wait starts again.
            self._last_read, waiting = self.loop.time(), 0.0
        if waiting < limit:
            self._body_timer = self.loop.call_later(limit - waiting, self._body_timeout)
            return
        self._door.stats.body_timeouts += 1
        if cycle.response_started:
            self.transport.close()
        else:
            self._close_with_408(f"request body stalled: nothing received for {limit:g} s")
        # The app's receive() now returns http.disconnect and its answer, if any, is dropped.
        cycle.disconnected = True
        cycle.message_event.set()

    def _close_with_408(self, message: str) -> None:
        self.transport.write(
            self._door.answer(b"408 Request Timeout", message, self.server_state.default_headers)
        )
        self.transport.close()
