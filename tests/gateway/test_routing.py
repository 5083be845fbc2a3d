"""The routing table: traffic splits, tag hosts, least-in-flight replicas, ejected replicas, the
change signal.

Pure data-structure tests: no sockets, no processes. Weighted choices use a seeded rng, so
every count below is exact for a given seed, and the bounds still hold for any seed.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from gateway.outliers import OutlierPolicy
from gateway.routing import Backend, Choice, RoutingTable, ServiceRoute, Traffic

A, B = "svc-predictor-00001", "svc-predictor-00002"


def backend(revision: str, port: int, ready: bool = True, percent: int = 100) -> Backend:
    return Backend(revision, f"http://127.0.0.1:{port}", f"127.0.0.1:{port + 1}", ready, percent)


def canary_route(percent: int = 20, tag_routing: bool = True, **kw: object) -> ServiceRoute:
    """B is the canary (latest, `percent`), A the previously rolled-out revision."""
    return ServiceRoute(
        "svc",
        backends=(backend(B, 2000), backend(A, 1000)),
        traffic=(Traffic(B, percent, "latest", latest=True), Traffic(A, 100 - percent, "prev")),
        tag_routing=tag_routing,
        **kw,  # type: ignore[arg-type]
    )


def seeded(*routes: ServiceRoute, seed: int = 0) -> RoutingTable:
    table = RoutingTable(_rng=random.Random(seed))
    for route in routes:
        table.update(route)
    return table


def revisions(table: RoutingTable, route: ServiceRoute, n: int, **kw: object) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        choice = table.pick(route, **kw)  # type: ignore[arg-type]
        assert choice is not None and choice.backend is not None
        assert choice.backend.revision == choice.traffic.revision
        counts[choice.traffic.revision] += 1
    return counts


# --- the split ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_split_follows_the_percentages(seed: int) -> None:
    route = canary_route(20)
    table = seeded(route, seed=seed)
    counts = revisions(table, route, 4000)
    assert set(counts) == {A, B}
    assert abs(counts[B] / 4000 - 0.20) < 0.03  # the tolerance, 4000 draws
    assert counts[A] + counts[B] == 4000


def test_the_same_seed_gives_the_same_sequence() -> None:
    route = canary_route(50)
    t1, t2 = seeded(route, seed=7), seeded(route, seed=7)
    seq1 = [t1.pick(route).traffic.revision for _ in range(50)]  # type: ignore[union-attr]
    seq2 = [t2.pick(route).traffic.revision for _ in range(50)]  # type: ignore[union-attr]
    assert seq1 == seq2
    assert len(set(seq1)) == 2


@pytest.mark.parametrize("percent, only", [(0, A), (100, B)])
def test_zero_percent_revision_gets_nothing(percent: int, only: str) -> None:
    route = canary_route(percent)
    table = seeded(route)
    assert revisions(table, route, 300) == Counter({only: 300})


def test_split_derived_from_backends_when_the_route_gives_none() -> None:
    route = ServiceRoute("svc", backends=(
        backend(B, 2000, percent=30), backend(B, 2010, percent=30), backend(A, 1000, percent=70),
    ))
    assert route.split() == (Traffic(B, 30, latest=True), Traffic(A, 70))
    single = ServiceRoute("one", backends=(backend(A, 1000),))
    assert single.split() == (Traffic(A, 100, latest=True),)
    counts = revisions(seeded(route), route, 2000)
    assert abs(counts[B] / 2000 - 0.30) < 0.04


def test_not_ready_revision_gets_no_traffic() -> None:
    route = ServiceRoute(
        "svc",
        backends=(backend(B, 2000, ready=False), backend(A, 1000)),
        traffic=(Traffic(B, 50, "latest", latest=True), Traffic(A, 50, "prev")),
    )
    table = seeded(route)
    assert revisions(table, route, 200) == Counter({A: 200})
    assert route.ready


def test_no_ready_revision_with_traffic_means_no_choice() -> None:
    route = ServiceRoute(
        "svc",
        backends=(backend(B, 2000), backend(A, 1000, ready=False)),
        traffic=(Traffic(B, 0, "latest", latest=True), Traffic(A, 100, "prev")),
    )
    table = seeded(route)
    assert table.pick(route) is None  # B is ready but has 0%, A has 100% but is down
    assert not route.ready
    # By tag, the 0% revision is still reachable (a rolled-back canary under test).
    choice = table.pick(route, tag="latest")
    assert choice is not None and choice.backend is not None and choice.backend.revision == B


def test_a_revision_that_can_be_woken_is_chosen_without_a_backend() -> None:
    route = ServiceRoute("svc", traffic=(Traffic(A, 100, "latest", latest=True, activate=True),))
    table = seeded(route)
    assert route.ready  # the activator holds its requests: not a 503
    assert table.pick(route) == Choice(route.traffic[0], None)
    # Starting replicas that are not ready yet change nothing.
    starting = ServiceRoute("svc", backends=(backend(A, 1000, ready=False),),
                            traffic=route.traffic)
    assert table.pick(starting) == Choice(route.traffic[0], None)
    # Without `activate` the same route has nothing to offer.
    dead = ServiceRoute("svc", backends=starting.backends, traffic=(Traffic(A, 100),))
    assert table.pick(dead) is None and not dead.ready


def test_a_woken_and_a_ready_revision_share_by_percent() -> None:
    route = ServiceRoute(
        "svc",
        backends=(backend(A, 1000),),
        traffic=(Traffic(B, 50, "latest", latest=True, activate=True), Traffic(A, 50, "prev")),
    )
    table = seeded(route)
    picks = [table.pick(route) for _ in range(400)]
    held = [c for c in picks if c is not None and c.backend is None]
    served = [c for c in picks if c is not None and c.backend is not None]
    assert len(held) + len(served) == 400
    assert all(c.traffic.revision == B for c in held)
    assert all(c.backend.revision == A for c in served)  # type: ignore[union-attr]
    assert 150 < len(held) < 250


# --- tags and hosts -------------------------------------------------------------------------


def test_tag_hosts_resolve_only_with_tag_routing() -> None:
    on, off = canary_route(tag_routing=True), ServiceRoute(
        "other", backends=(backend(A, 3000),), traffic=(Traffic(A, 100, "latest", latest=True),)
    )
    table = seeded(on, off)
    assert on.tag_host("latest") == "latest-svc.default.example.com"
    assert table.resolve_host("svc.default.example.com") == (on, None)
    assert table.resolve_host("latest-svc.default.example.com") == (on, "latest")
    assert table.resolve_host("prev-svc.default.example.com") == (on, "prev")
    assert table.resolve_host("other.default.example.com") == (off, None)
    assert table.resolve_host("latest-other.default.example.com") is None  # no tag routing
    assert table.resolve_host("canary-svc.default.example.com") is None  # not a tag it has
    assert table.resolve_host("svc.default.example.org") is None


def test_host_resolution_ignores_the_port() -> None:
    route = canary_route()
    table = seeded(route)
    assert table.resolve_host("svc.default.example.com:8080") == (route, None)
    assert table.resolve_host("latest-svc.default.example.com:80") == (route, "latest")
    assert table.resolve_host("prev-svc.default.example.com:31380") == (route, "prev")
    assert table.resolve_host("[::1]:8080") is None


def test_tag_hosts_follow_updates() -> None:
    table = seeded(canary_route())
    assert table.resolve_host("prev-svc.default.example.com") is not None
    promoted = ServiceRoute("svc", backends=(backend(B, 2000),),
                            traffic=(Traffic(B, 100, "latest", latest=True),), tag_routing=True)
    table.update(promoted)
    assert table.resolve_host("prev-svc.default.example.com") is None  # the cache was dropped
    assert table.resolve_host("latest-svc.default.example.com") == (promoted, "latest")
    table.remove("svc")
    assert table.resolve_host("svc.default.example.com") is None
    assert table.get("svc") is None


def test_namespace_and_domain_make_the_host() -> None:
    route = ServiceRoute("m", namespace="team", domain="svc.local", backends=(backend(A, 1),))
    table = seeded(route)
    assert route.host == "m.team.svc.local"
    assert table.resolve_host("m.team.svc.local:443") == (route, None)


def test_pick_by_tag_reaches_exactly_one_revision() -> None:
    route = canary_route(20)
    table = seeded(route)
    assert revisions(table, route, 100, tag="latest") == Counter({B: 100})
    assert revisions(table, route, 100, tag="prev") == Counter({A: 100})
    assert table.pick(route, tag="nope") is None


def test_tag_of_a_revision_without_ready_replicas() -> None:
    route = ServiceRoute(
        "svc",
        backends=(backend(B, 2000, ready=False), backend(A, 1000)),
        traffic=(Traffic(B, 20, "latest", latest=True), Traffic(A, 80, "prev")),
        tag_routing=True,
    )
    table = seeded(route)
    assert table.pick(route, tag="latest") is None  # not ready, not wakeable: 503
    woken = ServiceRoute("svc", backends=route.backends, tag_routing=True, traffic=(
        Traffic(B, 20, "latest", latest=True, activate=True), Traffic(A, 80, "prev"),
    ))
    choice = table.pick(woken, tag="latest")
    assert choice is not None and choice.backend is None and choice.traffic.revision == B


# --- replicas -------------------------------------------------------------------------------


def test_exclude_skips_a_replica_and_then_the_revision() -> None:
    r1, r2 = backend(A, 1000), backend(A, 1010)
    route = ServiceRoute("svc", backends=(r1, r2))
    table = seeded(route)
    for _ in range(50):
        choice = table.pick(route, exclude=frozenset({r1.http_url}))
        assert choice is not None and choice.backend == r2
    assert table.pick(route, exclude=frozenset({r1.http_url, r2.http_url})) is None
    assert table.pick_replica(route, A, frozenset({r1.http_url})) == r2
    assert table.pick_replica(route, A, frozenset({r1.http_url, r2.http_url})) is None
    assert table.pick_replica(route, B, frozenset()) is None


def test_exclude_moves_traffic_to_the_other_revision() -> None:
    route = canary_route(50)
    table = seeded(route)
    [b_replica] = [b for b in route.backends if b.revision == B]
    assert revisions(table, route, 100, exclude=frozenset({b_replica.http_url})) == Counter(
        {A: 100}
    )


def test_pick_replica_stays_in_the_revision_and_skips_not_ready() -> None:
    a1, a2, a3, b1 = backend(A, 1000), backend(A, 1010, ready=False), backend(A, 1020), \
        backend(B, 2000)
    route = ServiceRoute("svc", backends=(b1, a1, a2, a3))
    table = seeded(route)
    for _ in range(50):
        assert table.pick_replica(route, A, frozenset({a1.http_url})) == a3


def test_least_in_flight_replica_is_chosen() -> None:
    r1, r2, r3 = backend(A, 1000), backend(A, 1010), backend(A, 1020)
    route = ServiceRoute("svc", backends=(r1, r2, r3))
    table = seeded(route)
    stats = table.stats
    for _ in range(3):
        stats.started(A, r1.http_url)
    stats.started(A, r2.http_url)
    for _ in range(50):
        choice = table.pick(route)
        assert choice is not None and choice.backend == r3
    stats.started(A, r3.http_url)
    stats.started(A, r3.http_url)
    for _ in range(50):
        assert table.pick(route).backend == r2  # type: ignore[union-attr]
    assert table.pick_replica(route, A, frozenset({r2.http_url})) == r3
    for _ in range(3):
        stats.finished(A, r1.http_url)
    assert table.pick(route).backend == r1  # type: ignore[union-attr]


def test_ties_go_round_not_to_the_first() -> None:
    replicas = tuple(backend(A, 1000 + 10 * i) for i in range(3))
    route = ServiceRoute("svc", backends=replicas)
    table = seeded(route)
    seen = Counter(table.pick(route).backend.http_url for _ in range(300))  # type: ignore[union-attr]
    assert set(seen) == {b.http_url for b in replicas}
    assert min(seen.values()) > 60


def test_load_is_per_replica_not_per_revision() -> None:
    a1, b1, b2 = backend(A, 1000), backend(B, 2000), backend(B, 2010)
    route = ServiceRoute("svc", backends=(b1, b2, a1),
                         traffic=(Traffic(B, 100, latest=True), Traffic(A, 0)))
    table = seeded(route)
    for _ in range(5):
        table.stats.started(A, a1.http_url)  # load elsewhere changes nothing
    table.stats.started(B, b1.http_url)
    assert {table.pick(route).backend for _ in range(20)} == {b2}  # type: ignore[union-attr]


# Back-offs long enough that no probe runs during a test.
NO_PROBE = OutlierPolicy(3, base_ejection_s=600, max_ejection_s=600, probe_timeout_s=1)


def eject(table: RoutingTable, route: ServiceRoute, replica: Backend) -> None:
    """Three failures in a row: out of rotation (the probe's timer needs a running loop)."""
    for _ in range(NO_PROBE.consecutive_failures):
        table.outliers.failed(route, replica, NO_PROBE)


def test_ejected_replicas_are_skipped_even_when_least_loaded() -> None:
    async def scenario() -> None:
        r1, r2, r3 = backend(A, 1000), backend(A, 1010), backend(A, 1020)
        route = ServiceRoute("svc", backends=(r1, r2, r3))
        table = seeded(route)
        eject(table, route, r1)
        table.stats.started(A, r2.http_url)
        table.stats.started(A, r3.http_url)  # r1 is the idlest, and out of rotation
        assert {table.pick(route).backend for _ in range(50)} <= {r2, r3}  # type: ignore[union-attr]
        assert table.pick_replica(route, A, frozenset({r2.http_url})) == r3
        # A retry with every replica in rotation tried may still use the ejected one.
        assert table.pick_replica(route, A, frozenset({r2.http_url, r3.http_url})) == r1
        await table.outliers.aclose()

    asyncio.run(scenario())


def test_a_revision_whose_ready_replicas_are_all_ejected_uses_them_all() -> None:
    async def scenario() -> None:
        r1, r2 = backend(A, 1000), backend(A, 1010)
        route = ServiceRoute("svc", backends=(r1, r2))
        table = seeded(route)
        eject(table, route, r1)
        # The other replica stops being ready: the ejected one is all the revision has.
        starting = ServiceRoute("svc", backends=(r1, backend(A, 1010, ready=False)))
        table.update(starting)
        assert table.outliers.ejected("svc")  # still ejected, still routed to (panic)
        assert {table.pick(starting).backend for _ in range(20)} == {r1}  # type: ignore[union-attr]
        await table.outliers.aclose()

    asyncio.run(scenario())


def test_ejection_is_per_service() -> None:
    async def scenario() -> None:
        shared, other = backend(A, 1000), backend(A, 1010)
        one = ServiceRoute("one", backends=(shared, other))
        two = ServiceRoute("two", backends=(shared, other))
        table = seeded(one, two)
        eject(table, one, shared)
        assert {table.pick(one).backend for _ in range(20)} == {other}  # type: ignore[union-attr]
        assert {table.pick(two).backend for _ in range(50)} == {shared, other}  # type: ignore[union-attr]
        await table.outliers.aclose()

    asyncio.run(scenario())


# --- status ---------------------------------------------------------------------------------


def test_status_without_a_document_is_derived_from_the_backends() -> None:
    route = ServiceRoute("svc", backends=(backend(B, 2000, ready=False), backend(A, 1000)),
                         traffic=(Traffic(B, 0, "latest", latest=True), Traffic(A, 100, "prev")))
    status = route.status()
    assert status["metadata"] == {"name": "svc", "namespace": "default"}
    assert status["status"]["url"] == "http://svc.default.example.com"
    component = status["status"]["components"]["predictor"]
    assert component["traffic"] == [
        {"revisionName": B, "percent": 0, "latestRevision": True},
        {"revisionName": A, "percent": 100, "latestRevision": False},
    ]
    assert component["latestReadyRevision"] == A
    assert status["status"]["conditions"] == [{"type": "Ready", "status": "True"}]

    down = ServiceRoute("svc", message="loading", backends=(backend(A, 1000, ready=False),))
    [condition] = down.status()["status"]["conditions"]
    assert condition == {"type": "Ready", "status": "False", "reason": "NotReady",
                         "message": "loading"}


def test_status_with_a_document_overlays_in_flight_per_revision() -> None:
    document: dict[str, Any] = {
        "metadata": {"name": "svc"},
        "status": {"url": "http://svc.default.example.com",
                   "modelserve": {"revisions": [{"name": A, "inFlight": 0},
                                                {"name": B, "inFlight": 0}]}},
    }
    route = ServiceRoute("svc", backends=(backend(A, 1000),), document=document)
    table = seeded(route)
    table.stats.started(A, "http://127.0.0.1:1000")
    table.stats.started(A)  # held by the activator: counts too
    status = route.status(table.stats)
    assert [r["inFlight"] for r in status["status"]["modelserve"]["revisions"]] == [2, 0]
    assert status["status"]["url"] == "http://svc.default.example.com"
    assert document["status"]["modelserve"]["revisions"][0]["inFlight"] == 0  # not mutated
    assert route.status() == document


def test_table_status_lists_each_revisions_ejected_replicas() -> None:
    async def scenario() -> None:
        r1, r2, b1 = backend(A, 1000), backend(A, 1010), backend(B, 2000)
        route = ServiceRoute("svc", backends=(b1, r1, r2),
                             traffic=(Traffic(B, 50, latest=True), Traffic(A, 50)))
        table = seeded(route)
        eject(table, route, r2)
        revisions = {r["name"]: r for r in table.status(route)["status"]["modelserve"]["revisions"]}
        assert revisions[B]["ejected"] == []
        [ejected] = revisions[A]["ejected"]
        assert ejected["url"] == r2.http_url and ejected["grpcTarget"] == r2.grpc_target
        assert ejected["ejections"] == 1
        assert "modelserve" not in route.status()["status"]  # without the table's live state
        await table.outliers.aclose()

    asyncio.run(scenario())


# --- the change signal ----------------------------------------------------------------------


def test_changed_wakes_every_waiter_on_update_and_remove() -> None:
    async def scenario() -> None:
        table = RoutingTable()
        waiters = [asyncio.create_task(table.changed()) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiters)
        table.update(ServiceRoute("svc", backends=(backend(A, 1000),)))
        await asyncio.wait_for(asyncio.gather(*waiters), 1)

        # The next wait is for the next change, not the one already seen.
        again = asyncio.create_task(table.changed())
        await asyncio.sleep(0.01)
        assert not again.done()
        table.remove("svc")
        await asyncio.wait_for(again, 1)

    asyncio.run(scenario())


def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    async def scenario() -> None:
        table = RoutingTable()
        first = asyncio.create_task(table.changed())
        second = asyncio.create_task(table.changed())
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        assert first.cancelled() and not second.done()
        table.update(ServiceRoute("svc"))
        await asyncio.wait_for(second, 1)

    asyncio.run(scenario())


def test_timed_out_waiter_leaves_the_table_usable() -> None:
    async def scenario() -> None:
        table = RoutingTable()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await table.changed()
        waiter = asyncio.create_task(table.changed())
        await asyncio.sleep(0.01)
        table.update(ServiceRoute("svc"))
        await asyncio.wait_for(waiter, 1)

    asyncio.run(scenario())
