"""The log sink's settings (`MODELSERVE_LOGSINK_*`, then `modelserve logsink`'s flags over
them), typed and checked once, at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.frontdoor import FrontDoorLimits

__all__ = ["LogSinkSettings"]

MiB = 1024 * 1024


class LogSinkSettings(BaseSettings):
    """Where the sink listens and writes, its request limits and the bounds of its memory."""

    model_config = SettingsConfigDict(env_prefix="MODELSERVE_LOGSINK_", extra="forbid", frozen=True)

    out: Path = Field(description="the JSON-lines file events are appended to")
    host: str = Field("127.0.0.1", description="the address to listen on (no auth: loopback)")
    port: int = Field(8090, ge=0, le=65535, description="the port (0: any free one)")
    # The data plane's own request limit: a logged request or response is never larger.
    max_body_bytes: int = Field(16 * MiB, gt=0, description="request body limit, beyond it 413")
    header_timeout_s: float = Field(10.0, gt=0, description="accept to complete headers")
    body_timeout_s: float = Field(30.0, gt=0, description="longest wait between body reads")
    max_connections: int = Field(256, gt=1, description="open connections, beyond them 503")
    keep_per_service: int = Field(100, gt=0, description="events kept in memory per service")
    keep_services: int = Field(1000, gt=0, description="services kept in memory")
    keep_bytes: int = Field(64 * MiB, gt=0, description="bytes of events kept in memory in all")
    keep_event_bytes: int = Field(
        256 * 1024, gt=0, description="an event larger than this is kept without its data"
    )

    def front_door(self) -> FrontDoorLimits:
        """The listener's read timeouts and connection caps (gateway/frontdoor.py)."""
        return FrontDoorLimits(
            header_timeout_s=self.header_timeout_s,
            body_timeout_s=self.body_timeout_s,
            max_connections=self.max_connections,
            max_connections_per_client=max(1, self.max_connections // 2),
        )
