"""Knative's KPA scaling algorithm as a pure, clock-free module.

The caller owns time: it feeds `record(now, concurrency)` with the service's in-flight requests
(zeros included, about once per metric bucket, as Knative's scraper does) and asks
`decide(now, ready)` every `tick`. Nothing here sleeps, reads a clock or does I/O.

Followed (knative/serving, main branch):
- `pkg/autoscaler/scaling/autoscaler.go` `Scale`: ceil(avg / target), the [floor(ready / down),
  ceil(up * ready)] clamp with ready = max(1, ready), panic on dppc / ready >= threshold, the
  panic window extended while over it, `maxPanicPods` (no scale-down in panic), leaving panic
  once `panicTime + stableWindow` is before now, the scale-down-delay max window, and starting
  in panic when created over more than one ready pod.
- `pkg/autoscaler/aggregation/bucketing.go` `TimedFloat64Buckets.WindowAverage`: a simple
  average of the buckets between max(firstWrite, now - window) and lastWrite (gaps count as 0;
  no data for a whole window gives 0). `aggregation/max/timewindow.go`: the delay window.
- `pkg/reconciler/autoscaling/resources/target.go` `ResolveMetricTarget`: total =
  containerConcurrency or 100; the target annotation overrides it, capped by a non-zero
  containerConcurrency; target = max(0.01, total * utilization).
- `pkg/reconciler/autoscaling/kpa/resources/metric.go` (panic window = stable window * percent,
  rounded to the bucket, at least one bucket), `pkg/reconciler/autoscaling/kpa/scaler.go`
  (`applyBounds`, then `handleScaleToZero`: inactive only after a stable window, zero only after
  the grace period), `pkg/autoscaler/config/config.go` (defaults), and KServe's
  `ksvc_reconciler.go` (`scaleTarget` overwrites the target annotation; min replicas default 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

__all__ = ["KPA", "AutoscalerSettings", "Decision", "settings_from_component"]

ANNOTATION_PREFIX = "autoscaling.knative.dev/"
KPA_CLASS = "kpa.autoscaling.knative.dev"
CONCURRENCY_TARGET_DEFAULT = 100.0  # config-autoscaler container-concurrency-target-default
TARGET_MIN = 0.01  # autoscaling.TargetMin
WINDOW_MIN, WINDOW_MAX = 6.0, 3600.0  # autoscaling.WindowMin / WindowMax (annotations only)
CONTAINER_CONCURRENCY_MAX = 1000  # config-defaults container-concurrency-max-limit
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class AutoscalerSettings:
    """One revision's KPA settings; times in seconds. Defaults are Knative's and KServe's."""

    container_concurrency: int = 0  # 0 = unlimited
    target: float | None = None  # autoscaling.knative.dev/target (or KServe's scaleTarget)
    target_utilization: float = 0.7
    min_replicas: int = 1
    max_replicas: int = 0  # 0 = unbounded
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_period: float = 30.0
    scale_down_delay: float = 0.0
    tick: float = 2.0
    bucket: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "container_concurrency must be >= 0": self.container_concurrency >= 0,
            "target must be > 0": self.target is None or self.target > 0,
            "target_utilization must be in (0, 1]": 0 < self.target_utilization <= 1,
            "min_replicas must be >= 0": self.min_replicas >= 0,
            "max_replicas must be 0 or >= min_replicas": self.max_replicas == 0
            or self.max_replicas >= self.min_replicas,
            "bucket and tick must be > 0": self.bucket > 0 and self.tick > 0,
            "stable_window must be >= bucket": self.stable_window >= self.bucket,
            # A panic window under one bucket is rounded up to one (`panic_window`).
            "panic_window_percentage must be in (0, 100]": 0 < self.panic_window_percentage
            <= 100,
            "panic_threshold_percentage must be > 0": self.panic_threshold_percentage > 0,
            "max scale rates must be > 1": self.max_scale_up_rate > 1
            and self.max_scale_down_rate > 1,
            "grace period and scale_down_delay must be >= 0": self.scale_to_zero_grace_period >= 0
            and self.scale_down_delay >= 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("invalid autoscaler settings: " + "; ".join(failed))

    @property
    def total_value(self) -> float:
        """Knative's TotalValue: the most concurrency one replica should carry."""
        total = float(self.container_concurrency) or CONCURRENCY_TARGET_DEFAULT
        if self.target is not None:
            total = self.target
            if self.container_concurrency:
                total = min(self.target, float(self.container_concurrency))
        return total

    @property
    def target_value(self) -> float:
        """Knative's TargetValue: the per-replica concurrency the KPA aims for."""
        return max(TARGET_MIN, self.total_value * self.target_utilization)

    @property
    def panic_window(self) -> float:
        """stable_window * percentage / 100, rounded to whole buckets, at least one bucket."""
        raw = self.stable_window * self.panic_window_percentage / 100
        return max(self.bucket, round(raw / self.bucket) * self.bucket)


