"""The local platform: every InferenceService as revisions of supervised local processes.

What KServe's controller, Knative and the kubelet do in a cluster, reduced to one machine:
- **Revisions.** Every change to a service's spec (but `canaryTrafficPercent`, which only
  moves traffic) creates a new revision, as Knative does for a changed revision template.
  Locally a revision is the whole pipeline (a transformer replica calls its own predictor), so
  it is named after the entry component: `iris-classifier-transformer-00002`.
- **Traffic**, as KServe's reconciler sets it: the latest ready revision takes everything,
  unless `canaryTrafficPercent: N` is set while an earlier revision is rolled out: then N%
  goes to the latest (tag `latest`) and the rest to the previously rolled-out one (tag `prev`).
  Removing the field promotes; `0` rolls back. A revision that is not ready yet gets nothing;
  one that no traffic entry names is drained and stopped.
- **Load and unload** (Triton's repository extension, mapped): `load` wakes a service at zero
  and waits until it is ready; `unload` scales a `minReplicas: 0` service to zero and clears
  its autoscaler's history, so that it stays there until a request or a `load` comes.
  Neither runs anything that is not already a service's.
- **Policy.** Every plan passes the launch and storage policy (`policy.py`) before anything
  starts, for `up`'s own manifests and the rollout API's alike.

The platform is the rollout API over four rooms, each with one job: the state (services,
revisions, replicas, their traffic: `revisions.py`), the replica lifecycle (plan, start,
scale, drain: `replicas.py`), the autoscaler loop (`scaler.py`, each revision's KPA fed by
the data plane, woken by the activator) and the route the data plane reads (`routes.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gateway.controlplane.autoscaler import KPA
from gateway.controlplane.components import LaunchPlan, PlanError, revision_name
from gateway.controlplane.manifests import (
    InferenceService,
    ManifestError,
    Problem,
    load_manifests,
    parse_service,
)
from gateway.controlplane.patches import PatchError, apply_patch
from gateway.controlplane.policy import LaunchPolicy, PolicyRefused
from gateway.controlplane.replicas import (
    ModelDirMissing,
    ReplicaLifecycle,
    check_model_dirs,
    write_line,
)
from gateway.controlplane.revisions import Revision, Service, revision_template
from gateway.controlplane.routes import service_route
from gateway.controlplane.scaler import ScalerLoop, kpa_settings
from gateway.controlplane.status import not_ready_message
from gateway.controlplane.supervisor import Supervisor
from gateway.routing import RoutingTable
from gateway.settings import AutoscalerDefaults
from servers.errors import (
    ModelNotFound,
    NotReady,
    PermissionDenied,
    UnprocessableEntity,
    UnsupportedMediaType,
)

__all__ = [
    "AutoscalerDefaults",
    "ComponentStatus",
    "LocalPlatform",
    "ModelDirMissing",
    "PlanError",
    "ServiceStatus",
    "StartError",
]

LOAD_TIMEOUT_S = 300.0  # how long a repository `load` waits for a woken service


class StartError(RuntimeError):
    """One or more services failed to start; every component has been stopped."""


@dataclass(frozen=True)
class ComponentStatus:
    """One supervised process, as `up` prints it."""

    name: str
    revision: str
    state: str
    pid: int | None
    http_url: str
    grpc_target: str
    restarts: int
    message: str


@dataclass(frozen=True)
class ServiceStatus:
    """One service and its processes, as `up` prints it."""

    name: str
    namespace: str
    host: str
    ready: bool
    message: str
    components: tuple[ComponentStatus, ...]


class LocalPlatform:
    """Runs InferenceServices locally and writes their routes into `table`."""

    def __init__(
        self,
        manifest_paths: list[Path],
        models_root: Path,
        table: RoutingTable,
        *,
        output: TextIO | None = None,
        services: list[InferenceService] | None = None,
        autoscaler: AutoscalerDefaults | None = None,
        policy: LaunchPolicy | None = None,
        platform_env: dict[str, str] | None = None,
        **supervisor_options: Any,
    ) -> None:
        self.manifest_paths = manifest_paths
        self.models_root = models_root
        # What specs may run and read (the same for `up`'s manifests and the rollout API),
        # and the environment every component gets last (loopback, limits).
        self.policy = policy or LaunchPolicy(models_roots=(models_root,))
        self.platform_env = {"MODELSERVE_BIND_ADDRESS": "127.0.0.1", **(platform_env or {})}
        self.table = table
        self.output = output if output is not None else sys.stdout
        self.autoscaler = autoscaler or AutoscalerDefaults(enabled=False)
        self._isvcs = services
        self._services: dict[str, Service] = {}
        self._clock: Callable[[], float] = time.monotonic
        self._replicas = ReplicaLifecycle(
            models_root,
            self.policy,
            self.platform_env,
            table.stats,
            self._refresh,
            self._write,
            drain_timeout_s=self.autoscaler.drain_timeout_s,
            output=self.output,
            clock=self._clock,
            **supervisor_options,
        )
        self._scaler = ScalerLoop(
            self.autoscaler,
            table.stats,
            self._replicas,
            self._services.values,
            self._refresh,
            self._write,
            clock=self._clock,
        )
        self._loop_task: asyncio.Task[None] | None = None

    # --- planning and start-up -----------------------------------------------------------

    def plan(self) -> list[tuple[InferenceService, list[LaunchPlan]]]:
        """Load the manifests and plan every component; raises before anything runs.

        Raises ManifestError, PlanError, PolicyRefused or ModelDirMissing (naming every
        missing directory).
        """
        isvcs = self._isvcs if self._isvcs is not None else load_manifests(self.manifest_paths)
        for isvc in isvcs:
            kpa_settings(isvc, self.autoscaler)
        # Every service planned first, so that one error names every missing directory.
        planned = [(isvc, self._replicas.plan(isvc, 1, 1, check_dirs=False)) for isvc in isvcs]
        check_model_dirs([p for _, plans in planned for p in plans], self.models_root)
        return planned

    async def start(self) -> None:
        """Start every service's first revision; routes follow readiness. Then autoscale."""
        planned = self.plan()
        starting: list[asyncio.Task[None]] = []
        for isvc, plans in planned:
            service = Service(isvc, isvc.model_dump(mode="json", exclude_none=True))
            self._services[isvc.name] = service
            revision = self._new_revision(service, isvc)
            replica = self._replicas.add(service, revision, plans)
            starting.append(asyncio.create_task(self._replicas.start(service, revision, replica)))
            self._refresh(service)
        results = await asyncio.gather(*starting, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            for error in errors:
                if not isinstance(error, Exception):
                    raise error
            raise StartError("\n".join(str(e) for e in errors))
        self._loop_task = asyncio.create_task(self._scaler.run(), name="autoscaler")

    async def stop(self) -> None:
        """Stop every component of every service (SIGTERM, then SIGKILL after the grace)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        await self._replicas.stop(list(self._services.values()))

    # --- the rollout API -----------------------------------------------------------------

    def document(self, name: str) -> dict[str, Any] | None:
        """The applied InferenceService document of `name` (without status), or None."""
        service = self._services.get(name)
        return copy.deepcopy(service.doc) if service else None

    def names(self) -> list[str]:
        """The services served, in the order they were applied."""
        return list(self._services)

    def status_document(self, name: str) -> dict[str, Any] | None:
        """`name`'s InferenceService document with its live status, or None."""
        route = self.table.get(name) if name in self._services else None
        return self.table.status(route) if route is not None else None

    async def apply(self, data: Any, where: str = "request body") -> tuple[dict[str, Any], bool]:
        """Create or update a service from an InferenceService document, as `kubectl apply`.

        Returns (its status document, created). A changed spec starts a new revision in the
        background; traffic moves to it once it is ready. Raises `UnprocessableEntity` (422,
        naming the field and the problem) or `PermissionDenied` (403: the launch or storage
        policy refuses it) before anything changes.
        """
        try:
            return self._apply(data, where)
        except PolicyRefused as exc:
            raise PermissionDenied(str(exc)) from exc
        except (ManifestError, PlanError, ModelDirMissing) as exc:
            raise UnprocessableEntity(str(exc)) from exc

    async def delete(self, name: str) -> None:
        """Remove a service (`kubectl delete`): its route goes at once, then every replica of
        every revision is stopped. Raises `ModelNotFound` (404)."""
        service = self._services.pop(name, None)
        if service is None:
            raise ModelNotFound(f"no InferenceService named '{name}'")
        service.deleted = True
        self.table.remove(name)
        for revision in service.revisions:
            self.table.stats.forget(revision.name)
        await self._replicas.stop_replicas([service])
        self._write(f"service {name} deleted")

    async def load(self, name: str, timeout_s: float = LOAD_TIMEOUT_S) -> None:
        """Wake service `name`'s revisions with traffic if they are at zero, and wait until
        one is ready. Raises `ModelNotFound` (404), `NotReady` (503: it cannot start, or did
        not within `timeout_s`)."""
        service = self._service(name)
        routed = self._routed(service)
        if not routed:
            raise NotReady(not_ready_message(service))
        for revision in routed:
            if not revision.live:
                self._write(f"repository load: waking {revision.name}")
                # As the activator's demand does: a stable window before any scale-down.
                revision.kpa.record(self._clock(), 1.0)
                wanted = max(1, revision.settings.min_replicas)
                await self._replicas.scale(service, revision, wanted)
        deadline = self._clock() + timeout_s
        while not any(r.ready_count for r in self._routed(service)):
            if service.deleted:
                raise ModelNotFound(f"InferenceService '{name}' was deleted")
            if self._clock() >= deadline:
                raise NotReady(f"service '{name}' was not ready within {timeout_s:g} s: "
                               f"{not_ready_message(service)}")
            await asyncio.sleep(0.05)

    async def unload(self, name: str) -> None:
        """Scale service `name` to zero: only a service whose revisions allow it
        (`minReplicas: 0`). Raises `ModelNotFound` (404), `UnprocessableEntity` (422)."""
        service = self._service(name)
        routed = self._routed(service)
        kept = sorted({r.settings.min_replicas for r in routed if r.settings.min_replicas > 0})
        if kept:
            raise UnprocessableEntity(
                f"service '{name}' keeps minReplicas: {kept[0]}, so it cannot be unloaded; "
                "set minReplicas: 0 to let it scale to zero, or delete it"
            )
        for revision in routed:
            if revision.live:
                self._write(f"repository unload: {revision.name} to zero")
            revision.kpa.forget()
            await self._replicas.scale(service, revision, 0)

    def _service(self, name: str) -> Service:
        service = self._services.get(name)
        if service is None:
            raise ModelNotFound(f"no InferenceService named '{name}'")
        return service

    @staticmethod
    def _routed(service: Service) -> list[Revision]:
        """The revisions that take some of the service's traffic."""
        named = [service.revision(t.revision) for t in service.traffic() if t.percent > 0]
        return [r for r in named if r is not None]

    async def patch(self, name: str, content_type: str, body: Any) -> dict[str, Any]:
        """Apply a merge or JSON patch to the service's document (`kubectl patch`).

        Raises `ModelNotFound` (404), `UnsupportedMediaType` (415) or `UnprocessableEntity`
        (422: the patch does not apply, or the result is not a valid service).
        """
        service = self._services.get(name)
        if service is None:
            raise ModelNotFound(f"no InferenceService named '{name}'")
        try:
            patched = apply_patch(copy.deepcopy(service.doc), content_type, body)
        except PatchError as exc:
            if "content type" in str(exc):
                raise UnsupportedMediaType(str(exc)) from exc
            raise UnprocessableEntity(f"the patch does not apply: {exc}") from exc
        meta = patched.get("metadata")
        if not isinstance(meta, dict) or meta.get("name") != name:
            raise UnprocessableEntity("metadata.name cannot be changed by a patch")
        status, _ = await self.apply(patched, where=f"patch of {name}")
        return status

    def _apply(self, data: Any, where: str) -> tuple[dict[str, Any], bool]:
        isvc = parse_service(data, where)
        kpa_settings(isvc, self.autoscaler)  # a bad annotation fails here, before anything changes
        service = self._services.get(isvc.name)
        if service is not None and service.isvc.namespace != isvc.namespace:
            raise ManifestError([Problem(where, "metadata.namespace", (
                f"service {isvc.name!r} exists in namespace {service.isvc.namespace!r}"
            ))])
        doc = isvc.model_dump(mode="json", exclude_none=True)
        created = service is None
        if service is None:
            plans = self._replicas.plan(isvc, 1, 1)
            service = self._services[isvc.name] = Service(isvc, doc)
            revision = self._new_revision(service, isvc)
            self._replicas.launch(service, revision, plans)
        else:
            changed = revision_template(isvc) != revision_template(service.isvc)
            plans = self._replicas.plan(isvc, len(service.revisions) + 1, 1) if changed else []
            if doc != service.doc:
                service.generation += 1
            service.isvc, service.doc = isvc, doc
            if changed:
                revision = self._new_revision(service, isvc)
                self._replicas.launch(service, revision, plans)
        self._refresh(service)
        route = self.table.get(isvc.name)
        assert route is not None
        return self.table.status(route), created

    # --- status ----------------------------------------------------------------------------

    def status(self) -> list[ServiceStatus]:
        """Per-service state, in manifest order."""
        out = []
        for service in self._services.values():
            route = self.table.get(service.name) or service_route(service, self.table.domain)
            out.append(
                ServiceStatus(
                    name=route.name,
                    namespace=route.namespace,
                    host=route.host,
                    ready=route.ready,
                    message=route.message,
                    components=tuple(
                        ComponentStatus(
                            name=s.name,
                            revision=s.plan.revision,
                            state=s.state.value,
                            pid=s.pid,
                            http_url=s.plan.http_url,
                            grpc_target=s.plan.grpc_target,
                            restarts=s.restarts,
                            message=s.message,
                        )
                        for s in service.supervisors()
                    ),
                )
            )
        return out

    def supervisors(self) -> list[Supervisor]:
        """Every supervised process of every replica, for the dashboard and the metrics."""
        return [s for service in self._services.values() for s in service.supervisors()]

    # --- revisions, routes --------------------------------------------------------------

    def _new_revision(self, service: Service, isvc: InferenceService) -> Revision:
        number = len(service.revisions) + 1
        settings = kpa_settings(isvc, self.autoscaler)
        revision = Revision(
            name=revision_name(isvc.name, isvc.entry, number),
            number=number,
            isvc=isvc,
            settings=settings,
            kpa=KPA(settings),
            desired=max(1, settings.min_replicas),
        )
        service.revisions.append(revision)
        return revision

    def _refresh(self, service: Service) -> None:
        """Recompute traffic, retire unreferenced revisions, write the route."""
        if service.deleted:
            return
        traffic = service.traffic()
        referenced = {t.revision for t in traffic} | {service.latest.name}
        for revision in service.revisions:
            if revision.name not in referenced and not revision.retired:
                revision.retired = True
                revision.desired = 0
                self._write(f"revision {revision.name} has no traffic: stopping it")
                for replica in revision.live:
                    self._replicas.drain(service, revision, replica)
                self.table.stats.forget(revision.name)
        self.table.update(service_route(service, self.table.domain, traffic))

    def _write(self, line: str) -> None:
        write_line(self.output, line)
