"""The gateway's settings (data plane, admin door, dashboard): environment prefix and
validation at construction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import AdminSettings, DashboardSettings, GatewaySettings


def test_defaults() -> None:
    settings = GatewaySettings()
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings.request_timeout_s == 60.0
    assert settings.grpc_max_message_bytes == 64 * 1024 * 1024


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSERVE_GATEWAY_MAX_BODY_BYTES", "1024")
    monkeypatch.setenv("MODELSERVE_GATEWAY_REQUEST_TIMEOUT_S", "2.5")
    settings = GatewaySettings()
    assert (settings.max_body_bytes, settings.request_timeout_s) == (1024, 2.5)


@pytest.mark.parametrize("bad", [{"max_body_bytes": 0}, {"request_timeout_s": -1},
                                 {"max_connections_per_backend": "many"}, {"typo_s": 1}])
def test_bad_values_fail_at_start(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(**bad)  # type: ignore[arg-type]


def test_admin_and_dashboard_settings_have_their_own_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELSERVE_ADMIN_TOKENS", "t-one, t-two")
    monkeypatch.setenv("MODELSERVE_DASHBOARD_RETENTION_S", "60")
    admin = AdminSettings()
    assert admin.token_values() == ("t-one", "t-two")
    assert "t-one" not in repr(admin)  # secrets stay out of logs
    assert DashboardSettings().retention_s == 60
    assert GatewaySettings().api_key_values() == ()  # admin tokens are not inference keys


@pytest.mark.parametrize("bad", [{"tokens": "has space"}, {"max_body_bytes": 0}, {"typo": 1}])
def test_bad_admin_settings_fail_at_start(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AdminSettings(**bad)  # type: ignore[arg-type]
