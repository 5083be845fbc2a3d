"""A short memory of the gateway's own Prometheus metrics, for the dashboard's numbers.

`MetricsHistory` reads the gateway's registry every `interval_s` (1 s by default) and keeps the
cumulative counts of the last `retention_s` (15 min) in a ring. Everything the dashboard shows
comes from differences between two of those snapshots, the way Prometheus' `rate()` and
`histogram_quantile()` work on scraped counters: requests per second, p50/p95/p99 latency
interpolated inside the histogram's buckets, and error ratios, per service and per revision.

Only the metric names and labels are relied on (`modelserve_gateway_requests_total{service,
protocol, code}` and the `..._request_duration_seconds` histogram, each with or without a
`revision` label), never the metrics class itself.

Errors: `error_ratio` counts server errors only, i.e. REST 5xx and the gRPC codes that mean
the same (UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, DATA_LOSS, UNIMPLEMENTED), over
every answered request. Client errors (4xx and the other non-OK gRPC codes: bad input, a
missing API key, a rate limit, a client that went away) are the caller's doing and are counted
apart, as `client_error_ratio`, so that a client sending garbage does not read as an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.settings import DashboardSettings

__all__ = [
    "MetricsHistory",
    "Snapshot",
    "WindowStats",
    "classify_code",
    "histogram_quantile",
    "take_snapshot",
]

_log = logging.getLogger(__name__)

REQUESTS = "modelserve_gateway_requests_total"
BUCKETS = "modelserve_gateway_request_duration_seconds_bucket"
QUANTILES = (0.5, 0.95, 0.99)

_GRPC_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "UNIMPLEMENTED"}
)

# (service, revision); the revision is "" when the metrics carry no revision label.
Key = tuple[str, str]
# Cumulative (answered, client errors, server errors).
Counts = tuple[float, float, float]
# Cumulative bucket counts by upper bound (math.inf last), summed over protocols.
Buckets = dict[float, float]


class _Registry(Protocol):
    def collect(self) -> Iterable[Any]: ...


def classify_code(code: str) -> str:
    """ "ok", "client" or "server" for a `code` label: an HTTP status or a gRPC code name."""
    if code.isdigit():
        status = int(code)
        return "server" if status >= 500 else "client" if status >= 400 else "ok"
    if code == "OK":
        return "ok"
    return "server" if code in _GRPC_SERVER_ERRORS else "client"


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative `buckets` [(upper bound, count), ... (inf, total)], sorted
    by bound, interpolated linearly inside the bucket that holds it, as Prometheus'
    `histogram_quantile` does; None without observations. A quantile that falls in the +Inf
    bucket is the largest finite bound (nothing better is known)."""
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    counts = list(_monotonic(count for _, count in buckets))
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = bisect_left(counts, rank)
    if index >= len(buckets) - 1:
        return buckets[-2][0]
    end = buckets[index][0]
    if index == 0:
        if end <= 0:
            return end
        start, below = 0.0, 0.0
    else:
        start, below = buckets[index - 1][0], counts[index - 1]
    inside = counts[index] - below
    if inside <= 0:
        return start
    return start + (end - start) * (rank - below) / inside


