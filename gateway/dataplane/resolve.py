"""From a request's model name (or Host header) to the backend that answers it.

Shared by the REST app and the gRPC proxy, so both protocols route, and fail, the same way.
"""

from __future__ import annotations

from gateway.routing import Backend, RoutingTable, ServiceRoute
from servers.errors import ModelNotFound, NotReady

__all__ = ["NO_REVISION", "UNKNOWN_SERVICE", "find_route", "select_backend"]

# The `x-modelserve-revision` value of answers given before a backend was chosen.
NO_REVISION = "none"
# The metrics' service label for names that match no service (bounded cardinality).
UNKNOWN_SERVICE = "unknown"


def find_route(table: RoutingTable, name: str, host: str | None = None) -> ServiceRoute:
    """The service a request is for: by Knative-style Host header first, else by model name."""
    route = table.resolve_host(host) if host else None
    if route is None:
        route = table.get(name)
    if route is None:
        raise ModelNotFound(f"model '{name}' not found: no InferenceService of that name")
    return route


def select_backend(table: RoutingTable, route: ServiceRoute) -> Backend:
    """A ready backend of `route`, chosen by traffic percent; `NotReady` when there is none."""
    backend = table.pick(route)
    if backend is None:
        raise NotReady(route.message or f"service '{route.name}' has no ready revision")
    return backend
