"""An InferenceService's `status`, typed: the shape KServe's controller writes (and Knative's
`TrafficTarget` and `Condition` inside it), shared by everything that writes or reads one: the
local platform's status (`gateway/controlplane/status.py`), the routing table's fallback for
routes without a control plane, the reconciler that writes it to an API server, and the CLI's
`status` printing of local and cluster services alike.

Fields a cluster's controller writes that we do not use are kept (`extra="allow"`), so a status
read from a cluster round-trips; `modelserve` holds the local platform's own details
(revisions, replicas, processes), which KServe's CRD prunes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Addressable",
    "ComponentStatus",
    "Condition",
    "InferenceServiceStatus",
    "TrafficTarget",
]


class _Status(BaseModel):
    model_config = ConfigDict(extra="allow")

    def document(self) -> dict[str, Any]:
        """As JSON, without the fields that are not set (as the controller writes it)."""
        return self.model_dump(mode="json", exclude_none=True)


class Condition(_Status):
    """A Knative condition: `Ready`, `LatestDeploymentReady`, `RoutesReady`, ..."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, kind: str, ok: bool, reason: str, message: str) -> Condition:
        """True, or False with why."""
        if ok:
            return cls(type=kind, status="True")
        return cls(type=kind, status="False", reason=reason, message=message)


class TrafficTarget(_Status):
    """One entry of `status.components.<c>.traffic`."""

    revisionName: str
    percent: int = 0
    latestRevision: bool = False
    tag: str | None = None
    url: str | None = None


class ComponentStatus(_Status):
    """`status.components.predictor` (or `.transformer`)."""

    latestCreatedRevision: str | None = None
    latestReadyRevision: str | None = None
    latestRolledoutRevision: str | None = None
    previousRolledoutRevision: str | None = None
    traffic: list[TrafficTarget] = Field(default_factory=list)
    url: str | None = None


class Addressable(_Status):
    url: str | None = None


class InferenceServiceStatus(_Status):
    """`status` of an InferenceService."""

    url: str | None = None
    address: Addressable | None = None
    components: dict[str, ComponentStatus] = Field(default_factory=dict)
    conditions: list[Condition] = Field(default_factory=list)
    observedGeneration: int | None = None
    modelserve: dict[str, Any] | None = None

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def with_condition(self, condition: Condition) -> InferenceServiceStatus:
        """A copy with `condition` in place of the one of its type (first when new)."""
        kept = [c for c in self.conditions if c.type != condition.type]
        return self.model_copy(update={"conditions": [condition, *kept]})
