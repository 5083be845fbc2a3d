"""The routing table: the control plane writes it, the data plane reads it.

One `ServiceRoute` per InferenceService. A route lists the replicas (`Backend`s) of every
revision of the service's entry component (the transformer when the service has one, else the
predictor) and the traffic split between those revisions, as Knative's Route does: a percent
per revision and, with tag routing, a `latest-` / `prev-` host per tagged revision.

Updates replace whole immutable routes, so a reader never sees a half-written one, and wake
the requests the activator holds (`changed()`). Within a revision a request goes to the ready
replica with the fewest requests in flight (`ConcurrencyStats`, written by the data plane),
among those the outlier tracker has not ejected (`OutlierTracker`, gateway/outliers.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.concurrency import ConcurrencyStats
from gateway.isvc_status import ComponentStatus, Condition, InferenceServiceStatus, TrafficTarget
from gateway.outliers import OutlierTracker

__all__ = ["Backend", "Choice", "RoutingTable", "ServiceRoute", "Traffic"]

TAGS = ("latest", "prev")


@dataclass(frozen=True)
class Backend:
    """One replica of one revision of a service's entry component."""

    revision: str
    http_url: str  # "http://127.0.0.1:40123"
    grpc_target: str | None  # "127.0.0.1:40124", None when the component serves no gRPC
    ready: bool = True
    # The revision's traffic share, for routes that give no `traffic` (one revision a backend).
    percent: int = 100


@dataclass(frozen=True)
class Traffic:
    """One entry of a route's traffic split (Knative's TrafficTarget)."""

    revision: str
    percent: int
    tag: str | None = None  # "latest" / "prev": reachable at `{tag}-{host}` with tag routing
    latest: bool = False
    # The revision can be woken (scaled from zero, or its replicas are starting): requests for
    # it wait in the activator instead of failing at once.
    activate: bool = False


@dataclass(frozen=True)
class Choice:
    """The revision a request goes to and the replica that takes it (None: none ready yet)."""

    traffic: Traffic
    backend: Backend | None


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
    # The split; empty: one entry per revision of `backends`, with the backends' percent.
    traffic: tuple[Traffic, ...] = ()
    tag_routing: bool = False  # serving.kserve.io/enable-tag-routing
    # The InferenceService document the control plane writes (metadata, spec, status).
    document: Mapping[str, Any] | None = None
    # The entry component is a tritonserver: the data plane refuses the v2 REST bodies it
    # mishandles before forwarding (gateway/dataplane/backend_errors.py v2_request_problem).
    screen_v2_bodies: bool = False

    def split(self) -> tuple[Traffic, ...]:
        """The traffic split, derived from the backends when the route gives none."""
        if self.traffic:
            return self.traffic
        seen: dict[str, Traffic] = {}
        for i, b in enumerate(self.backends):
            seen.setdefault(b.revision, Traffic(b.revision, b.percent, latest=i == 0))
        return tuple(seen.values())

    def status(
        self, stats: ConcurrencyStats | None = None, outliers: OutlierTracker | None = None
    ) -> dict[str, Any]:
        """The route as an InferenceService's `metadata` and `status`, the shape KServe's
        controller writes (so `modelserve status` prints local and cluster services alike);
        with `stats`, each revision's requests in flight now, and with `outliers` its ejected
        replicas (`status.modelserve.revisions[].inFlight` / `.ejected`)."""
        if self.document is not None:
            doc = dict(self.document)
            local = doc.get("status", {}).get("modelserve")
            if local is not None and (stats is not None or outliers is not None):
                revisions = [self._live(r, stats, outliers) for r in local["revisions"]]
                doc["status"] = {**doc["status"], "modelserve": {**local, "revisions": revisions}}
            return doc
        ready_revisions = [b.revision for b in self.backends if b.ready]
        component = ComponentStatus(
            latestReadyRevision=ready_revisions[0] if ready_revisions else None,
            traffic=[TrafficTarget(revisionName=t.revision, percent=t.percent,
                                   latestRevision=t.latest) for t in self.split()],
        )
        typed = InferenceServiceStatus(
            url=f"http://{self.host}",
            components={self.component: component},
            conditions=[Condition.of("Ready", self.ready, "NotReady",
                                     self.message or "no ready revision")],
        )
        status = typed.document()
        if outliers is not None:
            status["modelserve"] = {"revisions": [
                self._live({"name": t.revision}, stats, outliers) for t in self.split()
            ]}
        return {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "status": status,
        }

    def _live(
        self,
        revision: Mapping[str, Any],
        stats: ConcurrencyStats | None,
        outliers: OutlierTracker | None,
    ) -> dict[str, Any]:
        """A revision's status entry with what the data plane knows now added."""
        live = dict(revision)
        if stats is not None:
            live["inFlight"] = stats.in_flight(revision["name"])
        if outliers is not None:
            live["ejected"] = outliers.describe(self.name, revision["name"])
        return live

    @property
    def host(self) -> str:
        """The Knative-style host name: `{name}.{namespace}.{domain}`."""
        return f"{self.name}.{self.namespace}.{self.domain}"

    def tag_host(self, tag: str) -> str:
        """The host that reaches only the revision tagged `tag`: `{tag}-{host}`."""
        return f"{tag}-{self.host}"

    @property
    def ready(self) -> bool:
        """Some revision with traffic can take requests now (or the activator wakes one)."""
        split = self.split()
        routed = {t.revision for t in split if t.percent > 0}
        if any(t.activate for t in split if t.percent > 0):
            return True
        return any(b.ready and b.revision in routed for b in self.backends)


