"""HTTP/1.1 forwarding to backends over kept-alive connections, bytes in, bytes out.

The client is `servers.http_client.HttpClient` (our own, on httptools; why, measured, is
there), with the gateway's timeouts and per-backend connection limit. Only the answer headers
the client should see are kept (`content-type`, `inference-header-content-length`). Its
failures are the shared error types: `BackendConnectFailed` (nothing was answered: `dispatch`
tries another replica), `BackendUnavailable` (503), `BackendTimeout` (504). A backend's own
error answers are not failures here: they pass through.
"""

from __future__ import annotations

from gateway.settings import GatewaySettings
from servers.http_client import Headers, HttpClient, UpstreamResponse

__all__ = ["Headers", "HttpForwarder", "UpstreamResponse"]

# Response headers passed back to the client.
_RESPONSE_HEADERS = frozenset({b"content-type", b"inference-header-content-length"})


class HttpForwarder:
    """Sends requests to backends, at most `max_connections_per_backend` connections each.

    Create it inside the running event loop (the app's lifespan) and `aclose()` it at shutdown.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self._client = HttpClient(
            settings.request_timeout_s,
            settings.connect_timeout_s,
            settings.max_connections_per_backend,
            _RESPONSE_HEADERS,
        )

    async def forward(
        self, base_url: str, method: str, target: bytes, headers: Headers, body: bytes | None
    ) -> UpstreamResponse:
        """Send `method base_url+target` and return the whole answer, whatever its status.

        `target` is the raw (still percent-encoded) path and query; it is sent unchanged, as
        are `headers`. A body (even an empty one) goes with a `content-length`.
        """
        return await self._client.request(base_url, method, target, headers, body)

    async def aclose(self) -> None:
        """Close every connection (at the app's shutdown)."""
        await self._client.aclose()
