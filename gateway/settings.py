"""The gateway's settings, one module for every room: the data plane's
(`MODELSERVE_GATEWAY_*`), the control plane's admin door (`MODELSERVE_ADMIN_*`), the
dashboard's (`MODELSERVE_DASHBOARD_*`) and the local autoscaler's defaults
(`MODELSERVE_AUTOSCALER_*`). Each is typed and validated once, at start-up."""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Annotated

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.frontdoor import FrontDoorLimits
from gateway.loadgen import DEFAULT_REPORTS, DEMO_PAYLOADS, DEMO_SLO_FILE
from servers.limits import DEFAULT_GRPC_MAX_MESSAGE_BYTES

__all__ = ["AdminSettings", "AutoscalerDefaults", "DashboardSettings", "GatewaySettings"]

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
    # The REST listener's front door (gateway/frontdoor.py): read timeouts and connection caps.
    front_door: bool = Field(
        True, description="timeouts and caps on the REST listener; off: uvicorn's own (compare)"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="accept or last response to complete headers, in total"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="longest wait between two reads of a request body, then 408"
    )
    keepalive_timeout_s: float = Field(5.0, gt=0, description="idle kept-alive connection")
    max_connections: int = Field(
        4096, gt=0, description="open REST connections, beyond them 503 (at most nofile - fds)"
    )
    max_connections_per_client: int = Field(
        256, gt=0, description="open REST connections per client address (IPv6: per /64)"
    )
    fd_reserve: int = Field(
        128, ge=0, description="files kept for the rest of the process, besides a backend pool"
    )

    def front_door_limits(self) -> FrontDoorLimits:
        """The REST listener's limits. Its files reserve covers `fd_reserve` (listeners, gRPC,
        logs, the control plane) plus one backend's whole pool: a backend connection is held
        only by a request in flight, so the pool of one busy backend is the usual peak."""
        return FrontDoorLimits(
            header_timeout_s=self.header_timeout_s, body_timeout_s=self.body_timeout_s,
            keepalive_timeout_s=self.keepalive_timeout_s, max_connections=self.max_connections,
            max_connections_per_client=self.max_connections_per_client,
            fd_reserve=self.fd_reserve + self.max_connections_per_backend,
        )

    @model_validator(mode="after")
    def _check_front_door(self) -> GatewaySettings:
        self.front_door_limits()  # a per-client cap not below the total fails here
        return self

    request_timeout_s: float = Field(60.0, gt=0, description="deadline for a backend's answer")
    connect_timeout_s: float = Field(5.0, gt=0, description="deadline to connect to a backend")
    max_connections_per_backend: int = Field(256, gt=0, description="HTTP pool size per backend")
    # One limit for the gateway and every component it starts (`up` passes it on to them).
    grpc_max_message_bytes: int = Field(
        DEFAULT_GRPC_MAX_MESSAGE_BYTES, gt=0, description="gRPC message limit, both directions"
    )
    activator_timeout_s: float = Field(
        60.0, gt=0, description="how long a request waits for a revision scaling from zero"
    )
    activator_queue: int = Field(
        1000, gt=0, description="requests the activator holds per revision, beyond them 503"
    )
    # Outlier ejection (gateway/outliers.py): a replica failing this many requests in a row
    # (timeouts, connect failures, 502/503/504) leaves rotation; 0 turns it off.
    outlier_consecutive_failures: int = Field(
        3, ge=0, description="failures in a row that eject a replica; 0: never eject"
    )
    outlier_base_ejection_s: float = Field(
        10.0, gt=0, description="first back-off of an ejected replica, times its ejections"
    )
    outlier_max_ejection_s: float = Field(
        300.0, gt=0, description="the longest back-off of an ejected replica"
    )
    outlier_probe_timeout_s: float = Field(
        1.0, gt=0, description="deadline of the readiness probe that returns a replica"
    )

    @model_validator(mode="after")
    def _check_outlier_backoff(self) -> GatewaySettings:
        if self.outlier_max_ejection_s < self.outlier_base_ejection_s:
            raise ValueError("outlier_max_ejection_s is below outlier_base_ejection_s")
        return self

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


def _read_keys_file(path: Path, field: str = "api_keys_file") -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{field} {path}: cannot read it ({exc})") from exc
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.split("#", 1)[0].strip()
        if key:
            _check_key(key, f"{field} {path}, line {number}")
            keys.append(key)
    if not keys:
        raise ValueError(f"{field} {path} holds no keys (auth was asked for)")
    return tuple(keys)


