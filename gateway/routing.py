"""The routing table: the control plane writes it, the data plane reads it.

One `ServiceRoute` per InferenceService. A route lists the backends (one per revision) that
serve the service's entry component: the transformer when the service has one, else the
predictor. Traffic is split between backends by `percent` (issue 5 grows canaries on this).
Updates replace whole immutable routes, so a reader never sees a half-written one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Backend", "RoutingTable", "ServiceRoute"]


@dataclass(frozen=True)
class Backend:
    """One running revision of a service's entry component."""

    revision: str
    http_url: str  # "http://127.0.0.1:40123"
    grpc_target: str | None  # "127.0.0.1:40124", None when the component serves no gRPC
    ready: bool = True
    percent: int = 100


@dataclass(frozen=True)
class ServiceRoute:
    """How to reach one InferenceService."""

    name: str
    namespace: str = "default"
    backends: tuple[Backend, ...] = ()
    domain: str = "example.com"
    # Why the service is not ready, shown to clients in 503s and by `status`.
    message: str = ""
    component: str = "predictor"  # the entry component the backends run

    def status(self) -> dict[str, object]:
        """The route as an InferenceService's `metadata` and `status`, the shape KServe's
        controller writes (so `modelserve status` prints local and cluster services alike)."""
        ready = self.ready
        traffic = [
            {"revisionName": b.revision, "percent": b.percent, "latestRevision": i == 0}
            for i, b in enumerate(self.backends)
        ]
        ready_revisions = [b.revision for b in self.backends if b.ready]
        component: dict[str, object] = {"traffic": traffic}
        if ready_revisions:
            component["latestReadyRevision"] = ready_revisions[0]
        condition: dict[str, str] = {"type": "Ready", "status": "True" if ready else "False"}
        if not ready:
            condition.update(reason="NotReady", message=self.message or "no ready revision")
        return {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "status": {
                "url": f"http://{self.host}",
                "components": {self.component: component},
                "conditions": [condition],
            },
        }

    @property
    def host(self) -> str:
        """The Knative-style host name: `{name}.{namespace}.{domain}`."""
        return f"{self.name}.{self.namespace}.{self.domain}"

    @property
    def ready(self) -> bool:
        return any(b.ready for b in self.backends)


@dataclass
class RoutingTable:
    """Service routes by name and by host. Single-writer (the control plane's event loop)."""

    domain: str = "example.com"
    _routes: dict[str, ServiceRoute] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=random.Random)
    # Host name -> route, rebuilt on the first lookup after a change (reads are per request,
    # writes per revision change).
    _by_host: dict[str, ServiceRoute] | None = field(default=None, repr=False, compare=False)

    def update(self, route: ServiceRoute) -> None:
        """Add or replace a service's route."""
        self._routes[route.name] = route
        self._by_host = None

    def remove(self, name: str) -> None:
        self._routes.pop(name, None)
        self._by_host = None

    def get(self, name: str) -> ServiceRoute | None:
        """The route of the service called `name` (the model name in v1/v2 paths)."""
        return self._routes.get(name)

    def resolve_host(self, host: str) -> ServiceRoute | None:
        """The route for a Host header `{name}.{namespace}.{domain}[:port]`, if any."""
        hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host
        by_host = self._by_host
        if by_host is None:
            by_host = {}
            for route in self._routes.values():
                by_host.setdefault(route.host, route)  # the first of equal hosts, as before
            self._by_host = by_host
        return by_host.get(hostname)

    def routes(self) -> Iterable[ServiceRoute]:
        return list(self._routes.values())

    def pick(self, route: ServiceRoute) -> Backend | None:
        """A ready backend, chosen by traffic percent; None when none is ready."""
        ready = [b for b in route.backends if b.ready]
        if not ready:
            return None
        if len(ready) == 1:
            return ready[0]
        weights = [max(b.percent, 0) for b in ready]
        if sum(weights) == 0:
            return ready[-1]
        return self._rng.choices(ready, weights=weights, k=1)[0]
