"""Service level objectives for `modelserve loadtest`: the SLO file, what a run measured, verdicts.

The file (the user's `--slo FILE`, or the demo services' `gateway/loadgen/demo/slo.yaml`)
holds, per service, latency percentiles in milliseconds, the largest share of failed requests
and the least throughput a run must reach. Measurements come from the "Aggregated" row of
Locust's `<prefix>_stats.csv` (or Locust's stats object, see `gateway/loadgen/locustfile.py`).
Locust rounds response times under 100 ms to whole milliseconds, so targets below 1 ms are not
meaningful.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "Check",
    "Measured",
    "SLOError",
    "SLOFile",
    "ServiceSLO",
    "evaluate",
    "format_table",
    "load_slo_file",
]


class SLOError(ValueError):
    """The SLO file cannot be used: unreadable, invalid, or silent about the service."""


class ServiceSLO(BaseModel):
    """What one service must meet under the default load."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p50_ms: float = Field(gt=0)
    p95_ms: float = Field(gt=0)
    p99_ms: float = Field(gt=0)
    max_error_ratio: float = Field(ge=0, le=1)
    min_rps: float = Field(ge=0)

    @model_validator(mode="after")
    def _percentiles_ordered(self) -> ServiceSLO:
        if not self.p50_ms <= self.p95_ms <= self.p99_ms:
            raise ValueError("latency targets must satisfy p50_ms <= p95_ms <= p99_ms")
        return self


class SLOFile(BaseModel):
    """The whole SLO file: `services: {name: ServiceSLO}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    services: dict[str, ServiceSLO] = Field(min_length=1)

    def for_service(self, name: str) -> ServiceSLO:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services))
            raise SLOError(f"no SLOs for service {name!r} (known: {known})") from None


def load_slo_file(path: Path) -> SLOFile:
    """Read and validate an SLO file; SLOError names the file and the problem."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SLOError(f"{path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SLOError(f"{path}: not YAML: {exc}") from exc
    try:
        return SLOFile.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise SLOError(f"{path}: invalid SLO file: {problems}") from exc


@dataclass(frozen=True)
class Measured:
    """What a load test measured over all its requests."""

    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float

    @property
    def error_ratio(self) -> float:
        # No requests at all is a total failure, not a perfect score.
        return self.failures / self.requests if self.requests else 1.0

    @classmethod
    def from_stats_csv(cls, path: Path) -> Measured:
        """The "Aggregated" row of Locust's `<prefix>_stats.csv`."""
        try:
            with path.open(newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]
        except OSError as exc:
            raise SLOError(f"{path}: {exc.strerror}") from exc
        if not rows:
            raise SLOError(f"{path}: no 'Aggregated' row (did Locust run?)")
        row = rows[0]
        try:
            return cls(
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                p50_ms=_number(row["50%"]),
                p95_ms=_number(row["95%"]),
                p99_ms=_number(row["99%"]),
                rps=_number(row["Requests/s"]),
            )
        except (KeyError, ValueError) as exc:
            raise SLOError(f"{path}: unexpected Locust stats format: {exc}") from exc


def _number(text: str) -> float:
    return math.nan if text in ("", "N/A") else float(text)


@dataclass(frozen=True)
class Check:
    """One SLO's verdict."""

    slo: str
    target: float
    measured: float
    passed: bool
    unit: str
    relation: str  # how the measured value must relate to the target: "<=" or ">="

    def violation(self) -> str:
        """E.g. `p95 0.84 ms > 0.001 ms`."""
        broken = ">" if self.relation == "<=" else "<"
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.slo} {_fmt(self.measured)}{unit} {broken} {_fmt(self.target)}{unit}"


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:g}"


def evaluate(slo: ServiceSLO, measured: Measured) -> list[Check]:
    """Every SLO against the measurement. NaN (no requests) fails."""
    upper = [
        ("p50", slo.p50_ms, measured.p50_ms, "ms"),
        ("p95", slo.p95_ms, measured.p95_ms, "ms"),
        ("p99", slo.p99_ms, measured.p99_ms, "ms"),
        ("error_ratio", slo.max_error_ratio, measured.error_ratio, ""),
    ]
    checks = [Check(name, target, value, value <= target, unit, "<=")
              for name, target, value, unit in upper]
    checks.append(Check("rps", slo.min_rps, measured.rps, measured.rps >= slo.min_rps,
                        "req/s", ">="))
    return checks


def format_table(service: str, checks: list[Check]) -> str:
    """A plain-text table (SLO, target, measured, result) and one FAIL line per violation."""
    header = ("SLO", "target", "measured", "result")
    rows = [
        (check.slo, f"{check.relation} {_fmt(check.target)} {check.unit}".rstrip(),
         f"{_fmt(check.measured)} {check.unit}".rstrip(), "pass" if check.passed else "FAIL")
        for check in checks
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.extend(f"FAIL {service} {check.violation()}" for check in checks if not check.passed)
    return "\n".join(lines)
