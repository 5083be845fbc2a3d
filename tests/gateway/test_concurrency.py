"""ConcurrencyStats: in flight per revision and replica, time-weighted averages, the activator's
waiting count and the demand event. Time comes from a fake clock, so every average is exact."""

from __future__ import annotations

import asyncio

import pytest

from gateway.concurrency import ConcurrencyStats

REV = "svc-predictor-00001"
URL = "http://127.0.0.1:1000"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def at(self, t: float) -> Clock:
        self.now = 100.0 + t
        return self


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stats(clock: Clock) -> ConcurrencyStats:
    return ConcurrencyStats(clock=clock)


def test_one_request_of_100_ms_in_a_1_s_window_reads_0_1(
    clock: Clock, stats: ConcurrencyStats
) -> None:
    assert stats.average(REV) == 0.0  # the first read opens the window
    clock.at(0.2)
    stats.started(REV, URL)
    clock.at(0.3)
    stats.finished(REV, URL)
    clock.at(1.0)
    assert stats.average(REV) == pytest.approx(0.1)
    clock.at(2.0)
    assert stats.average(REV) == 0.0  # each read covers only the time since the last


def test_a_request_in_flight_across_reads_counts_in_each_window(
    clock: Clock, stats: ConcurrencyStats
) -> None:
    stats.average(REV)
    clock.at(0.5)
    stats.started(REV, URL)
    clock.at(1.0)
    assert stats.average(REV) == pytest.approx(0.5)
    clock.at(2.0)
    assert stats.average(REV) == pytest.approx(1.0)
    clock.at(2.25)
    stats.finished(REV, URL)
    clock.at(3.0)
    assert stats.average(REV) == pytest.approx(0.25)


def test_overlapping_requests_add_up(clock: Clock, stats: ConcurrencyStats) -> None:
    stats.average(REV)
    for _ in range(4):
        stats.started(REV, URL)  # 4 in flight for the first half
    clock.at(0.5)
    for _ in range(2):
        stats.finished(REV, URL)  # 2 for the second
    clock.at(1.0)
    assert stats.average(REV) == pytest.approx(3.0)
    assert stats.in_flight(REV) == 2
    assert stats.backend_in_flight(URL) == 2


def test_revisions_are_averaged_apart(clock: Clock, stats: ConcurrencyStats) -> None:
    other = "svc-predictor-00002"
    stats.average(REV), stats.average(other)
    stats.started(REV, URL)
    clock.at(1.0)
    assert stats.average(REV) == pytest.approx(1.0)
    assert stats.average(other) == 0.0
    assert stats.in_flight(other) == 0


def test_a_read_with_no_time_passed_gives_the_current_count(
    clock: Clock, stats: ConcurrencyStats
) -> None:
    stats.started(REV, URL)
    stats.started(REV, URL)
    stats.average(REV)
    assert stats.average(REV) == 2.0  # zero span: the count now, not a division by zero


def test_the_window_starts_at_the_first_observation(
    clock: Clock, stats: ConcurrencyStats
) -> None:
    # A revision never read before: its window opens at its first request.
    clock.at(0.2)
    stats.started(REV, URL)
    clock.at(0.6)
    stats.finished(REV, URL)
    clock.at(1.0)
    assert stats.average(REV) == pytest.approx(0.4 / 0.8)


def test_held_requests_wait_and_count_as_in_flight(clock: Clock, stats: ConcurrencyStats) -> None:
    stats.average(REV)
    stats.started(REV)  # held by the activator: no replica yet
    stats.started(REV)
    assert stats.waiting(REV) == 2
    assert stats.in_flight(REV) == 2
    assert stats.backend_in_flight(URL) == 0
    clock.at(0.5)
    stats.finished(REV)  # one given up (timed out)
    stats.started(REV, URL)  # ... the other goes to a replica now ready
    stats.finished(REV)
    assert stats.waiting(REV) == 0
    assert stats.in_flight(REV) == 1
    assert stats.backend_in_flight(URL) == 1
    clock.at(1.0)
    # 2 held for 0.5 s, then 1 forwarded for 0.5 s: the autoscaler sees the demand.
    assert stats.average(REV) == pytest.approx(1.5)


def test_replica_counts_go_back_to_nothing(stats: ConcurrencyStats) -> None:
    stats.started(REV, URL)
    stats.started(REV, URL)
    stats.started(REV, "http://127.0.0.1:2000")
    assert stats.backend_in_flight(URL) == 2
    stats.finished(REV, URL)
    stats.finished(REV, URL)
    assert stats.backend_in_flight(URL) == 0
    assert URL not in stats._backends  # no entry left behind per replica ever seen
    assert stats.backend_in_flight("http://127.0.0.1:2000") == 1
    stats.finished(REV, "http://127.0.0.1:2000")
    assert stats.in_flight(REV) == 0
    assert not stats._backends and not stats._waiting


def test_forget_drops_only_an_idle_revision(clock: Clock, stats: ConcurrencyStats) -> None:
    stats.started(REV, URL)
    stats.forget(REV)
    assert stats.in_flight(REV) == 1  # still has a request: kept
    stats.finished(REV, URL)
    stats.forget(REV)
    assert REV not in stats._revisions
    assert stats.in_flight(REV) == 0
    stats.forget("never-seen")  # no error


def test_demand_is_set_when_a_request_is_held() -> None:
    async def scenario() -> None:
        stats = ConcurrencyStats()
        demand = stats.demand()
        assert stats.demand() is demand  # one event for the autoscaler loop
        assert not demand.is_set()
        stats.started(REV, URL)  # forwarded to a replica: no demand signal
        assert not demand.is_set()
        waiter = asyncio.create_task(demand.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        stats.started(REV)  # held
        await asyncio.wait_for(waiter, 1)
        assert demand.is_set()
        demand.clear()  # the autoscaler clears it after each look
        stats.finished(REV)
        assert not demand.is_set()  # the end of a hold is no demand
        stats.started(REV)
        assert demand.is_set()

    asyncio.run(scenario())


def test_holding_before_anyone_asked_for_demand_is_fine(stats: ConcurrencyStats) -> None:
    stats.started(REV)  # no event yet: nothing to set, no error
    assert stats.waiting(REV) == 1
    stats.finished(REV)
    assert stats.waiting(REV) == 0


def test_default_clock_is_monotonic_time() -> None:
    stats = ConcurrencyStats()
    stats.average(REV)
    stats.started(REV, URL)
    assert 0.0 <= stats.average(REV) <= 1.0
