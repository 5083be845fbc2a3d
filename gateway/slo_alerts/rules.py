"""Prometheus recording and alerting rules for the SLO file's services, over the gateway's
metrics (`gateway/dataplane/metrics.py`): every request to every service passes the gateway,
so its counter and histogram are the service level indicators.

- Errors burn an error budget of `max_error_ratio`, alerted on with the SRE workbook's
  multiwindow, multi-burn-rate alerts ("Alerting on SLOs", table 5-8,
  https://sre.google/workbook/alerting-on-slos/): a 30-day SLO period is assumed; each alert
  needs the long window (how much budget is spent) and a short window of 1/12 of it (that it
  is still being spent, so the alert resets soon after the errors stop) above the burn rate.
- Latency: p50/p95/p99 estimated by `histogram_quantile` from the 5-minute rate of the
  buckets, alerted on when above the SLO's target for `LATENCY_FOR`. Inside a bucket the
  estimate interpolates linearly (Prometheus's "Histograms and summaries", "Errors of quantile
  estimation"), so it is exact only where a target is a bucket bound; the rule file's header
  says for each target which bucket it falls in.
- Throughput is recorded, never alerted on: `min_rps` is what a load test must reach at
  saturation, while production traffic is whatever clients send: little of it is no fault.

Recording rules are named `level:metric:operations` (https://prometheus.io/docs/practices/rules/).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gateway.dataplane.metrics import LATENCY_BUCKETS
from gateway.slo import ServiceSLO, SLOError, SLOFile
from gateway.slo_alerts.rulefile import AlertingRule, RecordingRule, RuleFile, RuleGroup

__all__ = [
    "BURN_RATES",
    "ERROR_CODES",
    "GRPC_SERVER_ERRORS",
    "LATENCY_ALERT",
    "LATENCY_FOR",
    "LATENCY_SERIES",
    "QUANTILES",
    "WINDOWS",
    "BurnRate",
    "build_rules",
    "error_ratio_series",
    "header",
    "service_alerts",
]

REQUESTS = "modelserve_gateway_requests_total"
DURATION_BUCKETS = "modelserve_gateway_request_duration_seconds_bucket"

# What burns the budget: the server's faults. REST: every 5xx (the gateway's 502/503/504 and a
# component's own). gRPC: the codes whose HTTP equivalent is a 5xx (servers/errors.py's table,
# after gRPC's doc/http-grpc-status-mapping.md and Google's AIP-193). Client errors do not:
# 4xx (400 bad input, 404 unknown model, 413, 429 rate or queue limits) and the client leaving
# (the gateway's 499, gRPC CANCELLED); they still count in the denominator, as requests served.
GRPC_SERVER_ERRORS = (
    "UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "DATA_LOSS",
)
ERROR_CODES = "|".join(("5..", *GRPC_SERVER_ERRORS))  # PromQL anchors the regex


@dataclass(frozen=True)
class BurnRate:
    """One row of the workbook's table: fire when both windows burn `factor` times too fast,
    i.e. `budget_spent` of a 30-day budget is gone within `long_window`."""

    alert: str
    severity: str
    long_window: str
    short_window: str
    factor: float
    budget_spent: float


# The workbook's three rows (its table 5-8). Some tools add a 3x ticket over 1 day and 2 hours;
# left out here: between the 6x page and the 1x ticket it adds another ticket, not coverage.
BURN_RATES = (
    BurnRate("ModelServeErrorBudgetFastBurn", "page", "1h", "5m", 14.4, 0.02),
    BurnRate("ModelServeErrorBudgetSlowBurn", "page", "6h", "30m", 6.0, 0.05),
    BurnRate("ModelServeErrorBudgetSteadyBurn", "ticket", "3d", "6h", 1.0, 0.10),
)
# Each window's ratio reads the raw counters: the 3-day one reads three days of samples at every
# evaluation, cheap for the gateway's few series (service x revision x protocol x code).
WINDOWS = ("5m", "30m", "1h", "6h", "3d")

QUANTILES = (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))
LATENCY_ALERT = "ModelServeLatencyHigh"
# The 5-minute estimate above target for 5 minutes more, so requests have been slow for 5 to 10
# minutes: a threshold, not a budget, hence a ticket.
LATENCY_FOR = "5m"
LATENCY_SERIES = "service:modelserve_gateway_request_duration_seconds:histogram_quantile_rate5m"
THROUGHPUT_SERIES = "service:modelserve_gateway_requests:rate5m"


def error_ratio_series(window: str) -> str:
    """The recorded share of a service's requests that failed on the server's side."""
    return f"service:modelserve_gateway_requests_errors:ratio_rate{window}"


def build_rules(slos: SLOFile, source: str) -> RuleFile:
    """The rule file for every service of `slos` (read from the file named `source`)."""
    check_expressible(slos)
    alerts: list[RecordingRule | AlertingRule] = [
        rule for service, slo in slos.services.items()
        for rule in service_alerts(service, slo, source)
    ]
    recording: list[RecordingRule | AlertingRule] = list(_recording_rules())
    return RuleFile(groups=[
        RuleGroup(name="modelserve-slo-recording", rules=recording),
        RuleGroup(name="modelserve-slo-alerts", rules=alerts),
    ])


def check_expressible(slos: SLOFile) -> None:
    """SLOError unless every target can be alerted on with these rules and buckets."""
    low, high = LATENCY_BUCKETS[0] * 1000, LATENCY_BUCKETS[-1] * 1000
    for service, slo in slos.services.items():
        if slo.max_error_ratio == 0:
            raise SLOError(f"{service}: max_error_ratio 0 leaves no error budget to burn; "
                           "burn-rate alerts need max_error_ratio > 0")
        for burn in BURN_RATES:
            if burn.factor * slo.max_error_ratio >= 1:
                raise SLOError(
                    f"{service}: max_error_ratio {slo.max_error_ratio:g} is too loose for the "
                    f"{burn.factor:g}x burn-rate alert ({burn.alert}): its threshold "
                    f"{burn.factor * slo.max_error_ratio:g} is not below 1, so it could never fire"
                )
        for field, _ in QUANTILES:
            target = getattr(slo, field)
            if not low <= target < high:
                raise SLOError(
                    f"{service}: {field} {target:g} is outside the gateway's latency buckets: "
                    f"histogram_quantile can tell {low:g} ms to {high:g} ms (excluded) apart"
                )


def service_alerts(service: str, slo: ServiceSLO, source: str) -> list[AlertingRule]:
    """One service's alerts: a burn-rate alert per row of BURN_RATES, a latency alert per
    quantile (told apart by their `slo` label)."""
    return [*_burn_rate_alerts(service, slo, source), *_latency_alerts(service, slo, source)]


def _recording_rules() -> Iterator[RecordingRule]:
    yield RecordingRule(
        record=THROUGHPUT_SERIES, expr=f"sum by (service) (rate({REQUESTS}[5m]))"
    )
    for window in WINDOWS:
        every = f"sum by (service) (rate({REQUESTS}[{window}]))"
        errors = f'sum by (service) (rate({REQUESTS}{{code=~"{ERROR_CODES}"}}[{window}]))'
        # `or 0 * every`: a service without a single error records 0, not nothing.
        yield RecordingRule(
            record=error_ratio_series(window),
            expr=f"(\n  {errors}\n  or\n  0 * {every}\n)\n/\n{every}\n",
        )
    for _, quantile in QUANTILES:
        yield RecordingRule(
            record=LATENCY_SERIES,
            expr=f"histogram_quantile({quantile}, "
                 f"sum by (le, service) (rate({DURATION_BUCKETS}[5m])))",
            labels={"quantile": str(quantile)},
        )


def _burn_rate_alerts(service: str, slo: ServiceSLO, source: str) -> Iterator[AlertingRule]:
    budget = slo.max_error_ratio
    for burn in BURN_RATES:
        threshold = f"({burn.factor!r} * {budget!r})"
        windows = (burn.long_window, burn.short_window)
        expr = "\nand\n".join(
            f'{error_ratio_series(w)}{{service="{service}"}} > {threshold}' for w in windows
        )
        yield AlertingRule(
            alert=burn.alert,
            expr=expr + "\n",
            labels={"service": service, "severity": burn.severity, "slo": "max_error_ratio"},
            annotations={
                "summary": f"{service}: error budget burning {burn.factor:g}x too fast",
                "description": (
                    f"Over the last {burn.long_window} and {burn.short_window}, more than "
                    f"{_percent(burn.factor * budget)} of the requests to {service} failed with "
                    f"a server error (REST 5xx, gRPC {', '.join(GRPC_SERVER_ERRORS)}), "
                    f"{burn.factor:g}x the max_error_ratio {budget:g} of {source}; at this rate "
                    f"{_percent(burn.budget_spent)} of a 30-day error budget goes in "
                    f"{burn.long_window}."
                ),
            },
        )


def _latency_alerts(service: str, slo: ServiceSLO, source: str) -> Iterator[AlertingRule]:
    for field, quantile in QUANTILES:
        target_ms = getattr(slo, field)
        name = field.removesuffix("_ms")
        yield AlertingRule(
            alert=LATENCY_ALERT,
            expr=(f'{LATENCY_SERIES}{{service="{service}", quantile="{quantile}"}}\n'
                  f"> {target_ms / 1000!r}\n"),
            for_=LATENCY_FOR,
            labels={"service": service, "severity": "ticket", "slo": field},
            annotations={
                "summary": f"{service}: {name} latency above {target_ms:g} ms",
                "description": (
                    f"The {name} latency of {service} at the gateway, over 5 minutes, has been "
                    f"above the {field} {target_ms:g} ms of {source} for {LATENCY_FOR}; "
                    f"estimated from the histogram buckets, where {_bucket_note(target_ms)}."
                ),
            },
        )


def _bucket_note(target_ms: float) -> str:
    """Where a target lies among the buckets, i.e. how exact its alert is."""
    bounds = [round(b * 1000, 9) for b in LATENCY_BUCKETS]
    if target_ms in bounds:
        return f"{target_ms:g} ms is a bucket bound, exact"
    lower = max((b for b in bounds if b < target_ms), default=0.0)
    upper = min(b for b in bounds if b > target_ms)
    return f"{target_ms:g} ms is inside the ({lower:g}, {upper:g}] ms bucket, interpolated"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.6g}%"


def header(slos: SLOFile, source: str, command: str) -> str:
    """The comment block that opens a generated file: where it comes from, and how exact each
    latency target is with the gateway's buckets."""
    lines = [
        f"Generated by `{command}` from {source}:",
        "edit the SLO file and regenerate.",
        "Latency targets against the gateway's histogram buckets (inside a bucket,",
        "histogram_quantile interpolates linearly, so an alert is as exact as its bucket):",
        *(
            f"  {service} {field} {_bucket_note(getattr(slo, field))}"
            for service, slo in slos.services.items()
            for field, _ in QUANTILES
        ),
    ]
    return "".join(f"# {line}\n" for line in lines)
