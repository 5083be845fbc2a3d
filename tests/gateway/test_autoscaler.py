"""The KPA module against Knative's formulas, on short windows and fed timestamps (no sleeping)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace

import pytest

from gateway.controlplane.autoscaler import (
    KPA,
    AutoscalerSettings,
    Decision,
    settings_from_component,
)

# Stable window 10 s, panic window 2 s, grace 4 s; containerConcurrency 10 -> target 7.
FAST = AutoscalerSettings(
    container_concurrency=10,
    stable_window=10.0,
    panic_window_percentage=20.0,
    scale_to_zero_grace_period=4.0,
    tick=1.0,
)


def feed(kpa: KPA, start: int, end: int, concurrency: float) -> None:
    """One sample per second in [start, end), as the supervisor's sampler would."""
    for t in range(start, end):
        kpa.record(float(t), concurrency)


def run(kpa: KPA, start: int, end: int, concurrency: float, ready: int) -> list[Decision]:
    """Sample, then decide, every second in [start, end)."""
    decisions = []
    for t in range(start, end):
        kpa.record(float(t), concurrency)
        decisions.append(kpa.decide(float(t), ready))
    return decisions


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cc", "annotations", "scale_target", "total", "target"),
    [
        (None, {}, None, 100.0, 70.0),  # Knative's default target
        (10, {}, None, 10.0, 7.0),  # containerConcurrency
        (0, {"autoscaling.knative.dev/target": "50"}, None, 50.0, 35.0),  # annotation
        (100, {"autoscaling.knative.dev/target": "50"}, None, 50.0, 35.0),
        (10, {"autoscaling.knative.dev/target": "50"}, None, 10.0, 7.0),  # capped by cc
        (None, {"autoscaling.knative.dev/target": "50"}, 20, 20.0, 14.0),  # scaleTarget wins
        (5, {}, 20, 5.0, 3.5),  # scaleTarget capped by cc too
        (None, {"autoscaling.knative.dev/target": "0.01"}, None, 0.01, 0.01),  # TargetMin
        (10, {"autoscaling.knative.dev/target-utilization-percentage": "50"}, None, 10.0, 5.0),
    ],
)
def test_target_follows_knative_precedence(
    cc: int | None,
    annotations: dict[str, str],
    scale_target: int | None,
    total: float,
    target: float,
) -> None:
    settings = settings_from_component(annotations, cc, None, None, scale_target)
    assert settings.total_value == pytest.approx(total)
    assert settings.target_value == pytest.approx(target)


def test_component_defaults_and_annotations_parse() -> None:
    plain = settings_from_component({}, None, None, None, None)
    assert (plain.min_replicas, plain.max_replicas, plain.container_concurrency) == (1, 0, 0)
    assert (plain.stable_window, plain.panic_window, plain.tick) == (60.0, 6.0, 2.0)
    assert (plain.max_scale_up_rate, plain.max_scale_down_rate) == (1000.0, 2.0)
    assert plain.panic_threshold_percentage == 200.0 and plain.scale_down_delay == 0.0
    tuned = settings_from_component(
        {
            "autoscaling.knative.dev/window": "1m30s",
            "autoscaling.knative.dev/panic-window-percentage": "20",
            "autoscaling.knative.dev/panic-threshold-percentage": "150",
            "autoscaling.knative.dev/scale-down-delay": "15s",
            "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
            "autoscaling.knative.dev/metric": "concurrency",
            "serving.kserve.io/deploymentMode": "Serverless",
        },
        4,
        0,
        5,
        None,
        defaults=AutoscalerSettings(scale_to_zero_grace_period=5.0),
    )
    assert tuned.stable_window == 90.0 and tuned.panic_window == 18.0
    assert tuned.panic_threshold_percentage == 150.0 and tuned.scale_down_delay == 15.0
    assert (tuned.min_replicas, tuned.max_replicas, tuned.container_concurrency) == (0, 5, 4)
    assert tuned.scale_to_zero_grace_period == 5.0


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("target", "ten"),
        ("target", "0"),
        ("target", "nan"),
        ("target-utilization-percentage", "0"),
        ("target-utilization-percentage", "150"),
        ("window", "10"),  # no unit
        ("window", "2s"),  # below Knative's 6 s minimum
        ("window", "2h"),
        ("window", "6500ms"),  # not whole seconds
        ("panic-window-percentage", "0.5"),
        ("panic-threshold-percentage", "50"),
        ("scale-down-delay", "soon"),
        ("metric", "rps"),
        ("class", "hpa.autoscaling.knative.dev"),
    ],
)
def test_bad_annotation_raises_naming_it(annotation: str, value: str) -> None:
    key = f"autoscaling.knative.dev/{annotation}"
    with pytest.raises(ValueError, match=key):
        settings_from_component({key: value}, None, None, None, None)


