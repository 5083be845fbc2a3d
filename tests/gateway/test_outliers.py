"""Outlier ejection (gateway/outliers.py): consecutive gateway failures eject a replica, never
the last one of its revision; back-off grows and is capped; an active readiness probe returns
it. Against real sockets: tiny `asyncio.start_server` replicas, the real `HttpForwarder` and
`dispatch`, and a real gRPC proxy for the client-deadline rule. No assertion reads a clock.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from pydantic import ValidationError

from gateway.dataplane.grpc_proxy import GrpcProxy
from gateway.dataplane.metrics import GatewayMetrics
from gateway.dataplane.proxy import HttpForwarder
from gateway.dataplane.resolve import Attempt, dispatch
from gateway.outliers import OutlierPolicy, OutlierTracker, probe_ready
from gateway.routing import Backend, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from servers.errors import ModelServeError
from tests.gateway.upstreams import start_grpc
from tests.support import free_port, free_ports

A = "svc-predictor-00001"
# Probes that never fire during a test, unless the test asks for short back-offs.
SLOW = OutlierPolicy(3, base_ejection_s=600, max_ejection_s=600, probe_timeout_s=0.5)
FAST = OutlierPolicy(3, base_ejection_s=0.02, max_ejection_s=0.06, probe_timeout_s=0.5)


@dataclass
class Replica:
    """A listening socket answering like a model server: `/v2/health/ready` 200 while
    `ready`, every other request with `status` (or never, with `hang`)."""

    ready: bool = True
    status: int = 200
    hang: bool = False
    hits: int = 0
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"content-length: *(\d+)", head, re.I)
                if length:
                    await reader.readexactly(int(length.group(1)))
                if head.startswith(b"GET /v2/health/ready "):
                    status = 200 if self.ready else 503
                else:
                    self.hits += 1
                    if self.hang:
                        await asyncio.sleep(3600)
                    status = self.status
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 2\r\n\r\n{}" % status)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> Replica:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with asyncio.timeout(20):
            await scenario()

    asyncio.run(main())


def pair(url_a: str, url_b: str, ready_b: bool = True) -> ServiceRoute:
    return ServiceRoute("svc", backends=(Backend(A, url_a, None), Backend(A, url_b, None, ready_b)))


def dead() -> str:
    return f"http://127.0.0.1:{free_port()}"


def dead_urls(count: int) -> list[str]:
    """Distinct dead URLs: two `dead()` calls may name one port, and a pair of backends with
    one URL is one replica (it was: a third failure in a row ejected nothing, once)."""
    return [f"http://127.0.0.1:{port}" for port in free_ports(count)]


async def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.005)


# --- the tracker ----------------------------------------------------------------------------


def test_backoff_is_the_base_times_the_ejections_capped() -> None:
    policy = OutlierPolicy(3, base_ejection_s=10, max_ejection_s=35, probe_timeout_s=1)
    assert [policy.backoff_s(n) for n in (1, 2, 3, 4, 10)] == [10, 20, 30, 35, 35]


def test_the_policy_comes_from_the_settings_and_a_cap_below_the_base_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELSERVE_GATEWAY_OUTLIER_CONSECUTIVE_FAILURES", "5")
    monkeypatch.setenv("MODELSERVE_GATEWAY_OUTLIER_BASE_EJECTION_S", "2.5")
    assert OutlierPolicy.from_settings(GatewaySettings()) == OutlierPolicy(5, 2.5, 300, 1)
    with pytest.raises(ValidationError, match="outlier_max_ejection_s"):
        GatewaySettings(outlier_base_ejection_s=10, outlier_max_ejection_s=5)
    with pytest.raises(ValidationError):
        GatewaySettings(outlier_consecutive_failures=-1)


def test_failures_in_a_row_eject_and_an_answer_resets_the_count() -> None:
    async def scenario() -> None:
        tracker = OutlierTracker(clock=lambda: 100.0)
        route = pair(*dead_urls(2))
        bad = route.backends[0]
        assert not tracker.failed(route, bad, SLOW)
        assert not tracker.failed(route, bad, SLOW)
        tracker.succeeded("svc", bad.http_url)
        assert not tracker.failed(route, bad, SLOW)
        assert not tracker.failed(route, bad, SLOW)
        assert tracker.failed(route, bad, SLOW)  # the third in a row
        [ejection] = tracker.ejected("svc")
        assert (ejection.url, ejection.revision, ejection.ejections) == (bad.http_url, A, 1)
        assert ejection.until == 100.0 + SLOW.base_ejection_s
        assert tracker.in_rotation("svc", list(route.backends)) == [route.backends[1]]
        assert not tracker.failed(route, bad, SLOW)  # already out: not ejected twice
        assert tracker.totals() == {("svc", A): 1}
        await tracker.aclose()

    run(scenario)


def test_the_last_replica_in_rotation_is_never_ejected() -> None:
    async def scenario() -> None:
        tracker = OutlierTracker()
        route = pair(*dead_urls(2))
        first, second = route.backends
        for _ in range(3):
            tracker.failed(route, first, SLOW)
        for _ in range(10):
            assert not tracker.failed(route, second, SLOW)
        assert [e.url for e in tracker.ejected("svc")] == [first.http_url]

        # A sibling that is not ready is not in rotation: the replica is the last one.
        starting = pair(*dead_urls(2), ready_b=False)
        for _ in range(10):
            assert not tracker.failed(starting, starting.backends[0], SLOW)
        alone = ServiceRoute("solo", backends=(Backend(A, dead(), None),))
        for _ in range(10):
            assert not tracker.failed(alone, alone.backends[0], SLOW)
        assert tracker.ejected("solo") == []
        await tracker.aclose()

    run(scenario)


def test_zero_failures_turns_ejection_off() -> None:
    async def scenario() -> None:
        tracker = OutlierTracker()
        route = pair(*dead_urls(2))
        off = OutlierPolicy(0, 600, 600, 1)
        assert not any(tracker.failed(route, route.backends[0], off) for _ in range(20))
        assert tracker.ejected("svc") == []

    run(scenario)


def test_a_failed_probe_ejects_again_for_longer_and_a_good_one_returns_the_replica() -> None:
    async def scenario() -> None:
        replica, other = await Replica(ready=False).start(), await Replica().start()
        tracker = OutlierTracker()
        route = pair(replica.url, other.url)
        bad = route.backends[0]
        for _ in range(3):
            tracker.failed(route, bad, FAST)
        # Each failed probe is another ejection in a row: base x n, capped at the maximum.
        await until(lambda: tracker.ejected("svc")[0].ejections >= 4)
        [ejection] = tracker.ejected("svc")
        assert ejection.backoff_s == FAST.max_ejection_s == FAST.backoff_s(ejection.ejections)
        assert FAST.backoff_s(1) < FAST.backoff_s(2) < FAST.max_ejection_s
        assert tracker.totals() == {("svc", A): 1}  # one ejection, probed several times

        replica.ready = True
        await until(lambda: not tracker.ejected("svc"))
        assert tracker.in_rotation("svc", list(route.backends)) == list(route.backends)
        # The count starts again from zero, but a relapse soon after is a longer ejection.
        assert not tracker.failed(route, bad, FAST) and not tracker.failed(route, bad, FAST)
        assert tracker.failed(route, bad, FAST)
        assert tracker.ejected("svc")[0].ejections == ejection.ejections + 1
        assert tracker.totals() == {("svc", A): 2}
        await tracker.aclose()

    run(scenario)


def test_a_replica_that_leaves_the_route_is_forgotten() -> None:
    async def scenario() -> None:
        table = RoutingTable()
        first, second, third = dead_urls(3)
        route = pair(first, second)
        table.update(route)
        for _ in range(3):
            table.outliers.failed(route, route.backends[0], SLOW)
        assert len(table.outliers.ejected("svc")) == 1
        table.update(pair(third, second))  # the ejected replica was replaced
        assert table.outliers.ejected("svc") == []
        table.remove("svc")
        assert table.outliers.totals() == {}

    run(scenario)


def test_probe_ready_needs_a_200_in_time() -> None:
    async def scenario() -> None:
        ready, loading = await Replica().start(), await Replica(ready=False).start()
        # Accepts connections (a listen backlog) but never answers, like a stopped process.
        stalled = await asyncio.start_server(lambda r, w: asyncio.sleep(3600), "127.0.0.1", 0)
        stalled_url = f"http://127.0.0.1:{stalled.sockets[0].getsockname()[1]}"
        assert await probe_ready(ready.url, 1)
        assert not await probe_ready(loading.url, 1)
        assert not await probe_ready(stalled_url, 0.1)
        assert not await probe_ready(dead(), 1)
        stalled.close()

    run(scenario)


# --- through dispatch -----------------------------------------------------------------------


SETTINGS = GatewaySettings(request_timeout_s=0.3, connect_timeout_s=0.3,
                           outlier_consecutive_failures=3, outlier_base_ejection_s=600,
                           outlier_max_ejection_s=600)


async def send_to_first(table: RoutingTable, forwarder: HttpForwarder) -> int:
    """One request through `dispatch`, the first replica made to look idle (least loaded)."""
    route = table.get("svc")
    assert route is not None
    first, second = route.backends
    table.stats.started(A, second.http_url)
    try:
        async def send(backend: Backend) -> Any:
            return await forwarder.forward(backend.http_url, "POST", b"/v2/models/m/infer",
                                           [], b"{}")
        answer = await dispatch(table, route, None, SETTINGS, send, Attempt())
        return int(answer.status)
    except ModelServeError as exc:
        return exc.http_status
    finally:
        table.stats.finished(A, second.http_url)


@pytest.mark.parametrize("status, counts", [
    (502, True), (503, True), (504, True), (500, False), (404, False), (400, False),
])
def test_gateway_failures_count_and_other_answers_reset(status: int, counts: bool) -> None:
    async def scenario() -> None:
        bad, good = await Replica(status=status).start(), await Replica().start()
        table, forwarder = RoutingTable(), HttpForwarder(SETTINGS)
        table.update(pair(bad.url, good.url))
        for _ in range(3 if counts else 6):
            assert await send_to_first(table, forwarder) == status
        ejected = [e.url for e in table.outliers.ejected("svc")]
        assert ejected == ([bad.url] if counts else [])
        if counts:  # out of rotation: the idle-looking replica gets nothing now
            assert await send_to_first(table, forwarder) == 200
            assert bad.hits == 3 and good.hits == 1
        await forwarder.aclose()
        await table.outliers.aclose()

    run(scenario)


def test_timeouts_and_refused_connections_count() -> None:
    async def scenario() -> None:
        stalled, good = await Replica(hang=True).start(), await Replica().start()
        table, forwarder = RoutingTable(), HttpForwarder(SETTINGS)
        table.update(pair(stalled.url, good.url))
        assert [await send_to_first(table, forwarder) for _ in range(3)] == [504, 504, 504]
        assert [e.url for e in table.outliers.ejected("svc")] == [stalled.url]
        assert await send_to_first(table, forwarder) == 200

        # Refused: retried on the other replica (answered 200), and counted against it.
        refused = dead()
        table.update(pair(refused, good.url))
        assert [await send_to_first(table, forwarder) for _ in range(3)] == [200, 200, 200]
        assert [e.url for e in table.outliers.ejected("svc")] == [refused]
        await forwarder.aclose()
        await table.outliers.aclose()

    run(scenario)


def test_a_clients_short_grpc_deadline_ejects_nothing() -> None:
    """A timeout the client's own deadline caused says nothing of the replica."""
    async def scenario() -> None:
        (one, port_one), (two, port_two) = await start_grpc("one"), await start_grpc("two")
        table = RoutingTable()
        url_one, url_two = dead_urls(2)
        table.update(ServiceRoute("slow", backends=(
            Backend(A, url_one, f"127.0.0.1:{port_one}"),
            Backend(A, url_two, f"127.0.0.1:{port_two}"))))
        settings = GatewaySettings(request_timeout_s=0.4, outlier_consecutive_failures=3,
                                   outlier_base_ejection_s=600, outlier_max_ejection_s=600)
        proxy = GrpcProxy(table, settings)
        port = await proxy.start("127.0.0.1", 0)
        channel = aio.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="slow")  # the upstream sleeps past both

        async def call(timeout: float | None) -> grpc.StatusCode:
            try:
                await stub.ModelInfer(request, timeout=timeout)
            except aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        try:
            for _ in range(8):
                assert await call(0.1) == grpc.StatusCode.DEADLINE_EXCEEDED
            assert table.outliers.ejected("slow") == []
            # The gateway's own timeout is the replica's fault: by the fifth call one of the
            # two has failed three times in a row.
            for _ in range(5):
                assert await call(None) == grpc.StatusCode.DEADLINE_EXCEEDED
            assert len(table.outliers.ejected("slow")) == 1
        finally:
            await channel.close()
            await proxy.stop(0)
            await one.stop(0)
            await two.stop(0)
            await table.outliers.aclose()

    run(scenario)


