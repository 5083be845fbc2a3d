"""The concurrency statistics: the data plane writes them, the autoscaler reads them.

Per revision, the requests in flight and their time-weighted average since the last read, the
metric Knative's queue-proxy reports (average concurrency over the reporting period, not a
snapshot: a 1 s bucket with one 100 ms request in it reads 0.1). Per replica (backend URL),
the requests in flight, for least-in-flight balancing. Requests the activator holds for a
revision with no ready replica count as in flight for that revision, so the autoscaler sees
the demand; their arrival also sets `demand`, which wakes the autoscaler at once (Knative's
activator "pokes" the autoscaler to scale from zero without waiting for its next tick).

Everything runs on one event loop; nothing here locks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ConcurrencyStats"]


@dataclass
class _Average:
    in_flight: int = 0
    since: float = 0.0  # the last change or read
    area: float = 0.0  # in-flight x seconds since the last read
    read_at: float = 0.0


class ConcurrencyStats:
    """In-flight requests per revision (with time-weighted averages) and per replica."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._revisions: dict[str, _Average] = {}
        self._backends: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._demand: asyncio.Event | None = None

    def started(self, revision: str, backend: str | None = None) -> None:
        """A request went to `revision` (replica `backend`, None while the activator holds it)."""
        self._move(revision, +1)
        if backend is not None:
            self._backends[backend] = self._backends.get(backend, 0) + 1
        else:
            self._waiting[revision] = self._waiting.get(revision, 0) + 1
            if self._demand is not None:
                self._demand.set()

    def finished(self, revision: str, backend: str | None = None) -> None:
        """The request counted by `started(revision, backend)` is done."""
        self._move(revision, -1)
        if backend is not None:
            left = self._backends.get(backend, 0) - 1
            if left > 0:
                self._backends[backend] = left
            else:
                self._backends.pop(backend, None)
        else:
            left = self._waiting.get(revision, 0) - 1
            if left > 0:
                self._waiting[revision] = left
            else:
                self._waiting.pop(revision, None)

    def in_flight(self, revision: str) -> int:
        """Requests for `revision` being forwarded or held right now."""
        average = self._revisions.get(revision)
        return average.in_flight if average else 0

    def waiting(self, revision: str) -> int:
        """Requests the activator holds for `revision`."""
        return self._waiting.get(revision, 0)

    def backend_in_flight(self, backend: str) -> int:
        """Requests in flight to one replica (its http URL)."""
        return self._backends.get(backend, 0)

    def average(self, revision: str) -> float:
        """The time-weighted average concurrency of `revision` since the previous call."""
        now = self._clock()
        average = self._revisions.get(revision)
        if average is None:
            self._revisions[revision] = _Average(since=now, read_at=now)
            return 0.0
        average.area += average.in_flight * (now - average.since)
        span = now - average.read_at
        value = average.area / span if span > 0 else float(average.in_flight)
        average.area, average.since, average.read_at = 0.0, now, now
        return value

    def forget(self, revision: str) -> None:
        """Drop a revision that no longer exists (its requests are all done)."""
        average = self._revisions.get(revision)
        if average is not None and average.in_flight == 0:
            del self._revisions[revision]

    def demand(self) -> asyncio.Event:
        """An event set whenever the activator starts holding a request (the autoscaler clears
        it after each look)."""
        if self._demand is None:
            self._demand = asyncio.Event()
        return self._demand

    def _move(self, revision: str, delta: int) -> None:
        now = self._clock()
        average = self._revisions.get(revision)
        if average is None:
            average = self._revisions[revision] = _Average(since=now, read_at=now)
        average.area += average.in_flight * (now - average.since)
        average.since = now
        average.in_flight += delta