class AdminSettings(BaseSettings):
    """The control plane's door (`modelserve up --admin-port`): its credentials and limits.

    Admin tokens are not inference keys: an inference key never opens this door and a token is
    not needed for inference. With no token configured, `modelserve up` generates one at start
    (see `gateway.controlplane.api.tokens`). From `MODELSERVE_ADMIN_*`, e.g.
    `MODELSERVE_ADMIN_TOKENS=t1,t2` or `MODELSERVE_ADMIN_TOKENS_FILE=/run/secrets/admin`.
    """

    model_config = SettingsConfigDict(
        env_prefix="MODELSERVE_ADMIN_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="accepted admin tokens (comma-separated); none: one is generated"
    )
    tokens_file: Path | None = Field(
        None, description="a file of admin tokens, one per line, `#` starts a comment"
    )
    # A manifest is a few KiB; the Kubernetes API server's own request limit is 3 MiB.
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="request body limit")
    max_document_depth: int = Field(
        64, ge=4, le=1000, description="nesting limit of a JSON or YAML body"
    )
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Host names accepted besides loopback and --admin-host (comma-separated)"
    )
    _file_tokens: tuple[str, ...] = PrivateAttr(())

    @field_validator("tokens", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("tokens")
    @classmethod
    def _check_tokens(cls, tokens: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for token in tokens:
            _check_key(token.get_secret_value(), "tokens")
        return tokens

    @model_validator(mode="after")
    def _load_tokens_file(self) -> AdminSettings:
        if self.tokens_file is not None:
            self._file_tokens = _read_keys_file(self.tokens_file, "tokens_file")
        return self

    def token_values(self) -> tuple[str, ...]:
        """Every configured token (`tokens` and `tokens_file`); empty: `up` generates one."""
        tokens = [token.get_secret_value() for token in self.tokens] + list(self._file_tokens)
        return tuple(dict.fromkeys(tokens))



class DashboardSettings(BaseSettings):
    """Where the SLOs, load-test reports and example payloads live, and how much metric history
    to keep. By default the demo services' SLOs and payloads shipped in `gateway.loadgen`, and
    the reports `modelserve loadtest` writes by default (`loadtest-reports/`, relative to the
    gateway's working directory, as relative paths given here are); a file that is not there is
    an empty state on the page, not an error. `modelserve up --slo FILE --payloads DIR
    --reports DIR` sets them too.

    E.g. `MODELSERVE_DASHBOARD_SLO_FILE=/etc/modelserve/slo.yaml`.
    """

    model_config = SettingsConfigDict(
        env_prefix="MODELSERVE_DASHBOARD_", extra="forbid", frozen=True
    )

    slo_file: Path = Field(DEMO_SLO_FILE, description="the SLO file")
    reports_dir: Path = Field(
        DEFAULT_REPORTS, description="where `<service>_stats.csv` load-test reports are"
    )
    payloads_dir: Path = Field(
        DEMO_PAYLOADS, description="example payloads, `<service>.<v1|v2>.json`"
    )
    sample_interval_s: float = Field(1.0, gt=0, le=60, description="how often metrics are read")
    retention_s: float = Field(900.0, gt=0, le=86400, description="how much history is kept")

    @model_validator(mode="after")
    def _retention_covers_a_sample(self) -> DashboardSettings:
        if self.retention_s < self.sample_interval_s:
            raise ValueError("retention_s must be at least sample_interval_s")
        return self


class AutoscalerDefaults(BaseSettings):
    """The local `config-autoscaler` ConfigMap: cluster-wide defaults that annotations override
    per revision. From `MODELSERVE_AUTOSCALER_*`, e.g. `MODELSERVE_AUTOSCALER_STABLE_WINDOW_S=6`
    (tests shorten the windows so a ramp takes seconds)."""

    model_config = SettingsConfigDict(env_prefix="MODELSERVE_AUTOSCALER_", extra="forbid")

    enabled: bool = Field(True, description="off: every revision keeps its initial replicas")
    stable_window_s: float = Field(60.0, ge=1)
    panic_window_percentage: float = Field(10.0, ge=1, le=100)
    panic_threshold_percentage: float = Field(200.0, ge=110, le=1000)
    scale_to_zero_grace_period_s: float = Field(30.0, ge=0)
    tick_s: float = Field(2.0, gt=0, description="how often the KPA decides")
    bucket_s: float = Field(1.0, gt=0, description="metric bucket (concurrency averaged over it)")
    drain_timeout_s: float = Field(60.0, ge=0, description="longest wait for a replica to drain")
