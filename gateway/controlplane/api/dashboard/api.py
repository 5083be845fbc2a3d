"""The documents of the dashboard's JSON API: metrics summaries, SLO verdicts, example payloads.

Plain functions from the history, the settings and service names to JSON-ready dicts, so the
page (and any client) gets every number computed here and holds no logic of its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

from gateway.controlplane.api.dashboard.history import MetricsHistory, WindowStats
from gateway.settings import DashboardSettings
from gateway.slo import Check, Measured, ServiceSLO, SLOError, evaluate, load_slo_file
from servers.errors import InvalidInput, ModelNotFound, UnprocessableEntity

__all__ = [
    "PROTOCOLS",
    "example_doc",
    "inference_path",
    "metrics_doc",
    "service_metrics_doc",
    "slo_doc",
]

PROTOCOLS = ("v1", "v2")


def _stats(stats: WindowStats | None) -> dict[str, object] | None:
    return None if stats is None else stats.as_dict()


def _summary(history: MetricsHistory, name: str, window_s: float) -> dict[str, object]:
    doc = _stats(history.summary(name, window_s)) or {}
    doc["revisions"] = {
        revision: _stats(history.summary(name, window_s, revision))
        for revision in history.revisions(name)
    }
    return doc


def metrics_doc(
    history: MetricsHistory, services: Iterable[str], window_s: float
) -> dict[str, object]:
    """`GET /v1/metrics`: the window's summary of every service (the routing table's and
    any other the metrics saw, e.g. `unknown`, the requests refused before routing)."""
    names = sorted(set(services) | set(history.services()))
    return {
        "window_s": window_s,
        "interval_s": history.interval_s,
        "services": {name: _summary(history, name, window_s) for name in names},
    }


def service_metrics_doc(
    history: MetricsHistory, name: str, window_s: float, step_s: float
) -> dict[str, object]:
    """`GET /v1/services/{name}/metrics`: the summary, per revision too, and a time series."""
    return {
        "service": name,
        "window_s": window_s,
        "step_s": max(step_s, history.interval_s),
        "interval_s": history.interval_s,
        "summary": _summary(history, name, window_s),
        "series": history.series(name, window_s, step_s, history.revisions(name)),
    }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _checks(checks: list[Check]) -> list[dict[str, object]]:
    return [
        {
            "slo": check.slo,
            "relation": check.relation,
            "target": check.target,
            "measured": _finite(check.measured),
            "unit": check.unit,
            "passed": check.passed,
        }
        for check in checks
    ]


def _report(slo: ServiceSLO | None, path: Path) -> tuple[dict[str, object] | None, str | None]:
    """The latest load-test report of a service and its verdicts, or why there is none."""
    if not path.is_file():
        return None, f"no load-test report yet ({path}): run `modelserve loadtest`"
    try:
        measured = Measured.from_stats_csv(path)
    except SLOError as exc:
        return None, str(exc)
    report: dict[str, object] = {
        "file": str(path),
        "modified": path.stat().st_mtime,
        "measured": {
            "requests": measured.requests,
            "failures": measured.failures,
            "error_ratio": measured.error_ratio,
            "p50_ms": _finite(measured.p50_ms),
            "p95_ms": _finite(measured.p95_ms),
            "p99_ms": _finite(measured.p99_ms),
            "rps": _finite(measured.rps),
        },
    }
    if slo is not None:
        checks = evaluate(slo, measured)
        report["checks"] = _checks(checks)
        report["passed"] = all(check.passed for check in checks)
    return report, None


def _live(slo: ServiceSLO, stats: WindowStats | None) -> dict[str, object] | None:
    """The latency and error targets against the live window (throughput is left out: live
    traffic is whatever clients send, not the load the targets were set for)."""
    doc = None if stats is None else stats.as_dict()
    if doc is None or not doc["requests"]:
        return None
    measured = [
        ("p50", slo.p50_ms, doc["p50_ms"], "ms"),
        ("p95", slo.p95_ms, doc["p95_ms"], "ms"),
        ("p99", slo.p99_ms, doc["p99_ms"], "ms"),
        ("error_ratio", slo.max_error_ratio, doc["error_ratio"], ""),
    ]
    checks = [
        Check(name, target, float(value), float(value) <= target, unit, "<=")
        for name, target, value, unit in measured
        if isinstance(value, int | float)
    ]
    return {
        "window_s": doc["seconds"],
        "requests": doc["requests"],
        "checks": _checks(checks),
        "passed": all(check.passed for check in checks),
    }


def slo_doc(
    settings: DashboardSettings,
    history: MetricsHistory,
    services: Iterable[str],
    window_s: float,
) -> dict[str, object]:
    """`GET /v1/slo`: per service its targets, the latest load-test report's verdicts and the
    live window's. `error` says why there are no targets at all (no or a bad SLO file)."""
    error = None
    targets: dict[str, ServiceSLO] = {}
    if not settings.slo_file.is_file():
        error = f"no SLO file at {settings.slo_file}"
    else:
        try:
            targets = dict(load_slo_file(settings.slo_file).services)
        except SLOError as exc:
            error = str(exc)
    docs: dict[str, object] = {}
    for name in sorted(set(services) | set(targets)):
        slo = targets.get(name)
        report, report_error = _report(slo, settings.reports_dir / f"{name}_stats.csv")
        docs[name] = {
            "targets": None if slo is None else slo.model_dump(),
            "report": report,
            "report_error": report_error,
            "live": None if slo is None else _live(slo, history.summary(name, window_s)),
        }
    return {
        "slo_file": str(settings.slo_file),
        "reports_dir": str(settings.reports_dir),
        "error": error,
        "services": docs,
    }


def inference_path(name: str, protocol: str) -> str:
    """Where a v1 or v2 inference request for service `name` goes."""
    return f"/v1/models/{name}:predict" if protocol == "v1" else f"/v2/models/{name}/infer"


def example_doc(settings: DashboardSettings, name: str, protocol: str | None) -> dict[str, object]:
    """`GET /v1/services/{name}/example`: the load tests' payload for `protocol` (default: the
    first protocol with a payload), the path to send it to, and the protocols that have one.
    `name` must be a known service (the caller checks): it becomes part of a file name."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise InvalidInput(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    files = {p: settings.payloads_dir / f"{name}.{p}.json" for p in PROTOCOLS}
    available = [p for p, path in files.items() if path.is_file()]
    chosen = protocol or (available[0] if available else "v1")
    if chosen not in available:
        raise ModelNotFound(f"no {chosen} example for {name}: {files[chosen]} does not exist")
    try:
        payload = json.loads(files[chosen].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UnprocessableEntity(f"the example {files[chosen]} cannot be read: {exc}") from exc
    return {
        "service": name,
        "protocol": chosen,
        "path": inference_path(name, chosen),
        "available": available,
        "payload": payload,
    }
