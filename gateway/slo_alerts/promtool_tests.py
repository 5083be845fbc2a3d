"""`promtool test rules` files for the rules of `gateway/slo_alerts/rules.py`, generated from
the same SLO file, so every service and every SLO has series that breach it and series that
do not (format: https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/).

A scenario is a list of traffic levels, rotated over the services: in its k-th test group the
i-th service of the SLO file gets level (i + k) mod n, so over the groups every service meets
every level, and in each group neighbours differ: an alert must fire for its own service's
series and no other's. Expected alerts carry the labels and annotations of the rule itself.

- `errors-and-latency.test.yaml` (1-minute samples; promtool evaluates every rule at every
  step, so the scenarios are short): requests burning the budget 0.5x, 2x, 8x and 20x, client
  errors only (which burn nothing), a fast burn that has stopped (the short window resets the
  page), and 0%, 2%, 10% or 60% of the requests slow (p99 breached alone, p95 and p99, all
  three). Windows longer than the data read what there is, as Prometheus does.
- `steady-burn.test.yaml` (1-hour samples over three days): a 2x burn after two healthy days
  raises the ticket only once the 3-day window holds enough of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString
from pydantic import Field

from gateway.dataplane.metrics import LATENCY_BUCKETS
from gateway.slo import ServiceSLO, SLOFile
from gateway.slo_alerts.rulefile import Document
from gateway.slo_alerts.rules import (
    BURN_RATES,
    DURATION_BUCKETS,
    LATENCY_ALERT,
    QUANTILES,
    REQUESTS,
    check_expressible,
    service_alerts,
)

__all__ = ["TEST_FILES", "ExpAlert", "UnitTestFile", "build_tests"]

TEST_FILES = ("errors-and-latency.test.yaml", "steady-burn.test.yaml")
_GROUP_ORDER = ["modelserve-slo-recording", "modelserve-slo-alerts"]
_BUDGET = "max_error_ratio"

# Requests per sample: whole numbers of errors even for a budget of 1 in 10^5.
_REQUESTS = 1_000_000
_OBSERVATIONS = 1000
# Burn rates (multiples of the budget) around the rows of BURN_RATES (14.4, 6 and 1);
# _CLIENT_ONLY: as many client errors as successes, and no server error.
_HEALTHY, _STEADY, _SLOW, _FAST, _CLIENT_ONLY = 0.5, 2.0, 8.0, 20.0, -1.0
# Shares of slow requests: above 1% breaches p99, above 5% p95, above 50% p50.
_SLOW_SHARES = (0.0, 0.02, 0.10, 0.60)

_OK = (("v1", "200"), ("grpc", "OK"))
_SERVER_ERRORS = (("v1", "503"), ("grpc", "UNAVAILABLE"))
_CLIENT_ERRORS = (("v1", "400"), ("v1", "404"), ("v1", "429"), ("v1", "499"),
                  ("grpc", "INVALID_ARGUMENT"), ("grpc", "RESOURCE_EXHAUSTED"),
                  ("grpc", "CANCELLED"))


class Series(Document):
    series: str
    values: str


class ExpAlert(Document):
    exp_labels: dict[str, str]
    exp_annotations: dict[str, str]


class AlertTest(Document):
    eval_time: str
    alertname: str
    exp_alerts: list[ExpAlert] = Field(default_factory=list)


class UnitTestGroup(Document):
    name: str
    interval: str
    input_series: list[Series]
    alert_rule_test: list[AlertTest]


class UnitTestFile(Document):
    """One file for `promtool test rules`."""

    rule_files: list[str]
    evaluation_interval: str
    group_eval_order: list[str]
    tests: list[UnitTestGroup]


@dataclass(frozen=True)
class _Level:
    """One service's traffic: stretches of (samples, burn rate), or `samples` samples with a
    share of slow requests; and what fires: (eval_time, alertname, the rule's `slo` label)."""

    name: str
    errors: tuple[tuple[int, float], ...] = ()
    slow_share: float | None = None
    samples: int = 0
    firing: frozenset[tuple[str, str, str]] = frozenset()


@dataclass(frozen=True)
class _Scenario:
    name: str
    interval: str
    levels: tuple[_Level, ...]
    checks: tuple[tuple[str, str], ...]  # (eval_time, alertname)


def build_tests(slos: SLOFile, rule_file: str, source: str) -> dict[str, UnitTestFile]:
    """The test files by name; `rule_file` is the rules' path as seen from the test files'
    folder, `source` names the SLO file as the rules' annotations do."""
    check_expressible(slos)
    short = [g for scenario in _short_scenarios() for g in _groups(slos, source, scenario)]
    long = list(_groups(slos, source, _steady_scenario()))
    return {
        name: UnitTestFile(rule_files=[rule_file], evaluation_interval=interval,
                           group_eval_order=_GROUP_ORDER, tests=groups)
        for name, interval, groups in zip(TEST_FILES, ("1m", "1h"), (short, long), strict=True)
    }


def _burning(burn: float, samples: int, at: str) -> _Level:
    """A constant burn: the alerts whose burn rate it exceeds fire (both windows see it)."""
    firing = frozenset((at, b.alert, _BUDGET) for b in BURN_RATES if burn > b.factor)
    name = "client errors only" if burn == _CLIENT_ONLY else f"{burn:g}x burn"
    return _Level(name, errors=((samples, burn),), firing=firing)


def _short_scenarios() -> Iterator[_Scenario]:
    burns = tuple(b.alert for b in BURN_RATES)
    yield _Scenario("burn rates", "1m", tuple(
        _burning(burn, 10, "10m") for burn in (_HEALTHY, _CLIENT_ONLY, _STEADY, _SLOW, _FAST)
    ), tuple(("10m", alert) for alert in burns))
    # 20 minutes at 20x, then 5 without errors: the fast page stops, the 1-hour window still
    # holds 16x; the slow page and the ticket go on.
    stopped = _Level("a fast burn that stopped", errors=((20, _FAST), (5, 0.0)), firing=frozenset(
        [("15m", alert, _BUDGET) for alert in burns]
        + [("25m", alert, _BUDGET) for alert in burns[1:]]
    ))
    healthy = _Level("healthy", errors=((25, _HEALTHY),))
    yield _Scenario("a fast burn that stopped", "1m", (stopped, healthy),
                    tuple((at, alert) for at in ("15m", "25m") for alert in burns))
    # At 3 minutes slow services are pending, not firing: LATENCY_FOR has not passed.
    yield _Scenario("slow requests", "1m", tuple(
        _Level(f"{share:.0%} slow", slow_share=share, samples=10, firing=frozenset(
            ("10m", LATENCY_ALERT, field) for field, q in QUANTILES if share > 1 - q
        ))
        for share in _SLOW_SHARES
    ), (("3m", LATENCY_ALERT), ("10m", LATENCY_ALERT)))


def _steady_scenario() -> _Scenario:
    # 48 h healthy, then 30 h at 2x: at 60 h the 3-day window holds 0.8x, at 78 h 1.125x.
    steady = BURN_RATES[-1].alert
    days = _Level("2x burn after two healthy days", errors=((48, _HEALTHY), (30, _STEADY)),
                  firing=frozenset({("78h", steady, _BUDGET)}))
    healthy = _Level("healthy", errors=((78, _HEALTHY),))
    return _Scenario("a steady burn over days", "1h", (days, healthy),
                     (("60h", steady), ("78h", steady)))


def _groups(slos: SLOFile, source: str, scenario: _Scenario) -> Iterator[UnitTestGroup]:
    services = list(slos.services.items())
    count = len(scenario.levels)
    for k in range(count):
        levels = {name: scenario.levels[(i + k) % count] for i, (name, _) in enumerate(services)}
        series = [s for name, slo in services for s in _series(name, slo, levels[name])]
        tests = [
            AlertTest(eval_time=at, alertname=alert, exp_alerts=[
                ExpAlert(exp_labels=rule.labels | _series_labels(rule.labels["slo"]),
                         exp_annotations=rule.annotations)
                for name, slo in services for rule in service_alerts(name, slo, source)
                if rule.alert == alert and (at, alert, rule.labels["slo"]) in levels[name].firing
            ])
            for at, alert in scenario.checks
        ]
        first = scenario.levels[k % count].name
        yield UnitTestGroup(name=f"{scenario.name} ({first} first)", interval=scenario.interval,
                            input_series=series, alert_rule_test=tests)


def _series_labels(slo_field: str) -> dict[str, str]:
    """What the alerted series adds to the rule's labels: the latency series' quantile."""
    quantiles = dict(QUANTILES)
    return {"quantile": str(quantiles[slo_field])} if slo_field in quantiles else {}


def _series(service: str, slo: ServiceSLO, level: _Level) -> Iterator[Series]:
    base = f'service="{service}", revision="{service}-00001"'
    answers: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for samples, burn in level.errors:
        for key, count in _answers(burn, slo.max_error_ratio).items():
            answers.setdefault(key, []).append((samples, count))
    for (protocol, code), stretches in answers.items():
        if any(count for _, count in stretches):
            labels = f'{base}, protocol="{protocol}", code="{code}"'
            yield Series(series=f"{REQUESTS}{{{labels}}}", values=_counter(stretches))
    if level.slow_share is not None:
        yield from _bucket_series(base, slo, level.slow_share, level.samples)


def _answers(burn: float, budget: float) -> dict[tuple[str, str], int]:
    """One sample's requests by (protocol, code): server errors `burn` times the budget, half
    REST 503 and half gRPC UNAVAILABLE, the rest successes."""
    if burn == _CLIENT_ONLY:
        each = _REQUESTS // 2 // len(_CLIENT_ERRORS)
        counts = {key: each for key in _CLIENT_ERRORS}
    else:
        # Below 1 whatever the budget: at most halfway between the fast threshold and 1.
        share = min(burn * budget, (BURN_RATES[0].factor * budget + 1) / 2)
        errors = round(_REQUESTS * share)
        counts = dict(zip(_SERVER_ERRORS, (errors // 2, errors - errors // 2), strict=True))
    ok = _REQUESTS - sum(counts.values())
    return {**dict(zip(_OK, (ok // 2, ok - ok // 2), strict=True)), **counts}


def _bucket_series(base: str, slo: ServiceSLO, slow_share: float,
                   samples: int) -> Iterator[Series]:
    """Fast requests all in the highest bucket ending at or under the p50 target, slow ones
    all in the lowest bucket starting at or over the p99 target: whichever holds a quantile's
    rank, the estimate is at most the first's upper bound (so under every target) or above the
    second's lower bound (so over every target)."""
    bounds = (*LATENCY_BUCKETS, float("inf"))
    fast_le = max(b for b in bounds if b <= slo.p50_ms / 1000)
    slow_le = bounds[bounds.index(min(b for b in bounds if b >= slo.p99_ms / 1000)) + 1]
    slow = round(_OBSERVATIONS * slow_share)
    for bound in bounds:
        count = (_OBSERVATIONS - slow) * (bound >= fast_le) + slow * (bound >= slow_le)
        labels = f'{base}, protocol="v1", le="{floatToGoString(bound)}"'
        yield Series(series=f"{DURATION_BUCKETS}{{{labels}}}",
                     values=_counter([(samples, count)]))


def _counter(stretches: list[tuple[int, int]]) -> str:
    """A counter from 0 growing by `count` at each of `samples` samples, stretch by stretch,
    in promtool's expanding notation (`a+bxn` is a, a+b, ..., a+n*b)."""
    tokens, value = ["0"], 0
    for samples, count in stretches:
        tokens.append(f"{value + count}+{count}x{samples - 1}")
        value += samples * count
    return " ".join(tokens)