def _monotonic(values: Iterable[float]) -> Iterable[float]:
    # Buckets are scraped one by one while requests land: a later one may lag an earlier one.
    highest = 0.0
    for value in values:
        highest = max(highest, value)
        yield highest


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cumulative request counts and latency buckets at time `t` (the history's clock)."""

    t: float
    requests: dict[Key, Counts]
    buckets: dict[Key, Buckets]


def take_snapshot(registry: _Registry, t: float) -> Snapshot:
    """Read the request counter and the duration histogram out of `registry`."""
    # Only those two collectors (a prometheus_client registry can restrict itself): not the
    # gauges, whose collectors may build documents, nor the samples nobody reads here.
    restrict = getattr(registry, "restricted_registry", None)
    source = restrict([REQUESTS, BUCKETS]) if restrict is not None else registry
    requests: dict[Key, list[float]] = {}
    buckets: dict[Key, Buckets] = {}
    for family in source.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name == REQUESTS:
                key = (labels.get("service", ""), labels.get("revision", ""))
                counts = requests.setdefault(key, [0.0, 0.0, 0.0])
                counts[0] += sample.value
                kind = classify_code(labels.get("code", ""))
                if kind != "ok":
                    counts[1 if kind == "client" else 2] += sample.value
            elif sample.name == BUCKETS:
                key = (labels.get("service", ""), labels.get("revision", ""))
                bound = float(labels.get("le", "+Inf"))
                into = buckets.setdefault(key, {})
                into[bound] = into.get(bound, 0.0) + sample.value
    frozen = {key: (c[0], c[1], c[2]) for key, c in requests.items()}
    return Snapshot(t, frozen, buckets)


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What happened between two snapshots `seconds` apart (latencies in seconds)."""

    seconds: float
    requests: float
    client_errors: float
    server_errors: float
    quantiles: tuple[float | None, ...]  # QUANTILES, in order

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of the API: req/s, latencies in ms, ratios (null without data)."""
        answered = self.requests
        p50, p95, p99 = (None if q is None else round(q * 1000, 3) for q in self.quantiles)
        return {
            "seconds": round(self.seconds, 3),
            "requests": int(round(answered)),
            "rps": round(answered / self.seconds, 3) if self.seconds > 0 else None,
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "server_errors": int(round(self.server_errors)),
            "client_errors": int(round(self.client_errors)),
            "error_ratio": round(self.server_errors / answered, 6) if answered else None,
            "client_error_ratio": round(self.client_errors / answered, 6) if answered else None,
        }


def _matches(key: Key, service: str, revision: str | None) -> bool:
    return key[0] == service and (revision is None or key[1] == revision)


def _counts(snapshot: Snapshot, service: str, revision: str | None) -> Counts:
    total = client = server = 0.0
    for key, (answered, client_errors, server_errors) in snapshot.requests.items():
        if _matches(key, service, revision):
            total, client, server = total + answered, client + client_errors, server + server_errors
    return total, client, server


def _buckets(snapshot: Snapshot, service: str, revision: str | None) -> Buckets:
    summed: Buckets = {}
    for key, buckets in snapshot.buckets.items():
        if _matches(key, service, revision):
            for bound, count in buckets.items():
                summed[bound] = summed.get(bound, 0.0) + count
    return summed


def _delta(new: float, old: float) -> float:
    # A counter that went down was reset (Prometheus' rule): all of it is new.
    return new if new < old else new - old


def window_stats(old: Snapshot, new: Snapshot, service: str, revision: str | None) -> WindowStats:
    """The stats of `service` (one `revision` of it, or all when None) from `old` to `new`."""
    n_total, n_client, n_server = _counts(new, service, revision)
    o_total, o_client, o_server = _counts(old, service, revision)
    new_buckets, old_buckets = _buckets(new, service, revision), _buckets(old, service, revision)
    if any(count < old_buckets.get(bound, 0.0) for bound, count in new_buckets.items()):
        old_buckets = {}  # reset
    delta = sorted((b, c - old_buckets.get(b, 0.0)) for b, c in new_buckets.items())
    return WindowStats(
        seconds=new.t - old.t,
        requests=_delta(n_total, o_total),
        client_errors=_delta(n_client, o_client),
        server_errors=_delta(n_server, o_server),
        quantiles=tuple(histogram_quantile(q, delta) for q in QUANTILES),
    )


class MetricsHistory:
    """A ring of registry snapshots, one every `interval_s`, kept for `retention_s`.

    `clock` (monotonic seconds) is injectable so tests feed snapshots without sleeping: call
    `sample()` yourself. In the gateway, `start()` runs the sampler as a task of the event
    loop, reading the registry in a worker thread (the app's lifespan starts and stops it)."""

    def __init__(
        self,
        registry: _Registry,
        interval_s: float = 1.0,
        retention_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0 or retention_s < interval_s:
            raise ValueError("need 0 < interval_s <= retention_s")
        self.registry = registry
        self.interval_s = interval_s
        self.retention_s = retention_s
        self.clock = clock
        self._ring: deque[Snapshot] = deque(maxlen=math.ceil(retention_s / interval_s) + 1)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, registry: _Registry, settings: DashboardSettings) -> MetricsHistory:
        """The history `settings` ask for (`sample_interval_s`, `retention_s`)."""
        return cls(registry, settings.sample_interval_s, settings.retention_s)

    def sample(self) -> Snapshot:
        """Take one snapshot now and keep it (the oldest falls out of a full ring)."""
        snapshot = take_snapshot(self.registry, self.clock())
        self._ring.append(snapshot)
        return snapshot

    def snapshots(self) -> list[Snapshot]:
        """The kept snapshots, oldest first."""
        return list(self._ring)

    def services(self) -> list[str]:
        """Every service the latest snapshot has counts for."""
        if not self._ring:
            return []
        return sorted({service for service, _ in self._ring[-1].requests})

    def revisions(self, service: str) -> list[str]:
        """The revisions of `service` the latest snapshot has counts for."""
        if not self._ring:
            return []
        return sorted({r for s, r in self._ring[-1].requests if s == service and r})

    def summary(
        self, service: str, window_s: float, revision: str | None = None
    ) -> WindowStats | None:
        """The stats of the last `window_s` seconds (or as much as is kept); None before two
        snapshots exist."""
        ring = self.snapshots()
        if len(ring) < 2:
            return None
        latest = ring[-1]
        times = [s.t for s in ring]
        base = ring[min(bisect_left(times, latest.t - window_s), len(ring) - 2)]
        return window_stats(base, latest, service, revision)

    def series(
        self, service: str, window_s: float, step_s: float, revisions: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        """Points every `step_s` over the last `window_s`: the stats of each step, `t` in
        seconds relative to the latest snapshot (<= 0), and req/s of each of `revisions`."""
        ring = self.snapshots()
        if len(ring) < 2:
            return []
        step = max(step_s, self.interval_s)
        times = [s.t for s in ring]
        latest = ring[-1].t
        picked: list[int] = []
        for k in range(int(window_s // step), -1, -1):
            index = bisect_right(times, latest - k * step + 1e-9) - 1
            if index >= 0 and (not picked or index > picked[-1]):
                picked.append(index)
        points = []
        for before, after in zip(picked, picked[1:], strict=False):
            old, new = ring[before], ring[after]
            point = window_stats(old, new, service, None).as_dict()
            point["t"] = round(new.t - latest, 3)
            point["revisions"] = {
                name: window_stats(old, new, service, name).as_dict()["rps"] for name in revisions
            }
            points.append(point)
        return points

    def start(self) -> None:
        """Sample every `interval_s` in the running event loop until `stop()`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dashboard")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                # Off the event loop: reading a registry of many series takes milliseconds
                # (the metrics are thread-safe; only their two collectors are read).
                snapshot = await asyncio.to_thread(take_snapshot, self.registry, self.clock())
                self._ring.append(snapshot)
            except Exception:  # a bad scrape must not end the sampling for good
                _log.exception("dashboard: reading the gateway's metrics failed")
            # Keep to the grid: a late wake-up shortens the next sleep instead of drifting.
            next_at = max(next_at + self.interval_s, loop.time())
            await asyncio.sleep(next_at - loop.time())
