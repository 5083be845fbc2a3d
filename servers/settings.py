"""`ComponentSettings`: what every component reads from its environment (`MODELSERVE_*`), once,
at start-up, before its flags (which may override them).

    MODELSERVE_BIND_ADDRESS            where REST and gRPC listen (default 127.0.0.1)
    MODELSERVE_GRPC_MAX_MESSAGE_BYTES  gRPC message limit, both directions (default 64 MiB)
    MODELSERVE_TRUST_REMOTE_PICKLES    1: load pickles of models from remote URIs (default 0)
"""

from __future__ import annotations

import argparse
import ipaddress

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from servers.limits import DEFAULT_BIND_ADDRESS, DEFAULT_GRPC_MAX_MESSAGE_BYTES

__all__ = ["ComponentSettings", "bind_address", "component_settings"]


def bind_address(value: str) -> str:
    """`value` when it is an IPv4 or IPv6 address (a listener binds addresses, not names)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


class ComponentSettings(BaseSettings):
    """A component's listeners and trust, from `MODELSERVE_*`; invalid values fail at start."""

    model_config = SettingsConfigDict(env_prefix="MODELSERVE_", extra="forbid", frozen=True)

    bind_address: str = Field(DEFAULT_BIND_ADDRESS, description="REST and gRPC listen address")
    grpc_max_message_bytes: int = Field(
        DEFAULT_GRPC_MAX_MESSAGE_BYTES, gt=0, description="gRPC message limit, both directions"
    )
    trust_remote_pickles: bool = Field(
        False, description="load .joblib/.pkl/.pickle models downloaded from remote URIs"
    )

    @field_validator("bind_address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return bind_address(value)


def component_settings(parser: argparse.ArgumentParser) -> ComponentSettings:
    """The environment's settings; a usage error (exit 2) that names the variable if invalid."""
    try:
        return ComponentSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MODELSERVE_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors()
        )
        parser.error(f"invalid environment: {problems}")