@pytest.mark.parametrize(
    ("cc", "min_replicas", "max_replicas", "scale_target", "name"),
    [
        (-1, None, None, None, "containerConcurrency"),
        (1001, None, None, None, "containerConcurrency"),
        (None, -1, None, None, "minReplicas"),
        (None, None, -2, None, "maxReplicas"),
        (None, None, None, 0, "scaleTarget"),
        (None, 3, 2, None, "max_replicas"),
    ],
)
def test_bad_component_fields_raise(
    cc: int | None,
    min_replicas: int | None,
    max_replicas: int | None,
    scale_target: int | None,
    name: str,
) -> None:
    with pytest.raises(ValueError, match=name):
        settings_from_component({}, cc, min_replicas, max_replicas, scale_target)


# --- windows and steady state -----------------------------------------------------------------


@pytest.mark.parametrize(("load", "ready"), [(0.5, 1), (7.0, 1), (7.5, 2), (21.0, 3), (70.0, 10)])
def test_steady_load_wants_ceil_of_average_over_target(load: float, ready: int) -> None:
    kpa = KPA(FAST)
    decision = run(kpa, 0, 20, load, ready)[-1]
    assert decision.desired == math.ceil(load / 7.0)
    assert decision.stable_avg == pytest.approx(load) and not decision.panic


def test_windows_are_simple_averages_of_their_buckets() -> None:
    kpa = KPA(FAST)
    feed(kpa, 0, 5, 10.0)
    feed(kpa, 5, 10, 0.0)
    decision = kpa.decide(9.0, 1)
    assert decision.stable_avg == pytest.approx(5.0)  # 5 buckets of 10, 5 of 0
    assert decision.panic_avg == 0.0
    # Several samples in one bucket count as their mean, not their sum.
    kpa = KPA(FAST)
    for t, c in [(0.0, 2.0), (0.5, 4.0), (1.0, 3.0)]:
        kpa.record(t, c)
    assert kpa.decide(1.0, 1).stable_avg == pytest.approx(3.0)


def test_partial_window_averages_only_the_buckets_seen() -> None:
    kpa = KPA(FAST)
    feed(kpa, 100, 103, 14.0)  # 3 s of data in a 10 s window: Knative divides by 3
    decision = kpa.decide(102.0, 2)
    assert decision.stable_avg == pytest.approx(14.0) and decision.desired == 2


def test_no_data_keeps_the_current_scale_within_bounds() -> None:
    kpa = KPA(FAST)
    assert kpa.decide(0.0, 3).desired == 3
    assert kpa.decide(1.0, 0).desired == 1  # min_replicas 1
    assert "no data" in kpa.decide(2.0, 3).reason


def test_forget_drops_the_history_an_unload_leaves_behind() -> None:
    zero = dataclasses.replace(FAST, min_replicas=0)
    kpa = KPA(zero, initial_ready=3)
    feed(kpa, 0, 10, 30.0)
    assert kpa.decide(9.0, 0).desired > 0  # recent load would bring replicas back
    kpa.forget()
    assert not kpa.panicking
    assert kpa.decide(10.0, 0).desired == 0  # no data: stays where the unload left it
    feed(kpa, 10, 12, 0.0)
    decision = kpa.decide(12.0, 0)
    assert decision.desired == 0 and "already at zero" in decision.reason


# --- rate limits, panic ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("up", "down", "ready", "load", "expected"),
    [
        (2.0, 2.0, 2, 700.0, 4),  # ceil(2.0 * 2)
        (1.5, 2.0, 3, 700.0, 5),  # ceil(1.5 * 3)
        (2.0, 2.0, 0, 700.0, 2),  # ready 0 counts as 1
        (1000.0, 2.0, 10, 0.0, 5),  # floor(10 / 2)
        (1000.0, 4.0, 10, 0.0, 2),  # floor(10 / 4)
        (1000.0, 2.0, 1, 0.0, 1),  # floor(1 / 2) = 0, then min_replicas 1
    ],
)
def test_rate_limits_clamp_the_desired_scale(
    up: float, down: float, ready: int, load: float, expected: int
) -> None:
    kpa = KPA(replace(FAST, max_scale_up_rate=up, max_scale_down_rate=down))
    assert run(kpa, 0, 12, load, ready)[-1].desired == expected


@pytest.mark.parametrize(("burst", "panics"), [(21.0, False), (21.5, True), (28.0, True)])
def test_panic_starts_when_panic_pods_reach_twice_ready(burst: float, panics: bool) -> None:
    kpa = KPA(FAST)
    run(kpa, 0, 10, 7.0, 2)  # stable load, 1 pod's worth
    decision = run(kpa, 10, 12, burst, 2)[-1]  # panic window = the last 2 buckets
    assert decision.panic_avg == pytest.approx(burst)
    assert decision.panic is panics  # ceil(21/7)=3 -> 1.5x; ceil(21.5/7)=4 -> 2x
    if panics:
        assert decision.desired == math.ceil(burst / 7.0)


