"""The gateway's settings: typed, read from `MODELSERVE_GATEWAY_*`, validated once at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["GatewaySettings"]


class GatewaySettings(BaseSettings):
    """Limits and timeouts of the gateway's data plane (REST and gRPC).

    Every field can be set from the environment, e.g. `MODELSERVE_GATEWAY_MAX_BODY_BYTES=1048576`.
    An unknown keyword or an out-of-range value fails at construction, never later.
    """

    model_config = SettingsConfigDict(env_prefix="MODELSERVE_GATEWAY_", extra="forbid", frozen=True)

    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="REST request body limit")
    request_timeout_s: float = Field(60.0, gt=0, description="deadline for a backend's answer")
    connect_timeout_s: float = Field(5.0, gt=0, description="deadline to connect to a backend")
    max_connections_per_backend: int = Field(256, gt=0, description="HTTP pool size per backend")
    grpc_max_message_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="gRPC message limit, both directions"
    )