@dataclass(frozen=True)
class Decision:
    """What `KPA.decide` wants: `desired` replicas, and why."""

    desired: int
    panic: bool
    stable_avg: float
    panic_avg: float
    reason: str


def _index(now: float, granularity: float) -> int:
    # The epsilon keeps 0.3 / 0.1 in bucket 3, not 2.
    return math.floor(now / granularity + 1e-9)


def _count(window: float, granularity: float) -> int:
    return max(1, math.ceil(window / granularity - 1e-9))


class _BucketWindow:
    """`TimedFloat64Buckets`: a bucket holds the mean of its samples; the window averages them."""

    def __init__(self, window: float, granularity: float) -> None:
        self._granularity = granularity
        self._size = _count(window, granularity)
        self._buckets: dict[int, tuple[float, int]] = {}
        self._first = self._last = 0

    def record(self, now: float, value: float) -> None:
        idx = _index(now, self._granularity)
        if self._buckets and idx + self._size < self._last:
            return  # older than a window: Knative drops it too
        if not self._buckets or idx - self._last >= self._size:
            self._buckets.clear()  # a whole window without data restarts the partial window
            self._first = self._last = idx
        self._first, self._last = min(self._first, idx), max(self._last, idx)
        total, count = self._buckets.get(idx, (0.0, 0))
        self._buckets[idx] = (total + value, count + 1)
        for old in [k for k in self._buckets if k <= self._last - self._size]:
            del self._buckets[old]

    def is_empty(self, now: float) -> bool:
        return not self._buckets or _index(now, self._granularity) - self._last > self._size

    def average(self, now: float) -> float:
        idx = _index(now, self._granularity)
        if not self._buckets or idx - self._last >= self._size:
            return 0.0
        low = max(self._first, max(idx, self._last) - self._size + 1)
        means = (s / n for k, (s, n) in self._buckets.items() if low <= k <= self._last)
        return sum(means) / (self._last - low + 1)


class _MaxWindow:
    """`max.TimeWindow`: the largest value recorded in the last `window` (in tick buckets)."""

    def __init__(self, window: float, granularity: float) -> None:
        self._granularity = granularity
        self._size = _count(window, granularity)
        self._values: dict[int, int] = {}

    def record(self, now: float, value: int) -> int:
        """Record `value` and return the window's maximum."""
        idx = _index(now, self._granularity)
        self._values[idx] = max(value, self._values.get(idx, value))
        self._values = {k: v for k, v in self._values.items() if k > idx - self._size}
        return max(self._values.values())


