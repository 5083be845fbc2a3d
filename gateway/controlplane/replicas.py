"""Replica lifecycle: plan, start, scale and drain the replicas of the local revisions.

What the kubelet and Knative's deployment reconciler do for a revision's pods, done for
supervised processes: every replica is planned (free ports, the launch and storage policy,
its model directory checked), started in the background (predictors before the
transformers that call them), and drained before it stops (out of the route first, its
requests finish, then SIGTERM). The platform (`platform.py`) and the autoscaler loop
(`scaler.py`) decide how many; this module makes it so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from gateway.concurrency import ConcurrencyStats
from gateway.controlplane.components import LaunchPlan, PortAllocator, plan_service
from gateway.controlplane.manifests import InferenceService
from gateway.controlplane.policy import LaunchPolicy
from gateway.controlplane.revisions import Replica, Revision, Service
from gateway.controlplane.status import failure_message
from gateway.controlplane.supervisor import Supervisor

__all__ = ["ModelDirMissing", "ReplicaLifecycle", "check_model_dirs", "write_line"]

RETRY_START_S = 5.0  # after a replica failed to start, wait this long before another


class ModelDirMissing(FileNotFoundError):
    """A component's model directory does not exist locally."""


def check_model_dirs(plans: list[LaunchPlan], models_root: Path) -> None:
    """Raise ModelDirMissing naming every plan's model directory that does not exist."""
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


class ReplicaLifecycle:
    """Starts, scales and drains replicas; calls `refresh(service)` whenever the set of
    replicas or their readiness changes, so that the route follows."""

    def __init__(
        self,
        models_root: Path,
        policy: LaunchPolicy,
        platform_env: dict[str, str],
        stats: ConcurrencyStats,
        refresh: Callable[[Service], None],
        write: Callable[[str], None],
        *,
        drain_timeout_s: float,
        output: TextIO,
        clock: Callable[[], float] = time.monotonic,
        **supervisor_options: Any,
    ) -> None:
        self.models_root = models_root
        self.policy = policy
        self.platform_env = platform_env
        self.ports = PortAllocator()
        self._stats = stats
        self._refresh = refresh
        self._write = write
        self._drain_timeout_s = drain_timeout_s
        self._output = output
        self._clock = clock
        self._supervisor_options = supervisor_options
        self._tasks: set[asyncio.Task[Any]] = set()

    def plan(
        self, isvc: InferenceService, revision: int, replica: int, check_dirs: bool = True
    ) -> list[LaunchPlan]:
        """Launch plans of replica `replica` of revision `revision`; raises PlanError,
        PolicyRefused or (with `check_dirs`) ModelDirMissing before anything runs."""
        plans = plan_service(
            isvc, self.models_root, self.ports, revision, replica, self.policy,
            self.platform_env,
        )
        if check_dirs:
            check_model_dirs(plans, self.models_root)
        return plans

    def add(self, service: Service, revision: Revision, plans: list[LaunchPlan]) -> Replica:
        """A new (not yet started) replica of `revision` running `plans`."""

        def on_change(_supervisor: Supervisor) -> None:
            if not service.deleted:
                self._refresh(service)

        supervisors = [
            Supervisor(plan, on_change, output=self._output, **self._supervisor_options)
            for plan in plans
        ]
        replica = Replica(revision.next_replica, supervisors, service.entry)
        revision.next_replica += 1
        revision.replicas.append(replica)
        return replica

    async def start(self, service: Service, revision: Revision, replica: Replica) -> None:
        """Start `replica` and wait until it is ready; on failure stop what did start, record
        why on the revision and raise."""
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
                await self.scale(service, revision, revision.desired)  # minReplicas
        self._refresh(service)

    def launch(self, service: Service, revision: Revision, plans: list[LaunchPlan]) -> None:
        """Add a replica running `plans` and start it in the background; a failure is
        reported, not raised."""
        replica = self.add(service, revision, plans)

        async def run() -> None:
            try:
                await self.start(service, revision, replica)
            except Exception as exc:
                self._write(f"replica {replica.number} of {revision.name} failed to start: "
                            f"{str(exc).splitlines()[0] if str(exc) else exc!r}")

        self._spawn(run(), f"start {revision.name}-{replica.number}")

    async def scale(self, service: Service, revision: Revision, desired: int) -> None:
        """Start or drain replicas until `desired` are live."""
        revision.desired = desired
        live = revision.live
        if len(live) < desired:
            if self._clock() - revision.last_start_failure < RETRY_START_S:
                return
            for _ in range(desired - len(live)):
                plans = self.plan(revision.isvc, revision.number, revision.next_replica)
                self.launch(service, revision, plans)
        elif len(live) > desired:
            # Not-ready replicas go first, then the newest: the oldest keep serving (warm
            # caches, and clients that were told a replica's own address keep it).
            surplus = sorted(live, key=lambda r: (r.ready, -r.number))[: len(live) - desired]
            for replica in surplus:
                self.drain(service, revision, replica)
        self._refresh(service)

    def drain(self, service: Service, revision: Revision, replica: Replica) -> None:
        """Take `replica` out of the route, let its requests finish, then stop it."""
        replica.draining = True
        url = replica.entry.plan.http_url

        async def run() -> None:
            deadline = self._clock() + self._drain_timeout_s
            while self._stats.backend_in_flight(url) and self._clock() < deadline:
                await asyncio.sleep(0.05)
            await replica.stop()
            if replica in revision.replicas:
                revision.replicas.remove(replica)
            self._refresh(service)

        self._spawn(run(), f"drain {revision.name}-{replica.number}")

    async def stop(self, services: list[Service]) -> None:
        """Cancel every start and drain under way, then stop every replica of `services`."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.stop_replicas(services)

    @staticmethod
    async def stop_replicas(services: list[Service]) -> None:
        """Stop every replica of every revision of `services` (SIGTERM, then SIGKILL)."""
        replicas = [
            replica
            for service in services
            for revision in service.revisions
            for replica in revision.replicas
        ]
        await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def write_line(output: TextIO, line: str) -> None:
    """One `[controlplane]` line on `output`; a closed output is not an error."""
    with contextlib.suppress(OSError, ValueError):
        output.write(f"[controlplane] {line}\n")
        output.flush()