@dataclass
class RoutingTable:
    """Service routes by name and by host. Single-writer (the control plane's event loop)."""

    domain: str = "example.com"
    stats: ConcurrencyStats = field(default_factory=ConcurrencyStats)
    outliers: OutlierTracker = field(default_factory=OutlierTracker)
    _routes: dict[str, ServiceRoute] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=random.Random)
    # Host name -> (route, tag), rebuilt on the first lookup after a change (reads are per
    # request, writes per revision or replica change).
    _by_host: dict[str, tuple[ServiceRoute, str | None]] | None = field(
        default=None, repr=False, compare=False
    )
    _change: asyncio.Future[None] | None = field(default=None, repr=False, compare=False)

    def update(self, route: ServiceRoute) -> None:
        """Add or replace a service's route."""
        self._routes[route.name] = route
        self._by_host = None
        self.outliers.prune(route.name, {b.http_url for b in route.backends})
        self._notify()

    def remove(self, name: str) -> None:
        self._routes.pop(name, None)
        self._by_host = None
        self.outliers.prune(name, set())
        self._notify()

    def get(self, name: str) -> ServiceRoute | None:
        """The route of the service called `name` (the model name in v1/v2 paths)."""
        return self._routes.get(name)

    def resolve_host(self, host: str) -> tuple[ServiceRoute, str | None] | None:
        """The route (and the tag, for a `latest-` / `prev-` host) for a Host header
        `[{tag}-]{name}.{namespace}.{domain}[:port]`, if any."""
        hostname = (host.rsplit(":", 1)[0] if not host.startswith("[") else host).lower()
        by_host = self._by_host
        if by_host is None:
            by_host = {}
            for route in self._routes.values():
                by_host.setdefault(route.host, (route, None))  # the first of equal hosts
                if route.tag_routing:
                    for t in route.split():
                        if t.tag:
                            by_host.setdefault(route.tag_host(t.tag), (route, t.tag))
            self._by_host = by_host
        return by_host.get(hostname)

    def routes(self) -> Iterable[ServiceRoute]:
        return list(self._routes.values())

    def status(self, route: ServiceRoute) -> dict[str, Any]:
        """`route`'s status document with this table's live state: requests in flight and
        ejected replicas per revision."""
        return route.status(self.stats, self.outliers)

    def pick(
        self, route: ServiceRoute, tag: str | None = None, exclude: frozenset[str] = frozenset()
    ) -> Choice | None:
        """The revision (by traffic percent, or by `tag`) and its least-loaded ready replica
        in rotation and not in `exclude` (http URLs). None when no revision can take the
        request; a Choice without a backend when the revision's replicas are not ready but it
        can be woken."""
        split = route.split()
        ready: dict[str, list[Backend]] = {}
        for b in route.backends:
            if b.ready and b.http_url not in exclude:
                ready.setdefault(b.revision, []).append(b)
        if tag is not None:
            candidates = [t for t in split if t.tag == tag and (t.revision in ready or t.activate)]
        else:
            candidates = [
                t for t in split if t.percent > 0 and (t.revision in ready or t.activate)
            ]
        if not candidates:
            return None
        if len(candidates) == 1:
            chosen = candidates[0]
        else:
            weights = [max(t.percent, 0) for t in candidates]
            if sum(weights) == 0:
                chosen = candidates[-1]
            else:
                chosen = self._rng.choices(candidates, weights=weights, k=1)[0]
        replicas = ready.get(chosen.revision)
        if not replicas:
            return Choice(chosen, None)
        return Choice(chosen, self._least_loaded(self.outliers.in_rotation(route.name, replicas)))

    def pick_replica(
        self, route: ServiceRoute, revision: str, exclude: frozenset[str]
    ) -> Backend | None:
        """Another ready replica of `revision` (not in `exclude`), the least loaded of those
        in rotation first."""
        replicas = [
            b for b in route.backends
            if b.ready and b.revision == revision and b.http_url not in exclude
        ]
        if not replicas:
            return None
        return self._least_loaded(self.outliers.in_rotation(route.name, replicas))

    def _least_loaded(self, replicas: list[Backend]) -> Backend:
        if len(replicas) == 1:
            return replicas[0]
        load = self.stats.backend_in_flight
        start = self._rng.randrange(len(replicas))  # ties go round, not to the first
        best, best_load = replicas[start], load(replicas[start].http_url)
        for i in range(1, len(replicas)):
            b = replicas[(start + i) % len(replicas)]
            n = load(b.http_url)
            if n < best_load:
                best, best_load = b, n
        return best

    async def changed(self) -> None:
        """Wait for the next `update` or `remove` (the activator waits here)."""
        if self._change is None or self._change.done():
            self._change = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._change)

    def _notify(self) -> None:
        if self._change is not None and not self._change.done():
            self._change.set_result(None)
        self._change = None
