"""The gateway's settings: typed, read from `MODELSERVE_GATEWAY_*`, validated once at start-up."""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Annotated

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["GatewaySettings"]

# What a key may hold: visible ASCII, no comma (the env list separator), no space.
_KEY_CHARS = frozenset(string.ascii_letters + string.digits + string.punctuation) - {","}


class GatewaySettings(BaseSettings):
    """Limits, timeouts, API keys and rate limits of the gateway's data plane (REST and gRPC).

    Every field can be set from the environment, e.g. `MODELSERVE_GATEWAY_MAX_BODY_BYTES=1048576`
    or `MODELSERVE_GATEWAY_API_KEYS=key1,key2`. An unknown keyword, an out-of-range value or an
    unreadable keys file fails at construction, never later. Keys are `SecretStr`s and inputs
    are hidden from validation errors, so neither the settings' repr nor a start-up error
    shows a key.
    """

    model_config = SettingsConfigDict(
        env_prefix="MODELSERVE_GATEWAY_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="REST request body limit")
    request_timeout_s: float = Field(60.0, gt=0, description="deadline for a backend's answer")
    connect_timeout_s: float = Field(5.0, gt=0, description="deadline to connect to a backend")
    max_connections_per_backend: int = Field(256, gt=0, description="HTTP pool size per backend")
    grpc_max_message_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="gRPC message limit, both directions"
    )
    activator_timeout_s: float = Field(
        60.0, gt=0, description="how long a request waits for a revision scaling from zero"
    )
    activator_queue: int = Field(
        1000, gt=0, description="requests the activator holds per revision, beyond them 503"
    )
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="accepted API keys (comma-separated in the environment); none: no auth"
    )
    api_keys_file: Path | None = Field(
        None, description="a file of accepted API keys, one per line, `#` starts a comment"
    )
    rate_limit_rps: float = Field(
        0.0, ge=0, description="requests per second per API key (per client IP without auth)"
    )
    rate_limit_burst: int | None = Field(
        None, ge=1, description="token bucket size; default: rate_limit_rps rounded up"
    )
    _file_keys: tuple[str, ...] = PrivateAttr(())

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for key in keys:
            _check_key(key.get_secret_value(), "api_keys")
        return keys

    @model_validator(mode="after")
    def _load_keys_file(self) -> GatewaySettings:
        if self.api_keys_file is not None:
            self._file_keys = _read_keys_file(self.api_keys_file)
        return self

    @model_validator(mode="after")
    def _check_rate_limit(self) -> GatewaySettings:
        if self.rate_limit_burst is not None and self.rate_limit_rps == 0:
            raise ValueError("rate_limit_burst is set but rate_limit_rps is 0 (rate limit off)")
        return self

    def api_key_values(self) -> tuple[str, ...]:
        """Every accepted key (from `api_keys` and `api_keys_file`); empty: auth is off."""
        keys = [key.get_secret_value() for key in self.api_keys] + list(self._file_keys)
        return tuple(dict.fromkeys(keys))

    @property
    def burst(self) -> int:
        """The token bucket size the rate limit uses (meaningful when `rate_limit_rps` > 0)."""
        if self.rate_limit_burst is not None:
            return self.rate_limit_burst
        return max(1, math.ceil(self.rate_limit_rps))


def _check_key(key: str, where: str) -> None:
    # The message never quotes the key: start-up errors end up in logs.
    if not key or not set(key) <= _KEY_CHARS:
        raise ValueError(f"{where}: a key may hold only visible ASCII characters, no comma")


def _read_keys_file(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"api_keys_file {path}: cannot read it ({exc})") from exc
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.split("#", 1)[0].strip()
        if key:
            _check_key(key, f"api_keys_file {path}, line {number}")
            keys.append(key)
    if not keys:
        raise ValueError(f"api_keys_file {path} holds no keys (auth was asked for)")
    return tuple(keys)
