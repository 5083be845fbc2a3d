"""The gateway's Prometheus metrics, shared by the REST app and the gRPC proxy.

The gateway is one asyncio process, and every request to every service passes through it, so
these counters are exact whatever number of worker processes the servers behind it run. Stock
KServe counts inside each server worker, where a multi-process server reports only the worker
that happened to answer the scrape (kserve/kserve#2979).

Each `GatewayMetrics` has its own `CollectorRegistry` (never the process-global default one),
so tests and embedders can build several gateways in one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gateway.outliers import OutlierTracker

__all__ = ["CONTENT_TYPE_LATEST", "LATENCY_BUCKETS", "GatewayMetrics"]

# Inference latencies: sub-millisecond proxies up to the default 60 s request timeout. Public:
# the SLO alerts (gateway/slo_alerts) check each latency target against these bounds.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


_IN_FLIGHT = "modelserve_gateway_requests_in_flight"
_IN_FLIGHT_HELP = "Requests the gateway is forwarding right now, by service."
# Per revision, from the InferenceService documents the control plane writes into the routes.
_SCALE_GAUGES = (
    ("modelserve_revision_replicas", "Replicas of the revision that are ready.", "readyReplicas"),
    ("modelserve_revision_desired_replicas", "Replicas the autoscaler wants.", "desiredReplicas"),
    ("modelserve_revision_panic", "1 while the revision's autoscaler is in panic mode.", "panic"),
    ("modelserve_revision_traffic_percent", "The revision's share of traffic.", "percent"),
    ("modelserve_revision_requests_in_flight", "Requests in flight (or held) for the revision.",
     "inFlight"),
)

# What the scale gauges read: each service's status document (`ServiceRoute.status()`).
Documents = Callable[[], Iterable[Mapping[str, Any]]]

_EJECTIONS = "modelserve_gateway_outlier_ejections"
_EJECTIONS_HELP = "Replicas taken out of rotation by outlier ejection, by service and revision."
_EJECTED = "modelserve_gateway_outlier_ejected_replicas"
_EJECTED_HELP = "Replicas out of rotation now (ejected, waiting for their probe)."


class _InFlightGauge(Collector):
    """The in-flight gauge, read from the counts at scrape time (no per-request gauge calls)."""

    def __init__(self, counts: dict[str, int]) -> None:
        self._counts = counts

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(_IN_FLIGHT, _IN_FLIGHT_HELP, labels=["service"])]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(_IN_FLIGHT, _IN_FLIGHT_HELP, labels=["service"])
        for service, count in list(self._counts.items()):
            family.add_metric([service], count)
        return [family]


class _ScaleGauges(Collector):
    """Replicas, desired replicas, panic mode and traffic per revision, read at scrape time
    from the documents the control plane writes (the autoscaler's decisions)."""

    def __init__(self, documents: Documents) -> None:
        self._documents = documents

    def describe(self) -> Iterable[Metric]:
        labels = ["service", "revision"]
        return [GaugeMetricFamily(n, h, labels=labels) for n, h, _ in _SCALE_GAUGES]

    def collect(self) -> Iterable[Metric]:
        families = [
            (GaugeMetricFamily(n, h, labels=["service", "revision"]), key)
            for n, h, key in _SCALE_GAUGES
        ]
        for doc in self._documents():
            service = str(doc.get("metadata", {}).get("name", ""))
            revisions = doc.get("status", {}).get("modelserve", {}).get("revisions", [])
            for revision in revisions:
                for family, key in families:
                    if key in revision:  # routes without a control-plane document lack them
                        family.add_metric([service, str(revision["name"])], float(revision[key]))
        return [family for family, _ in families]


class _OutlierMetrics(Collector):
    """Outlier ejections so far and replicas ejected now, read from the tracker at scrape."""

    def __init__(self, outliers: OutlierTracker) -> None:
        self._outliers = outliers

    def describe(self) -> Iterable[Metric]:
        labels = ["service", "revision"]
        return [CounterMetricFamily(_EJECTIONS, _EJECTIONS_HELP, labels=labels),
                GaugeMetricFamily(_EJECTED, _EJECTED_HELP, labels=labels)]

    def collect(self) -> Iterable[Metric]:
        labels = ["service", "revision"]
        ejections = CounterMetricFamily(_EJECTIONS, _EJECTIONS_HELP, labels=labels)
        ejected = GaugeMetricFamily(_EJECTED, _EJECTED_HELP, labels=labels)
        for (service, revision), total in sorted(self._outliers.totals().items()):
            ejections.add_metric([service, revision], total)
            ejected.add_metric([service, revision], len(self._outliers.ejected(service, revision)))
        return [ejections, ejected]


class GatewayMetrics:
    """`modelserve_gateway_*` request metrics, and the in-flight counts the autoscaler reads;
    with `outliers` (the routing table's tracker), the outlier ejection metrics."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        documents: Documents | None = None,
        outliers: OutlierTracker | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modelserve_gateway_requests",
            "Requests answered by the gateway, by service, revision, protocol (v1, v2, grpc) "
            "and code.",
            ["service", "revision", "protocol", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "modelserve_gateway_request_duration_seconds",
            "Time from a request's arrival at the gateway to its answer.",
            ["service", "revision", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # The concurrency statistic the autoscaler reads, exported as the in-flight gauge.
        self._in_flight: dict[str, int] = {}
        self.registry.register(_InFlightGauge(self._in_flight))
        if documents is not None:
            self.registry.register(_ScaleGauges(documents))
        if outliers is not None:
            self.registry.register(_OutlierMetrics(outliers))
        # The labelled children, looked up once: `labels()` validates and locks on every call.
        self._counters: dict[tuple[str, str, str, str], Counter] = {}
        self._histograms: dict[tuple[str, str, str], Histogram] = {}

    def started(self, service: str) -> None:
        """A request for `service` entered the gateway."""
        self._in_flight[service] = self._in_flight.get(service, 0) + 1

    def finished(
        self, service: str, revision: str, protocol: str, code: str, seconds: float
    ) -> None:
        """A request started with `started(service)` was answered with `code` by `revision`
        (`none` when no revision was chosen)."""
        self._in_flight[service] -= 1
        self.observe(service, revision, protocol, code, seconds)

    def observe(
        self, service: str, revision: str, protocol: str, code: str, seconds: float
    ) -> None:
        """Count one answered request (also those that never reached a backend)."""
        key = (service, revision, protocol, code)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(*key)
        counter.inc()
        hkey = (service, revision, protocol)
        histogram = self._histograms.get(hkey)
        if histogram is None:
            histogram = self._histograms[hkey] = self.duration.labels(*hkey)
        histogram.observe(seconds)

    def count(self, **labels: str) -> float:
        """Requests answered with every label given (e.g. service=..., code=...), summed over
        the labels not given."""
        total = 0.0
        for metric in self.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def in_flight(self, service: str) -> int:
        """How many requests for `service` are being forwarded now."""
        return self._in_flight.get(service, 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