@dataclass
class KPA:
    """Knative's Pod Autoscaler for one revision. Not thread-safe: one caller drives it.

    `initial_ready` is the ready count when the autoscaler is created: over 1, it starts in
    panic mode, as Knative does after a restart, so it never scales down on an empty history.
    """

    settings: AutoscalerSettings
    initial_ready: int = 0
    _stable: _BucketWindow = field(init=False, repr=False)
    _panic: _BucketWindow = field(init=False, repr=False)
    _delay: _MaxWindow | None = field(init=False, repr=False)
    _fresh: bool = field(default=True, init=False)
    _panic_time: float | None = field(default=None, init=False)
    _max_panic_pods: int = field(default=0, init=False)
    _last_active: float | None = field(default=None, init=False)
    _inactive_since: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self._stable = _BucketWindow(s.stable_window, s.bucket)
        self._panic = _BucketWindow(s.panic_window, s.bucket)
        self._delay = _MaxWindow(s.scale_down_delay, s.tick) if s.scale_down_delay > 0 else None
        self._max_panic_pods = self.initial_ready

    def forget(self) -> None:
        """Drop everything observed (the revision was scaled to zero by hand): until new
        samples come, the decision keeps the current scale."""
        self.initial_ready = 0
        self.__post_init__()
        self._fresh, self._panic_time = True, None
        self._last_active = self._inactive_since = None

    @property
    def panicking(self) -> bool:
        return self._panic_time is not None

    def record(self, now: float, concurrency: float) -> None:
        """Observe `concurrency` in-flight requests (the whole service's) at time `now`."""
        if not concurrency >= 0:  # also rejects NaN
            raise ValueError(f"concurrency must be >= 0, got {concurrency!r}")
        self._stable.record(now, concurrency)
        self._panic.record(now, concurrency)
        if self._last_active is None:
            self._last_active = now  # the first sample starts the idle clock
        if concurrency > 0:
            self._last_active = max(now, self._last_active)
            self._inactive_since = None

    def decide(self, now: float, ready: int) -> Decision:
        """The desired replica count at `now`, given `ready` replicas serving."""
        if ready < 0:
            raise ValueError(f"ready must be >= 0, got {ready}")
        s = self.settings
        if self._last_active is None:
            self._last_active = now
        if self._fresh and self.initial_ready > 1:
            self._panic_time = now
        self._fresh = False
        if self._stable.is_empty(now):
            return self._finish(now, ready, ready, 0.0, 0.0, "no data: keep the current scale")
        stable_avg, panic_avg = self._stable.average(now), self._panic.average(now)
        pods = float(max(1, ready))
        max_up = math.ceil(s.max_scale_up_rate * pods)
        max_down = math.floor(pods / s.max_scale_down_rate)
        dspc = math.ceil(stable_avg / s.target_value)
        dppc = math.ceil(panic_avg / s.target_value)
        stable_pods = min(max(dspc, max_down), max_up)
        panic_pods = min(max(dppc, max_down), max_up)
        reason = f"stable: ceil({stable_avg:g}/{s.target_value:g})={dspc}"
        if dppc / pods >= s.panic_threshold_percentage / 100:
            self._panic_time = now  # enter, or extend, panic
        elif self._panic_time is not None and self._panic_time + s.stable_window < now:
            self._panic_time, self._max_panic_pods = None, 0
        desired = stable_pods
        if self._panic_time is not None:
            self._max_panic_pods = max(self._max_panic_pods, stable_pods, panic_pods)
            desired = self._max_panic_pods
            reason += f"; panic: ceil({panic_avg:g}/{s.target_value:g})={dppc}, holding {desired}"
        if stable_pods != dspc:
            reason += f", rate-limited to {stable_pods}"
        if self._delay is not None:
            delayed = self._delay.record(now, desired)
            if delayed != desired:
                reason += f", scale-down delay keeps {delayed}"
            desired = delayed
        return self._finish(now, ready, desired, stable_avg, panic_avg, reason)

    def _finish(
        self, now: float, ready: int, desired: int, stable: float, panic: float, reason: str
    ) -> Decision:
        """Apply min/max bounds, then Knative's scale-to-zero gate (`handleScaleToZero`)."""
        s = self.settings
        bounded = max(desired, s.min_replicas)
        if s.max_replicas and bounded > s.max_replicas:
            bounded = s.max_replicas
        if bounded != desired:
            reason += f", bounded to [{s.min_replicas}, {s.max_replicas or 'inf'}]"
        if bounded > 0:
            self._inactive_since = None
        elif ready == 0:
            reason += ", already at zero"
        elif self._last_active is None or now - self._last_active < s.stable_window:
            bounded, reason = 1, reason + ", idle for less than a stable window: keep 1"
        else:
            if self._inactive_since is None:
                self._inactive_since = now
            if now - self._inactive_since >= s.scale_to_zero_grace_period:
                reason += ", scale to zero"
            else:
                bounded, reason = 1, reason + ", in the scale-to-zero grace period: keep 1"
        return Decision(bounded, self.panicking, stable, panic, reason)


