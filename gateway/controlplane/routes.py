"""A local service's route: what the data plane needs to serve it, from the platform's state.

The replicas that are not draining (newest revision first), the traffic split, why nothing
is ready if so, and the InferenceService document the control plane answers (`status.py`).
The platform writes it into the routing table whenever the state changes; the data plane
only reads it.
"""

from __future__ import annotations

import dataclasses

from gateway.controlplane.revisions import Service, entry_spec
from gateway.controlplane.runtimes import runs_tritonserver
from gateway.controlplane.status import not_ready_message, service_document
from gateway.routing import Backend, ServiceRoute, Traffic

__all__ = ["TAG_ROUTING", "service_route"]

TAG_ROUTING = "serving.kserve.io/enable-tag-routing"


def service_route(
    service: Service, domain: str, traffic: tuple[Traffic, ...] | None = None
) -> ServiceRoute:
    """`service`'s route under `domain`; `traffic` when the caller has just computed it."""
    if traffic is None:
        traffic = service.traffic()
    backends = tuple(
        Backend(
            revision=revision.name,
            http_url=replica.entry.plan.http_url,
            grpc_target=replica.entry.plan.grpc_target,
            ready=replica.ready,
        )
        for revision in reversed(service.revisions)
        for replica in revision.replicas
        if not replica.draining
    )
    routed = {t.revision for t in traffic if t.percent > 0}
    message = ""
    if not any(b.ready and b.revision in routed for b in backends):
        message = not_ready_message(service)
    route = ServiceRoute(
        name=service.name,
        namespace=service.isvc.namespace,
        backends=backends,
        domain=domain,
        message=message,
        component=service.entry,
        traffic=traffic,
        tag_routing=service.isvc.metadata.annotations.get(TAG_ROUTING, "").lower() == "true",
        screen_v2_bodies=any(runs_tritonserver(entry_spec(r.isvc)) for r in service.revisions),
    )
    return dataclasses.replace(route, document=service_document(service, route))
