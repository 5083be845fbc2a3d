"""The gateway's Prometheus metrics, shared by the REST app and the gRPC proxy.

The gateway is one asyncio process, and every request to every service passes through it, so
these counters are exact whatever number of worker processes the servers behind it run. Stock
KServe counts inside each server worker, where a multi-process server reports only the worker
that happened to answer the scrape (kserve/kserve#2979).

Each `GatewayMetrics` has its own `CollectorRegistry` (never the process-global default one),
so tests and embedders can build several gateways in one process.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]

# Inference latencies: sub-millisecond proxies up to the default 60 s request timeout.
_BUCKETS = (
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


class GatewayMetrics:
    """`modelserve_gateway_*` request metrics, and the in-flight counts the autoscaler reads."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modelserve_gateway_requests",
            "Requests answered by the gateway, by service, protocol (v1, v2, grpc) and code.",
            ["service", "protocol", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "modelserve_gateway_request_duration_seconds",
            "Time from a request's arrival at the gateway to its answer.",
            ["service", "protocol"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # The concurrency statistic the autoscaler reads, exported as the in-flight gauge.
        self._in_flight: dict[str, int] = {}
        self.registry.register(_InFlightGauge(self._in_flight))
        # The labelled children, looked up once: `labels()` validates and locks on every call.
        self._counters: dict[tuple[str, str, str], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def started(self, service: str) -> None:
        """A request for `service` entered the gateway."""
        self._in_flight[service] = self._in_flight.get(service, 0) + 1

    def finished(self, service: str, protocol: str, code: str, seconds: float) -> None:
        """A request started with `started(service)` was answered with `code`."""
        self._in_flight[service] -= 1
        self.observe(service, protocol, code, seconds)

    def observe(self, service: str, protocol: str, code: str, seconds: float) -> None:
        """Count one answered request (also those that never reached a backend)."""
        key = (service, protocol, code)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(service, protocol, code)
        counter.inc()
        histogram = self._histograms.get((service, protocol))
        if histogram is None:
            histogram = self.duration.labels(service, protocol)
            self._histograms[(service, protocol)] = histogram
        histogram.observe(seconds)

    def in_flight(self, service: str) -> int:
        """How many requests for `service` are being forwarded now."""
        return self._in_flight.get(service, 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
