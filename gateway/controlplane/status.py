"""The InferenceService document the local platform answers for a service: its spec, and a
`status` in the shape KServe's controller writes (url, traffic per revision, the
latestCreated/Ready/Rolledout revisions, the Ready, LatestDeploymentReady and RoutesReady
conditions), plus `status.modelserve.revisions`: replicas, panic, each replica's processes,
and why a revision failed (its component's last lines of output).
"""

from __future__ import annotations

from typing import Any

from gateway.controlplane.components import revision_name
from gateway.controlplane.revisions import Replica, Service
from gateway.isvc_status import (
    Addressable,
    ComponentStatus,
    Condition,
    InferenceServiceStatus,
    TrafficTarget,
)
from gateway.routing import ServiceRoute

__all__ = ["failure_message", "not_ready_message", "replica_details", "service_document",
           "service_status"]

FAILURE_LINES = 12  # of a failed component's last output, kept in its revision's status


def not_ready_message(service: Service) -> str:
    """Why a service takes no traffic: a replica's trouble, or its revision's failure."""
    for revision in reversed(service.revisions):
        for replica in revision.replicas:
            if replica.down_message:
                return replica.down_message
        if revision.failure:
            return revision.failure
    return f"service '{service.name}' has no ready revision"

def service_document(service: Service, route: ServiceRoute) -> dict[str, Any]:
    """The service as an InferenceService with the `status` KServe's controller writes, plus
    `status.modelserve.revisions` (replicas, panic, each replica's processes)."""
    return {
        "apiVersion": service.doc.get("apiVersion"),
        "kind": "InferenceService",
        "metadata": {**service.doc.get("metadata", {}), "generation": service.generation},
        "spec": service.doc.get("spec", {}),
        "status": service_status(service, route).document(),
    }


def service_status(service: Service, route: ServiceRoute) -> InferenceServiceStatus:
    """The typed `status` of a local service."""
    latest = service.latest
    conditions = [
        Condition.of("Ready", route.ready, "NotReady", route.message),
        Condition.of(
            "LatestDeploymentReady", latest.ever_ready,
            "RevisionFailed" if latest.failure else "RevisionStarting",
            latest.failure or f"revision {latest.name} is starting",
        ),
        Condition.of(
            "RoutesReady", bool(route.traffic), "NoReadyRevision",
            "no revision has become ready yet",
        ),
    ]
    percent = {t.revision: t.percent for t in route.traffic}
    revisions = [
        {
            "name": r.name,
            "component": service.entry,
            "percent": percent.get(r.name, 0),
            "ready": r.ready_count > 0,
            "replicas": len(r.live),
            "readyReplicas": r.ready_count,
            "desiredReplicas": r.desired if not r.retired else 0,
            "panic": bool(r.decision and r.decision.panic),
            "inFlight": 0,
            "retired": r.retired,
            "message": r.failure,
            "replicaDetails": [replica_details(replica) for replica in r.replicas],
        }
        for r in reversed(service.revisions)
    ]
    url = f"http://{route.host}"
    return InferenceServiceStatus(
        url=url,
        address=Addressable(url=url),
        # The entry component (the one taking the traffic) first: clients that show one
        # component, or patch one by default, take the first.
        components={
            name: _component_status(service, route, name)
            for name in sorted((n for n, _ in service.isvc.components()),
                               key=lambda n: n != service.entry)
        },
        conditions=conditions,
        observedGeneration=service.generation,
        modelserve={"revisions": revisions},
    )


def _component_status(service: Service, route: ServiceRoute, component: str) -> ComponentStatus:
    """`status.components.<component>` as KServe writes it. Locally a revision runs every
    component; each component's revisions are named after it (Knative's names)."""

    def named(revision: str | None) -> str | None:
        if revision is None:
            return None
        found = service.revision(revision)
        return revision_name(service.name, component, found.number) if found else revision

    ready = service.latest_ready
    return ComponentStatus(
        latestCreatedRevision=named(service.latest.name),
        latestReadyRevision=named(ready.name) if ready is not None else None,
        latestRolledoutRevision=named(service.latest_rolled_out or None),
        previousRolledoutRevision=named(service.previous_rolled_out or None),
        traffic=[
            TrafficTarget(
                revisionName=named(t.revision) or t.revision,
                percent=t.percent,
                latestRevision=t.latest,
                tag=t.tag or None,
                url=f"http://{route.tag_host(t.tag)}" if t.tag and route.tag_routing else None,
            )
            for t in route.traffic
        ],
        url=f"http://{route.host}",
    )


def replica_details(replica: Replica) -> dict[str, Any]:
    """One replica's processes, as `kubectl get pods` would show them."""
    return {
        "number": replica.number,
        "ready": replica.ready,
        "draining": replica.draining,
        "url": replica.entry.plan.http_url,
        "grpcTarget": replica.entry.plan.grpc_target,
        "processes": [
            {
                "name": s.name,
                "component": s.plan.component,
                "pid": s.pid,
                "state": s.state.value,
                "restarts": s.restarts,
                "message": s.message,
            }
            for s in replica.supervisors
        ],
    }


def failure_message(exc: BaseException) -> str:
    """Why a replica did not start, for its revision's status: the first line and the
    component's last lines of output (a StartupError's message holds up to 40)."""
    lines = str(exc).splitlines()
    if not lines:
        return repr(exc)
    return "\n".join([lines[0], *lines[1:][-FAILURE_LINES:]])