def test_panic_never_scales_down_and_ends_a_stable_window_after_the_threshold() -> None:
    kpa = KPA(FAST)
    run(kpa, 0, 10, 7.0, 2)
    assert run(kpa, 10, 12, 70.0, 2)[-1].desired == 10  # panic: 10 pods, last over at t=11
    calm = run(kpa, 12, 25, 0.0, 10)
    in_panic = [d for t, d in zip(range(12, 25), calm, strict=True) if t <= 21]
    assert all(d.panic and d.desired == 10 for d in in_panic)  # panicTime + 10 not before now
    after = calm[-1]  # t=24: un-panicked, stable window idle -> floor(10 / 2)
    assert not after.panic and after.desired == 5


def test_panic_mode_uses_the_larger_of_stable_and_panic() -> None:
    kpa = KPA(FAST)
    run(kpa, 0, 10, 70.0, 10)
    run(kpa, 10, 12, 300.0, 10)  # 43 pods in panic, 5x ready
    decision = run(kpa, 12, 14, 1.0, 43)[-1]
    assert decision.panic and decision.desired == 43


def test_restarted_autoscaler_starts_in_panic_over_one_pod() -> None:
    kpa = KPA(FAST, initial_ready=5)
    decisions = run(kpa, 0, 13, 0.0, 5)
    assert decisions[0].panic and decisions[10].desired == 5
    assert not decisions[-1].panic and decisions[-1].desired == 2


# --- bounds, delay, scale to zero --------------------------------------------------------------


def test_max_replicas_caps_and_min_replicas_floors() -> None:
    capped = KPA(replace(FAST, max_replicas=3))
    assert run(capped, 0, 12, 700.0, 3)[-1].desired == 3
    floored = KPA(replace(FAST, min_replicas=2))
    assert run(floored, 0, 40, 0.0, 2)[-1].desired == 2


def test_scale_down_delay_keeps_the_maximum_over_the_delay_window() -> None:
    quick = replace(FAST, stable_window=2.0, panic_window_percentage=50.0)
    plain = KPA(quick)
    delayed = KPA(replace(quick, scale_down_delay=4.0))
    for kpa in (plain, delayed):
        run(kpa, 0, 4, 70.0, 10)
    drop = {name: run(kpa, 4, 12, 0.0, 10) for name, kpa in [("p", plain), ("d", delayed)]}
    # At t=4 the 2 s window holds 70 and 0: ceil(35 / 7) = 5, the scale-down clamp's floor.
    assert [d.desired for d in drop["p"]] == [5] * 8
    # The delay window holds 4 ticks (t-3..t): the 10 decided at t=3 is kept until t=6.
    assert [d.desired for d in drop["d"]] == [10, 10, 10, 5, 5, 5, 5, 5]


def test_scale_to_zero_after_an_idle_stable_window_and_the_grace_period() -> None:
    kpa = KPA(replace(FAST, min_replicas=0))
    run(kpa, 0, 10, 5.0, 1)  # last activity at t=9
    idle = dict(zip(range(10, 30), run(kpa, 10, 30, 0.0, 1), strict=True))
    first_zero = min(t for t, d in idle.items() if d.desired == 0)
    assert first_zero == 9 + 10 + 4  # activity + stable window + grace
    assert all(d.desired == 1 for t, d in idle.items() if t < first_zero)
    assert "grace" in idle[first_zero - 1].reason
    assert kpa.decide(40.0, 0).desired == 0  # stays at zero
    kpa.record(41.0, 1.0)  # a request arrives at the activator
    assert kpa.decide(41.0, 0).desired == 1


def test_never_used_service_scales_to_zero_from_time_zero() -> None:
    kpa = KPA(replace(FAST, min_replicas=0))
    decisions = run(kpa, 0, 20, 0.0, 1)
    assert [d.desired for d in decisions].index(0) == 10 + 4  # first seen at t=0


def test_activity_during_grace_cancels_scale_to_zero() -> None:
    kpa = KPA(replace(FAST, min_replicas=0))
    run(kpa, 0, 10, 5.0, 1)
    run(kpa, 10, 21, 0.0, 1)  # inactive since t=19
    kpa.record(21.0, 1.0)
    assert run(kpa, 22, 26, 0.0, 1)[-1].desired == 1
    assert run(kpa, 26, 40, 0.0, 1)[-1].desired == 0


def test_min_replicas_one_never_scales_to_zero() -> None:
    kpa = KPA(FAST)
    assert {d.desired for d in run(kpa, 0, 100, 0.0, 1)} == {1}


def test_invalid_inputs_raise() -> None:
    kpa = KPA(FAST)
    with pytest.raises(ValueError, match="concurrency"):
        kpa.record(0.0, -1.0)
    with pytest.raises(ValueError, match="ready"):
        kpa.decide(0.0, -1)
    with pytest.raises(ValueError, match="max scale rates"):
        AutoscalerSettings(max_scale_down_rate=1.0)
