"""The local platform: every InferenceService's components as supervised local processes.

What KServe's controller, Knative and the kubelet do in a cluster, reduced to one machine: plan
each component (ports, model directory, predictor address), start predictors before the
transformers that call them (services side by side), and keep the routing table in step with
what is ready. The data plane only ever reads the table.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gateway.controlplane.components import LaunchPlan, PlanError, free_port, plan_service
from gateway.controlplane.manifests import InferenceService, load_manifests
from gateway.controlplane.supervisor import Supervisor
from gateway.routing import Backend, RoutingTable, ServiceRoute

__all__ = [
    "ComponentStatus",
    "LocalPlatform",
    "ModelDirMissing",
    "PlanError",
    "ServiceStatus",
    "StartError",
]


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


class _Service:
    """One InferenceService's supervisors and how they map onto its route."""

    def __init__(
        self,
        isvc: InferenceService,
        plans: list[LaunchPlan],
        make: Callable[[LaunchPlan], Supervisor],
    ) -> None:
        self.isvc = isvc
        self.supervisors = [make(plan) for plan in plans]

    @property
    def entry(self) -> Supervisor:
        return next(s for s in self.supervisors if s.plan.component == self.isvc.entry)

    def route(self, domain: str) -> ServiceRoute:
        """Ready only when every component is: a transformer without its predictor fails."""
        down = [s for s in self.supervisors if not s.ready]
        plan = self.entry.plan
        backend = Backend(
            revision=plan.revision,
            http_url=plan.http_url,
            grpc_target=plan.grpc_target,
            ready=not down,
            percent=100,
        )
        return ServiceRoute(
            name=self.isvc.name,
            namespace=self.isvc.namespace,
            backends=(backend,),
            domain=domain,
            message=down[0].message if down else "",
            component=self.isvc.entry,
        )

    async def start(self) -> None:
        for component in ("predictor", "transformer"):
            await asyncio.gather(
                *(s.start() for s in self.supervisors if s.plan.component == component)
            )

    async def stop(self) -> None:
        # Entry first, so nothing is sent to a predictor that is going away.
        for supervisor in reversed(self.supervisors):
            await supervisor.stop()


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
        **supervisor_options: Any,
    ) -> None:
        self.manifest_paths = manifest_paths
        self.models_root = models_root
        self.table = table
        self.output = output if output is not None else sys.stdout
        self._isvcs = services
        self._supervisor_options = supervisor_options
        self._services: list[_Service] = []

    def plan(self) -> list[tuple[InferenceService, list[LaunchPlan]]]:
        """Load the manifests and plan every component; raises before anything runs.

        Raises ManifestError, PlanError or ModelDirMissing (naming every missing directory).
        """
        isvcs = self._isvcs if self._isvcs is not None else load_manifests(self.manifest_paths)
        ports = _PortAllocator()
        planned = [(isvc, plan_service(isvc, self.models_root, ports)) for isvc in isvcs]
        missing = sorted(
            {
                f"{plan.model_dir} (for {plan.name})"
                for _isvc, plans in planned
                for plan in plans
                if plan.model_dir is not None and not plan.model_dir.exists()
            }
        )
        if missing:
            raise ModelDirMissing(
                "model directory not found: "
                + ", ".join(missing)
                + "; build the demo models with `modelserve build-models --out "
                + f"{self.models_root}` or pass --models-dir"
            )
        return planned

    async def start(self) -> None:
        """Start every service (predictors first within each); routes follow readiness."""
        planned = self.plan()
        self._services = [_Service(isvc, plans, self._supervisor) for isvc, plans in planned]
        for service in self._services:
            self._update_route(service)
        results = await asyncio.gather(*(s.start() for s in self._services), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            for error in errors:
                if not isinstance(error, Exception):
                    raise error
            raise StartError("\n".join(str(e) for e in errors))

    async def stop(self) -> None:
        """Stop every component of every service (SIGTERM, then SIGKILL after the grace)."""
        await asyncio.gather(*(s.stop() for s in self._services), return_exceptions=True)

    def status(self) -> list[ServiceStatus]:
        """Per-service state, in manifest order."""
        out = []
        for service in self._services:
            route = service.route(self.table.domain)
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
                        for s in service.supervisors
                    ),
                )
            )
        return out

    def supervisors(self) -> list[Supervisor]:
        return [s for service in self._services for s in service.supervisors]

    def _supervisor(self, plan: LaunchPlan) -> Supervisor:
        return Supervisor(plan, self._on_change, output=self.output, **self._supervisor_options)

    def _on_change(self, supervisor: Supervisor) -> None:
        for service in self._services:
            if supervisor in service.supervisors:
                self._update_route(service)

    def _update_route(self, service: _Service) -> None:
        self.table.update(service.route(self.table.domain))
