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
  answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.routing import Backend, Choice, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from servers.errors import BackendUnavailable, ModelNotFound, NotReady

__all__ = [
    "NO_REVISION",
    "UNKNOWN_SERVICE",
    "Attempt",
    "BackendConnectFailed",
    "dispatch",
    "find_route",
]

# The `x-modelserve-revision` value of answers given before a backend was chosen.
NO_REVISION = "none"
# The metrics' service label for names that match no service (bounded cardinality).
UNKNOWN_SERVICE = "unknown"

T = TypeVar("T")


class BackendConnectFailed(BackendUnavailable):
    """No byte of an answer came: the connection was refused, not accepted in time, or lost
    before the backend answered. What a `send` raises to have `dispatch` try another replica."""


def find_route(
    table: RoutingTable, name: str, host: str | None = None
) -> tuple[ServiceRoute, str | None]:
    """The service a request is for, and the revision tag its host names (or None)."""
    if host:
        found = table.resolve_host(host)
        if found is not None:
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
    the last replica tried.
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
            return await send(sent_to)
        except BackendConnectFailed:
            tried.add(sent_to.http_url)
            current = table.get(route.name) or route
            retry = table.pick_replica(current, sent_to.revision, frozenset(tried))
            if retry is None:
                raise
            backend = retry
            attempt.retries += 1
        finally:
            stats.finished(sent_to.revision, sent_to.http_url)
