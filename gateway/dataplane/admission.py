"""The gate every protected request passes before routing: API key, then rate limit.

One `Admission` is built per gateway from its settings and shared by the REST app and the gRPC
proxy, so a key's rate limit counts its requests over both protocols. With no keys and no rate
limit configured it admits everything and costs one attribute check per request.

Health (`/v2/health/*`, gRPC `ServerLive`/`ServerReady`/`ServerMetadata`) and `/metrics` never
pass here: liveness/readiness probes and Prometheus scrapers carry no credentials, and
answering them tells a caller nothing about the models.
"""

from __future__ import annotations

import time

from gateway.dataplane.auth import ApiKeyAuth
from gateway.dataplane.ratelimit import Clock, RateLimiter
from gateway.settings import GatewaySettings

__all__ = ["Admission"]


class Admission:
    """API key auth (when keys are configured) and a per-client rate limit (when rps > 0).

    Without auth, the rate limit's client is the request's peer IP (never a forwarded-for
    header, which any client can write).
    """

    def __init__(self, auth: ApiKeyAuth | None = None, limiter: RateLimiter | None = None) -> None:
        self.auth = auth
        self.limiter = limiter
        self.enabled = auth is not None or limiter is not None

    @classmethod
    def from_settings(cls, settings: GatewaySettings, clock: Clock = time.monotonic) -> Admission:
        """The admission `settings` ask for; `clock` drives the rate limit (tests inject one)."""
        keys = settings.api_key_values()
        auth = ApiKeyAuth(keys) if keys else None
        limiter = None
        if settings.rate_limit_rps > 0:
            limiter = RateLimiter(settings.rate_limit_rps, settings.burst, clock)
        return cls(auth, limiter)

    def admit(self, api_key: str | None, authorization: str | None, peer: str) -> bool:
        """Let a request in or raise the shared error that answers it.

        Returns True when `Authorization` carried the gateway's key: it is then not forwarded
        to the component (the key is the gateway's, not the component's).
        """
        client, consumed = f"ip:{peer}", False
        if self.auth is not None:
            client, consumed = self.auth.identify(api_key, authorization)
        if self.limiter is not None:
            self.limiter.acquire(client)
        return consumed
