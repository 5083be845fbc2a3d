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
- **Replicas.** Each revision runs `desired` replicas; a `KPA` per revision (Knative's
  algorithm, `autoscaler.py`) sets `desired` from the concurrency the data plane reports
  (`ConcurrencyStats`). At zero the revision's requests wait in the activator
  (`gateway/dataplane/resolve.py`), which wakes this loop at once to start a replica.
- **Routes.** The routing table is kept in step: the replicas that are ready, the split, and
  the InferenceService document the control plane's `GET /v1/services` answers
  (`status.py`). The data plane only reads it.
- **Load and unload** (Triton's repository extension, mapped): `load` wakes a service at zero
  and waits until it is ready; `unload` scales a `minReplicas: 0` service to zero and clears
  its autoscaler's history, so that it stays there until a request or a `load` comes.
  Neither runs anything that is not already a service's.
- **Policy.** Every plan passes the launch and storage policy (`policy.py`) before anything
  starts, for `up`'s own manifests and the rollout API's alike.

The state itself (services, revisions, replicas, their traffic) lives in `revisions.py`;
this module changes it. Services start predictors before the transformers that call them;
services start side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gateway.controlplane.autoscaler import (
    KPA,
    AutoscalerSettings,
    settings_from_component,
)
from gateway.controlplane.components import (
    LaunchPlan,
    PlanError,
    free_port,
    plan_service,
    revision_name,
)
from gateway.controlplane.manifests import (
    InferenceService,
    ManifestError,
    Problem,
    load_manifests,
    parse_service,
)
from gateway.controlplane.patches import PatchError, apply_patch
from gateway.controlplane.policy import LaunchPolicy, PolicyRefused
from gateway.controlplane.revisions import (
    Replica,
    Revision,
    Service,
    entry_spec,
    revision_template,
)
from gateway.controlplane.runtimes import runs_tritonserver
from gateway.controlplane.status import failure_message, not_ready_message, service_document
from gateway.controlplane.supervisor import Supervisor
from gateway.routing import Backend, RoutingTable, ServiceRoute, Traffic
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

TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
RETRY_START_S = 5.0  # after a replica failed to start, wait this long before another
LOAD_TIMEOUT_S = 300.0  # how long a repository `load` waits for a woken service


class ModelDirMissing(FileNotFoundError):
    """A component's model directory does not exist locally."""


class StartError(RuntimeError):
    """One or more services failed to start; every component has been stopped."""


@dataclass(frozen=True)
class ComponentStatus:
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
    name: str
    namespace: str
    host: str
    ready: bool
    message: str
    components: tuple[ComponentStatus, ...]


class _PortAllocator:
    """Free ports, never the same one twice in one platform."""

    def __init__(self) -> None:
        self._used: set[int] = set()

    def __call__(self) -> int:
        while (port := free_port()) in self._used:
            pass
        self._used.add(port)
        return port


def _check_model_dirs(plans: list[LaunchPlan], models_root: Path) -> None:
    missing = sorted(
        {
            f"{plan.model_dir} (for {plan.name})"
            for plan in plans
            if plan.model_dir is not None and not plan.model_dir.exists()
        }
    )
    if missing:
        raise ModelDirMissing(
            "model directory not found: "
            + ", ".join(missing)
            + "; build the demo models with `modelserve build-models --out "
            + f"{models_root}` or pass --models-dir"
        )


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
        self._supervisor_options = supervisor_options
        self._services: dict[str, Service] = {}
        self._ports = _PortAllocator()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._clock: Callable[[], float] = time.monotonic

    # --- planning and start-up -----------------------------------------------------------

    def plan(self) -> list[tuple[InferenceService, list[LaunchPlan]]]:
        """Load the manifests and plan every component; raises before anything runs.

        Raises ManifestError, PlanError, PolicyRefused or ModelDirMissing (naming every
        missing directory).
        """
        isvcs = self._isvcs if self._isvcs is not None else load_manifests(self.manifest_paths)
        for isvc in isvcs:
            self._kpa_settings(isvc)
        planned = [
            (isvc, plan_service(isvc, self.models_root, self._ports, 1, 1, *self._plan_policy))
            for isvc in isvcs
        ]
        _check_model_dirs([p for _, plans in planned for p in plans], self.models_root)
        return planned

    async def start(self) -> None:
        """Start every service's first revision; routes follow readiness. Then autoscale."""
        planned = self.plan()
        starting: list[asyncio.Task[None]] = []
        for isvc, plans in planned:
            service = Service(isvc, isvc.model_dump(mode="json", exclude_none=True))
            self._services[isvc.name] = service
            revision = self._new_revision(service, isvc)
            replica = self._replica(service, revision, plans)
            starting.append(asyncio.create_task(self._start_replica(service, revision, replica)))
            self._refresh(service)
        results = await asyncio.gather(*starting, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            for error in errors:
                if not isinstance(error, Exception):
                    raise error
            raise StartError("\n".join(str(e) for e in errors))
        self._loop_task = asyncio.create_task(self._autoscale(), name="autoscaler")

    async def stop(self) -> None:
        """Stop every component of every service (SIGTERM, then SIGKILL after the grace)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        replicas = [
            replica
            for service in self._services.values()
            for revision in service.revisions
            for replica in revision.replicas
        ]
        await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)

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
        replicas = [r for revision in service.revisions for r in revision.replicas]
        await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)
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
                await self._scale(service, revision, max(1, revision.settings.min_replicas))
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
            await self._scale(service, revision, 0)

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
        self._kpa_settings(isvc)  # a bad annotation fails here, before anything changes
        service = self._services.get(isvc.name)
        if service is not None and service.isvc.namespace != isvc.namespace:
            raise ManifestError([Problem(where, "metadata.namespace", (
                f"service {isvc.name!r} exists in namespace {service.isvc.namespace!r}"
            ))])
        doc = isvc.model_dump(mode="json", exclude_none=True)
        created = service is None
        if service is None:
            plans = self._plan_replica(isvc, 1, 1)
            service = self._services[isvc.name] = Service(isvc, doc)
            revision = self._new_revision(service, isvc)
            self._launch(service, revision, self._replica(service, revision, plans))
        else:
            changed = revision_template(isvc) != revision_template(service.isvc)
            plans = self._plan_replica(isvc, len(service.revisions) + 1, 1) if changed else []
            if doc != service.doc:
                service.generation += 1
            service.isvc, service.doc = isvc, doc
            if changed:
                revision = self._new_revision(service, isvc)
                self._launch(service, revision, self._replica(service, revision, plans))
        self._refresh(service)
        route = self.table.get(isvc.name)
        assert route is not None
        return self.table.status(route), created

    # --- status ----------------------------------------------------------------------------

    def status(self) -> list[ServiceStatus]:
        """Per-service state, in manifest order."""
        out = []
        for service in self._services.values():
            route = self.table.get(service.name) or self._route(service)
            supervisors = [
                s
                for revision in service.revisions
                for replica in revision.replicas
                for s in replica.supervisors
            ]
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
                        for s in supervisors
                    ),
                )
            )
        return out

    def supervisors(self) -> list[Supervisor]:
        return [
            s
            for service in self._services.values()
            for revision in service.revisions
            for replica in revision.replicas
            for s in replica.supervisors
        ]

    # --- revisions and replicas ----------------------------------------------------------

    def _plan_replica(
        self, isvc: InferenceService, revision: int, replica: int
    ) -> list[LaunchPlan]:
        plans = plan_service(
            isvc, self.models_root, self._ports, revision, replica, *self._plan_policy
        )
        _check_model_dirs(plans, self.models_root)
        return plans

    @property
    def _plan_policy(self) -> tuple[LaunchPolicy, dict[str, str]]:
        return self.policy, self.platform_env

    def _kpa_settings(self, isvc: InferenceService) -> AutoscalerSettings:
        """The entry component's KPA settings; raises ManifestError naming a bad field."""
        spec = entry_spec(isvc)
        try:
            return settings_from_component(
                isvc.metadata.annotations,
                spec.containerConcurrency,
                spec.minReplicas,
                spec.maxReplicas,
                (spec.model_extra or {}).get("scaleTarget"),
                _kpa_defaults(self.autoscaler),
            )
        except ValueError as exc:
            where = f"{isvc.name} spec.{isvc.entry} / metadata.annotations"
            raise ManifestError([Problem(where, "", str(exc))]) from exc

    def _new_revision(self, service: Service, isvc: InferenceService) -> Revision:
        number = len(service.revisions) + 1
        settings = self._kpa_settings(isvc)
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

    def _replica(
        self, service: Service, revision: Revision, plans: list[LaunchPlan]
    ) -> Replica:
        def on_change(_supervisor: Supervisor) -> None:
            self._on_change(service)

        supervisors = [
            Supervisor(plan, on_change, output=self.output, **self._supervisor_options)
            for plan in plans
        ]
        replica = Replica(revision.next_replica, supervisors, service.entry)
        revision.next_replica += 1
        revision.replicas.append(replica)
        return replica

    async def _start_replica(
        self, service: Service, revision: Revision, replica: Replica
    ) -> None:
        try:
            await replica.start()
        except BaseException as exc:
            await asyncio.shield(replica.stop())  # a predictor whose transformer failed
            if replica in revision.replicas:
                revision.replicas.remove(replica)
            revision.last_start_failure = self._clock()
            if not revision.ever_ready:
                revision.failure = failure_message(exc)
            self._refresh(service)
            raise
        if service.deleted:  # deleted while it started
            await replica.stop()
            return
        if not revision.ever_ready:
            revision.ever_ready, revision.failure = True, ""
            self._write(f"revision {revision.name} ready")
            if not revision.retired and len(revision.live) < revision.desired:
                await self._scale(service, revision, revision.desired)  # minReplicas
        self._refresh(service)

    def _launch(self, service: Service, revision: Revision, replica: Replica) -> None:
        """Start `replica` in the background; a failure is reported, not raised."""

        async def run() -> None:
            try:
                await self._start_replica(service, revision, replica)
            except Exception as exc:
                self._write(f"replica {replica.number} of {revision.name} failed to start: "
                            f"{str(exc).splitlines()[0] if str(exc) else exc!r}")

        task = asyncio.create_task(run(), name=f"start {revision.name}-{replica.number}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scale(self, service: Service, revision: Revision, desired: int) -> None:
        """Start or drain replicas until `desired` are live."""
        revision.desired = desired
        live = revision.live
        if len(live) < desired:
            if self._clock() - revision.last_start_failure < RETRY_START_S:
                return
            for _ in range(desired - len(live)):
                plans = self._plan_replica(revision.isvc, revision.number, revision.next_replica)
                self._launch(service, revision, self._replica(service, revision, plans))
        elif len(live) > desired:
            # Not-ready replicas go first, then the newest: the oldest keep serving (warm
            # caches, and clients that were told a replica's own address keep it).
            surplus = sorted(live, key=lambda r: (r.ready, -r.number))[: len(live) - desired]
            for replica in surplus:
                self._drain(service, revision, replica)
        self._refresh(service)

    def _drain(self, service: Service, revision: Revision, replica: Replica) -> None:
        """Take `replica` out of the route, let its requests finish, then stop it."""
        replica.draining = True
        url = replica.entry.plan.http_url

        async def run() -> None:
            deadline = self._clock() + self.autoscaler.drain_timeout_s
            while self.table.stats.backend_in_flight(url) and self._clock() < deadline:
                await asyncio.sleep(0.05)
            await replica.stop()
            if replica in revision.replicas:
                revision.replicas.remove(replica)
            self._refresh(service)

        task = asyncio.create_task(run(), name=f"drain {revision.name}-{replica.number}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
                    self._drain(service, revision, replica)
                self.table.stats.forget(revision.name)
        self.table.update(self._route(service, traffic))

    def _on_change(self, service: Service) -> None:
        if service.name in self._services:
            self._refresh(service)

    # --- the autoscaler loop -------------------------------------------------------------

    async def _autoscale(self) -> None:
        """Feed each revision's KPA once a bucket and apply its decision every tick; wake at
        once when the activator holds a request for a revision at zero."""
        defaults = self.autoscaler
        demand = self.table.stats.demand()
        next_bucket = next_tick = self._clock()
        while True:
            wait = max(0.0, min(next_bucket, next_tick) - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await demand.wait()
            now = self._clock()
            if demand.is_set():
                demand.clear()
                await self._wake_from_zero()
            if not defaults.enabled:
                next_bucket = next_tick = now + defaults.tick_s
                continue
            if now >= next_bucket:
                next_bucket = now + defaults.bucket_s
                for _service, revision in self._active_revisions():
                    revision.kpa.record(now, self.table.stats.average(revision.name))
            if now >= next_tick:
                next_tick = now + defaults.tick_s
                for service, revision in self._active_revisions():
                    decision = revision.kpa.decide(now, revision.ready_count)
                    before, revision.decision = revision.decision, decision
                    if decision.desired != revision.desired:
                        self._write(f"autoscaler: {revision.name} {revision.desired} -> "
                                    f"{decision.desired} ({decision.reason})")
                    if decision.desired != revision.desired or decision.desired != len(
                        revision.live
                    ):
                        await self._scale(service, revision, decision.desired)
                    elif before is None or before.panic != decision.panic:
                        self._refresh(service)

    def _active_revisions(self) -> list[tuple[Service, Revision]]:
        """Revisions the autoscaler drives: serving (ready once) and not retired."""
        return [
            (service, revision)
            for service in self._services.values()
            for revision in service.revisions
            if revision.ever_ready and not revision.retired
        ]

    async def _wake_from_zero(self) -> None:
        for service, revision in self._active_revisions():
            if self.table.stats.waiting(revision.name) and not revision.live:
                self._write(f"activator: request for {revision.name} at zero, starting a replica")
                revision.kpa.record(self._clock(), float(self.table.stats.waiting(revision.name)))
                await self._scale(service, revision, max(1, revision.desired))

    # --- routes and documents ------------------------------------------------------------

    def _route(
        self, service: Service, traffic: tuple[Traffic, ...] | None = None
    ) -> ServiceRoute:
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
            domain=self.table.domain,
            message=message,
            component=service.entry,
            traffic=traffic,
            tag_routing=service.isvc.metadata.annotations.get(TAG_ROUTING, "").lower() == "true",
            screen_v2_bodies=any(
                runs_tritonserver(entry_spec(r.isvc)) for r in service.revisions
            ),
        )
        return dataclasses.replace(route, document=service_document(service, route))

    def _write(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.output.write(f"[controlplane] {line}\n")
            self.output.flush()


def _kpa_defaults(defaults: AutoscalerDefaults) -> AutoscalerSettings:
    """The cluster-wide defaults as the KPA's settings (annotations override them)."""
    return AutoscalerSettings(
        stable_window=defaults.stable_window_s,
        panic_window_percentage=defaults.panic_window_percentage,
        panic_threshold_percentage=defaults.panic_threshold_percentage,
        scale_to_zero_grace_period=defaults.scale_to_zero_grace_period_s,
        tick=defaults.tick_s,
        bucket=defaults.bucket_s,
    )
