"""The SLO rule generator without promtool: what it builds for each service, what counts as an
error, the gateway's real metric names, and SLO files it refuses."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
import yaml

from gateway.dataplane.metrics import GatewayMetrics
from gateway.loadgen import DEMO_SLO_FILE
from gateway.slo import SLOError, SLOFile, load_slo_file
from gateway.slo_alerts import build_rules, build_tests
from gateway.slo_alerts.rulefile import AlertingRule, RecordingRule
from gateway.slo_alerts.rules import (
    BURN_RATES,
    ERROR_CODES,
    GRPC_SERVER_ERRORS,
    LATENCY_ALERT,
    QUANTILES,
    WINDOWS,
    error_ratio_series,
)
from servers.errors import grpc_code_for_http

SOURCE = "slo.yaml"
TARGETS = {"p50_ms": 30, "p95_ms": 60, "p99_ms": 100, "max_error_ratio": 0.01, "min_rps": 10}


def _slos(**services: dict[str, float]) -> SLOFile:
    return SLOFile.model_validate({"services": services})


def _alerts(slos: SLOFile) -> list[AlertingRule]:
    groups = build_rules(slos, SOURCE).groups
    return [rule for group in groups for rule in group.rules if isinstance(rule, AlertingRule)]


def test_every_service_gets_its_burn_rate_and_latency_alerts() -> None:
    slos = load_slo_file(DEMO_SLO_FILE)
    alerts = _alerts(slos)
    assert len(alerts) == len(slos.services) * (len(BURN_RATES) + len(QUANTILES))
    for service in slos.services:
        mine = {(a.alert, a.labels["slo"]) for a in alerts if a.labels["service"] == service}
        assert mine == {(b.alert, "max_error_ratio") for b in BURN_RATES} | {
            (LATENCY_ALERT, field) for field, _ in QUANTILES
        }


def test_burn_rate_alerts_need_both_windows_above_the_burn_rate() -> None:
    alerts = {a.alert: a for a in _alerts(_slos(svc=TARGETS))}
    fast = alerts["ModelServeErrorBudgetFastBurn"]
    assert fast.expr.split("\nand\n") == [
        f'{error_ratio_series("1h")}{{service="svc"}} > (14.4 * 0.01)',
        f'{error_ratio_series("5m")}{{service="svc"}} > (14.4 * 0.01)\n',
    ]
    assert fast.labels == {"service": "svc", "severity": "page", "slo": "max_error_ratio"}
    assert fast.for_ is None  # the short window is what keeps a page from a blip
    assert "14.4%" in fast.annotations["description"]
    assert alerts["ModelServeErrorBudgetSteadyBurn"].labels["severity"] == "ticket"


def test_latency_alerts_compare_each_quantile_with_its_target_in_seconds() -> None:
    alerts = [a for a in _alerts(_slos(svc=TARGETS)) if a.alert == LATENCY_ALERT]
    assert [(a.labels["slo"], a.expr.split("\n")[1], a.for_) for a in alerts] == [
        ("p50_ms", "> 0.03", "5m"), ("p95_ms", "> 0.06", "5m"), ("p99_ms", "> 0.1", "5m"),
    ]
    assert 'quantile="0.95"' in alerts[1].expr
    assert "(50, 100] ms bucket, interpolated" in alerts[1].annotations["description"]
    assert "100 ms is a bucket bound, exact" in alerts[2].annotations["description"]


def test_recording_rules_cover_every_window_the_alerts_read() -> None:
    rules = build_rules(_slos(svc=TARGETS), SOURCE).groups[0].rules
    records = [r.record for r in rules if isinstance(r, RecordingRule)]
    read = {w for b in BURN_RATES for w in (b.long_window, b.short_window)}
    assert read == set(WINDOWS)
    assert {error_ratio_series(w) for w in WINDOWS} <= set(records)
    assert "service:modelserve_gateway_requests:rate5m" in records  # throughput: recorded only


@pytest.mark.parametrize("status", range(500, 600))
def test_every_5xx_burns_the_budget_over_rest_and_grpc(status: int) -> None:
    errors = re.compile(ERROR_CODES)
    assert errors.fullmatch(str(status))
    # What the gateway answers a gRPC client for this status (servers/errors.py's table).
    assert errors.fullmatch(grpc_code_for_http(status).name)


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 409, 413, 415, 422, 429, 499])
def test_client_errors_do_not_burn_the_budget(status: int) -> None:
    errors = re.compile(ERROR_CODES)
    assert not errors.fullmatch(str(status))
    assert not errors.fullmatch(grpc_code_for_http(status).name)


def test_grpc_codes_split_as_server_and_client_faults() -> None:
    errors = re.compile(ERROR_CODES)
    server = {code.name for code in grpc.StatusCode if errors.fullmatch(code.name)}
    assert server == set(GRPC_SERVER_ERRORS)
    # The gateway's own crash answers UNKNOWN; a client leaving is CANCELLED, not the server's.
    assert "UNKNOWN" in server and "CANCELLED" not in server and "OK" not in server


def test_rules_read_the_metric_names_and_labels_the_gateway_exports() -> None:
    metrics = GatewayMetrics()
    metrics.observe("svc", "svc-00001", "v1", "503", 0.02)
    exported = metrics.render().decode()
    tests = build_tests(_slos(svc=TARGETS), "rules.yaml", SOURCE)
    series = {s.series for f in tests.values() for g in f.tests for s in g.input_series}
    names = {s.split("{")[0] for s in series}
    assert names == {"modelserve_gateway_requests_total",
                     "modelserve_gateway_request_duration_seconds_bucket"}
    exported_le = set(re.findall(r'_bucket\{[^}]*le="([^"]+)"', exported))
    generated_le = {m for s in series for m in re.findall(r'le="([^"]+)"', s)}
    assert generated_le == exported_le
    assert re.search(r'modelserve_gateway_requests_total\{[^}]*code="503"[^}]*service="svc"',
                     exported)


def test_generated_cases_fire_and_stay_quiet_for_every_slo_of_every_service() -> None:
    slos = _slos(**{f"svc-{i}": TARGETS for i in range(3)})
    fired: set[tuple[str, str, str]] = set()
    quiet: set[tuple[str, str, str]] = set()
    every = {(s, b.alert, "max_error_ratio") for s in slos.services for b in BURN_RATES} | {
        (s, LATENCY_ALERT, field) for s in slos.services for field, _ in QUANTILES
    }
    for test_file in build_tests(slos, "rules.yaml", SOURCE).values():
        for group in test_file.tests:
            for check in group.alert_rule_test:
                got = {(a.exp_labels["service"], check.alertname, a.exp_labels["slo"])
                       for a in check.exp_alerts}
                fired |= got
                quiet |= {key for key in every if key[1] == check.alertname} - got
    assert fired == every
    assert quiet == every


def test_a_new_service_in_the_slo_file_gets_rules_and_cases(tmp_path: Path) -> None:
    doc = yaml.safe_load(DEMO_SLO_FILE.read_text())
    doc["services"]["new-model"] = TARGETS
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump(doc))
    slos = load_slo_file(path)
    assert any(a.labels["service"] == "new-model" for a in _alerts(slos))
    tests = build_tests(slos, "rules.yaml", SOURCE)
    assert any('service="new-model"' in s.series
               for f in tests.values() for g in f.tests for s in g.input_series)


@pytest.mark.parametrize(("change", "message"), [
    ({"max_error_ratio": 0}, "max_error_ratio 0 leaves no error budget to burn"),
    ({"max_error_ratio": 0.1}, "max_error_ratio 0.1 is too loose for the 14.4x burn-rate alert"),
    ({"p50_ms": 0.5}, "p50_ms 0.5 is outside the gateway's latency buckets"),
    ({"p99_ms": 60000}, "p99_ms 60000 is outside the gateway's latency buckets"),
])
def test_slos_the_rules_cannot_express_are_refused_by_name(
    change: dict[str, float], message: str
) -> None:
    slos = _slos(ok=TARGETS, bad={**TARGETS, **change})
    with pytest.raises(SLOError, match=re.escape(f"bad: {message}")):
        build_rules(slos, SOURCE)
    with pytest.raises(SLOError, match=re.escape(message)):
        build_tests(slos, "rules.yaml", SOURCE)
