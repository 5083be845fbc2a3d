"""Outlier ejection: a replica that keeps failing leaves rotation for a while, then is probed.

Modelled on Envoy's outlier detection by consecutive gateway failures. What this relies on:
the v3 API reference (envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/
outlier_detection.proto: `consecutive_gateway_failure`, 502/503/504 and connection errors,
default 5; `base_ejection_time`, "multiplied by the number of times the host has been
ejected", default 30 s; `max_ejection_time`, default 300 s; `max_ejection_percent`, default
10 % "but will eject at least one host") and the architecture overview's ejection algorithm
(envoyproxy.io/docs/envoy/v1.10.0/intro/arch_overview/outlier: an ejected host is not used
"unless the load balancer is in a panic scenario").
- What counts: a connect failure, a timeout, or a 502/503/504 answer. Any other answer (2xx,
  4xx, a model's own 500) resets the replica's count: it answered, so it is alive. A gRPC
  call that timed out on the client's own, shorter deadline counts for nothing either way.
- `consecutive_failures` in a row eject the replica: 3 by default, not Envoy's 5. Here a
  counted failure is most often a whole request timeout (60 s by default), revisions have
  one to four replicas, and the rule below keeps a false ejection from emptying a revision:
  each failure more is one more client waiting a minute for nothing.
- The back-off is Envoy's: `base_ejection_s` (10 s by default: Kubernetes' readiness period,
  as a probe is what returns the replica here) times the replica's ejections in a row,
  capped at `max_ejection_s` (Envoy's 300 s). Where Envoy then returns the host blindly, we
  probe it actively: GET `/v2/health/ready` within `probe_timeout_s` (1 s, Kubernetes'
  probe timeout). A 200 returns it; anything else ejects it again, one back-off longer. A
  replica that fails again within `max_ejection_s` of coming back resumes its count of
  ejections; after that it starts from one.
- The rule in place of `max_ejection_percent`: a replica is ejected only while another
  ready replica of its revision stays in rotation, so ejection never takes a revision's last
  replica. If the control plane's changes still leave every ready replica of a revision
  ejected, they all take traffic (Envoy's panic routing): better a slow replica than none.

Replicas are keyed by (service, http URL): the REST and gRPC endpoints of one replica leave
and return together. One `OutlierTracker` per routing table; everything runs on one event
loop: an ejection sets a timer there, and only the probe itself (at most `probe_timeout_s`)
is a task, so a gateway stopped mid back-off leaves nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from gateway.routing import Backend, ServiceRoute
    from gateway.settings import GatewaySettings

__all__ = [
    "GATEWAY_FAILURES",
    "READY_PATH",
    "Ejection",
    "OutlierPolicy",
    "OutlierTracker",
    "probe_ready",
]

log = logging.getLogger(__name__)

# Envoy's gateway errors; connect failures and timeouts reach the tracker as 503 and 504.
GATEWAY_FAILURES = frozenset({502, 503, 504})
READY_PATH = "/v2/health/ready"

_Key = tuple[str, str]  # (service, replica http URL)


@dataclass(frozen=True)
class OutlierPolicy:
    """When to eject a replica and for how long (from `GatewaySettings.outlier_*`)."""

    consecutive_failures: int  # 0: never eject
    base_ejection_s: float
    max_ejection_s: float
    probe_timeout_s: float

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> OutlierPolicy:
        return cls(
            settings.outlier_consecutive_failures,
            settings.outlier_base_ejection_s,
            settings.outlier_max_ejection_s,
            settings.outlier_probe_timeout_s,
        )

    def backoff_s(self, ejections: int) -> float:
        """How long the `ejections`-th ejection in a row lasts before the probe."""
        return min(self.base_ejection_s * ejections, self.max_ejection_s)


@dataclass(frozen=True)
class Ejection:
    """One replica out of rotation."""

    service: str
    revision: str
    url: str  # the replica's http URL
    grpc_target: str | None
    ejections: int  # in a row: 1, then one more per failed probe or quick relapse
    backoff_s: float
    until: float  # the tracker's clock: when the probe is due


class OutlierTracker:
    """Consecutive failures per replica, the replicas out of rotation, and their probes."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._failures: dict[_Key, int] = {}
        self._ejected: dict[_Key, Ejection] = {}
        self._returned: dict[_Key, tuple[int, float]] = {}  # ejections in a row, when back
        self._timers: dict[_Key, asyncio.TimerHandle] = {}
        self._probes: dict[_Key, asyncio.Task[None]] = {}
        self._totals: dict[tuple[str, str], int] = {}  # (service, revision): ejections ever

    # --- what the data plane reports ----------------------------------------------------

    def succeeded(self, service: str, url: str) -> None:
        """Replica `url` of `service` answered (anything but a gateway failure)."""
        if self._failures:
            self._failures.pop((service, url), None)

    def failed(self, route: ServiceRoute, backend: Backend, policy: OutlierPolicy) -> bool:
        """Count a gateway failure of `backend`; eject it at the threshold, unless it is the
        last replica of its revision in rotation. Call inside the running event loop (the
        probe starts there). Returns whether this failure ejected it."""
        if policy.consecutive_failures <= 0:
            return False
        key = (route.name, backend.http_url)
        if key in self._ejected:
            return False  # requests sent before the ejection: the probe decides now
        count = self._failures[key] = self._failures.get(key, 0) + 1
        if count < policy.consecutive_failures or not self._others_in_rotation(route, backend):
            return False
        ejections = 1
        returned = self._returned.pop(key, None)
        if returned is not None and self._clock() - returned[1] < policy.max_ejection_s:
            ejections = returned[0] + 1
        ejection = self._eject(key, backend, ejections, policy)
        revision = (route.name, backend.revision)
        self._totals[revision] = self._totals.get(revision, 0) + 1
        log.warning(
            "replica %s of %s ejected after %d failures in a row; probed in %g s",
            backend.http_url, backend.revision, count, ejection.backoff_s,
        )
        return True

    # --- what routing reads --------------------------------------------------------------

    def in_rotation(self, service: str, replicas: list[Backend]) -> list[Backend]:
        """`replicas` of one revision less the ejected ones; all of them if every one is
        ejected (panic: better a slow replica than none)."""
        if not self._ejected:
            return replicas
        kept = [b for b in replicas if (service, b.http_url) not in self._ejected]
        return kept or replicas

    def ejected(self, service: str, revision: str | None = None) -> list[Ejection]:
        """The replicas of `service` (of `revision`, if given) out of rotation now."""
        return [
            e for (s, _), e in self._ejected.items()
            if s == service and (revision is None or e.revision == revision)
        ]

    def describe(self, service: str, revision: str) -> list[dict[str, object]]:
        """The ejected replicas of a revision as the status document lists them."""
        now, wall = self._clock(), self._wall()
        return [
            {
                "url": e.url,
                "grpcTarget": e.grpc_target,
                "until": _rfc3339(wall + e.until - now),
                "ejections": e.ejections,
            }
            for e in self.ejected(service, revision)
        ]

    def totals(self) -> dict[tuple[str, str], int]:
        """Ejections so far per (service, revision); a probe that fails is not a new one."""
        return dict(self._totals)

    # --- lifecycle -----------------------------------------------------------------------

    def prune(self, service: str, urls: set[str]) -> None:
        """Forget the replicas of `service` not in `urls` (the route changed or is gone)."""
        for table in (self._failures, self._ejected, self._returned):
            for key in [k for k in table if k[0] == service and k[1] not in urls]:
                del table[key]
        for key in [k for k in self._timers if k[0] == service and k[1] not in urls]:
            self._timers.pop(key).cancel()
        for key in [k for k in self._probes if k[0] == service and k[1] not in urls]:
            self._probes.pop(key).cancel()
        if not urls:
            for revision in [r for r in self._totals if r[0] == service]:
                del self._totals[revision]

    async def aclose(self) -> None:
        """Stop every timer and probe (at shutdown); the ejections stay as they are."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        probes, self._probes = list(self._probes.values()), {}
        for task in probes:
            task.cancel()
        for task in probes:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- inside ------------------------------------------------------------------------

    def _others_in_rotation(self, route: ServiceRoute, backend: Backend) -> bool:
        return any(
            b.ready and b.revision == backend.revision and b.http_url != backend.http_url
            and (route.name, b.http_url) not in self._ejected
            for b in route.backends
        )

    def _eject(
        self, key: _Key, backend: Backend, ejections: int, policy: OutlierPolicy
    ) -> Ejection:
        backoff = policy.backoff_s(ejections)
        ejection = self._ejected[key] = Ejection(
            key[0], backend.revision, backend.http_url, backend.grpc_target, ejections,
            backoff, self._clock() + backoff,
        )
        self._schedule(key, ejection, policy)
        return ejection

    def _schedule(self, key: _Key, ejection: Ejection, policy: OutlierPolicy) -> None:
        self._timers[key] = asyncio.get_running_loop().call_later(
            ejection.backoff_s, self._start_probe, key, ejection, policy
        )

    def _start_probe(self, key: _Key, ejection: Ejection, policy: OutlierPolicy) -> None:
        self._timers.pop(key, None)
        self._probes[key] = asyncio.get_running_loop().create_task(
            self._probe(key, ejection, policy), name=f"outlier probe {ejection.url}"
        )

    async def _probe(self, key: _Key, ejection: Ejection, policy: OutlierPolicy) -> None:
        """Probe an ejected replica: return it, or eject it again for longer."""
        ready = await probe_ready(ejection.url, policy.probe_timeout_s)
        self._probes.pop(key, None)
        if self._ejected.get(key) is not ejection:
            return  # pruned while probing
        if ready:
            del self._ejected[key]
            self._failures.pop(key, None)
            self._returned[key] = (ejection.ejections, self._clock())
            log.warning("replica %s of %s is back in rotation", ejection.url, ejection.revision)
            return
        ejections = ejection.ejections + 1
        backoff = policy.backoff_s(ejections)
        again = self._ejected[key] = replace(
            ejection, ejections=ejections, backoff_s=backoff, until=self._clock() + backoff
        )
        self._schedule(key, again, policy)


async def probe_ready(http_url: str, timeout_s: float) -> bool:
    """Whether `GET {http_url}/v2/health/ready` answers 200 within `timeout_s`.

    A bare HTTP/1.1 request on a connection of its own (not the proxy's pool, whose
    connections to a stalled replica are the ones that hang): only the status line is read.
    """
    parts = urlsplit(http_url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    path = parts.path.rstrip("/") + READY_PATH
    request = f"GET {path} HTTP/1.1\r\nhost: {parts.netloc}\r\nconnection: close\r\n\r\n"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                parts.hostname, port, ssl=ssl.create_default_context() if secure else None
            )
            writer.write(request.encode("latin-1"))
            status_line = await reader.readline()
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
    fields: Sequence[bytes] = status_line.split()
    return len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1] == b"200"


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
