"""HTTP forwarding to backends over one keep-alive client session, bytes in, bytes out.

The client is aiohttp's, not httpx's: measured here through this gateway (2 cores, 16
connections, a trivial backend), httpx 0.28 / httpcore 1.0 forwarded ~500 req/s, spending its
time in the pool's per-request scans and a failed `import sniffio` on every request; aiohttp
(a dependency of kserve, so always installed) forwards several times that. Its connector also
limits connections per backend natively (`limit_per_host`).

Failures become the shared error types: a refused, reset or dropped connection is
`BackendUnavailable` (503), no answer within the request timeout is `BackendTimeout` (504).
A backend's own error answers are not failures here: they pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from yarl import URL

from gateway.settings import GatewaySettings
from servers.errors import BackendTimeout, BackendUnavailable

__all__ = ["HttpForwarder", "UpstreamResponse"]

Headers = Sequence[tuple[str, str]]

# Response headers passed back to the client.
_RESPONSE_HEADERS = ("content-type", "inference-header-content-length")


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """What a backend answered: status, the headers the client should see, and the body."""

    status: int
    headers: dict[str, str]
    content: bytes


class HttpForwarder:
    """Sends requests to backends, at most `max_connections_per_backend` connections each.

    Create it inside the running event loop (the app's lifespan) and `aclose()` it at shutdown.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self._timeout_s = settings.request_timeout_s
        connector = aiohttp.TCPConnector(
            limit=0,  # no global cap: the cap is per backend
            limit_per_host=settings.max_connections_per_backend,
            # Below uvicorn's 5 s keep-alive, so we rarely reuse a socket the backend is closing.
            keepalive_timeout=4.0,
            use_dns_cache=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=settings.request_timeout_s, sock_connect=settings.connect_timeout_s
            ),
            # Forward only what the client sent: no compression the client did not ask for.
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
            auto_decompress=False,
            raise_for_status=False,
            trust_env=False,
        )

    async def forward(
        self, base_url: str, method: str, target: str, headers: Headers, body: bytes | None
    ) -> UpstreamResponse:
        """Send `method base_url+target` and return the whole answer, whatever its status.

        `target` is the raw (still percent-encoded) path and query; it is sent unchanged.
        """
        url = URL(base_url + target, encoded=True)
        try:
            try:
                return await self._send(method, url, headers, body)
            except aiohttp.ServerDisconnectedError:
                # Most often the backend closed a kept-alive socket just as we reused it.
                # Inference requests are idempotent, so one retry on a fresh connection is safe.
                return await self._send(method, url, headers, body)
        except aiohttp.ConnectionTimeoutError as exc:
            raise BackendUnavailable(f"backend {base_url} did not accept a connection") from exc
        except TimeoutError as exc:
            raise BackendTimeout(
                f"backend {base_url} did not answer within {self._timeout_s} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(f"backend {base_url} unavailable: {exc}") from exc

    async def _send(
        self, method: str, url: URL, headers: Headers, body: bytes | None
    ) -> UpstreamResponse:
        async with self._session.request(method, url, headers=headers, data=body) as response:
            content = await response.read()
            found = response.headers
            kept = {k: v for k in _RESPONSE_HEADERS if (v := found.get(k)) is not None}
            return UpstreamResponse(response.status, kept, content)

    async def aclose(self) -> None:
        """Close the pool (at the app's shutdown)."""
        await self._session.close()