def _number(key: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"annotation {key}={value!r}: not a number") from None
    if not (low <= number <= high):  # also rejects NaN
        raise ValueError(f"annotation {key}={value!r}: must be in [{low:g}, {high:g}]")
    return number


def _duration(key: str, value: str, low: float, high: float) -> float:
    """A Go duration ("60s", "1m30s", "0") in whole seconds within [low, high]."""
    text = value.strip()
    if text == "0":
        seconds = 0.0
    elif text and _GO_DURATION.sub("", text) == "":
        matches = _GO_DURATION.findall(text)
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in matches)
    else:
        raise ValueError(f"annotation {key}={value!r}: not a duration such as '60s' or '1m'")
    if not (low <= seconds <= high) or abs(seconds - round(seconds)) > 1e-9:
        raise ValueError(
            f"annotation {key}={value!r}: must be whole seconds in [{low:g}s, {high:g}s]"
        )
    return float(round(seconds))


def settings_from_component(
    annotations: Mapping[str, str],
    container_concurrency: int | None,
    min_replicas: int | None,
    max_replicas: int | None,
    scale_target: int | None,
    defaults: AutoscalerSettings | None = None,
) -> AutoscalerSettings:
    """Settings for one InferenceService component, as KServe and Knative resolve them.

    `defaults` plays Knative's config-autoscaler ConfigMap; annotations override it per
    revision. Raises ValueError naming the bad annotation or field.
    """
    base = defaults or AutoscalerSettings()
    get = {
        k.removeprefix(ANNOTATION_PREFIX): v
        for k, v in annotations.items()
        if k.startswith(ANNOTATION_PREFIX)
    }
    if get.get("class", KPA_CLASS) != KPA_CLASS:
        raise ValueError(f"annotation {ANNOTATION_PREFIX}class={get['class']!r}: only KPA here")
    if get.get("metric", "concurrency") != "concurrency":
        raise ValueError(
            f"annotation {ANNOTATION_PREFIX}metric={get['metric']!r}: "
            "only 'concurrency' is supported"
        )
    changes: dict[str, float | int | None] = {}
    for name, field_name, low, high in (
        ("target", "target", TARGET_MIN, math.inf),
        ("panic-window-percentage", "panic_window_percentage", 1.0, 100.0),
        ("panic-threshold-percentage", "panic_threshold_percentage", 110.0, 1000.0),
    ):
        if name in get:
            changes[field_name] = _number(ANNOTATION_PREFIX + name, get[name], low, high)
    if "target-utilization-percentage" in get:
        key = ANNOTATION_PREFIX + "target-utilization-percentage"
        changes["target_utilization"] = (
            _number(key, get["target-utilization-percentage"], 1, 100) / 100
        )
    if "window" in get:
        changes["stable_window"] = _duration(
            ANNOTATION_PREFIX + "window", get["window"], WINDOW_MIN, WINDOW_MAX
        )
    if "scale-down-delay" in get:
        changes["scale_down_delay"] = _duration(
            ANNOTATION_PREFIX + "scale-down-delay", get["scale-down-delay"], 0.0, WINDOW_MAX
        )
    for name, number, low, high in (
        ("containerConcurrency", container_concurrency, 0, CONTAINER_CONCURRENCY_MAX),
        ("scaleTarget", scale_target, 1, math.inf),
        ("minReplicas", min_replicas, 0, math.inf),
        ("maxReplicas", max_replicas, 0, math.inf),
    ):
        if number is not None and not (low <= number <= high):
            raise ValueError(f"{name}={number}: must be in [{low}, {high}]")
    if scale_target is not None:
        changes["target"] = float(scale_target)  # KServe writes it over the annotation
    changes["container_concurrency"] = container_concurrency or 0
    changes["min_replicas"] = 1 if min_replicas is None else min_replicas
    changes["max_replicas"] = max_replicas or 0
    return replace(base, **changes)  # type: ignore[arg-type]
