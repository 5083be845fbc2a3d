"""The dashboard's settings, read from `MODELSERVE_DASHBOARD_*` (validated once, at start-up)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DashboardSettings"]


class DashboardSettings(BaseSettings):
    """Where the SLOs, load-test reports and example payloads live, and how much metric history
    to keep. Relative paths are relative to the gateway's working directory (`modelserve up`
    run from the repository finds `loadtests/`); a file that is not there is an empty state on
    the page, not an error.

    E.g. `MODELSERVE_DASHBOARD_SLO_FILE=/etc/modelserve/slo.yaml`.
    """

    model_config = SettingsConfigDict(
        env_prefix="MODELSERVE_DASHBOARD_", extra="forbid", frozen=True
    )

    slo_file: Path = Field(Path("loadtests/slo.yaml"), description="the SLO file")
    reports_dir: Path = Field(
        Path("loadtests/reports"), description="where `<service>_stats.csv` load-test reports are"
    )
    payloads_dir: Path = Field(
        Path("loadtests/payloads"), description="example payloads, `<service>.<v1|v2>.json`"
    )
    sample_interval_s: float = Field(1.0, gt=0, le=60, description="how often metrics are read")
    retention_s: float = Field(900.0, gt=0, le=86400, description="how much history is kept")

    @model_validator(mode="after")
    def _retention_covers_a_sample(self) -> DashboardSettings:
        if self.retention_s < self.sample_interval_s:
            raise ValueError("retention_s must be at least sample_interval_s")
        return self
