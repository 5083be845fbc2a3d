"""From a request's model name (or Host header) to the replica that answers it.

Shared by the REST app and the gRPC proxy, so both protocols route, wait, retry and fail the
same way:
- `find_route`: the service, by Knative-style Host header first (a `latest-` / `prev-` host
  names one revision), else by the model name.
- `dispatch`: a revision by traffic percent, its least-loaded ready replica, and the request
  sent there. A revision with no ready replica that can be woken (scaled to zero, replicas
  starting) holds the request in the activator's bounded queue until one is ready (Knative's
  activator). A send that fails before any byte of an answer came (`BackendConnectFailed`)
  is retried on another replica of the same revision; once bytes came, the failure is the
  answer. Every send's outcome goes to the table's `OutlierTracker`: a replica that fails
  (connect failure, timeout, 502/503/504) `outlier_consecutive_failures` times in a row
  leaves rotation until a probe returns it (gateway/outliers.py), for REST and gRPC alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.outliers import GATEWAY_FAILURES, OutlierPolicy
from gateway.routing import Backend, Choice, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from servers.errors import (
    BackendConnectFailed,
    ModelNotFound,
    ModelServeError,
    NotReady,
)

__all__ = [
    "NO_REVISION",
    "UNKNOWN_SERVICE",
    "Attempt",
    "BackendConnectFailed",
    "NotAReplicaFailure",
    "dispatch",
    "find_route",
]

# The `x-modelserve-revision` value of answers given before a backend was chosen.
NO_REVISION = "none"
# The metrics' service label for names that match no service (bounded cardinality).
UNKNOWN_SERVICE = "unknown"

T = TypeVar("T")


class NotAReplicaFailure(Exception):
    """Mixed into an error a `send` raises that says nothing of the replica's health (the
    client's own deadline ran out first, the revision serves no gRPC): outlier ejection
    neither counts it nor resets the count on it."""


def find_route(
    table: RoutingTable, name: str, host: str | None = None
) -> tuple[ServiceRoute, str | None]:
    """The service a request is for, and the revision tag its host names (or None).

    A Knative host names the service; the path must then name that service's model too, as
    the service's own server would insist (a Triton behind it serves other models of its
    repository, which are no service of ours): NOT_FOUND otherwise, naming both."""
    if host:
        found = table.resolve_host(host)
        if found is not None:
            if found[0].name != name:
                raise ModelNotFound(
                    f"model '{name}' is not served at host {host.split(':')[0]!r}, which is "
                    f"service '{found[0].name}'"
                )
            return found
    route = table.get(name)
    if route is None:
        raise ModelNotFound(f"model '{name}' not found: no InferenceService of that name")
    return route, None


@dataclass
class Attempt:
    """Where a dispatched request went: read `revision` for the answer's header, also when
    `dispatch` raised."""

    revision: str = NO_REVISION
    retries: int = 0


def _not_ready(route: ServiceRoute, tag: str | None) -> NotReady:
    if tag is not None:
        return NotReady(f"service '{route.name}' has no ready revision tagged '{tag}'")
    return NotReady(route.message or f"service '{route.name}' has no ready revision")


async def _activate(
    table: RoutingTable, route: ServiceRoute, tag: str | None, choice: Choice,
    settings: GatewaySettings,
) -> Backend:
    """Hold the request until a replica of the chosen revision is ready (the activator).

    The request stays with its revision, as Knative's activator holds it for one revision,
    unless that revision loses its traffic (or can no longer be woken): then it is routed
    again."""
    revision = choice.traffic.revision
    stats = table.stats
    if stats.waiting(revision) >= settings.activator_queue:
        raise NotReady(
            f"revision '{revision}' is starting and its activator queue is full "
            f"({settings.activator_queue} requests waiting)"
        )
    stats.started(revision)
    try:
        async with asyncio.timeout(settings.activator_timeout_s):
            while True:
                # Routes are replaced whole: a route still in the table is unchanged since
                # the last look, and only then is there anything to wait for.
                if table.get(route.name) is route:
                    await table.changed()
                current = table.get(route.name)
                if current is None:
                    raise ModelNotFound(f"InferenceService '{route.name}' was deleted")
                route = current
                ready = table.pick_replica(current, revision, frozenset())
                if ready is not None:
                    return ready
                if any(t.revision == revision and t.activate for t in current.split()):
                    continue
                again = table.pick(current, tag)
                if again is None:
                    raise _not_ready(current, tag)
                if again.backend is not None:
                    return again.backend
                stats.finished(revision)  # held for another revision from here on
                revision = again.traffic.revision
                stats.started(revision)
    except TimeoutError:
        raise NotReady(
            f"no replica of revision '{revision}' became ready within "
            f"{settings.activator_timeout_s:g} s"
        ) from None
    finally:
        stats.finished(revision)


async def dispatch(
    table: RoutingTable,
    route: ServiceRoute,
    tag: str | None,
    settings: GatewaySettings,
    send: Callable[[Backend], Awaitable[T]],
    attempt: Attempt,
    prepare: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Send a request with `send` to a replica of `route`; see the module docstring.

    `prepare` runs once the revision is chosen, before any wait (REST reads the body there,
    so its errors name the revision and a held request holds all its bytes). Raises the
    shared error types (`NotReady` 503 when nothing can take it) or what `send` raised on
    the last replica tried. An answer's `status` attribute (REST's `UpstreamResponse`), or
    the status of the error `send` raised, is what the outlier tracker counts.
    """
    choice = table.pick(route, tag)
    if choice is None:
        raise _not_ready(route, tag)
    attempt.revision = choice.traffic.revision
    if prepare is not None:
        await prepare()
    backend = choice.backend
    if backend is None:
        backend = await _activate(table, route, tag, choice, settings)
        attempt.revision = backend.revision
    tried: set[str] = set()
    stats = table.stats
    while True:
        sent_to = backend
        stats.started(sent_to.revision, sent_to.http_url)
        try:
            answer = await send(sent_to)
        except BackendConnectFailed:
            _outcome(table, route, sent_to, BackendConnectFailed.http_status, settings)
            tried.add(sent_to.http_url)
            current = table.get(route.name) or route
            retry = table.pick_replica(current, sent_to.revision, frozenset(tried))
            if retry is None:
                raise
            backend = retry
            attempt.retries += 1
        except NotAReplicaFailure:
            raise
        except ModelServeError as exc:
            _outcome(table, route, sent_to, exc.http_status, settings)
            raise
        else:
            # REST answers carry the backend's status; a gRPC answer is a success (its
            # failures come as errors).
            _outcome(table, route, sent_to, getattr(answer, "status", 200), settings)
            return answer
        finally:
            stats.finished(sent_to.revision, sent_to.http_url)


def _outcome(
    table: RoutingTable, route: ServiceRoute, backend: Backend, status: int,
    settings: GatewaySettings,
) -> None:
    """Tell the outlier tracker how `backend` answered (`status`, or the error's status)."""
    if settings.outlier_consecutive_failures == 0:
        return
    if status in GATEWAY_FAILURES:
        current = table.get(route.name) or route
        table.outliers.failed(current, backend, OutlierPolicy.from_settings(settings))
    else:
        table.outliers.succeeded(route.name, backend.http_url)
