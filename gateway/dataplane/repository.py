"""Triton's model repository extension, as the platform maps it: the services are the models.

- **Index** (`POST /v2/repository/index`, gRPC `RepositoryIndex`): every service with its
  state, from the routing table: `READY` when a revision with traffic has a ready replica,
  else `UNAVAILABLE` with the reason (scaled to zero, starting, crashed). Served by both doors:
  on the inference port behind the API keys (it names the services, as the model lists do),
  on the control plane's behind its admin token.
- **Load / unload** are control actions: the control plane serves them
  (`gateway/controlplane/api/repository.py`, admin token) and maps them onto the local
  platform. The inference port answers them 403 / PERMISSION_DENIED saying where to send them:
  no inference key can change what runs.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.routing import RoutingTable, ServiceRoute
from servers.errors import InvalidInput, PermissionDenied
from servers.protocol.protowire import bytes_field

__all__ = [
    "CONTROL_ACTION",
    "encode_index_response",
    "index_ready_only",
    "refuse_control_action",
    "repository_index",
    "request_object",
    "service_state",
]

CONTROL_ACTION = (
    "repository load and unload are control actions: send them to the control plane "
    "(`modelserve up --admin-port`, default http://127.0.0.1:8082, same paths) with an "
    "admin token as 'Authorization: Bearer <token>'"
)


def service_state(route: ServiceRoute) -> tuple[str, str]:
    """A service's repository state and, when it is not `READY`, why."""
    routed = {t.revision for t in route.split() if t.percent > 0}
    if any(b.ready and b.revision in routed for b in route.backends):
        return "READY", ""
    if any(t.activate for t in route.split() if t.percent > 0):
        return "UNAVAILABLE", "scaled to zero: a request, or a repository load, wakes it"
    return "UNAVAILABLE", route.message or "no ready revision"


def repository_index(table: RoutingTable, ready_only: bool = False) -> list[dict[str, Any]]:
    """The index's entries, by service name: `{"name", "state"[, "reason"]}`."""
    entries: list[dict[str, Any]] = []
    for route in sorted(table.routes(), key=lambda r: r.name):
        state, reason = service_state(route)
        if ready_only and state != "READY":
            continue
        entry: dict[str, Any] = {"name": route.name, "state": state}
        if reason:
            entry["reason"] = reason
        entries.append(entry)
    return entries


def encode_index_response(entries: list[dict[str, Any]]) -> bytes:
    """Triton's `RepositoryIndexResponse` (models = 1; ModelIndex name 1, state 3, reason 4)."""
    out = b""
    for entry in entries:
        index = bytes_field(1, entry["name"].encode()) + bytes_field(3, entry["state"].encode())
        if entry.get("reason"):
            index += bytes_field(4, entry["reason"].encode())
        out += bytes_field(1, index)
    return out


def refuse_control_action() -> PermissionDenied:
    """What the inference port answers a load or unload."""
    return PermissionDenied(CONTROL_ACTION)


def request_object(body: bytes, what: str) -> dict[str, Any]:
    """A repository request's JSON object body (`{}` when empty), or InvalidInput naming
    `what` it is."""
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the {what} request is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"the {what} request must be a JSON object")
    return doc


def index_ready_only(body: bytes) -> bool:
    """The `ready` flag of an index request's body (`{"ready": true}`; empty: false)."""
    ready = request_object(body, "index").get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput(f"'ready' must be true or false, got {ready!r}")
    return ready