# --- status and metrics ---------------------------------------------------------------------


def test_status_and_metrics_show_the_ejected_replicas() -> None:
    async def scenario() -> None:
        table = RoutingTable()
        route = pair(*dead_urls(2))
        table.update(route)
        bad = route.backends[0]
        for _ in range(3):
            table.outliers.failed(route, bad, SLOW)
        [revision] = table.status(route)["status"]["modelserve"]["revisions"]
        [ejected] = revision["ejected"]
        assert revision["name"] == A and revision["inFlight"] == 0
        assert ejected["url"] == bad.http_url and ejected["ejections"] == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ejected["until"])

        document = {"metadata": {"name": "svc"},
                    "status": {"modelserve": {"revisions": [{"name": A, "readyReplicas": 2}]}}}
        with_doc = ServiceRoute("svc", backends=route.backends, document=document)
        [revision] = table.status(with_doc)["status"]["modelserve"]["revisions"]
        assert revision["readyReplicas"] == 2 and len(revision["ejected"]) == 1

        text = GatewayMetrics(outliers=table.outliers).render().decode()
        labels = f'{{revision="{A}",service="svc"}}'
        assert f"modelserve_gateway_outlier_ejections_total{labels} 1.0" in text
        assert f"modelserve_gateway_outlier_ejected_replicas{labels} 1.0" in text
        await table.outliers.aclose()

    run(scenario)
