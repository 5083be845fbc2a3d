"""The autoscaler loop: each revision's KPA fed from the data plane, its decisions applied.

Knative's autoscaler, reduced to one loop: once a bucket it records every serving
revision's average concurrency (`ConcurrencyStats`, reported by the data plane) into the
revision's `KPA` (`autoscaler.py`); once a tick it asks the KPA how many replicas the
revision wants and has `ReplicaLifecycle` start or drain them. When the activator holds a
request for a revision at zero it sets the stats' demand event, which wakes this loop at
once to start a replica (with the autoscaler disabled, only that wake-up runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

from gateway.concurrency import ConcurrencyStats
from gateway.controlplane.autoscaler import AutoscalerSettings, settings_from_component
from gateway.controlplane.manifests import InferenceService, ManifestError, Problem
from gateway.controlplane.replicas import ReplicaLifecycle
from gateway.controlplane.revisions import Revision, Service, entry_spec
from gateway.settings import AutoscalerDefaults

__all__ = ["ScalerLoop", "kpa_settings"]


def kpa_settings(isvc: InferenceService, defaults: AutoscalerDefaults) -> AutoscalerSettings:
    """The entry component's KPA settings (its annotations over the platform's defaults);
    raises ManifestError naming a bad field."""
    spec = entry_spec(isvc)
    try:
        return settings_from_component(
            isvc.metadata.annotations,
            spec.containerConcurrency,
            spec.minReplicas,
            spec.maxReplicas,
            (spec.model_extra or {}).get("scaleTarget"),
            AutoscalerSettings(
                stable_window=defaults.stable_window_s,
                panic_window_percentage=defaults.panic_window_percentage,
                panic_threshold_percentage=defaults.panic_threshold_percentage,
                scale_to_zero_grace_period=defaults.scale_to_zero_grace_period_s,
                tick=defaults.tick_s,
                bucket=defaults.bucket_s,
            ),
        )
    except ValueError as exc:
        where = f"{isvc.name} spec.{isvc.entry} / metadata.annotations"
        raise ManifestError([Problem(where, "", str(exc))]) from exc


class ScalerLoop:
    """Drives the KPA of every serving revision of `services()`."""

    def __init__(
        self,
        defaults: AutoscalerDefaults,
        stats: ConcurrencyStats,
        replicas: ReplicaLifecycle,
        services: Callable[[], Iterable[Service]],
        refresh: Callable[[Service], None],
        write: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._defaults = defaults
        self._stats = stats
        self._replicas = replicas
        self._services = services
        self._refresh = refresh
        self._write = write
        self._clock = clock

    async def run(self) -> None:
        """Run until cancelled: wake on a bucket, a tick or the activator's demand."""
        defaults = self._defaults
        demand = self._stats.demand()
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
                for _service, revision in self.active_revisions():
                    revision.kpa.record(now, self._stats.average(revision.name))
            if now >= next_tick:
                next_tick = now + defaults.tick_s
                for service, revision in self.active_revisions():
                    await self._decide(service, revision, now)

    async def _decide(self, service: Service, revision: Revision, now: float) -> None:
        decision = revision.kpa.decide(now, revision.ready_count)
        before, revision.decision = revision.decision, decision
        if decision.desired != revision.desired:
            self._write(f"autoscaler: {revision.name} {revision.desired} -> "
                        f"{decision.desired} ({decision.reason})")
        if decision.desired != revision.desired or decision.desired != len(revision.live):
            await self._replicas.scale(service, revision, decision.desired)
        elif before is None or before.panic != decision.panic:
            self._refresh(service)  # the status shows panic mode

    def active_revisions(self) -> list[tuple[Service, Revision]]:
        """Revisions the autoscaler drives: serving (ready once) and not retired."""
        return [
            (service, revision)
            for service in self._services()
            for revision in service.revisions
            if revision.ever_ready and not revision.retired
        ]

    async def _wake_from_zero(self) -> None:
        for service, revision in self.active_revisions():
            waiting = self._stats.waiting(revision.name)
            if waiting and not revision.live:
                self._write(f"activator: request for {revision.name} at zero, starting a replica")
                revision.kpa.record(self._clock(), float(waiting))
                await self._replicas.scale(service, revision, max(1, revision.desired))
