"""The local platform's state: each InferenceService, its revisions and their replicas.

What Knative keeps as Configuration, Revisions and Pods, as plain objects the platform
(`platform.py`) changes and the status (`status.py`) reads: a `Service` holds its applied
document and revisions, and computes its traffic as KServe's reconciler does; a `Revision`
its KPA and replicas; a `Replica` the supervised processes of one instance of the pipeline.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

from gateway.controlplane.autoscaler import KPA, AutoscalerSettings, Decision
from gateway.controlplane.manifests import ComponentSpec, InferenceService
from gateway.controlplane.supervisor import ComponentState, Supervisor
from gateway.routing import Traffic

__all__ = ["Replica", "Revision", "Service", "entry_spec", "revision_template", "wakeable"]


class Replica:
    """One instance of a revision's pipeline: its predictor and, if any, its transformer."""

    def __init__(self, number: int, supervisors: list[Supervisor], entry: str) -> None:
        self.number = number
        self.supervisors = supervisors
        self.entry = next(s for s in supervisors if s.plan.component == entry)
        self.draining = False

    @property
    def ready(self) -> bool:
        return not self.draining and all(s.ready for s in self.supervisors)

    @property
    def crashed(self) -> bool:
        """A component exited after it was ready (the supervisor is restarting it)."""
        return any(s.state is ComponentState.RESTARTING for s in self.supervisors)

    @property
    def down_message(self) -> str:
        down = [s for s in self.supervisors if not s.ready]
        return down[0].message if down else ""

    async def start(self) -> None:
        for component in ("predictor", "transformer"):
            await asyncio.gather(
                *(s.start() for s in self.supervisors if s.plan.component == component)
            )

    async def stop(self) -> None:
        # Entry first, so nothing is sent to a predictor that is going away.
        for supervisor in reversed(self.supervisors):
            await supervisor.stop()


@dataclass
class Revision:
    """One revision: a spec snapshot, its replicas and its autoscaler."""

    name: str
    number: int
    isvc: InferenceService
    settings: AutoscalerSettings
    kpa: KPA
    replicas: list[Replica] = field(default_factory=list)
    desired: int = 1
    decision: Decision | None = None
    ever_ready: bool = False
    failure: str = ""  # why the revision's first replica did not start
    retired: bool = False
    next_replica: int = 1
    last_start_failure: float = -math.inf

    @property
    def live(self) -> list[Replica]:
        return [r for r in self.replicas if not r.draining]

    @property
    def ready_count(self) -> int:
        return sum(1 for r in self.replicas if r.ready)


class Service:
    """One InferenceService: the applied document, its revisions and who is rolled out."""

    def __init__(self, isvc: InferenceService, doc: dict[str, Any]) -> None:
        self.isvc = isvc
        self.doc = doc
        self.generation = 1
        self.revisions: list[Revision] = []
        self.latest_rolled_out: str | None = None
        self.previous_rolled_out: str | None = None
        self.deleted = False  # set by `delete`: late start-ups stop, nothing is routed

    @property
    def name(self) -> str:
        return self.isvc.name

    @property
    def entry(self) -> str:
        return self.isvc.entry

    @property
    def latest(self) -> Revision:
        return self.revisions[-1]

    @property
    def latest_ready(self) -> Revision | None:
        return next((r for r in reversed(self.revisions) if r.ever_ready), None)

    def supervisors(self) -> list[Supervisor]:
        """Every supervised process of every replica of every revision."""
        return [s for r in self.revisions for replica in r.replicas for s in replica.supervisors]

    def revision(self, name: str | None) -> Revision | None:
        return next((r for r in self.revisions if r.name == name), None)

    def canary_percent(self) -> int | None:
        """The entry component's canaryTrafficPercent, else the predictor's (locally one
        split covers the pipeline)."""
        for spec in (entry_spec(self.isvc), self.isvc.spec.predictor):
            if spec.canaryTrafficPercent is not None:
                return spec.canaryTrafficPercent
        return None

    def traffic(self) -> tuple[Traffic, ...]:
        """KServe's split (module docstring); also records a finished rollout."""
        ready = self.latest_ready
        if ready is None:
            return ()
        canary = self.canary_percent()
        rolled = self.revision(self.latest_rolled_out)
        if canary is not None and rolled is not None and rolled is not ready:
            return (
                Traffic(ready.name, canary, "latest", latest=True, activate=wakeable(ready)),
                Traffic(rolled.name, 100 - canary, "prev", activate=wakeable(rolled)),
            )
        if self.latest_rolled_out != ready.name:
            self.previous_rolled_out = self.latest_rolled_out
            self.latest_rolled_out = ready.name
        return (Traffic(ready.name, 100, "latest", latest=True, activate=wakeable(ready)),)


def wakeable(revision: Revision) -> bool:
    """Requests for `revision` may wait for a replica: it served before, none of its replicas
    is ready, and none crashed (it is at zero, or scaling from zero)."""
    return (
        revision.ever_ready
        and not revision.retired
        and revision.ready_count == 0
        and not any(r.crashed for r in revision.replicas)
    )


def revision_template(isvc: InferenceService) -> Any:
    """What makes a new revision: the spec without canaryTrafficPercent, and the autoscaling
    and other annotations (Knative's revision template holds both)."""
    spec = isvc.spec.model_dump(mode="json", exclude_none=True)
    for component in spec.values():
        if isinstance(component, dict):
            component.pop("canaryTrafficPercent", None)
    return spec, dict(isvc.metadata.annotations)


def entry_spec(isvc: InferenceService) -> ComponentSpec:
    return next(spec for name, spec in isvc.components() if name == isvc.entry)


