"""The statistics extension through the gateway: a service's counters, summed over replicas.

Every server behind the gateway counts for itself (Triton natively, ours in
`servers/statistics.py`), per process. A service's statistics are those of every ready replica
of the revisions that take its traffic (or of the one revision a `latest-`/`prev-` host names),
fetched from each replica's `GET /v2/models/M/stats` at once and summed entry by entry (by
model name and version): counts and nanoseconds add up, `last_inference` is the latest,
`batch_stats` add up per batch size. REST answers that JSON and gRPC `ModelStatistics` its
protobuf encoding, so both say the same. A replica that does not answer is left out (its
counters went with it); when none answers, the first failure is the answer. A request for
statistics never wakes a service scaled to zero: there is nothing to count there (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import orjson

from gateway.dataplane.backend_errors import client_error_status
from gateway.dataplane.proxy import HttpForwarder
from gateway.dataplane.resolve import find_route
from gateway.routing import Backend, RoutingTable, ServiceRoute
from servers.errors import (
    ModelServeError,
    NotReady,
    UpstreamError,
    grpc_code_for_http,
)

__all__ = ["merge_statistics", "service_statistics"]

_ACCEPT = [(b"accept", b"application/json")]


def _counted_replicas(route: ServiceRoute, tag: str | None) -> list[Backend]:
    if tag is not None:
        revisions = {t.revision for t in route.split() if t.tag == tag}
    else:
        revisions = {t.revision for t in route.split() if t.percent > 0}
    return [b for b in route.backends if b.ready and b.revision in revisions]


def _stats_path(name: str, version: str | None) -> bytes:
    path = f"/v2/models/{quote(name, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return (path + "/stats").encode()


async def _replica_statistics(
    forwarder: HttpForwarder, backend: Backend, name: str, version: str | None
) -> dict[str, Any]:
    answer = await forwarder.forward(
        backend.http_url, "GET", _stats_path(name, version), _ACCEPT, None
    )
    status = client_error_status(answer.status, answer.content)
    try:
        doc = orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        doc = None
    if status != 200:
        message = doc.get("error") if isinstance(doc, dict) else None
        raise UpstreamError(
            str(message or f"backend answered {status}"), status, grpc_code_for_http(status)
        )
    if not isinstance(doc, dict) or not isinstance(doc.get("model_stats"), list):
        raise UpstreamError(f"backend {backend.http_url} sent no model_stats", 502,
                            grpc_code_for_http(502))
    return doc


async def _route_statistics(
    forwarder: HttpForwarder, route: ServiceRoute, tag: str | None, name: str,
    version: str | None,
) -> dict[str, Any]:
    replicas = _counted_replicas(route, tag)
    if not replicas:
        raise NotReady(
            f"service '{route.name}' has no ready replica to count from (statistics are kept "
            "by each replica and start afresh when one starts)"
        )
    answers = await asyncio.gather(
        *(_replica_statistics(forwarder, b, name, version) for b in replicas),
        return_exceptions=True,
    )
    docs = [a for a in answers if isinstance(a, dict)]
    if not docs:
        failure = answers[0]
        assert isinstance(failure, BaseException)
        raise failure
    return merge_statistics(docs)


async def service_statistics(
    table: RoutingTable, forwarder: HttpForwarder, name: str, version: str | None,
    host: str | None = None,
) -> dict[str, Any]:
    """`{"model_stats": [...]}` for service `name` (at `version`, when given), summed over
    its counted replicas; with an empty `name`, of every service that has a ready replica."""
    if name:
        route, tag = find_route(table, name, host)
        return await _route_statistics(forwarder, route, tag, name, version)
    stats: list[dict[str, Any]] = []
    for route in sorted(table.routes(), key=lambda r: r.name):
        try:
            doc = await _route_statistics(forwarder, route, None, route.name, None)
        except ModelServeError:
            continue  # at zero, or not answering: nothing to count
        stats.extend(doc["model_stats"])
    return {"model_stats": stats}


def _add(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Add `other`'s counters to `into`'s, key by key (nested durations too)."""
    for key, value in other.items():
        current = into.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and isinstance(current, int | float):
            into[key] = max(current, value) if key == "last_inference" else current + value
        elif isinstance(value, dict) and isinstance(current, dict):
            _add(current, value)
        elif key not in into:
            into[key] = value


def _batches(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """`batch_stats` entries added up per batch size."""
    merged: dict[Any, dict[str, Any]] = {}
    for entry in entries:
        size = entry.get("batch_size")
        found = merged.get(size)
        if found is None:
            merged[size] = orjson.loads(orjson.dumps(entry))  # a deep copy
        else:
            _add(found, {k: v for k, v in entry.items() if k != "batch_size"})
    return sorted(merged.values(), key=lambda b: b.get("batch_size", 0))


def _merge_entry(into: dict[str, Any], other: dict[str, Any]) -> None:
    batches = _batches([*into.get("batch_stats", ()), *other.get("batch_stats", ())])
    _add(into, {k: v for k, v in other.items() if k not in ("batch_stats", "memory_usage")})
    into["batch_stats"] = batches


def merge_statistics(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several replicas' statistics answers summed into one, entry by (name, version)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        for entry in doc.get("model_stats", ()):
            if not isinstance(entry, dict):
                continue
            key = (str(entry.get("name", "")), str(entry.get("version", "")))
            found = merged.get(key)
            if found is None:
                merged[key] = orjson.loads(orjson.dumps(entry))
            else:
                _merge_entry(found, entry)
    return {"model_stats": list(merged.values())}
