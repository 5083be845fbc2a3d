"""The gateway's Prometheus metrics, shared by the REST app and the gRPC proxy.

The gateway is one asyncio process, and every request to every service passes through it, so
these counters are exact whatever number of worker processes the servers behind it run. Stock
KServe counts inside each server worker, where a multi-process server reports only the worker
that happened to answer the scrape (kserve/kserve#2979).

Each `GatewayMetrics` has its own `CollectorRegistry` (never the process-global default one),
so tests and embedders can build several gateways in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
        self.in_flight_gauge = Gauge(
            "modelserve_gateway_requests_in_flight",
            "Requests the gateway is forwarding right now, by service.",
            ["service"],
            registry=self.registry,
        )
        # A plain mirror of the gauge: the concurrency statistic the autoscaler reads.
        self._in_flight: dict[str, int] = {}

    def started(self, service: str) -> None:
        """A request for `service` entered the gateway."""
        self._in_flight[service] = self._in_flight.get(service, 0) + 1
        self.in_flight_gauge.labels(service).inc()

    def finished(self, service: str, protocol: str, code: str, seconds: float) -> None:
        """A request started with `started(service)` was answered with `code`."""
        self._in_flight[service] -= 1
        self.in_flight_gauge.labels(service).dec()
        self.observe(service, protocol, code, seconds)

    def observe(self, service: str, protocol: str, code: str, seconds: float) -> None:
        """Count one answered request (also those that never reached a backend)."""
        self.requests.labels(service, protocol, code).inc()
        self.duration.labels(service, protocol).observe(seconds)

    def in_flight(self, service: str) -> int:
        """How many requests for `service` are being forwarded now."""
        return self._in_flight.get(service, 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
